//! `ferry demo`'s other modes: `--story` (two crash stories, end to end, with
//! real `ferry run` child processes killed with SIGKILL on the embedded broker) and
//! `--exactly-once` (the orders pipeline in transactions, read back with
//! `read_committed`).

use std::process::Command;

use ferry_tests::*;

#[test]
fn the_story_mode_plays_the_crash_and_the_commit_policies() {
    let component = guest("ferry-example-orders");
    let out = Command::new(ferry_bin())
        .args(["demo", "--story", "--records", "3000", "--rate", "1000", "--component"])
        .arg(&component)
        .output()
        .expect("ferry demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!("{stdout}\n--- stderr ---\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ferry demo --story failed:\n{all}");

    // Story 1: the bookmark table before the crash, at the takeover and at the end,
    // each with the four partitions.
    for title in ["bookmarks before the crash", "at the takeover", "at the end:"] {
        let table: Vec<&str> = stdout
            .lines()
            .skip_while(|l| !l.contains(title))
            .skip(2)
            .take_while(|l| l.starts_with("  orders["))
            .collect();
        assert_eq!(table.len(), 4, "{title}: a row per partition:\n{all}");
    }
    for words in [
        "member A, a `ferry run` process",
        "member A killed with SIGKILL",
        "member B reads all four partitions",
        "B resumes orders[",
        "every order was processed",
        "from the bookmark on",
    ] {
        assert!(stdout.contains(words), "says {words:?}:\n{all}");
    }
    assert!(
        stdout.contains("were processed twice") || stdout.contains("no order was processed twice"),
        "the duplicates are counted:\n{all}"
    );

    // Story 2: both policies through the same crash, counted from the broker.
    for words in ["both processes killed with SIGKILL", "interval (1000 ms)", "per-batch", "orders delivered again"] {
        assert!(stdout.contains(words), "says {words:?}:\n{all}");
    }
}

#[test]
fn the_exactly_once_demo_reads_back_one_commission_per_valid_order() {
    let component = guest("ferry-example-orders");
    let out = Command::new(ferry_bin())
        .args(["demo", "--exactly-once", "--records", "2000", "--component"])
        .arg(&component)
        .output()
        .expect("ferry demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!("{stdout}\n--- stderr ---\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ferry demo --exactly-once failed:\n{all}");
    // 2000 orders, every 50th malformed: 1960 valid, 40 dead letters.
    for words in [
        "commissions read back with read_committed: 1960 for 1960 orders (valid orders: 1960)",
        "dead letters read back with read_committed: 40 (malformed orders: 40)",
        "exactly once: every valid order has one commission",
    ] {
        assert!(stdout.contains(words), "says {words:?}:\n{all}");
    }
}
