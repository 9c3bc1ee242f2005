//! Keyed state in the tenant's tools, with the counter example built from source:
//! `ferry test` runs it against an initial state file and reports every state
//! change, and `ferry dev` keeps its state from one run to the next.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use ferry_tests::{ferry_bin, guest, wait_until};

/// A count as the counter keeps it (the SDK's `put_u64`: 8 bytes, little-endian),
/// as the state file writes those bytes (they are UTF-8, so a JSON string).
fn count(n: u64) -> String {
    serde_json::to_string(&String::from_utf8(n.to_le_bytes().to_vec()).unwrap()).unwrap()
}

fn ferry(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(ferry_bin()).args(args).current_dir(dir).output().expect("ferry runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ferry_test_reports_state_changes_from_an_initial_state() {
    let dir = tempfile::tempdir().unwrap();
    let component = guest("ferry-example-counter");
    std::fs::write(
        dir.path().join("sample.jsonl"),
        [
            r#"{"key": "a", "value": "x"}"#,
            r#"{"key": "b", "value": "x"}"#,
            r#"{"key": "a", "value": "x"}"#,
            r#"{"key": "a", "value": "x", "partition": 1}"#,
            r#"{"value": "no key"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    // Partition 0 starts with a = 5 (as base64, the other way to write bytes); partition 1 with nothing.
    std::fs::write(dir.path().join("state.json"), r#"{"0": {"a": {"base64": "BQAAAAAAAAA="}}}"#).unwrap();
    let component = component.to_str().unwrap();
    let args = [
        "test",
        component,
        "--input",
        "sample.jsonl",
        "--allow-topic",
        "counts",
        "--state",
        "state.json",
        "--state-out",
        "after.json",
    ];
    let (ok, stdout, stderr) = ferry(dir.path(), &args);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("\n  state: 65536 KiB per partition, keys up to 4096 bytes"), "{stderr}");
    let log = "  log info: counted 1 records from input/";
    let expected = format!(
        r#"self-test: passed
record {{"topic":"input","partition":0,"offset":0,"key":"a","value":"x"}}
  processed
  output {{"topic":"counts","key":"a","value":"6"}}
  state "a": {c5} → {c6}
{log}0
record {{"topic":"input","partition":0,"offset":1,"key":"b","value":"x"}}
  processed
  output {{"topic":"counts","key":"b","value":"1"}}
  state "b": (absent) → {c1}
{log}0
record {{"topic":"input","partition":0,"offset":2,"key":"a","value":"x"}}
  processed
  output {{"topic":"counts","key":"a","value":"7"}}
  state "a": {c6} → {c7}
{log}0
record {{"topic":"input","partition":1,"offset":0,"key":"a","value":"x"}}
  processed
  output {{"topic":"counts","key":"a","value":"1"}}
  state "a": (absent) → {c1}
{log}1
record {{"topic":"input","partition":0,"offset":3,"key":null,"value":"no key"}}
  processed
{log}0
state of partition 0: 2 keys, 274 bytes
state of partition 1: 1 keys, 137 bytes
5 records: 5 processed, 0 rejected, 0 to retry, 0 faulted
"#,
        c1 = count(1),
        c5 = count(5),
        c6 = count(6),
        c7 = count(7),
    );
    assert_eq!(stdout, expected);
    let after = std::fs::read_to_string(dir.path().join("after.json")).unwrap();
    assert_eq!(
        after,
        format!("{{\n\"0\": {{\"a\":{},\"b\":{}}},\n\"1\": {{\"a\":{}}}\n}}\n", count(7), count(1), count(1))
    );

    // The state written is the state read: a second run goes on from it.
    let again = ["test", component, "--input", "sample.jsonl", "--allow-topic", "counts", "--state", "after.json"];
    let (ok, stdout, stderr) = ferry(dir.path(), &again);
    assert!(ok, "{stdout}\n{stderr}");
    let outputs: Vec<&str> = stdout.lines().filter(|l| l.starts_with("  output")).collect();
    assert_eq!(
        outputs,
        [
            r#"  output {"topic":"counts","key":"a","value":"8"}"#,
            r#"  output {"topic":"counts","key":"b","value":"2"}"#,
            r#"  output {"topic":"counts","key":"a","value":"9"}"#,
            r#"  output {"topic":"counts","key":"a","value":"2"}"#,
        ]
    );
}

/// A batch whose record is refused a write (the partition's state is full) keeps
/// its other writes: the refusal is the counter's reject, and a reject finishes the
/// record. A state file past the limits is refused before anything runs.
#[test]
fn ferry_test_applies_the_pipelines_state_limits() {
    let dir = tempfile::tempdir().unwrap();
    let component = guest("ferry-example-counter");
    let config = format!(
        r#"
        brokers = "unused:9092"
        [[pipeline]]
        name = "counter"
        inputs = ["clicks"]
        group = "counter"
        component = "{}"
        output_topics = ["counts"]
        [pipeline.settings]
        output_topic = "counts"
        [pipeline.state]
        partition_bytes = 1024
        "#,
        component.display()
    );
    std::fs::write(dir.path().join("ferry.toml"), config).unwrap();
    // 128 + 2 + 8 bytes a key: seven fit in 1024, the eighth does not.
    let lines: Vec<String> = (0..8).map(|k| format!(r#"{{"key": "k{k}", "value": "x"}}"#)).collect();
    std::fs::write(dir.path().join("sample.jsonl"), lines.join("\n")).unwrap();
    let (ok, stdout, stderr) =
        ferry(dir.path(), &["test", "--config", "ferry.toml", "--input", "sample.jsonl", "--batch-size", "8"]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("state: 1 KiB per partition"), "{stderr}");
    let changes: Vec<&str> = stdout.lines().filter(|l| l.starts_with("  state ")).collect();
    let expected: Vec<String> = (0..7).map(|k| format!("  state \"k{k}\": (absent) → {}", count(1))).collect();
    assert_eq!(changes, expected, "{stdout}");
    assert!(stdout.contains("  reject: the partition's state would exceed its limit of 1024 bytes"), "{stdout}");
    assert!(stdout.contains("state of partition 0: 7 keys, 966 bytes"), "{stdout}");

    let big: Vec<String> = (0..8).map(|k| format!(r#""k{k}": "12345678""#)).collect();
    std::fs::write(dir.path().join("big.json"), format!("{{\"0\": {{{}}}}}", big.join(", "))).unwrap();
    let (ok, _, stderr) =
        ferry(dir.path(), &["test", "--config", "ferry.toml", "--input", "sample.jsonl", "--state", "big.json"]);
    assert!(!ok);
    assert!(stderr.contains("partition 0: more state than its limit of 1024 bytes"), "{stderr}");
}

/// A `ferry dev` running in the background, its stdout collected line by line.
struct Dev {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Dev {
    fn start(dir: &Path, extra: &[&str]) -> Dev {
        let mut child = Command::new(ferry_bin())
            .args(["dev", "--config", "ferry.toml", "--input", "sample.jsonl"])
            .args(extra)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ferry dev runs");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped");
        let into = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                into.lock().unwrap().push(line);
            }
        });
        Dev { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The counts it printed, in order.
    fn outputs(&self) -> Vec<String> {
        self.lines().into_iter().filter(|l| l.starts_with("output ")).collect()
    }

    /// Stops it with SIGINT (Ctrl-C) and returns everything it printed.
    fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
        let mut status = None;
        wait_until("ferry dev stops", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        assert!(status.unwrap().success(), "{:#?}", self.lines());
        // The reader thread has the rest once the pipe closes.
        wait_until("its output read", || self.lines().iter().any(|l| l.starts_with("ferry dev: kept")));
        self.lines()
    }
}

fn output(key: &str, n: u64) -> String {
    format!(r#"output {{"topic":"counts","key":"{key}","value":"{n}"}}"#)
}

#[test]
fn ferry_dev_keeps_state_from_one_run_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let component = guest("ferry-example-counter");
    let config = format!(
        r#"
        brokers = "unused:9092"
        [[pipeline]]
        name = "counter"
        inputs = ["clicks"]
        group = "counter"
        component = "{}"
        output_topics = ["counts"]
        max_wait_ms = 20
        [pipeline.settings]
        output_topic = "counts"
        [pipeline.state]
        "#,
        component.display()
    );
    std::fs::write(dir.path().join("ferry.toml"), config).unwrap();
    let samples = [r#"{"key": "a"}"#, r#"{"key": "b"}"#, r#"{"key": "a"}"#, r#"{"key": "c", "partition": 1}"#];
    std::fs::write(dir.path().join("sample.jsonl"), samples.join("\n")).unwrap();
    let sorted = |mut lines: Vec<String>| {
        lines.sort();
        lines
    };

    let first = Dev::start(dir.path(), &[]);
    wait_until("the first run's counts", || first.outputs().len() >= 4);
    let printed = first.stop();
    assert!(printed.contains(&"ferry dev: kept pipeline counter's state (3 keys) in .ferry/dev-state/counter.json for the next ferry dev".to_owned()), "{printed:#?}");
    let outputs = sorted(printed.into_iter().filter(|l| l.starts_with("output ")).collect());
    assert_eq!(outputs, sorted(vec![output("a", 1), output("b", 1), output("a", 2), output("c", 1)]));

    // The next run starts from the state the first left.
    let second = Dev::start(dir.path(), &[]);
    wait_until("the second run's counts", || second.outputs().len() >= 4);
    let printed = second.stop();
    assert!(
        printed.contains(
            &"ferry dev: pipeline counter starts with the state kept in .ferry/dev-state/counter.json (3 keys)"
                .to_owned()
        ),
        "{printed:#?}"
    );
    let outputs = sorted(printed.into_iter().filter(|l| l.starts_with("output ")).collect());
    assert_eq!(outputs, sorted(vec![output("a", 3), output("b", 2), output("a", 4), output("c", 2)]));

    // --fresh-state counts from nothing (and what it leaves is kept).
    let fresh = Dev::start(dir.path(), &["--fresh-state"]);
    wait_until("the fresh run's counts", || fresh.outputs().len() >= 4);
    let printed = fresh.stop();
    assert!(!printed.iter().any(|l| l.contains("starts with the state kept")), "{printed:#?}");
    let outputs = sorted(printed.into_iter().filter(|l| l.starts_with("output ")).collect());
    assert_eq!(outputs, sorted(vec![output("a", 1), output("b", 1), output("a", 2), output("c", 1)]));
    let kept = std::fs::read_to_string(dir.path().join(".ferry/dev-state/counter.json")).unwrap();
    assert_eq!(
        kept,
        format!("{{\n\"0\": {{\"a\":{},\"b\":{}}},\n\"1\": {{\"c\":{}}}\n}}\n", count(2), count(1), count(1))
    );
}
