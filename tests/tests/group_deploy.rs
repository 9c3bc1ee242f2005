//! Group-wide deploys through the components topic, with real `ferry` processes.
//!
//! Three `ferry run` members of one group, on a broker in a process of its own, run
//! the versioned guest (v1, from their config files) while records stream in. One
//! `ferry deploy --group` command publishes v2 (cut into many small chunks): every
//! member switches, which the test waits for on each member's `/metrics`. Then one
//! member is stopped and started again with the same config file (still naming v1):
//! it comes back on v2, and says so in its log. `ferry versions --group` shows each
//! member's version, and a stopped member's report is withdrawn. v3 is published,
//! then the group rolled back to v2 (`--digest`): every member follows. Every
//! version is signed with a key made by `ferry keys new`, which the members trust;
//! pruning keeps what members run and would roll back to.
//!
//! A second test starts a host after 50 versions of a 4 MiB component: it reads the
//! index partition and the one version it runs, not the 200 MiB of the others
//! (bytes read and peak memory bounded), and `--prune --keep 3` removes the rest.

//!
//! The ledger (every record the guest processed, tagged with the version that
//! processed it and the first offset of its batch) must show every produced record
//! processed, every batch on exactly one version, and each partition's versions
//! appearing in deploy order (v1, v2, v3) and ending on the rollback's v2.

mod observe_support;
mod swap_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_tests::{Broker as _, FerryProcess, MockBrokerProcess, ferry_bin, lag, read_all, unique, write_config};
use observe_support::{Exposition, get, wait_for};
use swap_support::{build, stream};

const PARTITIONS: i32 = 4;
const PIPELINE: &str = "fleet";
const TOPIC: &str = "fleet.components";
const ENV: &str = "production";

/// A member: its config file and admin address.
struct Member {
    process: FerryProcess,
    admin: SocketAddr,
}

fn config_text(
    brokers: &str,
    properties: &str,
    trusted: &str,
    group: &str,
    component: &std::path::Path,
    admin: SocketAddr,
    cache: &str,
) -> String {
    format!(
        r#"
        brokers = "{brokers}"
        [kafka]
        {properties}
        [fleet]
        components_topic = "{TOPIC}"
        environment = "{ENV}"
        trusted_keys = ["{trusted}"]
        [sandbox]
        cache_dir = "{cache}"
        [admin]
        listen = "{admin}"
        [[pipeline]]
        name = "{PIPELINE}"
        inputs = ["input"]
        group = "{group}"
        component = "{component}"
        group_deploy = true
        batch_size = 50
        max_wait_ms = 10
        commit = {{ policy = "interval", interval_ms = 100 }}
        output_topics = ["ledger"]
        kafka = {{ "session.timeout.ms" = "6000", "partition.assignment.strategy" = "range" }}
        "#,
        component = component.display(),
    )
}

/// The component digest a member's batches run on, from its `/metrics`.
fn running(admin: SocketAddr) -> Result<String, String> {
    let answer = std::panic::catch_unwind(|| get(admin, "/metrics")).map_err(|_| "admin not up yet".to_owned())?;
    let metrics = Exposition::parse(&answer.body);
    match metrics.find("ferry_component_info", &[("pipeline", PIPELINE)]).as_slice() {
        [(labels, _)] => Ok(labels["digest"].clone()),
        other => Err(format!("{} ferry_component_info samples", other.len())),
    }
}

/// Records a member processed, from its `/metrics`.
fn processed(admin: SocketAddr) -> u64 {
    let metrics = Exposition::parse(&get(admin, "/metrics").body);
    metrics.find("ferry_records_processed_total", &[("pipeline", PIPELINE)]).iter().map(|(_, v)| *v as u64).sum()
}

fn ferry(args: &[&str]) -> (bool, String) {
    let out = Command::new(ferry_bin()).args(args).output().expect("ferry runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `ferry deploy --group` for this test's pipeline, components topic and
/// environment, signed with `key`, with `more`.
fn deploy_group(brokers: &str, key: &std::path::Path, more: &[&str]) -> (bool, String) {
    let key = key.display().to_string();
    let args = [
        "deploy",
        "--group",
        "--brokers",
        brokers,
        "--components-topic",
        TOPIC,
        "--environment",
        ENV,
        "--pipeline",
        PIPELINE,
        "--sign-with",
        &key,
    ];
    ferry(&[&args[..], more].concat())
}

/// `ferry versions --group` for this test's pipeline, components topic and
/// environment, with `more`.
fn versions_of(brokers: &str, group: &str, more: &[&str]) -> (bool, String) {
    let args = [
        "versions",
        "--group",
        group,
        "--pipeline",
        PIPELINE,
        "--brokers",
        brokers,
        "--components-topic",
        TOPIC,
        "--environment",
        ENV,
    ];
    ferry(&[&args[..], more].concat())
}

/// A publisher key made by `ferry keys new` in `dir`: the secret key's path and the
/// public key line.
fn new_key(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let (ok, out) = ferry(&["keys", "new", "publisher", "--dir", &dir.display().to_string()]);
    assert!(ok && out.contains("key id: "), "ferry keys new: {out}");
    let public = std::fs::read_to_string(dir.join("publisher.pub")).expect("public key written");
    let (ok, shown) = ferry(&["keys", "show", &dir.join("publisher.key").display().to_string()]);
    assert!(ok && shown.contains(public.trim()), "ferry keys show: {shown}");
    (dir.join("publisher.key"), public.trim().to_owned())
}

#[test]
fn one_deploy_switches_every_member_and_a_restarted_member_comes_back_on_it() {
    let (v1, v2, v3) =
        (build("ferry-guest-versioned-v1"), build("ferry-guest-versioned-v2"), build("ferry-guest-versioned-v3"));
    let broker = std::sync::Mutex::new(MockBrokerProcess::start());
    broker.create_topic("input", PARTITIONS);
    broker.create_topic("ledger", PARTITIONS);
    broker.create_topic(TOPIC, 2);
    let brokers = broker.brokers();
    let group = unique("fleet");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (key, trusted) = new_key(dir.path());
    let start = || {
        let admin: SocketAddr = format!("127.0.0.1:{}", ferry_tests::free_port()).parse().unwrap();
        let text = config_text(&brokers, "", &trusted, &group, &v1.path, admin, &cache.display().to_string());
        Member { process: FerryProcess::start(&write_config(dir.path(), &text)), admin }
    };
    let mut members: Vec<Member> = (0..3).map(|_| start()).collect();
    for m in &members {
        wait_for("every member starts on v1, its config's component", || {
            running(m.admin).and_then(|d| if d == v1.digest { Ok(()) } else { Err(d) })
        });
    }
    let log = members[0].process.log_text();
    assert!(log.contains("the components topic has no version of this pipeline"), "{log}");
    assert!(log.contains("only versions signed by a trusted key are taken"), "{log}");

    let stop = Arc::new(AtomicBool::new(false));
    let producer = std::thread::spawn({
        let (brokers, stop) = (brokers.clone(), stop.clone());
        move || stream(&brokers, PARTITIONS, &stop)
    });
    for m in &members {
        wait_for(
            "every member processes on v1",
            || if processed(m.admin) >= 50 { Ok(()) } else { Err("not yet".into()) },
        );
    }

    // One command for the whole group; 78 KB in 4 KiB chunks is about 20 records.
    let path = v2.path.display().to_string();
    let (ok, out) = deploy_group(&brokers, &key, &["--chunk-bytes", "4096", &path]);
    assert!(ok && out.contains(&v2.digest), "ferry deploy --group: {out}");
    for m in &members {
        wait_for("every member switches to v2", || {
            running(m.admin).and_then(|d| if d == v2.digest { Ok(()) } else { Err(d) })
        });
        let mark = processed(m.admin);
        wait_for("and processes on it", || if processed(m.admin) > mark { Ok(()) } else { Err("not yet".into()) });
    }

    // `ferry versions --group`: the mock broker does not list group members, so the
    // listing is the members' reports; each shows v2.
    let versions = |expected: usize| {
        wait_for("every member reports its version", || {
            let (ok, out) = versions_of(&brokers, &group, &[]);
            let rows = out.lines().filter(|l| l.contains(&v2.digest[..16]) && l.contains(" ok")).count();
            if ok && rows == expected { Ok(out) } else { Err(out) }
        })
    };
    let listing = versions(3);
    for m in &members {
        assert!(listing.contains(&format!(" {} ", m.process.pid())), "member {} listed:\n{listing}", m.process.pid());
    }

    // A member stopped cleanly withdraws its report; started again from the same
    // config file (which names v1) it comes back on v2.
    let mut stopped = members.remove(0);
    stopped.process.terminate();
    let listing = versions(2);
    assert!(!listing.contains(&format!(" {} ", stopped.process.pid())), "withdrawn:\n{listing}");
    let restarted = start();
    wait_for("the restarted member runs v2", || {
        running(restarted.admin).and_then(|d| if d == v2.digest { Ok(()) } else { Err(d) })
    });
    let log = restarted.process.log_text();
    assert!(log.contains("starting on the newest version published in the components topic"), "{log}");
    members.push(restarted);
    let mark = processed(members[2].admin);
    wait_for("the restarted member processes", || {
        if processed(members[2].admin) > mark { Ok(()) } else { Err("no".into()) }
    });

    // Rollback: v1 came from the config files, never from the topic, so it cannot be
    // rolled back to; v2 can, once v3 was published.
    let (ok, out) = deploy_group(&brokers, &key, &["--digest", &v1.digest[..12]]);
    assert!(!ok && out.contains("the topic holds no chunks of a version"), "rollback to v1: {out}");
    let path = v3.path.display().to_string();
    let (ok, out) = deploy_group(&brokers, &key, &[&path]);
    assert!(ok, "{out}");
    for m in &members {
        wait_for("every member switches to v3", || {
            running(m.admin).and_then(|d| if d == v3.digest { Ok(()) } else { Err(d) })
        });
    }
    let (ok, out) = deploy_group(&brokers, &key, &["--digest", &v2.digest[..12]]);
    assert!(ok && out.contains(&format!("rolled back to {}", v2.digest)), "rollback to v2: {out}");
    for m in &members {
        wait_for("every member rolls back to v2", || {
            running(m.admin).and_then(|d| if d == v2.digest { Ok(()) } else { Err(d) })
        });
        let mark = processed(m.admin);
        wait_for("and processes on it", || if processed(m.admin) > mark { Ok(()) } else { Err("not yet".into()) });
    }

    // Pruning keeps the newest version, and v3, which every member keeps for rollback.
    let kept_for_rollback = format!("kept {}: ", v3.digest);
    wait_for("every member reports v3 as its rollback target", || {
        let (ok, out) = versions_of(&brokers, &group, &["--prune", "--keep", "1", "--dry-run"]);
        let line = out.lines().find(|l| l.starts_with(&kept_for_rollback)).unwrap_or_default();
        if ok && line.matches("keeps for rollback").count() == 3 { Ok(()) } else { Err(out) }
    });
    let (ok, out) = versions_of(&brokers, &group, &["--prune", "--keep", "1"]);
    assert!(ok && out.contains("nothing to remove"), "{out}");
    assert!(out.contains(&format!("kept {}: newest 1 of 1", v2.digest)), "{out}");

    stop.store(true, Ordering::Relaxed);
    let sent = producer.join().expect("producer");
    let per_partition =
        |p: i32| sent.iter().filter(|k| k[1..].parse::<i32>().unwrap() % PARTITIONS == p).count() as i64;
    wait_for("lag 0 on every partition", || {
        let rows = lag(&brokers, &group, "input");
        if rows.iter().all(|r| r.committed == Some(per_partition(r.partition))) {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
    for mut m in members {
        m.process.terminate();
    }

    check_ledger(&brokers, &sent);
}

/// Every produced record processed; every batch on one version; per partition, the
/// versions in deploy order: v1, v2, v3, then v2 again (the rollback).
fn check_ledger(brokers: &str, sent: &BTreeSet<String>) {
    let inputs: BTreeMap<(i32, i64), String> =
        read_all(brokers, "input").into_iter().map(|r| ((r.partition, r.offset), r.key)).collect();
    let produced: BTreeSet<&String> = sent.iter().collect();
    assert_eq!(inputs.values().collect::<BTreeSet<_>>(), produced, "the input topic holds what was produced");
    let mut processed = BTreeSet::new();
    // What one version processed from one batch start: a redelivered or retried
    // batch may start at the same offset on another version, but a batch split by a
    // switch would leave a version records from a batch start whose offsets are not
    // one contiguous run from it.
    let mut batches: BTreeMap<(i32, i64, String), BTreeSet<i64>> = BTreeMap::new();
    // Per input partition, the versions in processing order (the ledger is keyed by
    // the input partition, so its entries are in that partition's processing order).
    let mut order: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for entry in read_all(brokers, "ledger") {
        let parts: Vec<&str> = entry.value.split(':').collect();
        assert_eq!(parts.len(), 5, "ledger entry {}", entry.value);
        let (partition, offset, tag, first): (i32, i64, &str, i64) =
            (parts[0].parse().unwrap(), parts[1].parse().unwrap(), parts[2], parts[3].parse().unwrap());
        processed.insert((partition, offset));
        batches.entry((partition, first, tag.to_owned())).or_default().insert(offset);
        let seen = order.entry(partition).or_default();
        if seen.last().map(String::as_str) != Some(tag) {
            seen.push(tag.to_owned());
        }
    }
    let missing: Vec<_> = inputs.keys().filter(|k| !processed.contains(k)).collect();
    assert!(missing.is_empty(), "{} records never processed, first {:?}", missing.len(), missing.first());
    for ((partition, first, tag), offsets) in &batches {
        let whole = offsets.iter().zip(*first..).all(|(o, expected)| *o == expected);
        assert!(whole, "partition {partition}: the batch from {first} on {tag} is not one whole batch: {offsets:?}");
    }
    // Members switch independently, so a rebalance in the middle of a switch may hand
    // a partition to a member still on the older version for a while; what must hold
    // per partition is that each version first appears in deploy order, and that the
    // rollback to v2 is where it ends.
    for (partition, tags) in &order {
        let first = |tag: &str| tags.iter().position(|t| t == tag);
        let (v1, v2, v3) = (first("v1"), first("v2"), first("v3"));
        assert!(v1 == Some(0) && v1 < v2 && v2 < v3, "partition {partition}: versions in processing order: {tags:?}");
        assert_eq!(tags.last().map(String::as_str), Some("v2"), "partition {partition} ends rolled back: {tags:?}");
    }
}

/// `bytes` (a component) with a custom section of `size` bytes appended, numbered
/// `n`: a distinct, larger version that loads and runs as the original.
fn padded(bytes: &[u8], n: u64, size: usize) -> Vec<u8> {
    fn leb128(mut value: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"ferry-test-padding";
    let mut payload = Vec::with_capacity(size);
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while payload.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        payload.extend_from_slice(&x.to_le_bytes());
    }
    payload.truncate(size);
    let mut section = Vec::new();
    leb128(name.len(), &mut section);
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = bytes.to_vec();
    out.push(0);
    leb128(section.len(), &mut out);
    out.extend_from_slice(&section);
    out
}

/// A figure of `/proc/<pid>/<file>`, in its unit (kB for `status`, bytes for `io`).
fn proc_figure(pid: u32, file: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).expect("proc readable");
    let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {text}"));
    line[name.len()..].trim().trim_end_matches(" kB").trim().parse().expect("a number")
}

/// On Tansu: librdkafka's mock cluster keeps only the newest 5 MiB of a partition,
/// too little for 50 large versions.
#[test]
fn start_up_after_fifty_versions_of_a_large_component_reads_one_version() {
    use ferry_host::deploy::group::publish::{write_chunks, write_manifest};
    use ferry_host::deploy::group::record::{DEFAULT_CHUNK_BYTES, Manifest, Scope};
    use ferry_host::deploy::group::signing::SecretKey;
    use ferry_host::deploy::group::topic::TopicAccess;

    const VERSIONS: u64 = 50;
    const PADDING: usize = 4 << 20;
    let v1 = build("ferry-guest-versioned-v1");
    let broker = ferry_tests::Tansu::start();
    broker.create_topic("input", 1);
    broker.create_topic("ledger", 1);
    broker.create_topic(TOPIC, 2);
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().unwrap();
    let (key_path, trusted) = new_key(dir.path());
    let key = SecretKey::read(&key_path).expect("key");

    // 50 signed versions of about 4 MiB, published as `ferry deploy --group` does.
    let kafka = [("batch.num.messages".to_owned(), "1".to_owned())].into();
    let access = TopicAccess { brokers: brokers.clone(), kafka, topic: TOPIC.to_owned() };
    let writer = access.writer().expect("writer");
    let scope = Scope::new(ENV, PIPELINE);
    let mut newest = None;
    for n in 1..=VERSIONS {
        let bytes = padded(&v1.bytes, n, PADDING);
        let digest = ferry_host::sandbox::digest_of(&bytes);
        let (partition, offsets) =
            write_chunks(&writer, &scope, &digest, &bytes, DEFAULT_CHUNK_BYTES).expect("chunks written");
        let mut manifest =
            Manifest::describe(&scope, n, &bytes, DEFAULT_CHUNK_BYTES, "test", "deploy").located(partition, offsets);
        key.sign(&mut manifest);
        write_manifest(&writer, &manifest).expect("manifest written");
        newest = Some(manifest);
    }
    let newest = newest.expect("published");
    let topic_bytes = VERSIONS * newest.size;

    let group = unique("fleet-startup");
    let cache = dir.path().join("cache");
    let admin: SocketAddr = format!("127.0.0.1:{}", ferry_tests::free_port()).parse().unwrap();
    let text = config_text(
        &brokers,
        broker.client_properties(),
        &trusted,
        &group,
        &v1.path,
        admin,
        &cache.display().to_string(),
    );
    let config = write_config(dir.path(), &text);
    let start_host = || {
        let started = std::time::Instant::now();
        let mut host = FerryProcess::start(&config);
        wait_for("the host starts on the newest version", || {
            running(admin).and_then(|d| if d == newest.digest { Ok(()) } else { Err(d) })
        });
        let elapsed = started.elapsed();
        let peak_kib = proc_figure(host.pid(), "status", "VmHWM:");
        eprintln!(
            "start-up with {VERSIONS} versions of {} bytes ({topic_bytes} bytes of chunks in the topic): running in \
             {elapsed:?}, peak RSS {peak_kib} KiB",
            newest.size
        );
        // Peak memory far below the topic's size (time is printed, not asserted: the
        // machine's load decides it).
        assert!(peak_kib * 1024 < topic_bytes / 2, "peak RSS {peak_kib} KiB");
        let log = host.log_text();
        assert!(log.contains("starting on the newest version published in the components topic"), "{log}");
        host.terminate();
    };
    start_host();

    // Pruning keeps the newest three and removes the other 47 versions' chunks and
    // manifests; a host started afterwards still starts on the newest.
    let config_arg = config.display().to_string();
    let prune = || {
        ferry(&[
            "versions",
            "--group",
            &group,
            "--pipeline",
            PIPELINE,
            "--config",
            &config_arg,
            "--prune",
            "--keep",
            "3",
        ])
    };
    let (ok, out) = prune();
    assert!(ok, "{out}");
    let removed = out.lines().filter(|l| l.starts_with("removed ")).count();
    assert_eq!(removed, VERSIONS as usize - 3, "{out}");
    assert!(out.contains(&format!("kept {}: newest 1 of 3", newest.digest)), "{out}");
    assert!(out.contains(&format!("{} chunk(s), 1 manifest(s)", newest.chunks)), "{out}");
    let (ok, out) = prune();
    assert!(ok && out.contains("nothing to remove"), "a second prune finds nothing: {out}");
    start_host();
}
