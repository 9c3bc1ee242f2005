//! What a host of a `group_deploy` pipeline refuses from the components topic, and
//! that it keeps running its version meanwhile.
//!
//! - Unsigned hosts (no trusted keys), records written straight to the topic, as
//!   anyone with Write on it could: a chunk with one byte changed, a version whose
//!   last chunk was never written, a manifest naming a digest its chunks do not
//!   have, and a manifest that is not one. Each is refused with its reason (slot
//!   history, status, `/metrics`) while the running version keeps processing; a
//!   genuine version deployed afterwards still switches. The host started on the
//!   topic's version, not its config's; a host started after a refused manifest
//!   starts on the newest one that passes.
//! - A version whose self-test needs more memory than one host of the group allows:
//!   that host keeps the previous version and says why; the other switches.
//! - Hosts that trust one publisher key, in two environments on one broker: an
//!   attacker with Write on the topic but no trusted key (unsigned, another key,
//!   another environment's signature, tampered fields, a replayed older manifest,
//!   swapped chunks under a signed manifest) gets nothing running, before and after
//!   a restart; each environment only ever runs its own versions.
//! - Two deploys at once on a host with one free instance slot: one finds the pool
//!   full, is tried again, and ends on the group's version.

mod observe_support;
mod swap_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry_host::deploy::group::publish::{Publisher, publish};
use ferry_host::deploy::group::record::{Key, Manifest, Scope, split};
use ferry_host::deploy::group::signing::{SecretKey, TrustedKeys};
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
/// The environment of the unsigned hosts.
const ENV: &str = "test";

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

    fn chunk(&self, scope: &Scope, digest: &str, index: u32, bytes: &[u8]) {
        self.write(&Key::Chunk { scope: scope.clone(), digest: digest.to_owned(), index }.render(), bytes);
    }

    /// Every chunk of `bytes` under `digest`, cut at `chunk_bytes`.
    fn chunks(&self, scope: &Scope, digest: &str, bytes: &[u8], chunk_bytes: usize) {
        for (index, chunk) in split(bytes, chunk_bytes) {
            self.chunk(scope, digest, index, chunk);
        }
    }

    fn manifest(&self, manifest: &Manifest) {
        self.write(&manifest.key().render(), &manifest.to_json());
    }
}

fn access(brokers: &str) -> TopicAccess {
    TopicAccess { brokers: brokers.to_owned(), kafka: Default::default(), topic: TOPIC.to_owned() }
}

fn scope(environment: &str) -> Scope {
    Scope::new(environment, PIPELINE)
}

/// Publishes `bytes` to `environment`, signed with `key` if given.
fn publish_as(brokers: &str, environment: &str, key: Option<&SecretKey>, bytes: &[u8]) -> Manifest {
    let access = access(brokers);
    let trusted = TrustedKeys::default();
    let publisher = Publisher { access: &access, scope: scope(environment), key, trusted: &trusted };
    publish(&publisher, bytes, 4096).expect("published")
}

/// The pipeline settings of a `group_deploy` host in `environment`, trusting `keys`.
fn fleet(environment: &str, keys: &[&SecretKey]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{}\"", k.public().line())).collect();
    format!("group_deploy = true\n[fleet]\nenvironment = \"{environment}\"\ntrusted_keys = [{}]\n", keys.join(", "))
}

/// Refusals of `host` by reason, from its `/metrics`.
fn refused_by(host: &Host, reason: &str) -> f64 {
    metrics(host).value("ferry_group_versions_refused_total", &[("pipeline", PIPELINE), ("reason", reason)]).unwrap()
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
    publish_as(&brokers, ENV, None, &v1.bytes);
    let unsigned = fleet(ENV, &[]);
    let host = start(&spec(&brokers, "refusals", &v3, cache.path(), &unsigned));
    assert_eq!(deployed(&host), v1.digest, "started on the topic's version, not the config's");
    let started = &host.pipelines[0].slot.history()[0];
    assert!(started.detail.starts_with("group: at startup, deploy #1 of"), "{started:?}");
    let stop_stream = Arc::new(AtomicBool::new(false));
    let producer = std::thread::spawn({
        let (brokers, stop) = (brokers.clone(), stop_stream.clone());
        move || stream(&brokers, PARTITIONS, &stop)
    });
    wait_until("v1 runs", || running(&host) == v1.digest && processed(&host) > 100);
    let attacker = Attacker::new(&brokers);

    let scope = scope(ENV);
    // 1. One byte of one chunk changed.
    let corrupt = Manifest::describe(&scope, 100, &v2.bytes, 4096, "mallory@nowhere", "deploy");
    for (index, chunk) in split(&v2.bytes, 4096) {
        let mut chunk = chunk.to_vec();
        if index == 1 {
            chunk[100] ^= 0x20;
        }
        attacker.chunk(&scope, &corrupt.digest, index, &chunk);
    }
    attacker.manifest(&corrupt);
    let why = refusal(&host, 1);
    assert!(why.contains("the chunks put together have digest") && why.contains(&v2.digest), "{why}");
    keeps_processing(&host);

    // 2. The last chunk never written (an upload cut short).
    let truncated = Manifest::describe(&scope, 101, &v3.bytes, 4096, "mallory@nowhere", "deploy");
    for (index, chunk) in split(&v3.bytes, 4096).filter(|(i, _)| *i + 1 < truncated.chunks) {
        attacker.chunk(&scope, &truncated.digest, index, chunk);
    }
    attacker.manifest(&truncated);
    let why = refusal(&host, 2);
    let last = truncated.chunks - 1;
    assert!(why.contains(&format!("chunk {last} of {} is missing", truncated.chunks)), "{why}");
    keeps_processing(&host);

    // 3. Intact chunks of v2, under a manifest that names another digest.
    let claimed = digest_of(b"a component the operator reviewed");
    let mismatch =
        Manifest { digest: claimed.clone(), ..Manifest::describe(&scope, 102, &v2.bytes, 8192, "mallory", "deploy") };
    attacker.chunks(&scope, &claimed, &v2.bytes, 8192);
    attacker.manifest(&mismatch);
    let why = refusal(&host, 3);
    assert!(why.contains(&format!("have digest {}, the manifest names {claimed}", v2.digest)), "{why}");
    keeps_processing(&host);

    // 4. Not a manifest at all.
    attacker.write(&format!("version/{ENV}/{PIPELINE}/103/{claimed}"), b"{\"digest\": 42}");
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
    assert_eq!(group["unsigned_accepted"], true, "a host without trusted keys says so: {group}");
    assert_eq!((refused_by(&host, "integrity"), refused_by(&host, "manifest")), (3.0, 1.0));
    let m = metrics(&host);
    assert_eq!(m.value("ferry_group_unsigned_accepted", &[("pipeline", PIPELINE)]), Some(1.0));

    // A genuine version still goes through.
    publish_as(&brokers, ENV, None, &v2.bytes);
    wait_until("v2 runs", || running(&host) == v2.digest);
    let m = metrics(&host);
    assert_eq!(m.value("ferry_group_version_info", &[("pipeline", PIPELINE), ("digest", &v2.digest)]), Some(1.0));
    keeps_processing(&host);

    // The newest manifest is refused at startup too: a host started now runs the
    // newest one that passes (v2), not its config's component (v3), and says why.
    let cut = Manifest::describe(&scope, 200, &v1.bytes, 1024, "mallory", "deploy");
    let cut = Manifest { digest: digest_of(b"never uploaded"), ..cut };
    attacker.manifest(&cut);
    refusal(&host, 5);
    stop(host);
    let host = start(&spec(&brokers, "refusals", &v3, cache.path(), &unsigned));
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
    let roomy = start(&spec(&brokers, "limits", &v1, cache.path(), &fleet(ENV, &[])));
    let tight = start(&spec(
        &brokers,
        "limits",
        &v1,
        cache.path(),
        &format!("limits = {{ memory_mib = 16 }}\n{}", fleet(ENV, &[])),
    ));
    let stop_stream = Arc::new(AtomicBool::new(false));
    let producer = std::thread::spawn({
        let (brokers, stop) = (brokers.clone(), stop_stream.clone());
        move || stream(&brokers, PARTITIONS, &stop)
    });
    wait_until("both members process", || processed(&roomy) > 50 && processed(&tight) > 50);

    publish_as(&brokers, ENV, None, &v4.bytes);
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

/// The digests of the versions `host` deployed (its history's `deploy` events).
fn deployed_ever(host: &Host) -> BTreeSet<String> {
    host.pipelines[0].slot.history().into_iter().filter(|e| e.action == "deploy").map(|e| e.digest).collect()
}

#[test]
fn an_attacker_with_write_but_no_trusted_key_gets_no_version_running_and_environments_stay_apart() {
    let (v1, v2, v3, v4) = (
        build("ferry-guest-versioned-v1"),
        build("ferry-guest-versioned-v2"),
        build("ferry-guest-versioned-v3"),
        build("ferry-guest-versioned-v4"),
    );
    let broker = broker_with_topics();
    let brokers = broker.brokers();
    let (cache_prod, cache_staging) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice, mallory) = (SecretKey::generate().unwrap(), SecretKey::generate().unwrap());
    let prod = scope("prod");
    // One pipeline name, one components topic, one trusted publisher: two environments.
    let start_prod = || start(&spec(&brokers, "prod", &v1, cache_prod.path(), &fleet("prod", &[&alice])));
    let prod_host = start_prod();
    let staging_host = start(&spec(&brokers, "staging", &v1, cache_staging.path(), &fleet("staging", &[&alice])));
    let stop_stream = Arc::new(AtomicBool::new(false));
    let producer = std::thread::spawn({
        let (brokers, stop) = (brokers.clone(), stop_stream.clone());
        move || stream(&brokers, PARTITIONS, &stop)
    });

    // Alice deploys v4 to staging, then v2 and v3 to production.
    let staging_v4 = publish_as(&brokers, "staging", Some(&alice), &v4.bytes);
    wait_until("staging runs v4", || running(&staging_host) == v4.digest);
    let prod_v2 = publish_as(&brokers, "prod", Some(&alice), &v2.bytes);
    wait_until("production runs v2", || running(&prod_host) == v2.digest);
    let prod_v3 = publish_as(&brokers, "prod", Some(&alice), &v3.bytes);
    assert_eq!((prod_v2.sequence, prod_v3.sequence, staging_v4.sequence), (1, 2, 1), "sequences per environment");
    wait_until("production runs v3", || running(&prod_host) == v3.digest);

    let attacker = Attacker::new(&brokers);
    let mut n = 0;
    let mut refused = |why: &str| {
        n += 1;
        let reason = refusal(&prod_host, n);
        assert!(reason.contains(why), "attack {n}: {reason}");
        assert_eq!(deployed(&prod_host), v3.digest, "attack {n} left v3 running");
    };
    // 1. Unsigned, with intact chunks and the next sequence number.
    attacker.chunks(&prod, &v1.digest, &v1.bytes, 4096);
    attacker.manifest(&Manifest::describe(&prod, 3, &v1.bytes, 4096, "mallory", "deploy"));
    refused("is not signed");
    // 2. Signed, by a key production does not trust.
    let mut by_mallory = Manifest::describe(&prod, 4, &v1.bytes, 4096, "alice@ci", "deploy");
    mallory.sign(&mut by_mallory);
    attacker.manifest(&by_mallory);
    refused(&format!("signed by key {}, which is not among", mallory.public().id()));
    // 3. Alice's signature, for staging, written under production's key.
    attacker.write(
        &Key::Manifest { scope: prod.clone(), sequence: 9, digest: v4.digest.clone() }.render(),
        &staging_v4.to_json(),
    );
    refused("is for staging/swap, not prod/swap");
    // 4. Alice's manifest of v3 with fields changed: the digest (to v1's, whose
    // chunks are in the topic), then the sequence and who published it.
    let swapped_digest = Manifest { digest: v1.digest.clone(), sequence: 5, ..prod_v3.clone() };
    attacker.manifest(&swapped_digest);
    refused("does not match the manifest");
    let renumbered = Manifest { sequence: 6, published_by: "alice@ci".into(), ..prod_v3.clone() };
    attacker.manifest(&renumbered);
    refused("does not match the manifest");
    // 5. Alice's older manifest (v2, sequence 1) written again, as it was.
    attacker.manifest(&prod_v2);
    refused("is not newer than sequence 2");
    // 6. A manifest Alice signed for v1 (sequence 3), whose chunks the attacker
    // swapped before the hosts fetched them.
    let mut signed_v1 = Manifest::describe(&prod, 3, &v1.bytes, 4096, "alice@ci", "deploy");
    alice.sign(&mut signed_v1);
    let chunks: Vec<&[u8]> = split(&v1.bytes, 4096).map(|(_, c)| c).collect();
    attacker.chunk(&prod, &v1.digest, 0, chunks[1]);
    attacker.chunk(&prod, &v1.digest, 1, chunks[0]);
    attacker.manifest(&signed_v1);
    refused("the chunks put together have digest");
    keeps_processing(&prod_host);

    // Operators see each refusal by reason, and that only signed versions are taken.
    let counts: Vec<f64> =
        ["signature", "scope", "stale", "integrity"].iter().map(|r| refused_by(&prod_host, r)).collect();
    assert_eq!(counts, [4.0, 1.0, 1.0, 1.0]);
    let doc = status(prod_host.admin.as_ref().unwrap().addr);
    let group = &doc["pipelines"][0]["group_deploy"];
    assert_eq!((group["unsigned_accepted"].clone(), group["environment"].clone()), (false.into(), "prod".into()));
    assert_eq!(group["trusted_keys"][0], alice.public().id(), "{group}");
    assert_eq!(metrics(&prod_host).value("ferry_group_unsigned_accepted", &[("pipeline", PIPELINE)]), Some(0.0));

    // Staging never saw any of it, nor production's versions.
    assert_eq!(staging_host.pipelines[0].slot.group_status().unwrap().refused, 0);
    assert_eq!(deployed_ever(&staging_host), [v1.digest.clone(), v4.digest.clone()].into());
    assert_eq!(deployed_ever(&prod_host), [v1.digest.clone(), v2.digest.clone(), v3.digest.clone()].into());

    // A restarted production host takes the rule from the topic: it starts on v3
    // (the swapped v1 refused again), and refuses the replay of v2 once more.
    stop(prod_host);
    let prod_host = start_prod();
    assert_eq!(deployed(&prod_host), v3.digest, "after a restart too");
    let group = prod_host.pipelines[0].slot.group_status().unwrap();
    assert!(group.refused_by.get("integrity") == Some(&1), "{group:?}");
    let before = group.refused;
    attacker.manifest(&prod_v2);
    let reason = refusal(&prod_host, before + 1);
    assert!(reason.contains("is not newer than sequence 3"), "{reason}");
    assert_eq!(deployed(&prod_host), v3.digest);

    // Alice can still deploy: her next version outranks everything written.
    let next = publish_as(&brokers, "prod", Some(&alice), &v2.bytes);
    assert_eq!(next.sequence, 4, "after the highest signed sequence (3), not the attacker's numbers");
    wait_until("production runs Alice's v2", || running(&prod_host) == v2.digest);
    assert_eq!(running(&staging_host), v4.digest);

    stop_stream.store(true, Ordering::Relaxed);
    producer.join().expect("producer");
    for group in ["prod", "staging"] {
        wait_until("lag 0", || lag(&brokers, group, "input").iter().all(|p| p.lag() == 0));
    }
    stop(prod_host);
    stop(staging_host);
}

#[test]
fn a_version_refused_because_the_instance_pool_was_full_is_tried_again_until_it_runs() {
    let (v1, slow) = (build("ferry-guest-versioned-v1"), build("ferry-guest-slow-self-test"));
    let broker = broker_with_topics();
    let brokers = broker.brokers();
    let cache = tempfile::tempdir().unwrap();
    // Two group_deploy pipelines and one free instance slot: each worker keeps one
    // instance, and a deploy's self-test needs one more.
    let pipeline = |name: &str| {
        format!(
            r#"
            [[pipeline]]
            name = "{name}"
            inputs = ["input"]
            group = "transient-{name}"
            component = "{component}"
            group_deploy = true
            batch_size = 100
            max_wait_ms = 10
            output_topics = ["ledger"]
            limits = {{ time_per_batch_ms = 30000 }}
            kafka = {{ "session.timeout.ms" = "6000" }}
            "#,
            component = v1.path.display()
        )
    };
    let text = format!(
        "brokers = \"{brokers}\"\n[sandbox]\nmax_instances = 3\ncache_dir = \"{}\"\n[fleet]\nenvironment = \"{ENV}\"\n{}{}",
        cache.path().display(),
        pipeline("left"),
        pipeline("right")
    );
    let host = Host::start(&ferry_host::config::Config::parse(&text).expect("config")).expect("host starts");
    let stop_stream = Arc::new(AtomicBool::new(false));
    let producer = std::thread::spawn({
        let (brokers, stop) = (brokers.clone(), stop_stream.clone());
        move || stream(&brokers, PARTITIONS, &stop)
    });
    let processed =
        |i: usize| host.pipelines[i].shared.stats.snapshot().partitions.values().map(|p| p.processed).sum::<u64>();
    wait_until("both pipelines keep an instance", || processed(0) > 0 && processed(1) > 0);

    // Both pipelines take a version whose self-test holds the free slot for seconds:
    // whichever comes second finds the pool full, and is tried again.
    let access = access(&brokers);
    let trusted = TrustedKeys::default();
    for name in ["left", "right"] {
        let publisher = Publisher { access: &access, scope: Scope::new(ENV, name), key: None, trusted: &trusted };
        publish(&publisher, &slow.bytes, 4096).expect("published");
    }
    for i in 0..2 {
        wait_until("each pipeline ends on the group's version", || {
            host.pipelines[i].shared.stats.snapshot().version == slow.digest
        });
    }
    let groups: Vec<_> = (0..2).map(|i| host.pipelines[i].slot.group_status().unwrap()).collect();
    let retries: u64 = groups.iter().map(|g| g.retries).sum();
    assert!(retries >= 1, "one deploy found the pool full: {groups:?}");
    assert!(groups.iter().all(|g| g.refused == 0 && g.retrying.is_none()), "nothing refused for good: {groups:?}");
    let full: Vec<_> = (0..2)
        .flat_map(|i| host.pipelines[i].slot.history())
        .filter(|e| e.action == "reject" && e.detail.contains("the instance pool is full"))
        .collect();
    assert!(!full.is_empty(), "the history says why it waited");

    stop_stream.store(true, Ordering::Relaxed);
    producer.join().expect("producer");
    stop(host);
}
