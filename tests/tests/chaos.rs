//! Chaos: three `ferry run` members of one group, on a broker in a process of its
//! own, killed (SIGKILL) and stopped (SIGTERM) and restarted at random (and, for
//! exactly-once, frozen with SIGSTOP past their session timeout, then let go), a set number
//! of times at a set pace (events per minute), while records stream in, with a guest
//! that retries, rejects and panics on some of them. The independent checker judges the run: nothing lost, lag 0 at the end,
//! duplicates only where a crash or revoke allows them, commits never backwards,
//! no skipped or out-of-order deliveries within an assignment, no output of an
//! unprocessed delivery. The seed is printed; `FERRY_CHAOS_SEED` replays one.

use std::time::Duration;

use ferry_tests::checker::{CommitSampler, backwards_commits, check};
use ferry_tests::exactly_once::judge;
use ferry_tests::scenarios::recorder_config;
use ferry_tests::*;

const MEMBERS: usize = 3;
const PARTITIONS: i32 = 4;

/// How hard a run shakes the group: `events` kills, stops or starts, about
/// `per_minute` of them a minute. Before each one the group must also have committed
/// something since the one before (or have nothing left to commit): a slow broker or
/// a loaded machine slows the run down instead of piling events on a group that has
/// not moved, and a fast one is not kept waiting.
#[derive(Clone, Copy)]
struct Intensity {
    events: usize,
    per_minute: u32,
}

impl Intensity {
    /// This intensity, or the events and pace `FERRY_CHAOS_EVENTS` and
    /// `FERRY_CHAOS_PER_MINUTE` ask for (to shake a run harder while studying it).
    fn or_from_env(self) -> Self {
        let var =
            |name: &str| std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: a number")));
        Intensity {
            events: var("FERRY_CHAOS_EVENTS").map_or(self.events, |n: u32| n as usize),
            per_minute: var("FERRY_CHAOS_PER_MINUTE").unwrap_or(self.per_minute),
        }
    }
}

/// On the mock broker in a process of its own: 20 events, 20 a minute.
const ON_A_BROKER_PROCESS: Intensity = Intensity { events: 20, per_minute: 20 };
/// Tansu needs seconds to settle its group after each change (its first assignment
/// alone can take 20 s): fewer events, and its own pace through the commits it waits
/// for.
const ON_TANSU: Intensity = Intensity { events: 8, per_minute: 20 };
/// Exactly-once on Tansu: more events, some of them SIGSTOPs (zombies).
const EXACTLY_ONCE_ON_TANSU: Intensity = Intensity { events: 12, per_minute: 20 };

/// How a run may stop a member with SIGTERM (a graceful leave).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaves {
    /// At any moment, mid-rebalance included.
    Anytime,
    /// Only once the group has settled: every live member in it, and stable. Tansu
    /// (0.6.0, and its source up to 0.7.0-pre.2) loses a group whose leader leaves
    /// while it is forming: its `LeaveGroup` of a forming group removes the member but
    /// keeps it as the leader, so every JoinGroup answer names a departed leader, no
    /// one is given the members to assign, and the group never forms again (every
    /// SyncGroup ends "rebalance in progress"). `broker_groups.rs` shows it with plain
    /// rdkafka consumers.
    WhenSettled,
}

/// The Tansu runs take turns (the two on the mock broker still run beside them; under
/// cargo-nextest, where each test is a process, its `tansu-chaos` test group does
/// the same). All
/// five at once is 15 members and five brokers on two cores, and in one such CI run
/// Tansu never finished a cooperative-sticky rebalance after a burst of kills (three
/// live members, no assignment for two minutes); each Tansu run alone has always
/// settled.
static TANSU_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `body` when no other Tansu chaos run is running (a failed one leaves the lock
/// poisoned, which does not stop the next).
fn tansu_turn(body: impl FnOnce()) {
    let _turn = TANSU_TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    body();
}

/// A small deterministic generator (xorshift), so a failing run can be replayed.
struct Dice(u64);

impl Dice {
    fn seeded() -> Self {
        let seed = std::env::var("FERRY_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
        eprintln!("chaos seed: {seed} (FERRY_CHAOS_SEED={seed} replays it)");
        Dice(seed)
    }

    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

/// What record `i` asks of the recorder: mostly nothing, sometimes a retry (that
/// ends in a dead letter), a reject or a panic.
fn value(i: usize) -> String {
    match i {
        i if i % 97 == 13 => format!("retry {i}"),
        i if i % 89 == 7 => format!("reject {i}"),
        i if i % 101 == 31 => format!("panic {i}"),
        i if i % 53 == 5 => format!("flaky {i}"),
        i => format!("r{i}"),
    }
}

/// The delivery guarantee a chaos run holds ferry to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Promise {
    /// Judged by the at-least-once checker (duplicates only where allowed).
    AtLeastOnce,
    /// Judged from the `read_committed` view: every record exactly once.
    ExactlyOnce,
}

/// Waits until `group` is stable with `live` members.
fn wait_for_settled_group(brokers: &str, group: &str, live: usize) {
    let client: rdkafka::consumer::BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin consumer");
    let last = std::cell::RefCell::new(String::new());
    wait_until_or_explain(
        &format!("group {group} stable with {live} members"),
        || {
            use rdkafka::consumer::Consumer as _;
            let Ok(list) = client.fetch_group_list(Some(group), Duration::from_secs(5)) else { return false };
            let Some(described) = list.groups().first() else { return false };
            *last.borrow_mut() = format!("{} with {} members", described.state(), described.members().len());
            described.state() == "Stable" && described.members().len() == live
        },
        || format!("last seen: {}", last.borrow()),
    );
}

fn run(broker: &dyn Broker, strategy: &str, records: usize, intensity: Intensity, promise: Promise, leaves: Leaves) {
    let intensity = intensity.or_from_env();
    let brokers = broker.brokers();
    let group = unique("chaos");
    broker.create_topic("in", PARTITIONS);
    // Exactly-once on Tansu: each input partition's outputs in their own partitions
    // (see `Verdict::assert_own_output_partitions` for why).
    let output_partitions = if promise == Promise::ExactlyOnce { PARTITIONS } else { 1 };
    broker.create_topic("seen", output_partitions);
    broker.create_topic("dlq", output_partitions);
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let delivery = match promise {
            Promise::AtLeastOnce => "",
            Promise::ExactlyOnce => "delivery = \"exactly-once\"\n",
        };
        let extra = format!(
            "{delivery}commit = {{ policy = \"interval\", interval_ms = 100 }}\n\
             failure = {{ on_failure = \"dead-letter\", dead_letter_topic = \"dlq\", max_attempts = 3, backoff_initial_ms = 10 }}"
        );
        // `FERRY_CHAOS_KAFKA_DEBUG` (librdkafka's `debug`, e.g. `cgrp`) for a run to study.
        let debug =
            std::env::var("FERRY_CHAOS_KAFKA_DEBUG").map(|d| format!(", \"debug\" = \"{d}\"")).unwrap_or_default();
        let text = recorder_config(broker, &group, "in", &extra).replace(
            "kafka = { \"session.timeout.ms\" = \"6000\" }",
            &format!(
                "kafka = {{ \"session.timeout.ms\" = \"6000\", \"partition.assignment.strategy\" = \"{strategy}\"{debug} }}"
            ),
        );
        write_config(dir.path(), &text)
    };
    let sampler = CommitSampler::start(&brokers, &group, "in");
    let mut dice = Dice::seeded();
    let mut members: Vec<Option<FerryProcess>> = (0..MEMBERS).map(|_| Some(FerryProcess::start(&config()))).collect();
    let mut logs = Vec::new();
    let (mut kills, mut stops, mut starts, mut freezes) = (0, 0, 0, 0);
    // Members stopped with SIGSTOP: their slot, and the event at which they go on.
    let mut frozen: Vec<(usize, usize)> = Vec::new();

    // Records stream in, a chunk before each of the first two thirds of the events;
    // the last third shakes a group that drains what is left.
    let chunks = (intensity.events * 2 / 3).max(1);
    let per_chunk = records.div_ceil(chunks);
    let mean_gap = Duration::from_secs(60) / intensity.per_minute;
    let mut produced = 0;
    for event in 0..intensity.events {
        // Frozen members wake after two events (past their session timeout, on a
        // pace of 20 a minute): zombies that go on where they stopped. Before
        // the wait for a commit below, which needs a member that is not frozen.
        for (slot, until) in frozen.iter_mut() {
            if *until == event
                && let Some(member) = &members[*slot]
            {
                member.resume();
            }
        }
        frozen.retain(|(_, until)| *until > event);
        if event < chunks {
            let values: Vec<String> = (produced..(produced + per_chunk).min(records)).map(value).collect();
            match promise {
                Promise::AtLeastOnce => produce(&brokers, "in", PARTITIONS, &values),
                Promise::ExactlyOnce => produce_by_key(&brokers, "in", &values),
            }
            produced += values.len();
        }
        let before = sampler.committed_total();
        // Between half and one and a half mean gaps.
        std::thread::sleep(mean_gap / 2 + mean_gap * dice.roll(1000) as u32 / 1000);
        if members.iter().any(Option::is_some) {
            wait_until_or_explain(
                "the group to commit something since the last chaos event",
                || {
                    let committed = sampler.committed_total();
                    committed > before || committed >= produced as i64
                },
                || stuck_report(&brokers, &group, &members),
            );
        }
        let slot = dice.roll(MEMBERS as u64) as usize;
        let kinds = if promise == Promise::ExactlyOnce { 3 } else { 2 };
        match members[slot].take() {
            // Only while another member is running, not frozen: the group must keep
            // committing (a frozen member's partitions move once it is evicted).
            Some(member)
                if dice.roll(kinds) == 2
                    && !frozen.iter().any(|(s, _)| *s == slot)
                    && members.iter().enumerate().any(|(i, m)| m.is_some() && !frozen.iter().any(|(s, _)| *s == i)) =>
            {
                // Exactly-once only: the at-least-once checker counts a zombie's
                // republished outputs as duplicates, which at-least-once allows.
                member.freeze();
                frozen.push((slot, event + 2));
                freezes += 1;
                members[slot] = Some(member);
            }
            Some(mut member) => {
                let was_frozen = frozen.iter().any(|(s, _)| *s == slot);
                frozen.retain(|(s, _)| *s != slot);
                if dice.roll(2) == 0 {
                    member.kill9();
                    kills += 1;
                } else {
                    if was_frozen {
                        member.resume();
                    }
                    if leaves == Leaves::WhenSettled {
                        // Frozen members are not counted: the group drops them.
                        let live = 1 + members.iter().flatten().count() - frozen.len();
                        wait_for_settled_group(&brokers, &group, live);
                    }
                    let status = member.terminate_and_wait();
                    assert!(status.success(), "a member exited with {status} after SIGTERM");
                    stops += 1;
                }
                logs.push(member.log_text());
                // Usually back at once; sometimes the group carries on without it.
                if dice.roll(3) > 0 {
                    members[slot] = Some(FerryProcess::start(&config()));
                    starts += 1;
                }
            }
            None => {
                members[slot] = Some(FerryProcess::start(&config()));
                starts += 1;
            }
        }
    }
    assert_eq!(produced, records, "every record was produced");
    for (slot, _) in frozen.drain(..) {
        if let Some(member) = &members[slot] {
            member.resume();
        }
    }
    for slot in members.iter_mut().filter(|m| m.is_none()) {
        *slot = Some(FerryProcess::start(&config()));
        starts += 1;
    }
    wait_until_or_explain(
        "lag 0 on every partition",
        || lag(&brokers, &group, "in").iter().all(|p| p.lag() == 0),
        || stuck_report(&brokers, &group, &members),
    );
    for mut member in members.into_iter().flatten() {
        let status = member.terminate_and_wait();
        let log = member.log_text();
        let last: Vec<&str> = log.lines().rev().take(20).collect();
        assert!(
            status.success(),
            "a member failed to stop cleanly ({status}); its last lines:\n  {}",
            last.into_iter().rev().collect::<Vec<_>>().join("\n  ")
        );
        logs.push(log);
    }
    let samples = sampler.stop();
    eprintln!("{strategy}: {kills} SIGKILL, {stops} SIGTERM, {freezes} SIGSTOP, {starts} starts");
    match promise {
        Promise::AtLeastOnce => {
            let report = check(&brokers, "in", &group, Some("dlq"), &logs, &samples);
            eprintln!("{}", report.summary());
            report.assert_sound();
            assert_eq!(report.finished, records, "every record finished:\n{}", report.summary());
        }
        Promise::ExactlyOnce => {
            let inputs = read_all(&brokers, "in");
            assert_eq!(inputs.len(), records);
            let verdict = judge(&brokers, "in", &inputs, Some("dlq"));
            eprintln!("{}", verdict.summary());
            verdict.assert_exactly_once();
            verdict.assert_own_output_partitions();
            let backwards = backwards_commits(&samples);
            assert!(backwards.is_empty(), "committed offsets moved back: {backwards:?}");
        }
    }
    assert!(
        kills + stops + freezes >= intensity.events / 2,
        "the run was chaotic enough ({kills} kills, {stops} stops, {freezes} freezes)"
    );
}

/// What a run that never reached lag 0 left behind: each partition's bookmark and log
/// end, and what each live member last warned about.
fn stuck_report(brokers: &str, group: &str, members: &[Option<FerryProcess>]) -> String {
    let mut report = String::new();
    for p in lag(brokers, group, "in") {
        report += &format!("in/{}: committed {:?}, log end {}\n", p.partition, p.committed, p.log_end);
    }
    for member in members.iter().flatten() {
        let log = member.log_text();
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
        let last: Vec<&str> = log.lines().rev().take(5).collect();
        report += &format!(
            "member {}: last warnings:\n  {}\nlast lines:\n  {}\n",
            member.pid(),
            warnings[warnings.len().saturating_sub(8)..].join("\n  "),
            last.into_iter().rev().collect::<Vec<_>>().join("\n  ")
        );
    }
    report
}

/// A run on librdkafka's mock broker in a process of its own: many records, graceful
/// leaves at any moment.
fn on_a_broker_process(strategy: &str) {
    let broker = std::sync::Mutex::new(MockBrokerProcess::start());
    run(&broker, strategy, 24_000, ON_A_BROKER_PROCESS, Promise::AtLeastOnce, Leaves::Anytime);
}

/// A run on Tansu, in its turn: it fetches slowly, so fewer records and events, and
/// graceful leaves only in a settled group (see [`Leaves::WhenSettled`]).
fn on_tansu(strategy: &str, promise: Promise) {
    let (records, intensity) = match promise {
        Promise::AtLeastOnce => (1_500, ON_TANSU),
        Promise::ExactlyOnce => (2_400, EXACTLY_ONCE_ON_TANSU),
    };
    tansu_turn(|| run(&Tansu::start(), strategy, records, intensity, promise, Leaves::WhenSettled));
}

#[test]
fn chaos_eager_on_a_broker_process() {
    on_a_broker_process("range");
}

#[test]
fn chaos_cooperative_sticky_on_a_broker_process() {
    on_a_broker_process("cooperative-sticky");
}

#[test]
fn chaos_eager_on_tansu() {
    on_tansu("range", Promise::AtLeastOnce);
}

#[test]
fn chaos_exactly_once_eager_on_tansu() {
    on_tansu("range", Promise::ExactlyOnce);
}

#[test]
fn chaos_exactly_once_cooperative_sticky_on_tansu() {
    on_tansu("cooperative-sticky", Promise::ExactlyOnce);
}
