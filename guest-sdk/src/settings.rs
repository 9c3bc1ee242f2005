//! The pipeline's `[pipeline.settings]`: string keys and values the operator sets, read
//! by the processor with typed accessors and clear errors.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The settings a processor runs with.
///
/// ```
/// use ferry_sdk::Settings;
///
/// let settings = Settings::from_pairs([("output_topic", "commissions"), ("rate_percent", "5")]);
/// assert_eq!(settings.require("output_topic").unwrap(), "commissions");
/// assert_eq!(settings.parse::<u32>("rate_percent").unwrap(), Some(5));
/// assert_eq!(settings.parse_or("max_retries", 3u32).unwrap(), 3);
/// let missing = settings.require("region").unwrap_err();
/// assert_eq!(missing.to_string(), "setting `region` is required but the pipeline does not set it");
/// let invalid = Settings::from_pairs([("rate_percent", "five")]).parse::<u32>("rate_percent").unwrap_err();
/// assert!(invalid.to_string().starts_with("setting `rate_percent` = \"five\" is invalid"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

/// A setting that is missing or does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingError {
    /// The pipeline does not set this key.
    Missing {
        /// The key.
        key: String,
    },
    /// The value does not parse as the type asked for.
    Invalid {
        /// The key.
        key: String,
        /// The value as set.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingError::Missing { key } => {
                write!(f, "setting `{key}` is required but the pipeline does not set it")
            }
            SettingError::Invalid { key, value, reason } => {
                write!(f, "setting `{key}` = {value:?} is invalid: {reason}")
            }
        }
    }
}

impl std::error::Error for SettingError {}

impl From<SettingError> for String {
    fn from(error: SettingError) -> String {
        error.to_string()
    }
}

impl Settings {
    /// Settings made of these pairs (later keys win).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Settings { values: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The value of `key`, or an error naming it.
    pub fn require(&self, key: &str) -> Result<&str, SettingError> {
        self.get(key).ok_or_else(|| SettingError::Missing { key: key.to_owned() })
    }

    /// The value of `key` parsed as `T`, `None` if unset.
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, SettingError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.get(key)
            .map(|value| {
                value.trim().parse::<T>().map_err(|e| SettingError::Invalid {
                    key: key.to_owned(),
                    value: value.to_owned(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// The value of `key` parsed as `T`, or `default` if unset.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, SettingError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(self.parse(key)?.unwrap_or(default))
    }

    /// The value of `key` parsed as `T`, or an error if unset.
    pub fn parse_required<T>(&self, key: &str) -> Result<T, SettingError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.parse(key)?.ok_or_else(|| SettingError::Missing { key: key.to_owned() })
    }

    /// Every setting, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether no setting is set.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The settings of this component's pipeline, as the host gives them (read once
    /// per instance).
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn from_host() -> Self {
        Settings::from_pairs(crate::__bindings::ferry::processor::settings::entries())
    }
}
