//! The offset scenarios (see `ferry_tests::scenarios`) on the embedded broker, with
//! one worker per pipeline and, for crash, rebalance and gap, with two.

use ferry_tests::Embedded;
use ferry_tests::scenarios::*;

#[test]
fn clean_run_processes_each_record_once_and_commits_the_log_end() {
    clean_run(&Embedded::start(), 500);
}

#[test]
fn crash_before_commit_redelivers_only_the_uncommitted_window() {
    crash_before_commit(&Embedded::start(), 1);
}

#[test]
fn crash_before_commit_with_two_workers() {
    crash_before_commit(&Embedded::start(), 2);
}

/// With two workers the victim works through its two partitions side by side, in
/// half the time: twice the slow records keep the window in which it is mid-stream as
/// long (about 8 s), which a loaded machine's slow `lag` reads need to see it.
const SLOW_WITH_TWO_WORKERS: usize = 1600;

#[test]
fn rebalance_eager() {
    rebalance_after_a_member_dies(&Embedded::start(), "range", 800, 20, 1);
}

#[test]
fn rebalance_eager_with_two_workers() {
    rebalance_after_a_member_dies(&Embedded::start(), "range", SLOW_WITH_TWO_WORKERS, 20, 2);
}

#[test]
fn rebalance_cooperative_sticky() {
    rebalance_after_a_member_dies(&Embedded::start(), "cooperative-sticky", 800, 20, 1);
}

#[test]
fn rebalance_cooperative_sticky_with_two_workers() {
    rebalance_after_a_member_dies(&Embedded::start(), "cooperative-sticky", SLOW_WITH_TWO_WORKERS, 20, 2);
}

#[test]
fn a_gap_holds_the_commit_at_the_unfinished_record() {
    gap_holds_the_commit(&Embedded::start(), 1);
}

#[test]
fn a_gap_holds_the_commit_with_two_workers() {
    gap_holds_the_commit(&Embedded::start(), 2);
}

#[test]
fn sigkill_mid_stream_loses_nothing() {
    sigkill_mid_stream(&Embedded::start(), 600, 2);
}
