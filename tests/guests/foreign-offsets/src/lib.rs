//! Test guest: answers the right number of statuses, but reports a `retry` failure for
//! an offset that is not in the batch (the batch's last offset + 1000). The host must
//! refuse the answer.
//!
//! The SDK always reports a record's own offset, so this guest implements the
//! generated handler directly, through the SDK's hidden bindings.

use ferry_sdk::__bindings::exports::ferry::processor::handler::{Batch, BatchResult, Guest, TopicPartition};
use ferry_sdk::__bindings::ferry::processor::types::{Failure, Status};
use ferry_sdk::wire;

// Only exported (and so only constructed) in the wasm32 build.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct ForeignOffsets;

impl Guest for ForeignOffsets {
    fn process(batch: Batch) -> BatchResult {
        let last = wire::decode(&batch.records, batch.count).map(|record| record.expect("valid batch").offset).last();
        let mut statuses = vec![Status::Processed; batch.count as usize];
        let mut failures = Vec::new();
        if let (Some(last), Some(first)) = (last, statuses.first_mut()) {
            *first = Status::Retry;
            failures.push(Failure { offset: last + 1000, reason: "not one of yours".to_owned() });
        }
        BatchResult { statuses, failures }
    }

    fn assigned(_: TopicPartition) {}

    fn revoked(_: TopicPartition) {}

    fn self_test() -> Result<(), String> {
        Ok(())
    }
}

#[cfg(target_arch = "wasm32")]
ferry_sdk::__bindings::__ferry_export!(ForeignOffsets with_types_in ferry_sdk::__bindings);
