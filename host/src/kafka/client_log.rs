//! Errors that repeat (a broker that is down, a partition that keeps failing) are
//! logged when they start, then summarized at most every [`SUMMARY_EVERY`] while
//! they last, instead of once per retry or per poll.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often a repeating error is summarized.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// Repeating errors of one client, by their text.
#[derive(Debug, Default)]
pub struct RepeatedErrors {
    seen: HashMap<String, Seen>,
}

#[derive(Debug)]
struct Seen {
    since_summary: u64,
    summarized_at: Instant,
}

impl RepeatedErrors {
    /// A consumer error of `pipeline`: logged the first time, then counted.
    pub fn consumer_error(&mut self, pipeline: &str, error: &str) {
        self.report(error, Instant::now(), |repeats| match repeats {
            None => tracing::warn!(pipeline, %error, "consumer error"),
            Some(n) => tracing::warn!(pipeline, %error, repeats = n, "consumer error, still happening"),
        });
    }

    /// Logs through `log`: `None` for the first occurrence, `Some(n)` for a summary of
    /// `n` repeats since the last line.
    fn report(&mut self, error: &str, now: Instant, log: impl FnOnce(Option<u64>)) {
        match self.seen.get_mut(error) {
            None => {
                self.seen.insert(error.to_owned(), Seen { since_summary: 0, summarized_at: now });
                log(None);
            }
            Some(seen) => {
                seen.since_summary += 1;
                if now.saturating_duration_since(seen.summarized_at) >= SUMMARY_EVERY {
                    log(Some(std::mem::take(&mut seen.since_summary)));
                    seen.summarized_at = now;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_then_summaries() {
        let mut errors = RepeatedErrors::default();
        let start = Instant::now();
        let mut lines = Vec::new();
        for second in [0, 1, 2, 31, 32, 70] {
            errors.report("down", start + Duration::from_secs(second), |n| lines.push((second, n)));
        }
        errors.report("other", start, |n| lines.push((0, n)));
        assert_eq!(lines, [(0, None), (31, Some(3)), (70, Some(2)), (0, None)]);
    }
}
