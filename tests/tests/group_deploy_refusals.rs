//! What a host of a `group_deploy` pipeline refuses from the components topic, and
//! that it keeps running its version meanwhile.
//!
//! - Records written straight to the topic, as anyone with Write on it could: a
//!   chunk with one byte changed, a version whose last chunk was never written, a
//!   manifest naming a digest its chunks do not have, and a manifest that is not
//!   one. Each is refused with its reason (slot history, status, `/metrics`) while
//!   the running version keeps processing; a genuine version deployed afterwards
//!   still switches. The host started on the topic's version, not its config's; a
//!   host started after a refused manifest starts on the newest one that passes.
//! - A version whose self-test needs more memory than one host of the group allows:
//!   that host keeps the previous version and says why; the other switches.

mod observe_support;
mod swap_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry_host::deploy::group::publish::publish;
use ferry_host::deploy::group::record::{Manifest, split};
use ferry_host::deploy::group::topic::TopicAccess;
use ferry_host::host::Host;
use ferry_host::kafka::output::send_when_room;
use ferry_host::sandbox::digest_of;
use ferry_tests::{Broker as _, Embedded, lag, read_all, wait_until};
use observe_support::{Exposition, get, status};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use swap_support::{Build, HostSpec, PIPELINE, build, deployed, processed, running, start, stop, stream};

const PARTITIONS: i32 = 4;
const TOPIC: &str = "_ferry.components";

/// Writes raw records to the components topic, as an attacker with Write would.
struct Attacker(ThreadedProducer<DefaultProducerContext>);

impl Attacker {
    fn new(brokers: &str) -> Self {
        Self(ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "0").create().expect("producer"))
    }

    fn write(&self, key: &str, value: &[u8]) {
        send_when_room(&self.0, BaseRecord::to(TOPIC).partition(0).key(key).payload(value))
            .map_err(|(e, _)| e)
            .expect("queued");
        self.0.flush(Duration::from_secs(30)).expect("acknowledged");
    }

    fn chunk(&self, digest: &str, index: u32, bytes: &[u8]) {
        self.write(&format!("chunk/{PIPELINE}/{digest}/{index}"), bytes);
    }

    fn manifest(&self, manifest: &Manifest) {
        self.write(&format!("version/{PIPELINE}"), &manifest.to_json());
    }
}

fn access(brokers: &str) -> TopicAccess {
    TopicAccess { brokers: brokers.to_owned(), kafka: Default::default(), topic: TOPIC.to_owned() }
}

/// Waits until `host` has refused `n` versions from the topic, and returns the
/// latest refusal's reason.
fn refusal(host: &Host, n: u64) -> String {
    let slot = &host.pipelines[0].slot;
    wait_until(&format!("refusal {n}"), || slot.group_status().is_some_and(|g| g.refused >= n));
    let group = slot.group_status().unwrap();
    assert_eq!(group.refused, n, "one refusal at a time");
    group.last_refusal.expect("a refusal").detail
}

/// Waits for `host` to process more records.
fn keeps_processing(host: &Host) {
    let mark = processed(host);
    wait_until("the running version keeps processing", || processed(host) > mark + 20);
}

fn spec<'a>(
    brokers: &'a str,
    group: &'a str,
    component: &'a Build,
    cache: &'a std::path::Path,
    extra: &'a str,
) -> HostSpec<'a> {
    HostSpec { brokers, group, component: &component.path, cache_dir: cache, admin: true, extra }
}

/// An embedded broker with the input, ledger and components topics.
fn broker_with_topics() -> Embedded {
    let broker = Embedded::start();
    broker.create_topic("input", PARTITIONS);
    broker.create_topic("ledger", PARTITIONS);
    broker.create_topic(TOPIC, 1);
    broker
}

fn metrics(host: &Host) -> Exposition {
    Exposition::parse(&get(host.admin.as_ref().unwrap().addr, "/metrics").body)
}

#[test]
fn corrupt_truncated_and_mismatched_versions_are_refused_while_the_running_one_goes_on() {
    let (v1, v2, v3) =
        (build("ferry-guest-versioned-v1"), build("ferry-guest-versioned-v2"), build("ferry-guest-versioned-v3"));
    let broker = broker_with_topics();
    let brokers = broker.brokers();
    let cache = tempfile::tempdir().unwrap();

    // v1 is in the topic before the host starts; its config names v3.
    publish(&access(&brokers), PIPELINE, &v1.bytes, 4096).expect("v1 published");
    let host = start(&spec(&brokers, "refusals", &v3, cache.path(), "group_deploy = true"));
    assert_eq!(deployed(&host), v1.digest, "started on the topic's version, not the config's");
    let started = &host.pipelines[0].slot.history()[0];
    assert!(started.detail.starts_with("group: at startup, deploy of"), "{started:?}");
    let stop_stream = Arc::new(AtomicBool::new(false));
    let producer = std::thread::spawn({
        let (brokers, stop) = (brokers.clone(), stop_stream.clone());
        move || stream(&brokers, PARTITIONS, &stop)
    });
    wait_until("v1 runs", || running(&host) == v1.digest && processed(&host) > 100);
    let attacker = Attacker::new(&brokers);

    // 1. One byte of one chunk changed.
    let corrupt = Manifest::describe(PIPELINE, &v2.bytes, 4096, "mallory@nowhere", "deploy");
    for (index, chunk) in split(&v2.bytes, 4096) {
        let mut chunk = chunk.to_vec();
        if index == 1 {
            chunk[100] ^= 0x20;
        }
        attacker.chunk(&corrupt.digest, index, &chunk);
    }
    attacker.manifest(&corrupt);
    let why = refusal(&host, 1);
    assert!(why.contains("the chunks put together have digest") && why.contains(&v2.digest), "{why}");
    keeps_processing(&host);

    // 2. The last chunk never written (an upload cut short).
    let truncated = Manifest::describe(PIPELINE, &v3.bytes, 4096, "mallory@nowhere", "deploy");
    for (index, chunk) in split(&v3.bytes, 4096).filter(|(i, _)| *i + 1 < truncated.chunks) {
        attacker.chunk(&truncated.digest, index, chunk);
    }
    attacker.manifest(&truncated);
    let why = refusal(&host, 2);
    let last = truncated.chunks - 1;
    assert!(why.contains(&format!("chunk {last} of {} is missing", truncated.chunks)), "{why}");
    keeps_processing(&host);

    // 3. Intact chunks of v2, under a manifest that names another digest.
    let claimed = digest_of(b"a component the operator reviewed");
    let mismatch =
        Manifest { digest: claimed.clone(), ..Manifest::describe(PIPELINE, &v2.bytes, 8192, "mallory", "deploy") };
    for (index, chunk) in split(&v2.bytes, 8192) {
        attacker.chunk(&claimed, index, chunk);
    }
    attacker.manifest(&mismatch);
    let why = refusal(&host, 3);
    assert!(why.contains(&format!("have digest {}, the manifest names {claimed}", v2.digest)), "{why}");
    keeps_processing(&host);

    // 4. Not a manifest at all.
    attacker.write(&format!("version/{PIPELINE}"), b"{\"digest\": 42}");
    let why = refusal(&host, 4);
    assert!(why.contains("the manifest is unreadable"), "{why}");
    keeps_processing(&host);
    assert_eq!(deployed(&host), v1.digest, "every refusal left v1 running");

    // Operators see it: the history, the status document, /metrics.
    let history = host.pipelines[0].slot.history();
    assert_eq!(history.iter().filter(|e| e.action == "reject").count(), 4, "{history:?}");
    let doc = status(host.admin.as_ref().unwrap().addr);
    let group = &doc["pipelines"][0]["group_deploy"];
    assert_eq!(group["refused"], 4, "{group}");
    assert!(group["last_refusal"]["reason"].as_str().unwrap().contains("unreadable"), "{group}");
    let m = metrics(&host);
    assert_eq!(m.value("ferry_group_versions_refused_total", &[("pipeline", PIPELINE)]), Some(4.0));

    // A genuine version still goes through.
    publish(&access(&brokers), PIPELINE, &v2.bytes, 4096).expect("v2 published");
    wait_until("v2 runs", || running(&host) == v2.digest);
    let m = metrics(&host);
    assert_eq!(m.value("ferry_group_version_info", &[("pipeline", PIPELINE), ("digest", &v2.digest)]), Some(1.0));
    keeps_processing(&host);

    // The newest manifest is refused at startup too: a host started now runs the
    // newest one that passes (v2), not its config's component (v3), and says why.
    let cut = Manifest::describe(PIPELINE, &v1.bytes, 1024, "mallory", "deploy");
    let cut = Manifest { digest: digest_of(b"never uploaded"), ..cut };
    attacker.manifest(&cut);
    refusal(&host, 5);
    stop(host);
    let host = start(&spec(&brokers, "refusals", &v3, cache.path(), "group_deploy = true"));
    assert_eq!(deployed(&host), v2.digest, "the newest version that passes its checks");
    let group = host.pipelines[0].slot.group_status().expect("follows the topic");
    assert_eq!(group.refused, 1, "{group:?}");
    let why = group.last_refusal.expect("the startup refusal").detail;
    let missing = format!("chunk 0 of {} is missing", cut.chunks);
    assert!(why.contains("at startup") && why.contains(&missing), "{why}");
    keeps_processing(&host);

    stop_stream.store(true, Ordering::Relaxed);
    let sent = producer.join().expect("producer");
    wait_until("lag 0", || lag(&brokers, "refusals", "input").iter().all(|p| p.lag() == 0));
    stop(host);

    // Nothing lost, and nothing but v1 then v2 ever processed a record.
    let inputs = read_all(&brokers, "input");
    assert_eq!(inputs.iter().map(|r| r.key.clone()).collect::<BTreeSet<_>>(), sent);
    let ledger = read_all(&brokers, "ledger");
    let processed: BTreeSet<(i32, i64)> = ledger
        .iter()
        .map(|r| {
            let parts: Vec<&str> = r.value.split(':').collect();
            assert!(parts[2] == "v1" || parts[2] == "v2", "processed by {}: {}", parts[2], r.value);
            (parts[0].parse().unwrap(), parts[1].parse().unwrap())
        })
        .collect();
    let missing: Vec<_> = inputs.iter().filter(|r| !processed.contains(&(r.partition, r.offset))).collect();
    assert!(missing.is_empty(), "{} records not processed", missing.len());
}

#[test]
fn a_host_whose_limits_fail_the_self_test_keeps_its_version_and_says_why() {
    let (v1, v4) = (build("ferry-guest-versioned-v1"), build("ferry-guest-versioned-v4"));
    let broker = broker_with_topics();
    let brokers = broker.brokers();
    let cache = tempfile::tempdir().unwrap();
    let roomy = start(&spec(&brokers, "limits", &v1, cache.path(), "group_deploy = true"));
    let tight =
        start(&spec(&brokers, "limits", &v1, cache.path(), "group_deploy = true\nlimits = { memory_mib = 16 }"));
    let stop_stream = Arc::new(AtomicBool::new(false));
    let producer = std::thread::spawn({
        let (brokers, stop) = (brokers.clone(), stop_stream.clone());
        move || stream(&brokers, PARTITIONS, &stop)
    });
    wait_until("both members process", || processed(&roomy) > 50 && processed(&tight) > 50);

    publish(&access(&brokers), PIPELINE, &v4.bytes, 16 << 10).expect("v4 published");
    wait_until("the member with room runs v4", || running(&roomy) == v4.digest);
    let why = refusal(&tight, 1);
    assert!(why.contains("self-test did not complete") && !why.contains("group: group:"), "{why}");
    assert_eq!(deployed(&tight), v1.digest);
    keeps_processing(&tight);
    let doc = status(tight.admin.as_ref().unwrap().addr);
    assert_eq!(doc["pipelines"][0]["group_deploy"]["published"], v4.digest.as_str());
    assert_eq!(doc["pipelines"][0]["version"]["running"], v1.digest.as_str());
    assert!(roomy.pipelines[0].slot.group_status().unwrap().last_refusal.is_none());

    stop_stream.store(true, Ordering::Relaxed);
    producer.join().expect("producer");
    wait_until("lag 0", || lag(&brokers, "limits", "input").iter().all(|p| p.lag() == 0));
    stop(roomy);
    stop(tight);
}
