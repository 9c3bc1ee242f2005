//! A writer for the Prometheus text exposition format (version 0.0.4): one
//! `# HELP` and `# TYPE` per family, then its samples, label values escaped.

use std::fmt::{Display, Write as _};

/// The content type of the format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only goes up (resets when the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets, a sum and a count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Text being written.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family. Every sample written after it until the next family must
    /// belong to it (for a histogram: `_bucket`, `_sum`, `_count`).
    pub(crate) fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(is_metric_name(name), "bad metric name {name}");
        let _ = writeln!(self.out, "# HELP {name} {}", escape(help, false));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// Writes one sample.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                debug_assert!(is_label_name(key), "bad label name {key}");
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(value, true));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The text.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// Escapes backslash and newline (and, in label values, the double quote).
fn escape(text: &str, quote: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// Microseconds as a decimal number of seconds, exactly (`1500` -> `0.0015`).
pub(crate) fn seconds(micros: u64) -> String {
    let (whole, frac) = (micros / 1_000_000, micros % 1_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    format!("{whole}.{frac:06}").trim_end_matches('0').to_owned()
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_help_type_and_escaped_labels() {
        let mut e = Exposition::default();
        e.family("x_total", Kind::Counter, "Things; a \\ and a\nnewline.");
        e.sample("x_total", &[("a", "q\"uote\\back\nline"), ("b", "plain")], 3);
        e.family("y", Kind::Gauge, "A gauge.");
        e.sample("y", &[], -1);
        assert_eq!(
            e.finish(),
            "# HELP x_total Things; a \\\\ and a\\nnewline.\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"uote\\\\back\\nline\",b=\"plain\"} 3\n\
             # HELP y A gauge.\n# TYPE y gauge\ny -1\n"
        );
    }

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(50), "0.00005");
        assert_eq!(seconds(1_500), "0.0015");
        assert_eq!(seconds(2_000_000), "2");
        assert_eq!(seconds(10_000_001), "10.000001");
    }

    #[test]
    fn names_are_checked() {
        assert!(is_metric_name("ferry_lag_records") && is_metric_name("a:b"));
        assert!(!is_metric_name("9x") && !is_metric_name("a-b") && !is_metric_name(""));
        assert!(is_label_name("pipeline") && !is_label_name("a:b"));
    }
}
