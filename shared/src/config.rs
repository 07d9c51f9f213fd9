//! Layered configuration: built-in defaults < TOML file < environment < command-line flags.
//!
//! Each service declares its settings as a table of [`Setting`]s (name, default, what is
//! allowed). A setting is known by its environment variable name (`REDIS_URL`); in a TOML
//! file the same setting is the lower-case key (`redis_url`). The file is named by
//! `--config PATH` or `STREAMGATE_CONFIG`. Every value is parsed once, here, into a typed
//! field; an invalid one becomes a [`ConfigError`] naming the setting, the value and what is
//! allowed, which the binaries print as one line before exiting with code 2.
//!
//! Secrets (tokens, passwords) are [`Secret`]s, whose `Debug` shows no value, and can be
//! read from a file instead (`NAME_FILE`, for Docker and Kubernetes secrets) with
//! [`Layered::get_secret`]. Errors about them never quote the value.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The environment variable that names a configuration file.
pub const CONFIG_FILE_ENV: &str = "STREAMGATE_CONFIG";

/// The exit code of a process stopped by bad configuration.
pub const EXIT_BAD_CONFIG: u8 = 2;

/// One configurable setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The environment variable name, also the setting's name in messages.
    pub name: &'static str,
    /// The built-in default, as text ("" for none).
    pub default: &'static str,
    /// What values are allowed, for error messages and the README.
    pub allowed: &'static str,
    /// What it does.
    pub help: &'static str,
}

impl Setting {
    /// The key in a TOML file.
    pub fn file_key(&self) -> String {
        self.name.to_ascii_lowercase()
    }
}

/// A secret setting's value (a token, a password): its `Debug` output hides it, so
/// deriving `Debug` on a configuration that holds one prints no secret. Read it with
/// [`Secret::expose`], only where it is used.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that is not allowed.
    #[error("invalid {setting}={value:?}: expected {allowed}")]
    Invalid {
        /// The setting's name.
        setting: String,
        /// The rejected value.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// A key in the configuration file that no setting has.
    #[error("unknown setting {key:?} in configuration file {path}")]
    UnknownKey {
        /// The key.
        key: String,
        /// The file.
        path: String,
    },
    /// A flag or override naming no setting.
    #[error("unknown setting {0:?}")]
    UnknownSetting(String),
    /// Two settings whose values defeat each other (each valid alone).
    #[error("{first} and {second} conflict: {reason}")]
    Conflict {
        /// The first setting, with its value (`QUEUE_SIZE=16`).
        first: String,
        /// The second setting, with its value.
        second: String,
        /// Why the pair breaks a guarantee, and what to change.
        reason: String,
    },
    /// The configuration file could not be read or parsed.
    #[error("cannot read configuration file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Where the values come from. Tests build one in memory; binaries use [`Sources::from_process`].
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// A TOML file (from `--config` or `STREAMGATE_CONFIG`).
    pub file: Option<PathBuf>,
    /// Environment variables.
    pub env: HashMap<String, String>,
    /// Command-line flags, as (setting name, value); later entries win.
    pub flags: Vec<(String, String)>,
}

impl Sources {
    /// The process environment, the file given by `--config` (or `STREAMGATE_CONFIG`), and
    /// the given flags.
    pub fn from_process(config_flag: Option<PathBuf>, flags: Vec<(String, String)>) -> Sources {
        let env: HashMap<String, String> = std::env::vars().collect();
        let file =
            config_flag.or_else(|| env.get(CONFIG_FILE_ENV).filter(|p| !p.is_empty()).map(PathBuf::from));
        Sources { file, env, flags }
    }
}

impl Sources {
    /// Only the given `(setting name, value)` pairs, as flags (later pairs win): no process
    /// environment, no file. For tests and for embedding a service in another program.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Sources {
        let flags = pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
        Sources { flags, ..Sources::default() }
    }
}

/// A service's typed configuration, built from the merged values of its settings. The
/// three services load theirs the same way: `load` from the process' sources, and
/// `with_overrides` from the defaults and given pairs only (tests, embedding).
pub trait ServiceConfig: Sized {
    /// Every setting the service reads.
    const SETTINGS: &'static [Setting];

    /// Types every setting from merged values.
    fn from_layered(layered: &Layered) -> Result<Self, ConfigError>;

    /// Loads and types every setting from `sources`.
    fn load(sources: &Sources) -> Result<Self, ConfigError> {
        Self::from_layered(&Layered::load(Self::SETTINGS, sources)?)
    }

    /// The built-in defaults with the given `(setting name, value)` pairs over them (later
    /// pairs win), ignoring the process environment and files: for tests and for
    /// embedding the service in another program.
    fn with_overrides(settings: &[(&str, &str)]) -> Result<Self, ConfigError> {
        Self::load(&Sources::from_pairs(settings))
    }
}

/// The merged values of a service's settings, before typing.
#[derive(Debug)]
pub struct Layered {
    values: HashMap<&'static str, String>,
}

impl Layered {
    /// Merges the layers for `settings`.
    pub fn load(settings: &[Setting], sources: &Sources) -> Result<Layered, ConfigError> {
        let mut builder = config::Config::builder();
        for setting in settings {
            builder =
                builder.set_default(setting.file_key(), setting.default).expect("a plain key always sets");
        }
        if let Some(path) = &sources.file {
            let display = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|error| ConfigError::File { path: display.clone(), message: error.to_string() })?;
            let file = config::Config::builder()
                .add_source(config::File::from_str(&text, config::FileFormat::Toml))
                .build()
                .map_err(|error| ConfigError::File { path: display.clone(), message: error.to_string() })?;
            let table = file
                .try_deserialize::<HashMap<String, config::Value>>()
                .map_err(|error| ConfigError::File { path: display.clone(), message: error.to_string() })?;
            for key in table.keys() {
                if !settings.iter().any(|s| s.file_key() == *key) {
                    return Err(ConfigError::UnknownKey { key: key.clone(), path: display });
                }
            }
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        for setting in settings {
            if let Some(value) = sources.env.get(setting.name) {
                builder = builder.set_override(setting.file_key(), value.as_str()).expect("plain key");
            }
        }
        for (name, value) in &sources.flags {
            let setting = settings
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(name) || s.file_key() == name.replace('-', "_"))
                .ok_or_else(|| ConfigError::UnknownSetting(name.clone()))?;
            builder = builder.set_override(setting.file_key(), value.as_str()).expect("plain key");
        }
        let merged = builder.build().map_err(|error| ConfigError::File {
            path: sources.file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            message: error.to_string(),
        })?;
        let mut values = HashMap::new();
        for setting in settings {
            let value = merged.get_string(&setting.file_key()).map_err(|_| ConfigError::Invalid {
                setting: setting.name.to_owned(),
                value: String::from("<not text>"),
                allowed: setting.allowed.to_owned(),
            })?;
            values.insert(setting.name, value);
        }
        Ok(Layered { values })
    }

    /// The raw text of a setting.
    pub fn raw(&self, setting: &Setting) -> &str {
        self.values.get(setting.name).map(String::as_str).unwrap_or("")
    }

    /// Parses a setting with `parse`, which returns `None` for a value that is not allowed.
    pub fn get_with<T>(
        &self,
        setting: &Setting,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        let raw = self.raw(setting).trim();
        parse(raw).ok_or_else(|| ConfigError::Invalid {
            setting: setting.name.to_owned(),
            value: raw.to_owned(),
            allowed: setting.allowed.to_owned(),
        })
    }

    /// Parses a setting with its `FromStr`.
    pub fn get<T: FromStr>(&self, setting: &Setting) -> Result<T, ConfigError> {
        self.get_with(setting, |raw| raw.parse().ok())
    }

    /// A secret given either inline (`value`, e.g. `PUBLISH_TOKEN`) or as the path of a
    /// file holding it (`file`, e.g. `PUBLISH_TOKEN_FILE`; one trailing line break is
    /// dropped, as editors and `echo` add one). `None` when neither is set; both at once
    /// is an error. Error messages name the file, never the secret.
    pub fn get_secret(&self, value: &Setting, file: &Setting) -> Result<Option<Secret>, ConfigError> {
        let inline = self.raw(value);
        if inline.is_empty() {
            return self.get_secret_file(file);
        }
        if !self.raw(file).trim().is_empty() {
            return Err(ConfigError::Conflict {
                first: format!("{}=<hidden>", value.name),
                second: format!("{}={:?}", file.name, self.raw(file).trim()),
                reason: "set the secret inline or in a file, not both".to_owned(),
            });
        }
        Ok(Some(Secret::new(inline)))
    }

    /// A secret read from the file a setting names (`None` when it is empty).
    pub fn get_secret_file(&self, file: &Setting) -> Result<Option<Secret>, ConfigError> {
        let path = self.raw(file).trim();
        if path.is_empty() {
            return Ok(None);
        }
        read_secret_file(file, path).map(Some)
    }

    /// An optional text setting: `None` when empty.
    pub fn get_optional(&self, setting: &Setting) -> Option<String> {
        let raw = self.raw(setting).trim();
        (!raw.is_empty()).then(|| raw.to_owned())
    }

    /// A whole number within `range`.
    pub fn get_in_range<T>(
        &self,
        setting: &Setting,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd,
    {
        self.get_with(setting, |raw| raw.parse().ok().filter(|v| range.contains(v)))
    }

    /// A duration such as `15s`, `500ms` or `2m`, within `range`.
    pub fn get_duration(
        &self,
        setting: &Setting,
        range: std::ops::RangeInclusive<Duration>,
    ) -> Result<Duration, ConfigError> {
        self.get_with(setting, |raw| parse_duration(raw).filter(|d| range.contains(d)))
    }

    /// A size in bytes such as `65536`, `64KiB` or `1MiB`, within `range`.
    pub fn get_bytes(
        &self,
        setting: &Setting,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<usize, ConfigError> {
        self.get_with(setting, |raw| parse_bytes(raw).filter(|b| range.contains(b)))
    }
}

/// Reads a secret from the file at `path`, for the setting `file`.
fn read_secret_file(file: &Setting, path: &str) -> Result<Secret, ConfigError> {
    let invalid = |why: String| ConfigError::Invalid {
        setting: file.name.to_owned(),
        value: path.to_owned(),
        allowed: format!("{} ({why})", file.allowed),
    };
    let text = std::fs::read_to_string(path).map_err(|error| invalid(error.to_string()))?;
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if text.is_empty() {
        return Err(invalid("the file is empty".to_owned()));
    }
    Ok(Secret::new(text))
}

/// Parses a human duration (`15s`, `500ms`, `2m`, `1h 30m`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim()).ok()
}

/// Parses a size: a byte count with an optional `KiB`, `MiB` or `GiB` (or `K`, `M`, `G`).
pub fn parse_bytes(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let count: usize = digits.parse().ok()?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    count.checked_mul(multiplier)
}

/// Parses a boolean (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`).
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A comma-separated list; empty items are dropped.
pub fn parse_list(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Setting = Setting { name: "SETTING_A", default: "from-default", allowed: "text", help: "" };
    const N: Setting =
        Setting { name: "SETTING_N", default: "5", allowed: "a whole number from 1 to 10", help: "" };
    const ALL: &[Setting] = &[A, N];

    fn write_file(text: &str) -> tempfile::NamedTempFile {
        use std::io::Write as _;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn each_layer_overrides_the_one_below() {
        let loaded = Layered::load(ALL, &Sources::default()).unwrap();
        assert_eq!(loaded.raw(&A), "from-default");

        let file = write_file("setting_a = \"from-file\"\nsetting_n = 7\n");
        let mut sources = Sources { file: Some(file.path().into()), ..Sources::default() };
        let loaded = Layered::load(ALL, &sources).unwrap();
        assert_eq!(loaded.raw(&A), "from-file");
        assert_eq!(loaded.get_in_range(&N, 1..=10).unwrap(), 7u32);

        sources.env.insert("SETTING_A".into(), "from-env".into());
        assert_eq!(Layered::load(ALL, &sources).unwrap().raw(&A), "from-env");

        sources.flags.push(("SETTING_A".into(), "from-flag".into()));
        assert_eq!(Layered::load(ALL, &sources).unwrap().raw(&A), "from-flag");
    }

    #[test]
    fn invalid_value_names_setting_value_and_what_is_allowed() {
        let sources =
            Sources { env: HashMap::from([("SETTING_N".into(), "11".into())]), ..Sources::default() };
        let error = Layered::load(ALL, &sources).unwrap().get_in_range(&N, 1u32..=10).unwrap_err();
        assert_eq!(error.to_string(), "invalid SETTING_N=\"11\": expected a whole number from 1 to 10");
    }

    #[test]
    fn unknown_file_key_is_an_error() {
        let file = write_file("setting_x = 1\n");
        let sources = Sources { file: Some(file.path().into()), ..Sources::default() };
        assert!(matches!(Layered::load(ALL, &sources), Err(ConfigError::UnknownKey { .. })));
    }

    const S: Setting = Setting { name: "SECRET", default: "", allowed: "text", help: "" };
    const S_FILE: Setting =
        Setting { name: "SECRET_FILE", default: "", allowed: "the path of a readable file", help: "" };

    fn secret(pairs: &[(&str, &str)]) -> Result<Option<Secret>, ConfigError> {
        Layered::load(&[S, S_FILE], &Sources::from_pairs(pairs)).unwrap().get_secret(&S, &S_FILE)
    }

    #[test]
    fn secrets_come_inline_or_from_a_file_never_both_and_never_show() {
        assert_eq!(secret(&[]).unwrap(), None);
        assert_eq!(secret(&[("SECRET", "hunter2")]).unwrap(), Some(Secret::new("hunter2")));
        let file = write_file("from-file\n");
        let path = file.path().to_str().unwrap();
        assert_eq!(secret(&[("SECRET_FILE", path)]).unwrap().unwrap().expose(), "from-file");
        let both = secret(&[("SECRET", "hunter2"), ("SECRET_FILE", path)]).unwrap_err().to_string();
        assert!(both.contains("SECRET_FILE") && !both.contains("hunter2"), "{both}");
        let missing = secret(&[("SECRET_FILE", "/no/such/file")]).unwrap_err().to_string();
        assert!(missing.starts_with("invalid SECRET_FILE=\"/no/such/file\""), "{missing}");
        let empty = write_file("\n");
        assert!(secret(&[("SECRET_FILE", empty.path().to_str().unwrap())]).is_err());
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }

    #[test]
    fn parses_sizes_durations_and_booleans() {
        assert_eq!(parse_bytes("64KiB"), Some(65536));
        assert_eq!(parse_bytes("1 MiB"), Some(1 << 20));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("12parsecs"), None);
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_bool("maybe"), None);
        assert_eq!(parse_list("a, b,,c"), vec!["a", "b", "c"]);
    }
}
