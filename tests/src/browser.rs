//! A real Chromium (Debian's package) driven by playwright-core through
//! `tests/browser/driver.mjs`: one JSON command per line, one JSON answer per line.
//! `scripts/test` installs Chromium and the npm packages.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long one browser command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The repository root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where browser tests keep their screenshots: `target/test-artifacts/browser`.
pub fn artifacts_dir() -> PathBuf {
    let dir = repo().join("target/test-artifacts/browser");
    std::fs::create_dir_all(&dir).expect("create the artefacts directory");
    dir
}

/// A headless Chromium; closed (and its driver killed) on drop.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
}

/// A page of a [`Browser`].
#[derive(Debug, Clone, Copy)]
pub struct Page(u64);

impl Browser {
    /// Starts the driver and Chromium.
    pub async fn launch() -> Browser {
        let driver = repo().join("tests/browser/driver.mjs");
        assert!(
            repo().join("clients/js/node_modules/playwright-core").exists(),
            "playwright-core is missing: run scripts/test (npm ci in clients/js)"
        );
        let mut child = Command::new("node")
            .arg(&driver)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node (installed by scripts/test)");
        let stdin = child.stdin.take().expect("driver stdin");
        let answers = BufReader::new(child.stdout.take().expect("driver stdout")).lines();
        Browser { child, stdin, answers }
    }

    async fn command(&mut self, command: Value) -> Value {
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("write to the browser driver");
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, self.answers.next_line())
            .await
            .unwrap_or_else(|_| panic!("the browser did not answer {command} within {COMMAND_TIMEOUT:?}"))
            .expect("read from the browser driver")
            .expect("the browser driver exited");
        let answer: Value = serde_json::from_str(&answer).expect("a JSON answer");
        assert_eq!(answer["ok"], true, "browser command {command} failed: {}", answer["error"]);
        answer["value"].clone()
    }

    /// Opens `url` in a new browser context (its own storage).
    pub async fn open(&mut self, url: &str) -> Page {
        Page(self.command(json!({"cmd": "open", "url": url})).await.as_u64().expect("page index"))
    }

    /// Evaluates a JavaScript expression in `page`.
    pub async fn eval<T: DeserializeOwned>(&mut self, page: Page, expr: &str) -> T {
        let value = self.command(json!({"cmd": "eval", "page": page.0, "expr": expr})).await;
        serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{expr} gave {value}: {e}"))
    }

    /// Navigates `page` to `url` (same context: its storage stays).
    pub async fn goto(&mut self, page: Page, url: &str) {
        self.command(json!({"cmd": "goto", "page": page.0, "url": url})).await;
    }

    /// Reloads `page`.
    pub async fn reload(&mut self, page: Page) {
        self.command(json!({"cmd": "reload", "page": page.0})).await;
    }

    /// Saves a screenshot of `page`.
    pub async fn screenshot(&mut self, page: Page, path: &Path) {
        self.command(json!({"cmd": "screenshot", "page": page.0, "path": path})).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
