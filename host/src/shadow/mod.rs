//! Shadow deploys: a candidate version runs the batches the live version ran, after
//! it, in its own instance; what it would have written is compared with what the live
//! version wrote, and never leaves the host.
//!
//! | module | concern |
//! |---|---|
//! | [`compare`] | the per-record comparison and its tally (pure) |
//! | [`budget`] | the share of batch time the shadow may take, and when it skips |
//! | `run` | running one batch through the shadow after the live version, and comparing |
//!
//! The candidate, its tally and the decisions about it live in the pipeline's
//! [`crate::registry::ProcessorSlot`]; the pipeline's workers run it.

pub mod budget;
pub mod compare;
pub(crate) mod run;

use serde::Deserialize;

pub use compare::{Difference, OutputOrder, Rules, Tally};

/// `[pipelines.shadow]`: the pipeline accepts shadow versions, compared this way.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// Compare a record's outputs `ordered` (the default) or as a `multiset`.
    #[serde(default)]
    pub outputs: OutputOrder,
    /// Header names left out of the comparison (timestamps, trace ids).
    #[serde(default)]
    pub ignore_headers: Vec<String>,
    /// Fields of JSON values left out of the comparison, as dotted paths (`meta.ts`).
    #[serde(default)]
    pub ignore_fields: Vec<String>,
    /// The share of the live version's batch time the shadow may take, over the
    /// run: past it, the shadow skips batches (counted) until it is back under.
    #[serde(default = "default_max_time_share")]
    pub max_time_share: f64,
    /// The shadow's own wall-clock limit per batch, in ms (default: the pipeline's).
    #[serde(default)]
    pub time_per_batch_ms: Option<u64>,
    /// How many differences are kept in full for the report.
    #[serde(default = "default_keep_differences")]
    pub keep_differences: usize,
    /// Promote the shadow on its own once this many records compared equal with no
    /// difference.
    #[serde(default)]
    pub promote_after: Option<u64>,
    /// Discard the shadow on its own once this many records (or state batches)
    /// differed.
    #[serde(default)]
    pub discard_after: Option<u64>,
}

fn default_max_time_share() -> f64 {
    1.0
}

fn default_keep_differences() -> usize {
    20
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            outputs: OutputOrder::default(),
            ignore_headers: Vec::new(),
            ignore_fields: Vec::new(),
            max_time_share: default_max_time_share(),
            time_per_batch_ms: None,
            keep_differences: default_keep_differences(),
            promote_after: None,
            discard_after: None,
        }
    }
}

impl ShadowConfig {
    /// Checks the values; the error names the field under `at`.
    pub fn validate(&self, at: &str) -> anyhow::Result<()> {
        if !(self.max_time_share > 0.0 && self.max_time_share <= 100.0) {
            anyhow::bail!("{at}.max_time_share: must be above 0 and at most 100, got {}", self.max_time_share);
        }
        if let Some(ms) = self.time_per_batch_ms
            && !(1..=600_000).contains(&ms)
        {
            anyhow::bail!("{at}.time_per_batch_ms: must be between 1 and 600000, got {ms}");
        }
        if self.keep_differences > 1000 {
            anyhow::bail!("{at}.keep_differences: must be at most 1000, got {}", self.keep_differences);
        }
        for (field, n) in [("promote_after", self.promote_after), ("discard_after", self.discard_after)] {
            if n == Some(0) {
                anyhow::bail!("{at}.{field}: must be at least 1");
            }
        }
        if self.ignore_fields.iter().any(|f| f.is_empty() || f.split('.').any(str::is_empty)) {
            anyhow::bail!("{at}.ignore_fields: each is a dotted path of field names, like `meta.ts`");
        }
        Ok(())
    }

    /// The comparison rules.
    pub fn rules(&self) -> Rules {
        Rules {
            order: self.outputs,
            ignore_headers: self.ignore_headers.clone(),
            ignore_fields: self.ignore_fields.clone(),
            keep: self.keep_differences,
        }
    }
}
