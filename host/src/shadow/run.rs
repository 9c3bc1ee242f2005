//! Running one batch through the shadow version, after the live version ran it, and
//! comparing the two.
//!
//! The shadow gets the batch the live version got, in its own instance with its own
//! limits. What it emits stays in this module: nothing here publishes, dead-letters,
//! commits or joins a transaction. With keyed state it is lent the partition's store
//! as it was before the batch (the live version's writes set aside meanwhile), and its
//! own writes are compared and then dropped, so the live state never sees them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ShadowConfig;
use super::budget::Budget;
use super::compare::{Output, Rules, Side, Tally, Verdict, Write};
use crate::config::PipelineConfig;
use crate::pipeline::run::{BatchRun, run_batch};
use crate::sandbox::{
    Batch, Emitted, FaultKind, Grants, Outcome, ProcessorComponent, ProcessorInstance, Provisions, Sandbox, StateBatch,
    TenantLog,
};

/// One worker's shadow: its instance, its time budget, and how it compares.
pub(crate) struct ShadowRunner {
    instance: ProcessorInstance,
    budget: Budget,
    rules: Rules,
}

impl ShadowRunner {
    /// A runner for `component`, the shadow of `pipeline`'s worker `worker`. Its
    /// guest logs name the pipeline `<name>.shadow`; it may not call out (no HTTP).
    pub(crate) fn new(
        sandbox: Sandbox,
        component: Arc<ProcessorComponent>,
        pipeline: &PipelineConfig,
        config: &ShadowConfig,
        worker: Option<usize>,
    ) -> Self {
        let name = format!("{}.shadow", pipeline.name);
        let live = pipeline.provisions();
        let provisions = Provisions {
            grants: Arc::new(Grants { http: None, ..(*live.grants).clone() }),
            settings: live.settings,
            log: TenantLog::new(&name, pipeline.logs),
            http_meter: Arc::default(),
        };
        let mut limits = pipeline.limits();
        if let Some(ms) = config.time_per_batch_ms {
            limits.time_per_batch_ms = ms;
        }
        let instance = ProcessorInstance::new(sandbox, component, &name, provisions, limits).of_worker(worker);
        Self { instance, budget: Budget::new(config.max_time_share), rules: config.rules() }
    }

    /// The version it runs.
    pub(crate) fn component(&self) -> &Arc<ProcessorComponent> {
        self.instance.component()
    }

    /// Tells the shadow's guest that a partition is gone (as the live one is told).
    pub(crate) fn revoked(&mut self, topic: &str, partition: i32) {
        self.instance.revoked(topic, partition);
    }

    /// Runs `batch` (records at `offsets`) through the shadow after the live version
    /// ran it in `live_took`, with the result `live`, unless the shadow is over its
    /// share of time. `live.state` is lent to the shadow as it was before the batch
    /// and comes back with the live writes on it, as it was. Returns the batch's
    /// comparison.
    pub(crate) fn follow(
        &mut self,
        batch: &mut Batch,
        offsets: &[i64],
        live: &mut BatchRun,
        live_took: Duration,
    ) -> Tally {
        let mut tally = Tally::default();
        if !self.budget.live_ran(live_took) {
            tally.skip_batch(offsets.len() as u64);
            return tally;
        }
        let (lent, aside) = match live.state.take() {
            Some(lent) => {
                let (store, aside) = lent.set_aside();
                (Some(StateBatch::new(store, aside.limits())), Some(aside))
            }
            None => (None, None),
        };
        let started = Instant::now();
        let mut shadow = run_batch(&mut self.instance, batch, offsets, lent);
        self.budget.shadow_ran(started.elapsed());
        for fault in &shadow.faults {
            tracing::debug!(topic = %batch.topic, partition = batch.partition, %fault, "shadow version fault");
        }
        if shadow.faults.iter().any(|f| f.kind() == FaultKind::Timeout) {
            tally.shadow_timeouts += 1;
        }
        let mut writes = None;
        if let Some(aside) = aside {
            let returned = shadow.state.take().expect("a batch run hands its state back");
            let theirs: Vec<Write> = returned.pending().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
            let ours: Vec<Write> = aside.pending().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
            // The shadow's writes are dropped here; the store goes back as lent.
            let (store, _) = returned.finish(false);
            live.state = Some(aside.resume(store));
            writes = Some((ours, theirs));
        }
        let topic = batch.topic.as_str();
        let ours = sides(offsets, &live.outcomes, &live.outputs);
        let theirs = sides(offsets, &shadow.outcomes, &shadow.outputs);
        for ((&offset, a), b) in offsets.iter().zip(&ours).zip(&theirs) {
            tally.record(&self.rules, (topic, batch.partition, offset), a, b);
        }
        // State writes count only for a batch that finished on both sides (a
        // batch with records to try again keeps none of its writes).
        let finished =
            |sides: &[Side]| sides.iter().all(|s| matches!(s.verdict, Verdict::Processed | Verdict::Reject(_)));
        if let Some((ours_w, theirs_w)) = writes
            && finished(&ours)
            && finished(&theirs)
        {
            let at = (topic, batch.partition, offsets[0], offsets[offsets.len() - 1]);
            tally.state(&self.rules, at, &ours_w, &theirs_w);
        }
        tally
    }
}

/// Each record's verdict and outputs, in batch order. Outputs of a record not
/// processed are never published, so they are not compared; outputs on behalf of the
/// whole batch count for its last record.
fn sides(offsets: &[i64], outcomes: &[Outcome], outputs: &[Emitted]) -> Vec<Side> {
    let last = offsets[offsets.len() - 1];
    let mut by_offset: BTreeMap<i64, Vec<Output>> = BTreeMap::new();
    for emitted in outputs {
        let r = &emitted.record;
        by_offset.entry(emitted.source.unwrap_or(last)).or_default().push(Output {
            topic: r.topic.clone(),
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r.headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect(),
        });
    }
    offsets
        .iter()
        .zip(outcomes)
        .map(|(offset, outcome)| {
            let verdict = verdict(outcome);
            let outputs =
                if verdict == Verdict::Processed { by_offset.remove(offset).unwrap_or_default() } else { Vec::new() };
            Side { verdict, outputs }
        })
        .collect()
}

fn verdict(outcome: &Outcome) -> Verdict {
    match outcome {
        Outcome::Processed => Verdict::Processed,
        Outcome::Retry(why) => Verdict::Retry(why.clone()),
        Outcome::Reject(why) => Verdict::Reject(why.clone()),
        // The host's trouble says nothing of the version.
        Outcome::Fault(fault) if fault.is_the_hosts() => Verdict::Unknown,
        Outcome::Fault(fault) => Verdict::Fault(fault.kind().to_string()),
        Outcome::Suspect | Outcome::Untried => Verdict::Unknown,
    }
}
