//! What every part of the configuration reports a bad value with, and the duration parser
//! they share. A leaf: `config/mod.rs` and the section files (`service.rs`, `notify.rs`,
//! `report.rs`) use it, and it uses none of them, so they do not import each other back.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read or parsed as TOML.
    Source(String),
    /// A key has the wrong type, is unknown, or is missing.
    Shape { key: String, message: String },
    /// A value is well-typed but not allowed.
    Invalid {
        key: String,
        value: String,
        allowed: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Source(m) => write!(f, "config error: {m}"),
            ConfigError::Shape { key, message } => {
                write!(f, "config error at `{key}`: {message}")
            }
            ConfigError::Invalid {
                key,
                value,
                allowed,
            } => write!(
                f,
                "config error at `{key}`: invalid value {value}: {allowed}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn invalid(
    key: impl Into<String>,
    value: impl fmt::Debug,
    allowed: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: format!("{value:?}"),
        allowed: allowed.into(),
    }
}

const DURATION_HELP: &str = "a duration such as 90s, 15m, 4h or 30d";

pub(crate) fn parse_duration(key: &str, text: &str) -> Result<i64, ConfigError> {
    let d = humantime::parse_duration(text)
        .map_err(|e| invalid(key, text, format!("expected {DURATION_HELP} ({e})")))?;
    i64::try_from(d.as_millis()).map_err(|_| invalid(key, text, "duration is too long"))
}

pub(crate) fn positive_duration(key: &str, text: &str) -> Result<i64, ConfigError> {
    let ms = parse_duration(key, text)?;
    if ms <= 0 {
        return Err(invalid(
            key,
            text,
            format!("expected {DURATION_HELP}, greater than 0"),
        ));
    }
    Ok(ms)
}
