//! A Kafka-protocol broker in a process of its own, for tests whose members come and
//! go (SIGKILL, restarts) while the broker stays: librdkafka's mock cluster, held
//! here. It prints `bootstrap <servers>` once listening, then serves commands from
//! stdin, one per line, answering `ok` or `error <why>`:
//!
//! - `topic <name> <partitions>`: create a topic;
//!
//! and exits when stdin closes (its parent test ended).

use std::io::{BufRead as _, Write as _};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

fn main() {
    let brokers = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(1);
    let cluster: MockCluster<'static, DefaultProducerContext> =
        MockCluster::new(brokers).expect("the mock cluster starts");
    let mut out = std::io::stdout().lock();
    writeln!(out, "bootstrap {}", cluster.bootstrap_servers()).expect("stdout");
    out.flush().expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["topic", name, partitions] => match partitions.parse() {
                Ok(partitions) => match cluster.create_topic(name, partitions, 1) {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("error {e}"),
                },
                Err(_) => format!("error {partitions} is not a partition count"),
            },
            _ => format!("error unknown command {line:?}"),
        };
        writeln!(out, "{answer}").expect("stdout");
        out.flush().expect("stdout");
    }
}
