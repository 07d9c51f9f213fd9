//! The command-line flags every binary shares: `--config`, `--redis-url` and the generic
//! `--set NAME=VALUE`, turned into the flag layer of the configuration.

use std::path::PathBuf;

use crate::config::Sources;

/// Flags every binary accepts. Flatten it into a binary's `clap` parser.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// A TOML configuration file (also STREAMGATE_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Overrides REDIS_URL.
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Overrides any setting, by its environment name (repeatable): --set HEARTBEAT_INTERVAL=5s.
    #[arg(long = "set", global = true, value_name = "NAME=VALUE", value_parser = parse_assignment)]
    pub set: Vec<(String, String)>,
}

fn parse_assignment(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))?;
    Ok((name.trim().to_owned(), value.to_owned()))
}

impl ConfigArgs {
    /// The configuration sources: the process environment, the `--config` file, and the
    /// flags — `--set` first, so a binary's dedicated flags (`named`, as setting name and
    /// value) win over a `--set` of the same setting.
    pub fn sources(&self, named: &[(&str, Option<&String>)]) -> Sources {
        let mut flags = self.set.clone();
        let redis = [(crate::settings::REDIS_URL.name, self.redis_url.as_ref())];
        for (name, value) in redis.iter().chain(named) {
            if let Some(value) = value {
                flags.push(((*name).to_owned(), (*value).clone()));
            }
        }
        Sources::from_process(self.config.clone(), flags)
    }
}
