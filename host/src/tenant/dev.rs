//! `ferry dev`: a processor project's pipelines on a local host, with nothing to
//! install: librdkafka's mock cluster as the broker (in this process, the real Kafka
//! protocol, nothing kept), the project's `ferry.toml` on it (its admin API and
//! deploy directory included), the sample records sent to the input, and every
//! record the pipelines write (outputs and dead letters) printed as it arrives.
//!
//! Deploys work as on any host (`ferry deploy`, the admin API, the deploy
//! directory). Each time a pipeline switches version (a deploy or a rollback), the
//! samples are sent again, so the new version's outputs show. It runs until
//! SIGINT or SIGTERM.
//!
//! Keyed state outlives the embedded broker: when `ferry dev` stops, each stateful
//! pipeline's changelog (read_committed) is saved in `.ferry/dev-state/<pipeline>.json`
//! next to the config (the `ferry test --state` format), and the next `ferry dev`
//! writes it to the new broker's changelog before the host starts, so the host
//! restores it as it restores any changelog. `--fresh-state` starts without it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::records::{self, SampleRecord};
use super::state_file;
use crate::config::Config;
use crate::host::Host;
use crate::kafka::output::send_when_room;
use crate::registry::{Event, ProcessorSlot};
use crate::sandbox::short;

/// Options of `ferry dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// The config file: the project's pipeline(s). Its `brokers` are ignored.
    #[arg(long, short, default_value = "ferry.toml", value_name = "FILE")]
    pub config: PathBuf,
    /// Sample records to send to the pipeline's input (JSON lines, as for `ferry
    /// test`), at the start and again after every version switch.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// The pipeline whose input gets the samples (needed when there are several).
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Start every pipeline with empty keyed state, not the state the last `ferry
    /// dev` kept (which is overwritten when this one stops).
    #[arg(long)]
    pub fresh_state: bool,
}

/// A stateful pipeline's state between runs of `ferry dev`.
struct KeptState {
    pipeline: String,
    changelog: String,
    /// Where it is kept.
    path: PathBuf,
    /// What the last run kept (empty with `--fresh-state` or on the first run).
    states: state_file::States,
}

/// Where the samples go.
struct Samples {
    path: PathBuf,
    pipeline: String,
    records: Vec<SampleRecord>,
}

/// Runs `ferry dev`.
pub(crate) fn run(args: DevArgs) -> anyhow::Result<()> {
    let mut config = Config::load(&args.config)?;
    for pipeline in &config.pipelines {
        if !pipeline.component.is_file() {
            bail!(
                "pipeline {} runs {}, which does not exist: build it first (ferry build)",
                pipeline.name,
                pipeline.component.display()
            );
        }
    }
    let samples = match &args.input {
        Some(path) => {
            let pipeline = match &args.pipeline {
                Some(name) => config
                    .pipelines
                    .iter()
                    .find(|p| &p.name == name)
                    .with_context(|| format!("{} has no pipeline `{name}`", args.config.display()))?,
                None if config.pipelines.len() == 1 => &config.pipelines[0],
                None => bail!(
                    "{} has several pipelines: say which one gets the samples with --pipeline",
                    args.config.display()
                ),
            };
            let records = records::read(path, &pipeline.inputs[0])?;
            Some(Samples { path: path.clone(), pipeline: pipeline.name.clone(), records })
        }
        None => None,
    };

    let cluster: MockCluster<'static, DefaultProducerContext> =
        MockCluster::new(1).context("failed to start the embedded broker")?;
    let mut topics: BTreeMap<String, i32> = BTreeMap::new();
    for pipeline in &config.pipelines {
        for topic in pipeline.inputs.iter().chain(&pipeline.output_topics).chain(&pipeline.failure.dead_letter_topic) {
            topics.entry(topic.clone()).or_insert(1);
        }
    }
    for record in samples.iter().flat_map(|s| &s.records) {
        let partitions = topics.entry(record.topic.clone()).or_insert(1);
        *partitions = (*partitions).max(record.partition + 1);
    }
    let kept = kept_states(&args, &config)?;
    // A changelog has one partition per input partition (and as many as the state
    // kept has, should the samples name fewer this time).
    for (kept, pipeline) in kept.iter().zip(config.pipelines.iter().filter(|p| p.state.is_some())) {
        let most = kept.states.keys().next_back().map_or(1, |p| p + 1);
        let partitions = topics.entry(pipeline.inputs[0].clone()).or_insert(1);
        *partitions = (*partitions).max(most);
        let partitions = *partitions;
        topics.insert(kept.changelog.clone(), partitions);
    }
    for (topic, partitions) in &topics {
        cluster.create_topic(topic, *partitions, 1).with_context(|| format!("failed to create topic {topic}"))?;
    }
    config.brokers = cluster.bootstrap_servers();
    println!(
        "ferry dev: embedded broker at {} (librdkafka's mock cluster: in memory, gone when ferry dev stops)",
        config.brokers
    );
    for kept in &kept {
        restore_kept(&config.brokers, kept)?;
    }

    let host = Host::start(&config)?;
    host.stop_on_signals()?;
    let stop = host.shutdown_flag();
    let slots: Vec<(String, ProcessorSlot)> =
        host.pipelines.iter().map(|p| (p.config.name.clone(), p.slot.clone())).collect();
    for (pipeline, (_, slot)) in config.pipelines.iter().zip(&slots) {
        println!(
            "ferry dev: pipeline {} runs {} (version {}), reading {}",
            pipeline.name,
            super::shown(&pipeline.component).display(),
            short(slot.current().digest()),
            pipeline.inputs.join(", ")
        );
        if let Some(dir) = &pipeline.deploy_dir {
            println!(
                "ferry dev: pipeline {} deploys the *.wasm files dropped into {}",
                pipeline.name,
                super::shown(dir).display()
            );
        }
    }
    if let Some(admin) = &host.admin {
        println!("ferry dev: admin API at http://{}", admin.addr);
    }

    let written: Vec<(String, bool)> = config
        .pipelines
        .iter()
        .flat_map(|p| {
            let outputs = p.output_topics.iter().map(|t| (t.clone(), false));
            outputs.chain(p.failure.dead_letter_topic.iter().map(|t| (t.clone(), true)))
        })
        .collect();
    let printer = {
        let (brokers, stop) = (config.brokers.clone(), stop.clone());
        std::thread::Builder::new()
            .name("ferry-dev-print".into())
            .spawn(move || print_written(&brokers, &written, &stop))
            .context("failed to start the output printer")?
    };
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .context("failed to create the sample producer")?;
    if let Some(samples) = &samples {
        send(&producer, samples, "")?;
    }
    println!("ferry dev: running; Ctrl-C stops it");

    let mut seen: Vec<Vec<Event>> = slots.iter().map(|(_, slot)| slot.history()).collect();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        for ((name, slot), seen) in slots.iter().zip(&mut seen) {
            let history = slot.history();
            let new = match seen.last().and_then(|last| history.iter().rposition(|e| e == last)) {
                Some(at) => &history[at + 1..],
                None => &history[..],
            };
            for event in new {
                println!("[{name}] {}", describe(event));
                let switched = matches!(event.action, "deploy" | "rollback" | "auto-rollback");
                if let Some(samples) = samples.as_ref().filter(|s| switched && &s.pipeline == name) {
                    send(&producer, samples, " again")?;
                }
            }
            *seen = history;
        }
    }
    println!("ferry dev: stopping");
    producer.flush(Duration::from_secs(5)).ok();
    host.wait();
    printer.join().ok();
    for kept in &kept {
        save_kept(&config, kept)?;
    }
    Ok(())
}

/// The state each stateful pipeline kept from the last run, in config order.
fn kept_states(args: &DevArgs, config: &Config) -> anyhow::Result<Vec<KeptState>> {
    let dir = args.config.parent().unwrap_or(std::path::Path::new(""));
    let mut kept = Vec::new();
    for pipeline in config.pipelines.iter().filter(|p| p.state.is_some()) {
        let path = dir.join(".ferry").join("dev-state").join(format!("{}.json", pipeline.name));
        let states = if path.is_file() && !args.fresh_state {
            state_file::read(&path, &pipeline.limits().state)?
        } else {
            state_file::States::new()
        };
        let changelog = pipeline.changelog_topic().expect("a pipeline with state");
        kept.push(KeptState { pipeline: pipeline.name.clone(), changelog, path, states });
    }
    Ok(kept)
}

/// Writes the state kept to the pipeline's changelog on the embedded broker.
fn restore_kept(brokers: &str, kept: &KeptState) -> anyhow::Result<()> {
    let keys: usize = kept.states.values().map(|s| s.keys()).sum();
    if keys == 0 {
        return Ok(());
    }
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().context("failed to create the state writer")?;
    for (partition, store) in &kept.states {
        for (key, value) in store.entries() {
            let record = BaseRecord::<[u8], [u8]>::to(&kept.changelog).partition(*partition).key(key).payload(value);
            send_when_room(&producer, record).map_err(|(error, _)| error).context("failed to write the state kept")?;
        }
    }
    producer.flush(Duration::from_secs(30)).context("failed to write the state kept")?;
    println!(
        "ferry dev: pipeline {} starts with the state kept in {} ({keys} keys)",
        kept.pipeline,
        super::shown(&kept.path).display()
    );
    Ok(())
}

/// Reads the pipeline's changelog (read_committed, as a host restores it) and keeps
/// it for the next run.
fn save_kept(config: &Config, kept: &KeptState) -> anyhow::Result<()> {
    let reader = crate::pipeline::state::restore_config(&config.brokers, &config.kafka);
    let consumer: BaseConsumer = reader.create().context("failed to create the state reader")?;
    let metadata = consumer
        .fetch_metadata(Some(&kept.changelog), Duration::from_secs(10))
        .context("failed to read the changelog's partitions")?;
    let partitions = metadata.topics().iter().find(|t| t.name() == kept.changelog).map_or(0, |t| t.partitions().len());
    let mut states = state_file::States::new();
    for partition in 0..partitions as i32 {
        let (store, _) = crate::pipeline::state::restore_partition(&reader, &kept.changelog, partition)?;
        states.insert(partition, store);
    }
    if let Some(dir) = kept.path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    }
    std::fs::write(&kept.path, state_file::render(&states))
        .with_context(|| format!("failed to write {}", kept.path.display()))?;
    let keys: usize = states.values().map(|s| s.keys()).sum();
    println!(
        "ferry dev: kept pipeline {}'s state ({keys} keys) in {} for the next ferry dev",
        kept.pipeline,
        super::shown(&kept.path).display()
    );
    Ok(())
}

/// One line about a version event.
fn describe(event: &Event) -> String {
    let version = short(&event.digest);
    match event.action {
        "deploy" => format!("now running {version} (deployed from {})", event.detail),
        "reject" => format!("refused {version}: {}", event.detail),
        "confirm" => format!("{version} passed its probation ({})", event.detail),
        action => format!("now running {version} ({action} {})", event.detail),
    }
}

/// Sends the samples to their topics.
fn send(producer: &ThreadedProducer<DefaultProducerContext>, samples: &Samples, again: &str) -> anyhow::Result<()> {
    for record in &samples.records {
        let mut headers = OwnedHeaders::new();
        for (name, value) in &record.headers {
            headers = headers.insert(Header { key: name, value: value.as_deref() });
        }
        let mut message = BaseRecord::<[u8], [u8]>::to(&record.topic).partition(record.partition).headers(headers);
        if let Some(key) = &record.key {
            message = message.key(key);
        }
        if let Some(value) = &record.value {
            message = message.payload(value);
        }
        if let Some(timestamp) = record.timestamp_ms {
            message = message.timestamp(timestamp);
        }
        send_when_room(producer, message).map_err(|(error, _)| error).context("failed to send a sample record")?;
    }
    producer.flush(Duration::from_secs(30)).context("failed to send the sample records")?;
    let topics: std::collections::BTreeSet<&str> = samples.records.iter().map(|r| r.topic.as_str()).collect();
    println!(
        "ferry dev: sent {} records from {}{again} to {}",
        samples.records.len(),
        super::shown(&samples.path).display(),
        topics.into_iter().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// Prints every record written to `topics` (`true`: a dead-letter topic), from the
/// beginning, until `stop`.
fn print_written(brokers: &str, topics: &[(String, bool)], stop: &Arc<AtomicBool>) {
    if let Err(error) = try_print_written(brokers, topics, stop) {
        eprintln!("ferry dev: cannot show outputs: {error:#}");
    }
}

fn try_print_written(brokers: &str, topics: &[(String, bool)], stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    if topics.is_empty() {
        return Ok(());
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "ferry-dev-printer")
        .set("enable.auto.commit", "false")
        .create()
        .context("failed to create the output reader")?;
    let mut assignment = TopicPartitionList::new();
    for (topic, _) in topics {
        assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let dead_letters: Vec<&str> = topics.iter().filter(|(_, dlq)| *dlq).map(|(t, _)| t.as_str()).collect();
    while !stop.load(Ordering::Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                eprintln!("ferry dev: reading outputs: {error}");
                continue;
            }
        };
        println!("{}", written_line(&message, dead_letters.contains(&message.topic())));
    }
    Ok(())
}

/// `output {...}` for an output record; `dead letter {...} reason: ...` for a dead
/// letter (without its `ferry.*` headers).
fn written_line(message: &impl Message, dead_letter: bool) -> String {
    let mut headers = Vec::new();
    let mut reason = None;
    if let Some(all) = message.headers() {
        for header in all.iter() {
            match header.key {
                "ferry.reason" if dead_letter => reason = header.value.map(|v| String::from_utf8_lossy(v).into_owned()),
                key if dead_letter && key.starts_with("ferry.") => {}
                key => headers.push((key, header.value)),
            }
        }
    }
    let json = records::record_json(message.topic(), &[], message.key(), message.payload(), headers);
    if dead_letter {
        format!("dead letter {json} reason: {}", reason.as_deref().unwrap_or("(none given)"))
    } else {
        format!("output {json}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn version_events_read_as_sentences() {
        let event = |action, detail: &str| Event {
            at: SystemTime::UNIX_EPOCH,
            action,
            digest: "0123456789abcdef".into(),
            detail: detail.into(),
        };
        assert_eq!(describe(&event("deploy", "admin-api")), "now running 0123456789ab (deployed from admin-api)");
        assert_eq!(describe(&event("rollback", "from fedcba")), "now running 0123456789ab (rollback from fedcba)");
        assert_eq!(describe(&event("reject", "admin-api: bad")), "refused 0123456789ab: admin-api: bad");
    }

    #[test]
    fn dead_letters_show_their_reason_and_not_ferrys_headers() {
        use rdkafka::Timestamp;
        use rdkafka::message::OwnedMessage;
        let headers = OwnedHeaders::new()
            .insert(Header { key: "source", value: Some("h") })
            .insert(Header { key: "ferry.reason", value: Some("bad input") })
            .insert(Header { key: "ferry.offset", value: Some("3") });
        let message = |topic: &str| {
            let (value, key) = (Some(b"v".to_vec()), Some(vec![0xff]));
            OwnedMessage::new(value, key, topic.into(), Timestamp::NotAvailable, 0, 0, Some(headers.clone()))
        };
        assert_eq!(
            written_line(&message("x.dlq"), true),
            r#"dead letter {"topic":"x.dlq","key":{"base64":"/w=="},"value":"v","headers":[["source","h"]]} reason: bad input"#
        );
        assert!(written_line(&message("x.out"), false).starts_with(r#"output {"topic":"x.out","key":{"base64":"/w=="},"value":"v","headers":[["source","h"],["ferry.reason","bad input"]"#));
    }
}
