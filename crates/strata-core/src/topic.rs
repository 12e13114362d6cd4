//! Topic names and per-topic configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::limits::{DEFAULT_DEDUP_WINDOW_MS, MAX_DEDUP_WINDOW_MS, MAX_TOPIC_NAME_LEN};

/// Why a topic name is refused (INVALID_TOPIC_NAME).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name is {0} characters long, the limit is {MAX_TOPIC_NAME_LEN}")]
    TooLong(usize),
    #[error("topic name '{0}' is reserved")]
    Reserved(String),
    #[error("topic name contains '{0}'; use only [a-zA-Z0-9._-]")]
    BadCharacter(char),
}

/// Why topic settings are refused (INVALID_CONFIG).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicConfigError {
    #[error("unknown topic config '{0}'; known: {RETENTION_MS}, {RETENTION_BYTES}, {DEDUP_WINDOW}")]
    UnknownKey(String),
    #[error("{key}={value}: {reason}; use milliseconds, a duration like 10m, or -1")]
    BadDuration { key: String, value: String, reason: String },
    #[error("{key}={value}: use a byte count or -1")]
    BadBytes { key: String, value: String },
    #[error("{DEDUP_WINDOW}=-1: the window must be bounded; use up to {hours} hours", hours = MAX_DEDUP_WINDOW_MS / 3_600_000)]
    UnboundedWindow,
    #[error("{DEDUP_WINDOW}={value}: the longest window is {hours} hours", hours = MAX_DEDUP_WINDOW_MS / 3_600_000)]
    WindowTooLong { value: String },
}

/// Checks a topic name: 1..=MAX_TOPIC_NAME_LEN characters from
/// `[a-zA-Z0-9._-]`, and not `.` or `..` (they would be confusing in paths
/// and tools).
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(TopicNameError::TooLong(name.len()));
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Reserved(name.to_string()));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(TopicNameError::BadCharacter(bad));
    }
    Ok(())
}

/// Per-topic settings, parsed and validated from `key=value` strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Delete batches whose newest timestamp is older than this. None: keep forever.
    pub retention_ms: Option<u64>,
    /// Delete the oldest batches while the partition holds more than this. None: no bound.
    pub retention_bytes: Option<u64>,
    /// How long a record's idempotency key is remembered: a record with a
    /// key stored within this window is not stored again.
    pub dedup_window_ms: u64,
}

pub use crate::limits::DEFAULT_RETENTION_MS;

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            retention_ms: Some(DEFAULT_RETENTION_MS),
            retention_bytes: None,
            dedup_window_ms: DEFAULT_DEDUP_WINDOW_MS,
        }
    }
}

pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const DEDUP_WINDOW: &str = "dedup.window";

impl TopicConfig {
    /// Parses `key=value` settings over the defaults. `-1` means unbounded.
    /// Durations accept plain milliseconds or human units ("10m", "7days").
    pub fn parse(settings: &BTreeMap<String, String>) -> Result<TopicConfig, TopicConfigError> {
        TopicConfig::default().with_settings(settings)
    }

    /// This config with `settings` applied over it (keys not named keep
    /// their value), validated as `parse` validates: what a topic alter
    /// stores. On error nothing is returned, so nothing half-applied exists.
    pub fn with_settings(&self, settings: &BTreeMap<String, String>) -> Result<TopicConfig, TopicConfigError> {
        let mut config = self.clone();
        for (key, value) in settings {
            let value = value.trim();
            match key.as_str() {
                RETENTION_MS => config.retention_ms = parse_duration_ms(key, value)?,
                RETENTION_BYTES => config.retention_bytes = parse_bytes(key, value)?,
                DEDUP_WINDOW => {
                    let window = parse_duration_ms(key, value)?.ok_or(TopicConfigError::UnboundedWindow)?;
                    if window > MAX_DEDUP_WINDOW_MS {
                        return Err(TopicConfigError::WindowTooLong { value: value.to_string() });
                    }
                    config.dedup_window_ms = window;
                }
                other => return Err(TopicConfigError::UnknownKey(other.to_string())),
            }
        }
        Ok(config)
    }

    /// The settings as strings, for display; the inverse of `parse`.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let show = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
        BTreeMap::from([
            (RETENTION_MS.to_string(), show(self.retention_ms)),
            (RETENTION_BYTES.to_string(), show(self.retention_bytes)),
            (DEDUP_WINDOW.to_string(), self.dedup_window_ms.to_string()),
        ])
    }
}

fn parse_duration_ms(key: &str, value: &str) -> Result<Option<u64>, TopicConfigError> {
    if value == "-1" {
        return Ok(None);
    }
    if let Ok(ms) = value.parse::<u64>() {
        return Ok(Some(ms));
    }
    humantime::parse_duration(value).map(|d| Some(d.as_millis() as u64)).map_err(|e| TopicConfigError::BadDuration {
        key: key.into(),
        value: value.into(),
        reason: e.to_string(),
    })
}

fn parse_bytes(key: &str, value: &str) -> Result<Option<u64>, TopicConfigError> {
    if value == "-1" {
        return Ok(None);
    }
    value.parse::<u64>().map(Some).map_err(|_| TopicConfigError::BadBytes { key: key.into(), value: value.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
    }

    #[test]
    fn configs() {
        let mut m = BTreeMap::new();
        assert_eq!(TopicConfig::parse(&m).unwrap(), TopicConfig::default());
        m.insert("retention.ms".into(), "10m".into());
        m.insert("retention.bytes".into(), "1000".into());
        let c = TopicConfig::parse(&m).unwrap();
        assert_eq!(c.retention_ms, Some(600_000));
        assert_eq!(c.retention_bytes, Some(1000));
        assert_eq!(TopicConfig::parse(&c.to_map()).unwrap(), c);
        m.insert("retention.ms".into(), "-1".into());
        assert_eq!(TopicConfig::parse(&m).unwrap().retention_ms, None);
        m.insert("nope".into(), "1".into());
        assert!(TopicConfig::parse(&m).unwrap_err().to_string().contains("unknown topic config"));
        let bad = BTreeMap::from([("retention.bytes".to_string(), "lots".to_string())]);
        assert!(TopicConfig::parse(&bad).is_err());
        let window = |v: &str| TopicConfig::parse(&BTreeMap::from([("dedup.window".to_string(), v.to_string())]));
        assert_eq!(window("10m").unwrap().dedup_window_ms, 600_000);
        assert_eq!(window("24h").unwrap().dedup_window_ms, 86_400_000);
        assert!(window("8days").is_err());
        assert!(window("-1").is_err());
        assert_eq!(TopicConfig::default().dedup_window_ms, 120_000);
    }

    #[test]
    fn settings_apply_over_a_config_and_keep_the_keys_not_named() {
        let base = TopicConfig::parse(&BTreeMap::from([("retention.bytes".to_string(), "1000".to_string())])).unwrap();
        let changed = base.with_settings(&BTreeMap::from([("retention.ms".to_string(), "1h".to_string())])).unwrap();
        assert_eq!(changed.retention_ms, Some(3_600_000));
        assert_eq!(changed.retention_bytes, Some(1000), "a key not named keeps its value, not the default");
        assert_eq!(changed.dedup_window_ms, base.dedup_window_ms);
        assert!(base.with_settings(&BTreeMap::from([("nope".to_string(), "1".to_string())])).is_err());
        assert!(base.with_settings(&BTreeMap::from([("dedup.window".to_string(), "8days".to_string())])).is_err());
    }
}
