//! The pipeline a processor runs in, read from a ferry config file (`ferry.toml`), so
//! that [`Harness::from_config`](crate::testing::Harness::from_config) grants,
//! limits and configures exactly what the host will. Native only.
//!
//! Only the fields the harness needs are read; the host validates the whole file
//! (`ferry test --config` and `ferry run` say what is wrong with it).

use std::path::Path;

use toml::{Table, Value};

/// What one `[[pipeline]]` of a config gives its processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PipelineConfig {
    /// `output_topics`: the `output` capability, for these topics only.
    pub(crate) output_topics: Vec<String>,
    /// `allow_log` (default true): the `log` capability.
    pub(crate) allow_log: bool,
    /// Whether it has a `[pipeline.state]` section: the `state` capability.
    pub(crate) state: bool,
    /// `[pipeline.http]` `allow`: the `http` capability, to these URLs only; `None`
    /// without the section.
    pub(crate) http_allow: Option<Vec<String>>,
    /// `[pipeline.settings]`.
    pub(crate) settings: Vec<(String, String)>,
    /// `[pipeline.limits]` `max_outputs_per_batch`, if set.
    pub(crate) max_outputs_per_batch: Option<usize>,
    /// `[pipeline.limits]` `max_output_bytes`, if set.
    pub(crate) max_output_bytes: Option<usize>,
    /// `[pipeline.limits]` `output_bytes_per_batch`, if set.
    pub(crate) output_bytes_per_batch: Option<usize>,
}

/// Reads the pipeline named `name` from the config file at `path`.
pub(crate) fn read(path: &Path, name: &str) -> Result<PipelineConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("failed to read {}: {e}", path.display()))?;
    parse(&text, name).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads the pipeline named `name` from config text.
pub(crate) fn parse(text: &str, name: &str) -> Result<PipelineConfig, String> {
    let table: Table = text.parse().map_err(|e| format!("not a valid ferry config: {e}"))?;
    let pipelines = match table.get("pipeline") {
        Some(Value::Array(pipelines)) => pipelines.as_slice(),
        Some(_) => return Err("`pipeline` must be an array of tables ([[pipeline]])".into()),
        None => &[],
    };
    let named = |p: &&Value| p.get("name").and_then(Value::as_str) == Some(name);
    let Some(pipeline) = pipelines.iter().find(named) else {
        let names: Vec<&str> = pipelines.iter().filter_map(|p| p.get("name")?.as_str()).collect();
        return Err(if names.is_empty() {
            format!("no [[pipeline]] named `{name}`: the file defines none")
        } else {
            format!("no [[pipeline]] named `{name}`; it defines {}", quoted(&names))
        });
    };
    let at = format!("pipeline `{name}`");
    let output_topics = match pipeline.get("output_topics") {
        None => Vec::new(),
        Some(Value::Array(topics)) => topics
            .iter()
            .map(|t| t.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("{at}.output_topics must be a list of topic names"))?,
        Some(_) => return Err(format!("{at}.output_topics must be a list of topic names")),
    };
    let allow_log = match pipeline.get("allow_log") {
        None => true,
        Some(Value::Boolean(allow)) => *allow,
        Some(_) => return Err(format!("{at}.allow_log must be true or false")),
    };
    let settings = match pipeline.get("settings") {
        None => Vec::new(),
        Some(Value::Table(settings)) => settings
            .iter()
            .map(|(key, value)| match value {
                Value::String(value) => Ok((key.clone(), value.clone())),
                _ => Err(format!(
                    "{at}.settings.{key} must be a string (settings are strings; the processor parses them)"
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(format!("{at}.settings must be a table of strings")),
    };
    let http_allow = match pipeline.get("http") {
        None => None,
        Some(Value::Table(http)) => Some(match http.get("allow") {
            None => Vec::new(),
            Some(Value::Array(rules)) => rules
                .iter()
                .map(|r| r.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("{at}.http.allow must be a list of scheme://host:port"))?,
            Some(_) => return Err(format!("{at}.http.allow must be a list of scheme://host:port")),
        }),
        Some(_) => return Err(format!("{at}.http must be a table")),
    };
    let limits = match pipeline.get("limits") {
        None => None,
        Some(Value::Table(limits)) => Some(limits),
        Some(_) => return Err(format!("{at}.limits must be a table")),
    };
    let limit = |field: &str| -> Result<Option<usize>, String> {
        match limits.and_then(|l| l.get(field)) {
            None => Ok(None),
            Some(Value::Integer(n)) => {
                usize::try_from(*n).map(Some).map_err(|_| format!("{at}.limits.{field} must not be negative"))
            }
            Some(_) => Err(format!("{at}.limits.{field} must be a whole number")),
        }
    };
    Ok(PipelineConfig {
        output_topics,
        allow_log,
        state: pipeline.get("state").is_some(),
        http_allow,
        settings,
        max_outputs_per_batch: limit("max_outputs_per_batch")?,
        max_output_bytes: limit("max_output_bytes")?,
        output_bytes_per_batch: limit("output_bytes_per_batch")?,
    })
}

fn quoted(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
        brokers = "127.0.0.1:9092"
        [[pipeline]]
        name = "other"
        inputs = ["a"]
        group = "g"
        component = "x.wasm"

        [[pipeline]]
        name = "urgent"
        inputs = ["messages"]
        group = "g"
        component = "x.wasm"
        output_topics = ["urgent", "audit"]
        allow_log = false
        [pipeline.settings]
        output_topic = "urgent"
        [pipeline.limits]
        memory_mib = 32
        max_outputs_per_batch = 10
    "#;

    #[test]
    fn reads_grants_settings_and_limits() {
        let p = parse(CONFIG, "urgent").unwrap();
        assert_eq!(p.output_topics, ["urgent", "audit"]);
        assert!(!p.allow_log);
        assert_eq!(p.settings, [("output_topic".to_owned(), "urgent".to_owned())]);
        assert_eq!((p.max_outputs_per_batch, p.max_output_bytes, p.output_bytes_per_batch), (Some(10), None, None));
        let other = parse(CONFIG, "other").unwrap();
        assert!(other.output_topics.is_empty() && other.allow_log && other.settings.is_empty());
        assert_eq!(other.http_allow, None);
        let http = CONFIG
            .replace("[pipeline.limits]", "[pipeline.http]\nallow = [\"http://127.0.0.1:8089\"]\n[pipeline.limits]");
        assert_eq!(parse(&http, "urgent").unwrap().http_allow, Some(vec!["http://127.0.0.1:8089".to_owned()]));
    }

    #[test]
    fn errors_name_the_pipeline_and_the_field() {
        assert_eq!(parse(CONFIG, "nope").unwrap_err(), "no [[pipeline]] named `nope`; it defines `other`, `urgent`");
        assert_eq!(parse("brokers = \"b\"", "x").unwrap_err(), "no [[pipeline]] named `x`: the file defines none");
        let bad = CONFIG.replace("output_topic = \"urgent\"", "output_topic = 3");
        assert!(
            parse(&bad, "urgent").unwrap_err().starts_with("pipeline `urgent`.settings.output_topic must be a string")
        );
        let bad = CONFIG.replace("allow_log = false", "allow_log = \"no\"");
        assert_eq!(parse(&bad, "urgent").unwrap_err(), "pipeline `urgent`.allow_log must be true or false");
        let bad = CONFIG.replace("max_outputs_per_batch = 10", "max_outputs_per_batch = -1");
        assert_eq!(
            parse(&bad, "urgent").unwrap_err(),
            "pipeline `urgent`.limits.max_outputs_per_batch must not be negative"
        );
        assert!(parse("[[pipeline]\n", "x").unwrap_err().starts_with("not a valid ferry config"));
    }
}
