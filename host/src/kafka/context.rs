//! The consumer context: what runs inside librdkafka's rebalance callbacks (on the
//! pipeline thread, inside `poll`). It routes newly assigned partitions to the fetch
//! queue, clears pause flags librdkafka would otherwise carry across assignments,
//! and hands the revoke to the pipeline ([`RebalanceListener`]), which drains and
//! commits before the partitions go.

use std::sync::Arc;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::client_log::{ClientLogOwner, ConsumerOf};
use super::fetch::FetchRoute;
use super::tracker::TopicPartition;

/// What the pipeline does when partitions come and go (and where its consumer's
/// log state lives).
pub(crate) trait RebalanceListener: ClientLogOwner + Send + Sync {
    /// Partitions are about to be revoked (`lost`: the group already gave them to
    /// another member, so nothing may be committed for them).
    fn revoking(&self, consumer: &BaseConsumer<FerryContext>, partitions: Vec<TopicPartition>, lost: bool);
    /// Partitions were assigned.
    fn assigned(&self, partitions: &[TopicPartition]);
    /// A rebalance failed.
    fn rebalance_error(&self, error: &str);
    /// Where the consumer fetches its partitions now (librdkafka's statistics).
    fn fetching(&self, partitions: Vec<super::client_log::PartitionFetch>);
}

/// The consumer context of a pipeline.
pub(crate) struct FerryContext {
    /// The pipeline.
    pub listener: Arc<dyn RebalanceListener>,
    /// Where assigned partitions' records go (the pipeline's fetch queue).
    pub route: FetchRoute,
}

/// librdkafka's words about the consumer go to the pipeline's [`ClientLog`](super::client_log::ClientLog):
/// once per change of state, not once per retry.
impl ClientContext for FerryContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.listener.client_log().log(&self.who(), level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.listener.client_log().error(&self.who(), &error, reason);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        let fetches = self.listener.client_log().statistics(&self.who(), statistics);
        self.listener.fetching(fetches);
    }
}

impl FerryContext {
    /// The consumer, as its log lines name it.
    fn who(&self) -> ConsumerOf<'_> {
        ConsumerOf(self.listener.client_name())
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect()
}

/// The same partitions, for pause and resume calls.
pub(crate) fn list_of(partitions: &[TopicPartition]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition_offset(topic, *partition, Offset::Invalid).expect("valid offset");
    }
    list
}

impl ConsumerContext for FerryContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let revoked = partitions(list);
                // librdkafka keeps the application's pause flag across unassign and
                // assign: a partition paused for a retry backoff or a halt would come
                // back paused, for good. Nothing of the pause outlives the assignment.
                let _ = consumer.resume(list);
                self.listener.revoking(consumer, revoked, consumer.assignment_lost());
            }
            Rebalance::Assign(list) => {
                for (topic, partition) in partitions(list) {
                    // Before librdkafka starts fetching it (right after this callback).
                    self.route.route(consumer, &topic, partition);
                }
            }
            Rebalance::Error(error) => self.listener.rebalance_error(&error.to_string()),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            // Belt and braces with the resume at revoke: a member that lost its
            // assignment without a revoke callback starts every partition unpaused.
            let _ = consumer.resume(list);
            self.listener.client_log().assigned(&self.who());
            self.listener.assigned(&partitions(list));
        }
    }
}

/// What a member commits for partitions, and how long a revoke may take.
pub(crate) const SYNC_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
