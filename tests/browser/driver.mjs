// Drives Debian's Chromium for the Rust browser tests (tests/tests/it/browser.rs) with
// playwright-core: one JSON command per line on stdin, one JSON answer per line on stdout.
//
//   {"cmd": "open", "url": "..."}                  -> {"ok": true, "value": <page index>}
//   {"cmd": "eval", "page": 0, "expr": "..."}      -> {"ok": true, "value": <JSON of the result>}
//   {"cmd": "goto", "page": 0, "url": "..."}       -> {"ok": true} (same context and storage)
//   {"cmd": "reload", "page": 0}                   -> {"ok": true}
//   {"cmd": "screenshot", "page": 0, "path": "..."} -> {"ok": true}
//   {"cmd": "close"}                               -> {"ok": true}, then exits
import { createRequire } from "node:module";
import readline from "node:readline";

// playwright-core is a development dependency of the JavaScript client (clients/js).
const require = createRequire(new URL("../../clients/js/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // Background tabs must not have their timers throttled during a test.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
  ],
});
const pages = [];
const answer = (value) => process.stdout.write(JSON.stringify(value) + "\n");

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  let command;
  try {
    command = JSON.parse(line);
    switch (command.cmd) {
      case "open": {
        const context = await browser.newContext();
        const page = await context.newPage();
        page.on("console", (message) => process.stderr.write(`[page ${pages.length}] ${message.text()}\n`));
        await page.goto(command.url);
        pages.push(page);
        answer({ ok: true, value: pages.length - 1 });
        break;
      }
      case "eval":
        answer({ ok: true, value: await pages[command.page].evaluate(command.expr) });
        break;
      case "goto":
        await pages[command.page].goto(command.url);
        answer({ ok: true });
        break;
      case "reload":
        await pages[command.page].reload();
        answer({ ok: true });
        break;
      case "screenshot":
        await pages[command.page].screenshot({ path: command.path, fullPage: true });
        answer({ ok: true });
        break;
      case "close":
        await browser.close();
        answer({ ok: true });
        process.exit(0);
      default:
        answer({ ok: false, error: `unknown command ${command.cmd}` });
    }
  } catch (error) {
    answer({ ok: false, error: String(error && error.stack ? error.stack : error) });
  }
}
await browser.close();
