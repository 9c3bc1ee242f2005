//! Section: keyed state. The counter (a `get` and a `put` of its key's count, and one
//! output, per record) against the forward guest (the same output per record, no
//! state), both through `ProcessorInstance::process_within` on 1000-record batches,
//! the counter with its partition's store lent and the batch's writes applied after
//! each call as the worker does (the changelog records are not produced here). And
//! what a key costs in memory: the resident bytes a store of a million counter
//! entries adds, against what the limits charge for them.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use ferry_host::sandbox::capability::state::charge;
use ferry_host::sandbox::{
    Grants, Limits, OutputUsed, PartitionStore, ProcessorComponent, ProcessorInstance, Provisions, Sandbox,
    SandboxSettings, StateBatch, StateLimits,
};
use ferry_sdk::wire::BatchEncoder;

use crate::boundary::{empty_batch, far};
use crate::common::{median, ns_per_call, proc_status};

const BATCH: usize = 1000;
/// Distinct keys the records cycle through (every get after the first round hits).
const KEYS: usize = 1000;
const SAMPLES: usize = 9;
const WARMUP_SAMPLES: usize = 2;
/// Entries of the memory measure.
const MEMORY_KEYS: usize = 1_000_000;

/// One round's figures.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// ns per record: forward, no state.
    pub stateless: f64,
    /// ns per record: counter, get + put.
    pub stateful: f64,
    /// Resident bytes per key of a store of [`MEMORY_KEYS`] counter entries.
    pub rss_per_key: f64,
    /// What the limits charge such an entry.
    pub charged_per_key: usize,
}

fn instance(component: &Path, grants: Grants, settings: &[(&str, &str)]) -> anyhow::Result<ProcessorInstance> {
    let sandbox = Sandbox::new(SandboxSettings::default())?;
    let bytes = std::fs::read(component)?;
    let loaded = ProcessorComponent::load(&sandbox, &bytes, &grants)?;
    let mut provisions = Provisions::simple("bench", grants);
    provisions.settings =
        Arc::new(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>());
    Ok(ProcessorInstance::new(sandbox, Arc::new(loaded), "bench", provisions, Limits::default()))
}

fn key(i: usize) -> Vec<u8> {
    format!("user-{:06}", i % KEYS).into_bytes()
}

/// Measures one round.
pub fn round(forward: &Path, counter: &Path) -> anyhow::Result<Round> {
    let grants = |state| Grants { output_topics: ["out".to_owned()].into(), log: true, state, http: None };
    let mut stateless = instance(forward, grants(false), &[("to", "out")])?;
    let mut stateful = instance(counter, grants(true), &[("output_topic", "out")])?;
    let mut batch = empty_batch();
    let mut encoder = BatchEncoder::new();
    let offsets: Vec<i64> = (0..BATCH as i64).collect();
    for (i, offset) in offsets.iter().enumerate() {
        encoder.push(*offset, Some(1_700_000_000_000), Some(&key(i)), Some(&[b'x'; 100][..]), []);
    }
    batch.count = encoder.count();
    batch.records = encoder.into_bytes();

    let mut store = Some(PartitionStore::default());
    let limits = StateLimits::default();
    let mut run_stateful = |instance: &mut ProcessorInstance| {
        let mut lent = Some(StateBatch::new(store.take().expect("store returned"), limits));
        let (reply, outputs) = instance
            .process_within(&batch, &offsets, far(), &mut OutputUsed::default(), &mut lent)
            .expect("the counter never faults");
        assert!(reply.all_processed() && outputs.len() == BATCH);
        let (after, changes) = lent.expect("lent back").finish(true);
        black_box(changes);
        store = Some(after);
    };
    run_stateful(&mut stateful);
    let (mut plain, mut with_state) = (Vec::new(), Vec::new());
    for sample in 0..WARMUP_SAMPLES + SAMPLES {
        let p = ns_per_call(20, || {
            black_box(stateless.process(&batch, &offsets, far()).expect("forward never faults"));
        });
        let s = ns_per_call(20, || run_stateful(&mut stateful));
        if sample >= WARMUP_SAMPLES {
            plain.push(p / BATCH as f64);
            with_state.push(s / BATCH as f64);
        }
    }
    let keys = store.as_ref().map_or(0, PartitionStore::keys);
    anyhow::ensure!(keys == KEYS, "the counter kept {keys} keys, expected {KEYS}");

    // Memory: a million entries as the counter writes them (an 11-byte key, 8 bytes).
    let before = proc_status("VmRSS");
    let mut big = PartitionStore::default();
    for i in 0..MEMORY_KEYS {
        big.apply(format!("key-{i:07}").into_bytes(), Some((i as u64).to_le_bytes().to_vec()));
    }
    let after = proc_status("VmRSS");
    let rss_per_key = (after.saturating_sub(before) * 1024) as f64 / MEMORY_KEYS as f64;
    let charged_per_key = big.bytes() / MEMORY_KEYS;
    anyhow::ensure!(charged_per_key == charge(b"key-0000000", &[0; 8]));
    drop(black_box(big));
    Ok(Round { stateless: median(&mut plain), stateful: median(&mut with_state), rss_per_key, charged_per_key })
}

/// The markdown table of `rounds`, and the ranges over them.
pub fn table(rounds: &[Round]) -> String {
    let mut out = String::from(
        "| round | forward, no state (ns/record) | counter, get + put (ns/record) | ratio | state's cost (ns/record) | resident bytes per key | charged per key |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (i, r) in rounds.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.2}× | {:.1} | {:.0} | {} |\n",
            i + 1,
            r.stateless,
            r.stateful,
            r.stateful / r.stateless,
            r.stateful - r.stateless,
            r.rss_per_key,
            r.charged_per_key
        ));
    }
    let range = |f: &dyn Fn(&Round) -> f64| {
        let values: Vec<f64> = rounds.iter().map(f).collect();
        (values.iter().copied().fold(f64::INFINITY, f64::min), values.iter().copied().fold(0.0, f64::max))
    };
    let (lo, hi) = range(&|r| r.stateful / r.stateless);
    let (mlo, mhi) = range(&|r| r.rss_per_key);
    out.push_str(&format!(
        "\n{BATCH}-record batches of 100-byte values over {KEYS} keys; medians of {SAMPLES} samples per round. \
         Counter / forward: **{lo:.2}×–{hi:.2}×** over {} rounds. A million counter entries take \
         **{mlo:.0}–{mhi:.0} resident bytes per key** (the limits charge {} per key).\n",
        rounds.len(),
        rounds[0].charged_per_key
    ));
    out
}

/// Changelog records of the restore measure (the mock broker drops the oldest
/// records of a partition past a size: 150,000 of these, headers included, lose
/// about 60,000).
const RESTORE_KEYS: u64 = 80_000;

/// One restore round: ferry's restore and a bare consumer over the same changelog.
#[derive(Debug, Clone, Copy)]
pub struct Restore {
    /// Seconds: ferry's restore into a store.
    pub ferry: f64,
    /// Seconds: a bare consumer reading the partition to its end.
    pub bare: f64,
    /// Key and value bytes read.
    pub bytes: u64,
}

/// Fills a changelog of [`RESTORE_KEYS`] counter-sized entries, then restores it
/// `rounds` times with each reader in turn.
pub fn restore(rounds: usize) -> anyhow::Result<Vec<Restore>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};

    let broker = crate::common::Broker::start()?;
    let topic = crate::common::unique("changelog");
    broker.fill(&topic, 1, RESTORE_KEYS, crate::common::Shape { value_len: 8 })?;
    let config = ferry_host::pipeline::state::restore_config(broker.brokers(), &BTreeMap::new());
    let mut out = Vec::new();
    for _ in 0..rounds {
        let started = std::time::Instant::now();
        let (store, records) = ferry_host::pipeline::state::restore_partition(&config, &topic, 0)?;
        let ferry = started.elapsed().as_secs_f64();
        anyhow::ensure!(records == RESTORE_KEYS && store.keys() == RESTORE_KEYS as usize, "restored {records}");

        let started = std::time::Instant::now();
        let consumer: BaseConsumer = config.create()?;
        let (_, end) = consumer.fetch_watermarks(&topic, 0, std::time::Duration::from_secs(10))?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&topic, 0, Offset::Beginning)?;
        consumer.assign(&list)?;
        let (mut bytes, mut next) = (0u64, 0i64);
        while next < end {
            if let Some(Ok(message)) = consumer.poll(std::time::Duration::from_millis(200)) {
                bytes += (message.key().map_or(0, <[u8]>::len) + message.payload().map_or(0, <[u8]>::len)) as u64;
                next = message.offset() + 1;
                black_box(&message);
            }
        }
        let bare = started.elapsed().as_secs_f64();
        out.push(Restore { ferry, bare, bytes });
    }
    Ok(out)
}

/// The markdown table of restore `rounds`.
pub fn restore_table(rounds: &[Restore]) -> String {
    let mut out = String::from(
        "| round | ferry restore (keys/s) | MiB/s | bare consumer (keys/s) | MiB/s | ferry / bare |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    let mib = |bytes: u64, s: f64| bytes as f64 / (1 << 20) as f64 / s;
    for (i, r) in rounds.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {:.0} | {:.1} | {:.0} | {:.1} | {:.2}× |\n",
            i + 1,
            RESTORE_KEYS as f64 / r.ferry,
            mib(r.bytes, r.ferry),
            RESTORE_KEYS as f64 / r.bare,
            mib(r.bytes, r.bare),
            r.bare / r.ferry
        ));
    }
    out.push_str(&format!(
        "\n{RESTORE_KEYS} keys of 12 bytes with 8-byte values in one changelog partition of the embedded broker; \
         \"ferry / bare\" is ferry's rate over the bare consumer's (1.00× = as fast).\n"
    ));
    out
}
