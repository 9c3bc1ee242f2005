//! `ferry test`: a component on sample records, in the real sandbox, before any
//! deploy.
//!
//! The component is loaded exactly as a host loads it for the pipeline (the same
//! engine settings, grant checks, limits and settings, the self-test first), then
//! given the records in batches as the host would: consecutive records of one
//! partition, one record per batch unless `--batch-size` says otherwise (so every
//! log line and fault belongs to one record). One instance serves every batch, and
//! a fault throws it away, as on a host.
//!
//! The report on stdout is deterministic (no times, no digests), so it can be kept
//! as a golden file (`--expect`): for each record its outcome, the outputs the host
//! would publish (and those it would drop), its log lines and its fault. A record
//! that faults in a batch of several is run again alone to find which one it was, as
//! the host isolates a poison record. Retries are shown, not repeated.
//!
//! A processor that calls HTTP services makes its requests for real, under the
//! pipeline's `[pipeline.http]` grants and budgets: the report shows each one
//! (method, URL, status and body bytes, or why it got no answer) under its record,
//! and stderr the same with its time.
//!
//! A processor with keyed state gets an in-memory store per input partition, empty
//! or from `--state`, and the report shows each record's (or batch's) state changes.
//! As on a host, a batch's writes take effect only when every record of it finished
//! (processed or rejected); otherwise they are shown as dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};

use super::records::{self, SampleRecord};
use super::state_file;
use crate::config::Config;
use crate::sandbox::capability::http::{HttpMeter, SentRequest};
use crate::sandbox::{
    Batch, Capability, Emitted, GuestFault, GuestLine, Limits, Outcome, OutputUsed, ProcessorComponent,
    ProcessorInstance, Provisions, Sandbox, SandboxSettings, StateBatch, TenantLog, default_cache_dir, short,
};

/// Options of `ferry test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The component (.wasm). Without it: the `component` of the pipeline in --config.
    pub component: Option<PathBuf>,
    /// Sample records, one JSON object per line: key, value, headers, partition,
    /// offset, timestamp (docs/tenants.md describes the format).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// A ferry config file: run with its pipeline's grants, limits and settings.
    /// Without it: the host's default limits, `log` granted, and the topics of
    /// --allow-topic.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The pipeline of --config (needed when it has several).
    #[arg(long, requires = "config")]
    pub pipeline: Option<String>,
    /// A setting, over the pipeline's (repeatable).
    #[arg(long = "setting", value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub settings: Vec<(String, String)>,
    /// Without --config: a topic the processor may emit to (repeatable).
    #[arg(long = "allow-topic", value_name = "TOPIC", conflicts_with = "config")]
    pub allow_topics: Vec<String>,
    /// Most records per batch. With more than 1, log lines belong to the batch.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// A golden file: the run fails when its report differs from this file.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Write the report to the --expect file instead of comparing with it.
    #[arg(long, requires = "expect")]
    pub update_expect: bool,
    /// The keyed state the processor starts with: a JSON document of each input
    /// partition's keys and values (docs/tenants.md describes it). Without it: empty.
    #[arg(long = "state", value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Write the keyed state as the run left it to this file (the --state format).
    #[arg(long, value_name = "FILE")]
    pub state_out: Option<PathBuf>,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

/// Everything a pipeline gives its processor, and where that came from.
struct Setup {
    pipeline: String,
    component: PathBuf,
    default_topic: String,
    sandbox: SandboxSettings,
    grants: crate::sandbox::Grants,
    limits: Limits,
    settings: BTreeMap<String, String>,
    /// `--config`, for messages.
    config: Option<PathBuf>,
}

impl Setup {
    fn from_args(args: &TestArgs) -> anyhow::Result<Self> {
        let mut setup = match &args.config {
            Some(path) => {
                let config = Config::load(path)?;
                let pipeline = match &args.pipeline {
                    Some(name) => config.pipelines.iter().find(|p| &p.name == name).with_context(|| {
                        format!("{} has no pipeline `{name}`; it has {}", path.display(), names(&config))
                    })?,
                    None if config.pipelines.len() == 1 => &config.pipelines[0],
                    None => bail!(
                        "{} has several pipelines ({}): say which with --pipeline",
                        path.display(),
                        names(&config)
                    ),
                };
                let mut sandbox = config.sandbox_settings();
                sandbox.max_instances = 4;
                Setup {
                    pipeline: pipeline.name.clone(),
                    component: pipeline.component.clone(),
                    default_topic: pipeline.inputs[0].clone(),
                    sandbox,
                    grants: pipeline.grants(),
                    limits: pipeline.limits(),
                    settings: pipeline.settings.clone(),
                    config: Some(path.clone()),
                }
            }
            None => Setup {
                pipeline: "test".to_owned(),
                component: PathBuf::new(),
                default_topic: "input".to_owned(),
                sandbox: SandboxSettings { max_instances: 4, cache_dir: default_cache_dir(), ..Default::default() },
                grants: crate::sandbox::Grants {
                    output_topics: args.allow_topics.iter().cloned().collect(),
                    log: true,
                    // Kept in memory, under the default limits.
                    state: true,
                    // Without a config, `ferry test` grants no network.
                    http: None,
                },
                limits: Limits::default(),
                settings: BTreeMap::new(),
                config: None,
            },
        };
        match (&args.component, &setup.config) {
            (Some(component), _) => setup.component = component.clone(),
            (None, Some(_)) => {}
            (None, None) => bail!("give the component to test, or --config with the pipeline that runs it"),
        }
        setup.settings.extend(args.settings.iter().cloned());
        Ok(setup)
    }

    /// How the component runs, for the person reading stderr.
    fn describe(&self, component: &ProcessorComponent) -> String {
        let mut text = format!(
            "ferry test: {} (sha256:{}, {} bytes) as pipeline `{}`",
            self.component.display(),
            short(component.digest()),
            component.size(),
            self.pipeline
        );
        if let Some(config) = &self.config {
            text += &format!(" of {}", config.display());
        }
        let topics: Vec<&str> = self.grants.output_topics.iter().map(String::as_str).collect();
        let outputs =
            if topics.is_empty() { "no output topic".to_owned() } else { format!("outputs to {}", topics.join(", ")) };
        let log = if self.grants.log { "log allowed" } else { "no log" };
        text += &format!(
            "\n  grants: {outputs}; {log}\n  limits: {} MiB of memory, {} ms per batch, {} outputs per batch",
            self.limits.memory_bytes >> 20,
            self.limits.time_per_batch_ms,
            self.limits.output.max_records
        );
        if self.grants.state && component.capabilities().contains(&Capability::State) {
            let state = &self.limits.state;
            text += &format!(
                "\n  state: {} KiB per partition, keys up to {} bytes, values up to {} bytes, {} writes per batch",
                state.partition_bytes >> 10,
                state.max_key_bytes,
                state.max_value_bytes,
                state.writes_per_batch
            );
        }
        if let Some(http) = self.grants.http.as_ref().filter(|_| component.capabilities().contains(&Capability::Http)) {
            let allow: Vec<String> = http.allow.iter().map(ToString::to_string).collect();
            let l = &http.limits;
            text += &format!(
                "\n  http: to {}; {} requests and {} KiB per batch, {} at once, {} ms each",
                allow.join(", "),
                l.requests_per_batch,
                l.bytes_per_batch >> 10,
                l.concurrent_requests,
                l.request_timeout_ms
            );
        }
        if !self.settings.is_empty() {
            let settings: Vec<String> = self.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
            text += &format!("\n  settings: {}", settings.join(", "));
        }
        text
    }
}

fn names(config: &Config) -> String {
    config.pipelines.iter().map(|p| format!("`{}`", p.name)).collect::<Vec<_>>().join(", ")
}

/// Runs `ferry test`.
pub(crate) fn run(args: TestArgs) -> anyhow::Result<()> {
    let setup = Setup::from_args(&args)?;
    let samples = records::read(&args.input, &setup.default_topic)?;
    let bytes = std::fs::read(&setup.component).with_context(|| {
        let hint = if setup.component.exists() { "" } else { " (build it first: ferry build)" };
        format!("failed to read the component {}{hint}", setup.component.display())
    })?;
    let sandbox = Sandbox::new(setup.sandbox.clone())?;
    let component = ProcessorComponent::load(&sandbox, &bytes, &setup.grants).with_context(|| {
        let hint = if setup.config.is_none() { " (without --config, grant topics with --allow-topic)" } else { "" };
        format!("the host would refuse {} for pipeline `{}`{hint}", setup.component.display(), setup.pipeline)
    })?;
    eprintln!("{}", setup.describe(&component));
    let log = TenantLog::recording(&setup.pipeline);
    let http = Arc::new(HttpMeter::journaling());
    let provisions = Provisions {
        grants: Arc::new(setup.grants.clone()),
        settings: Arc::new(setup.settings.clone()),
        log: log.clone(),
        http_meter: http.clone(),
    };
    let wants_headers = component.wants_headers();
    let stateful = component.capabilities().contains(&Capability::State);
    let state = match (&args.state, stateful) {
        (Some(path), true) => Some(state_file::read(path, &setup.limits.state)?),
        (Some(path), false) => {
            bail!(
                "{} keeps no state (it does not import ferry:processor/state): drop --state {}",
                setup.component.display(),
                path.display()
            )
        }
        (None, true) => Some(state_file::States::new()),
        (None, false) => None,
    };
    if args.state_out.is_some() && state.is_none() {
        bail!(
            "{} keeps no state (it does not import ferry:processor/state): drop --state-out",
            setup.component.display()
        );
    }
    let mut instance = ProcessorInstance::new(sandbox, Arc::new(component), &setup.pipeline, provisions, setup.limits);
    let mut trial =
        Trial { instance: &mut instance, log: &log, http: &http, wants_headers, report: Report::default(), state };
    trial.self_test();
    for batch in batches(&samples, args.batch_size as usize) {
        trial.batch(batch);
    }
    if let Some(states) = &trial.state {
        trial.report.final_state(states);
        if let Some(out) = &args.state_out {
            std::fs::write(out, state_file::render(states))
                .with_context(|| format!("failed to write {}", out.display()))?;
            eprintln!("ferry test: wrote the state to {}", out.display());
        }
    }
    let report = trial.report;
    let text = report.text();
    print!("{text}");
    if let Some(expect) = &args.expect {
        if args.update_expect {
            std::fs::write(expect, &text).with_context(|| format!("failed to write {}", expect.display()))?;
            eprintln!("ferry test: wrote the report to {}", expect.display());
        } else {
            compare(expect, &text)?;
        }
    }
    report.verdict()
}

/// Fails, showing the differences, unless `expect` holds `actual`.
fn compare(expect: &Path, actual: &str) -> anyhow::Result<()> {
    let expected = std::fs::read_to_string(expect).with_context(|| {
        format!("failed to read the expected report {} (write it with --update-expect)", expect.display())
    })?;
    if expected == actual {
        eprintln!("ferry test: the report matches {}", expect.display());
        return Ok(());
    }
    eprintln!("ferry test: the report differs from {} (- expected, + actual):", expect.display());
    eprint!("{}", super::diff::lines(&expected, actual));
    bail!(
        "the report differs from {}; if the change is what you meant, accept it with --update-expect",
        expect.display()
    )
}

/// Consecutive records of one topic-partition, at most `size` at a time.
fn batches(records: &[SampleRecord], size: usize) -> Vec<&[SampleRecord]> {
    let mut batches = Vec::new();
    let mut start = 0;
    for end in 1..=records.len() {
        let split = end == records.len()
            || end - start == size
            || records[end].topic != records[start].topic
            || records[end].partition != records[start].partition;
        if split {
            batches.push(&records[start..end]);
            start = end;
        }
    }
    batches
}

/// What one call into the guest did.
struct Call {
    result: Result<(Vec<Outcome>, Vec<Emitted>), GuestFault>,
    logs: Vec<GuestLine>,
    /// The HTTP requests it made.
    requests: Vec<SentRequest>,
    /// The partition's state with the call's writes, for a processor with state.
    state: Option<StateBatch>,
}

struct Trial<'a> {
    instance: &'a mut ProcessorInstance,
    log: &'a Arc<TenantLog>,
    /// The requests the processor makes.
    http: &'a HttpMeter,
    wants_headers: bool,
    report: Report,
    /// The state of each input partition, for a processor with state.
    state: Option<state_file::States>,
}

impl Trial<'_> {
    fn self_test(&mut self) {
        let verdict = self.instance.self_test();
        let logs = self.log.take_recorded();
        let line = match &verdict {
            Ok(Ok(())) => "self-test: passed".to_owned(),
            Ok(Err(reason)) => format!("self-test: failed: {}", crate::sandbox::sanitize(reason, 500)),
            Err(fault) => format!("self-test: fault ({}): {fault}", fault.kind()),
        };
        self.report.self_test_passed = matches!(verdict, Ok(Ok(())));
        self.report.lines.push(line);
        self.report.requests(&self.http.take_journal());
        self.report.logs(&logs);
    }

    fn batch(&mut self, batch: &[SampleRecord]) {
        let call = self.call(batch);
        let finished = call.result.as_ref().is_ok_and(|(outcomes, _)| outcomes.iter().all(finishes));
        if batch.len() == 1 {
            self.report.record(&batch[0]);
            self.report.requests(&call.requests);
            match call.result {
                Ok((outcomes, outputs)) => {
                    self.report.outcome(&outcomes[0]);
                    self.report.outputs(&outputs, outcomes[0].is_processed());
                }
                Err(fault) => self.report.fault(&fault),
            }
            self.settle_state(&batch[0], call.state, finished);
            self.report.logs(&call.logs);
            return;
        }
        let (first, last) = (&batch[0], &batch[batch.len() - 1]);
        self.report.lines.push(format!(
            "batch {}[{}] offsets {}..={} ({} records)",
            first.topic,
            first.partition,
            first.offset,
            last.offset,
            batch.len()
        ));
        self.report.requests(&call.requests);
        self.report.logs(&call.logs);
        self.settle_state(first, call.state, finished);
        match call.result {
            Ok((outcomes, outputs)) => {
                let all = outcomes.iter().all(Outcome::is_processed);
                let (own, per_record): (Vec<_>, Vec<_>) = outputs.into_iter().partition(|o| o.source.is_none());
                self.report.outputs(&own, all);
                for (record, outcome) in batch.iter().zip(&outcomes) {
                    self.report.record(record);
                    self.report.outcome(outcome);
                    let mine: Vec<Emitted> =
                        per_record.iter().filter(|o| o.source == Some(record.offset)).cloned().collect();
                    self.report.outputs(&mine, outcome.is_processed());
                }
            }
            Err(fault) => {
                self.report
                    .lines
                    .push(format!("  fault ({}): {fault}; running its records one at a time", fault.kind()));
                for record in batch {
                    self.batch(std::slice::from_ref(record));
                }
            }
        }
    }

    fn call(&mut self, batch: &[SampleRecord]) -> Call {
        let mut encoder = ferry_sdk::wire::BatchEncoder::new();
        for r in batch {
            let headers = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_deref()));
            let headers: Vec<_> = if self.wants_headers { headers.collect() } else { Vec::new() };
            encoder.push(r.offset, r.timestamp_ms, r.key.as_deref(), r.value.as_deref(), headers);
        }
        let wire = Batch {
            topic: batch[0].topic.clone(),
            partition: batch[0].partition,
            count: encoder.count(),
            records: encoder.into_bytes(),
        };
        let offsets: Vec<i64> = batch.iter().map(|r| r.offset).collect();
        let deadline = self.instance.deadline_from_now();
        let limits = self.instance.limits().state;
        let mut lent = self
            .state
            .as_mut()
            .map(|states| StateBatch::new(states.remove(&batch[0].partition).unwrap_or_default(), limits));
        let result = self
            .instance
            .process_within(&wire, &offsets, deadline, &mut OutputUsed::default(), &mut lent)
            .map(|(reply, outputs)| (reply.into_outcomes().collect(), outputs));
        Call { result, logs: self.log.take_recorded(), requests: self.http.take_journal(), state: lent }
    }

    /// Reports the state changes of a batch that started at `first`, and keeps them
    /// when it `finished`, as a host does.
    fn settle_state(&mut self, first: &SampleRecord, lent: Option<StateBatch>, finished: bool) {
        let (Some(states), Some(lent)) = (self.state.as_mut(), lent) else { return };
        for (key, after) in lent.pending() {
            self.report.state_change(key, lent.before(key), after, finished);
        }
        let (store, _) = lent.finish(finished);
        states.insert(first.partition, store);
    }
}

/// Whether an outcome finishes its record, so that its batch's state writes count:
/// a record to retry, or one that faulted or ran out of time, runs again.
fn finishes(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Processed | Outcome::Reject(_))
}

/// The report, line by line, and the counts behind the verdict.
#[derive(Debug, Default)]
struct Report {
    lines: Vec<String>,
    self_test_passed: bool,
    records: usize,
    processed: usize,
    rejected: usize,
    retried: usize,
    faulted: usize,
}

impl Report {
    fn record(&mut self, record: &SampleRecord) {
        self.records += 1;
        self.lines.push(format!("record {}", record.to_json()));
    }

    fn outcome(&mut self, outcome: &Outcome) {
        let line = match outcome {
            Outcome::Processed => {
                self.processed += 1;
                "processed".to_owned()
            }
            Outcome::Retry(reason) => {
                self.retried += 1;
                format!("retry: {reason}")
            }
            Outcome::Reject(reason) => {
                self.rejected += 1;
                format!("reject: {reason}")
            }
            Outcome::Fault(fault) => return self.fault(fault),
            Outcome::Suspect | Outcome::Untried => {
                self.faulted += 1;
                "not finished: its batch ran out of time".to_owned()
            }
        };
        self.lines.push(format!("  {line}"));
    }

    fn fault(&mut self, fault: &GuestFault) {
        self.faulted += 1;
        self.lines.push(format!("  fault ({}): {fault}", fault.kind()));
    }

    /// Outputs, as published (`kept`) or dropped by the host.
    fn outputs(&mut self, outputs: &[Emitted], kept: bool) {
        for output in outputs {
            let r = &output.record;
            let json = records::record_json(
                &r.topic,
                &[],
                r.key.as_deref(),
                r.value.as_deref(),
                r.headers.iter().map(|h| (h.name.as_str(), h.value.as_deref())),
            );
            let verb = if kept { "output" } else { "dropped output" };
            self.lines.push(format!("  {verb} {json}"));
        }
    }

    /// One key's change: kept, or dropped with a batch that did not finish.
    fn state_change(&mut self, key: &[u8], before: Option<&[u8]>, after: Option<&[u8]>, kept: bool) {
        let shown = |value: Option<&[u8]>, absent: &str| {
            value.map_or_else(|| absent.to_owned(), |v| records::bytes_json(Some(v)))
        };
        let verb = if kept { "state" } else { "dropped state" };
        self.lines.push(format!(
            "  {verb} {}: {} → {}",
            records::bytes_json(Some(key)),
            shown(before, "(absent)"),
            shown(after, "(deleted)")
        ));
    }

    /// The state the run left, partition by partition.
    fn final_state(&mut self, states: &state_file::States) {
        for (partition, store) in states {
            self.lines.push(format!("state of partition {partition}: {} keys, {} bytes", store.keys(), store.bytes()));
        }
    }

    /// The HTTP requests of a call, in the order made; with their times on stderr.
    fn requests(&mut self, requests: &[SentRequest]) {
        for request in requests {
            eprintln!("ferry test: http {request}, {} ms", request.elapsed.as_millis());
            self.lines.push(format!("  http {request}"));
        }
    }

    fn logs(&mut self, logs: &[GuestLine]) {
        for line in logs {
            let source = if line.stream == "log" { format!("log {}", line.level) } else { line.stream.clone() };
            self.lines.push(format!("  {source}: {}", line.message));
        }
    }

    fn text(&self) -> String {
        let mut text = self.lines.join("\n");
        text += &format!(
            "\n{} records: {} processed, {} rejected, {} to retry, {} faulted\n",
            self.records, self.processed, self.rejected, self.retried, self.faulted
        );
        text
    }

    fn verdict(&self) -> anyhow::Result<()> {
        match (self.self_test_passed, self.faulted) {
            (true, 0) => Ok(()),
            (false, 0) => bail!("the self-test did not pass: a host refuses to deploy this version"),
            (passed, faulted) => {
                let also = if passed { "" } else { " (and the self-test did not pass)" };
                bail!("{faulted} of {} records faulted{also}", self.records)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, partition: i32, offset: i64) -> SampleRecord {
        SampleRecord {
            line: 1,
            topic: topic.into(),
            partition,
            offset,
            timestamp_ms: None,
            key: None,
            value: None,
            headers: vec![],
        }
    }

    #[test]
    fn batches_are_runs_of_one_partition() {
        let records = [
            record("a", 0, 0),
            record("a", 0, 1),
            record("a", 0, 2),
            record("a", 1, 0),
            record("b", 1, 0),
            record("a", 0, 3),
        ];
        let sizes = |size| batches(&records, size).iter().map(|b| b.len()).collect::<Vec<_>>();
        assert_eq!(sizes(1), [1; 6]);
        assert_eq!(sizes(2), [2, 1, 1, 1, 1]);
        assert_eq!(sizes(500), [3, 1, 1, 1]);
    }

    #[test]
    fn settings_are_key_equals_value() {
        assert_eq!(parse_setting("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_setting("a="), Ok(("a".into(), String::new())));
        assert!(parse_setting("=b").is_err() && parse_setting("ab").is_err());
    }

    #[test]
    fn the_verdict_counts_faults_and_the_self_test() {
        let mut report = Report { self_test_passed: true, ..Default::default() };
        report.record(&record("a", 0, 0));
        report.outcome(&Outcome::Reject("bad".into()));
        assert!(report.verdict().is_ok(), "a reject is an outcome, not a failure of the run");
        report.record(&record("a", 0, 1));
        report.fault(&GuestFault::Panic("boom".into()));
        assert_eq!(report.verdict().unwrap_err().to_string(), "1 of 2 records faulted");
        assert_eq!(report.text().lines().last(), Some("2 records: 0 processed, 1 rejected, 0 to retry, 1 faulted"));
        let report = Report { self_test_passed: false, ..Default::default() };
        assert!(report.verdict().unwrap_err().to_string().starts_with("the self-test did not pass"));
    }
}
