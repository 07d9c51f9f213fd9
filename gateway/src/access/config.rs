//! The typed access-control settings: which authorization mode, its keys or hook, the
//! public topic prefixes and where tokens may come from. Files named by settings
//! (`JWT_SECRET_FILE`, `JWKS_FILE`) are read here, once, so a bad key stops start-up with
//! one line naming the setting. Secrets never appear in an error or a log.

use std::time::Duration;

use secrecy::SecretString;
use streamgate::config::{ConfigError, Layered, Setting, parse_bool, parse_list};
use url::Url;

use crate::access::jwt::{VerifyingKey, keys_of_jwks};
use crate::settings::{
    ALLOW_QUERY_TOKEN, AUTH_COOKIE, JWKS_FILE, JWKS_REFRESH, JWKS_URL, JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET,
    JWT_SECRET_FILE, PUBLIC_TOPIC_PREFIXES, SUBSCRIBE_AUTH, SUBSCRIBE_AUTH_CACHE, SUBSCRIBE_AUTH_TIMEOUT,
    SUBSCRIBE_AUTH_URL,
};

/// How `/events` requests are authorized.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// Not at all (`SUBSCRIBE_AUTH=none`).
    None,
    /// By a JWT (`SUBSCRIBE_AUTH=jwt`).
    Jwt(JwtConfig),
    /// By asking a hook (`SUBSCRIBE_AUTH=hook`).
    Hook(HookConfig),
}

/// `SUBSCRIBE_AUTH=jwt`: keys and claim checks.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Keys known at start-up (`JWT_SECRET[_FILE]`, `JWKS_FILE`).
    pub keys: Vec<VerifyingKey>,
    /// Keys fetched, and refreshed, from this URL.
    pub jwks_url: Option<Url>,
    /// How often `jwks_url` is fetched again.
    pub jwks_refresh: Duration,
    /// Accepted `aud` values (empty: tokens must carry none).
    pub audience: Vec<String>,
    /// Accepted `iss` values (empty: not checked).
    pub issuer: Vec<String>,
}

/// `SUBSCRIBE_AUTH=hook`.
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// The hook.
    pub url: Url,
    /// How long it may take.
    pub timeout: Duration,
    /// How long an answer is reused (zero: never).
    pub cache: Duration,
}

/// Access-control settings.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// The mode.
    pub mode: AuthMode,
    /// Topics with these prefixes need no credentials.
    pub public_prefixes: Vec<String>,
    /// The cookie a token may come in.
    pub cookie: String,
    /// Whether `?token=` is accepted.
    pub allow_query_token: bool,
}

impl AccessConfig {
    /// Types the access settings.
    pub fn from_layered(layered: &Layered) -> Result<AccessConfig, ConfigError> {
        let mode_name = layered.get_with(&SUBSCRIBE_AUTH, |raw| match raw.to_ascii_lowercase().as_str() {
            "none" | "" => Some("none"),
            "jwt" => Some("jwt"),
            "hook" => Some("hook"),
            _ => None,
        })?;
        let jwt_settings = [&JWT_SECRET, &JWT_SECRET_FILE, &JWKS_FILE, &JWKS_URL, &JWT_AUDIENCE, &JWT_ISSUER];
        let hook_settings = [&SUBSCRIBE_AUTH_URL];
        let mode = match mode_name {
            "jwt" => {
                refuse_settings_of_another_mode(layered, "jwt", &hook_settings)?;
                AuthMode::Jwt(jwt_config(layered)?)
            }
            "hook" => {
                refuse_settings_of_another_mode(layered, "hook", &jwt_settings)?;
                AuthMode::Hook(HookConfig {
                    url: layered.get_with(&SUBSCRIBE_AUTH_URL, http_url)?,
                    timeout: layered.get_duration(
                        &SUBSCRIBE_AUTH_TIMEOUT,
                        Duration::from_millis(100)..=Duration::from_secs(30),
                    )?,
                    cache: layered
                        .get_duration(&SUBSCRIBE_AUTH_CACHE, Duration::ZERO..=Duration::from_secs(600))?,
                })
            }
            _ => {
                let mut all = jwt_settings.to_vec();
                all.extend(hook_settings);
                refuse_settings_of_another_mode(layered, "none", &all)?;
                AuthMode::None
            }
        };
        let public_prefixes = layered.get_with(&PUBLIC_TOPIC_PREFIXES, |raw| Some(parse_list(raw)))?;
        let cookie = layered.get_with(&AUTH_COOKIE, |raw| {
            let valid = (1..=64).contains(&raw.len())
                && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            valid.then(|| raw.to_owned())
        })?;
        let allow_query_token = layered.get_with(&ALLOW_QUERY_TOKEN, parse_bool)?;
        Ok(AccessConfig { mode, public_prefixes, cookie, allow_query_token })
    }

    /// Whether every subscriber may read every topic.
    pub fn is_open(&self) -> bool {
        matches!(self.mode, AuthMode::None)
    }
}

/// A setting of another mode that is set is an error: `JWT_SECRET` with
/// `SUBSCRIBE_AUTH=none` would look protected and be open.
fn refuse_settings_of_another_mode(
    layered: &Layered,
    mode: &str,
    others: &[&Setting],
) -> Result<(), ConfigError> {
    match others.iter().find(|setting| layered.get_optional(setting).is_some()) {
        None => Ok(()),
        Some(setting) => Err(ConfigError::Conflict {
            first: format!("{}={mode}", SUBSCRIBE_AUTH.name),
            second: format!("{}=(set)", setting.name),
            reason: format!(
                "{} is not used in this mode; set the mode it belongs to or remove it",
                setting.name
            ),
        }),
    }
}

fn jwt_config(layered: &Layered) -> Result<JwtConfig, ConfigError> {
    let mut keys = Vec::new();
    let secret = match (layered.get_optional(&JWT_SECRET), layered.get_optional(&JWT_SECRET_FILE)) {
        (Some(_), Some(path)) => {
            return Err(ConfigError::Conflict {
                first: format!("{}=(set)", JWT_SECRET.name),
                second: format!("{}={path}", JWT_SECRET_FILE.name),
                reason: "give the secret once".into(),
            });
        }
        (Some(secret), None) => Some((SecretString::from(secret), &JWT_SECRET, "(hidden)".to_owned())),
        (None, Some(path)) => {
            let text = read_file(&JWT_SECRET_FILE, &path)?;
            let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
            Some((SecretString::from(text.to_owned()), &JWT_SECRET_FILE, path))
        }
        (None, None) => None,
    };
    if let Some((secret, setting, shown)) = secret {
        let key = VerifyingKey::from_secret(&secret).map_err(|problem| ConfigError::Invalid {
            setting: setting.name.into(),
            value: shown,
            allowed: problem,
        })?;
        keys.push(key);
    }
    if let Some(path) = layered.get_optional(&JWKS_FILE) {
        let text = read_file(&JWKS_FILE, &path)?;
        let file_keys = keys_of_jwks(&text).map_err(|problem| ConfigError::Invalid {
            setting: JWKS_FILE.name.into(),
            value: path.clone(),
            allowed: problem,
        })?;
        keys.extend(file_keys);
    }
    let jwks_url = match layered.get_optional(&JWKS_URL) {
        None => None,
        Some(_) => Some(layered.get_with(&JWKS_URL, http_url)?),
    };
    if keys.is_empty() && jwks_url.is_none() {
        return Err(ConfigError::Invalid {
            setting: SUBSCRIBE_AUTH.name.into(),
            value: "jwt".into(),
            allowed: "a key: set JWT_SECRET, JWT_SECRET_FILE, JWKS_FILE or JWKS_URL".into(),
        });
    }
    Ok(JwtConfig {
        keys,
        jwks_url,
        jwks_refresh: layered
            .get_duration(&JWKS_REFRESH, Duration::from_secs(10)..=Duration::from_secs(86_400))?,
        audience: layered.get_with(&JWT_AUDIENCE, |raw| Some(parse_list(raw)))?,
        issuer: layered.get_with(&JWT_ISSUER, |raw| Some(parse_list(raw)))?,
    })
}

fn read_file(setting: &Setting, path: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Invalid {
        setting: setting.name.into(),
        value: path.to_owned(),
        allowed: format!("{} (cannot read it: {error})", setting.allowed),
    })
}

fn http_url(raw: &str) -> Option<Url> {
    Url::parse(raw).ok().filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
}
