//! The offset scenarios (see `ferry_tests::scenarios`) on a real
//! Kafka-protocol broker process: Tansu, started on a free loopback port. Tansu
//! fetches slowly, so the volumes are small.

use ferry_tests::Tansu;
use ferry_tests::scenarios::*;

#[test]
fn tansu_clean_run() {
    clean_run(&Tansu::start(), 25);
}

#[test]
fn tansu_crash_before_commit() {
    crash_before_commit(&Tansu::start(), 1);
}

#[test]
fn tansu_rebalance_eager() {
    rebalance_after_a_member_dies(&Tansu::start(), "range", 320, 100, 1);
}

#[test]
fn tansu_gap_holds_the_commit() {
    gap_holds_the_commit(&Tansu::start(), 1);
}

#[test]
fn tansu_sigkill_mid_stream() {
    sigkill_mid_stream(&Tansu::start(), 100, 50);
}
