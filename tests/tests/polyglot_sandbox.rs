//! Hostile Python and JavaScript guests (the chaos guests of tests/guests/python
//! and tests/guests/js, built from source) are contained and classified like the
//! Rust chaos guest in `sandbox.rs`: an endless loop, unbounded memory, deep
//! recursion, a fault, an ordinary exception and blocking sleeps; each faulted
//! instance is replaced and the next batch runs on a fresh one, while a healthy
//! guest in the same engine keeps serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_host::devtools::GuestLanguage;
use ferry_host::sandbox::{
    Batch, Grants, GuestFault, Limits, ProcessorComponent, ProcessorInstance, Provisions, Sandbox, SandboxSettings,
};
use ferry_sdk::wire::BatchEncoder;
use ferry_tests::{guest, outcome_label, polyglot_guest};

/// Per-batch time limit: long enough for a fresh interpreter instance, short
/// enough that the waits below end quickly.
const TIME_LIMIT_MS: u64 = 300;

/// A sandbox that compiles through the default artifact cache, like `ferry run`,
/// `ferry check` and the other suites' hosts: these tests run alone at the end of the
/// suite, and the components they load (12-19 MB) were compiled by then.
fn sandbox() -> Sandbox {
    Sandbox::new(SandboxSettings {
        max_instances: 32,
        cache_dir: ferry_host::sandbox::default_cache_dir(),
        ..SandboxSettings::default()
    })
    .unwrap()
}

fn limits() -> Limits {
    Limits { memory_bytes: 64 << 20, time_per_batch_ms: TIME_LIMIT_MS, ..Limits::default() }
}

fn instance(sandbox: &Sandbox, name: &str, path: &std::path::Path) -> ProcessorInstance {
    let grants = Grants { output_topics: ["out".to_owned()].into(), log: true, state: false, http: None };
    let bytes = std::fs::read(path).unwrap();
    let component = Arc::new(ProcessorComponent::load(sandbox, &bytes, &grants).unwrap());
    ProcessorInstance::new(sandbox.clone(), component, name, Provisions::simple(name, grants), limits())
}

fn chaos(language: GuestLanguage) -> std::path::PathBuf {
    polyglot_guest(language, &format!("tests/guests/{}/chaos", language.name()))
}

fn run(instance: &mut ProcessorInstance, values: &[&str]) -> Result<Vec<String>, GuestFault> {
    let mut encoder = BatchEncoder::new();
    for (offset, value) in values.iter().enumerate() {
        encoder.push(offset as i64, Some(1_700_000_000_000), Some(b"k"), Some(value.as_bytes()), []);
    }
    let batch = Batch { topic: "in".into(), partition: 0, count: encoder.count(), records: encoder.into_bytes() };
    let offsets: Vec<i64> = (0..values.len() as i64).collect();
    let (reply, _) = instance.process(&batch, &offsets, instance.deadline_from_now())?;
    Ok(reply.into_outcomes().map(outcome_label).collect())
}

type IsExpected = fn(&GuestFault) -> bool;

fn timeout(fault: &GuestFault) -> bool {
    matches!(fault, GuestFault::Timeout(TIME_LIMIT_MS))
}

/// The hostile cases both languages share, and what each must be classified as.
/// Deep recursion in the tenant's code ends at the interpreter's own recursion
/// limit (CPython's `RecursionError`, SpiderMonkey's "too much recursion"), which
/// the SDKs raise as a fault: a trap like a Rust panic. Recursion inside the
/// interpreter's C code (Python's `recurse-native`) runs into wasm's stack limit,
/// as the Rust guest's recursion does.
fn cases(language: GuestLanguage) -> Vec<(&'static str, IsExpected)> {
    let mut cases: Vec<(&'static str, IsExpected)> = vec![
        ("loop", timeout),
        ("oom", |f| matches!(f, GuestFault::OutOfMemory(_))),
        ("recurse", |f| matches!(f, GuestFault::Panic(_))),
        ("panic", |f| matches!(f, GuestFault::Panic(_))),
        // A blocking sleep for 120 s: a WASI clock wait for Python (`time.sleep`),
        // a synchronous wait for JavaScript (StarlingMonkey has no blocking sleep
        // but a busy one).
        ("sleep", timeout),
        ("block:120000", timeout),
    ];
    if language == GuestLanguage::Python {
        // Recursion in C (repr of a deeply nested list, recursion limit lifted).
        cases.push(("recurse-native", |f| matches!(f, GuestFault::StackOverflow)));
    }
    cases
}

fn hostile_guests_are_contained(language: GuestLanguage) {
    let sandbox = sandbox();
    let mut healthy = instance(&sandbox, "healthy", &guest("ferry-example-passthrough"));
    let mut chaos = instance(&sandbox, "chaos", &chaos(language));
    assert_eq!(run(&mut chaos, &["fine"]).unwrap(), ["processed"]);
    let cases = cases(language);
    for (behaviour, expected) in &cases {
        let started = Instant::now();
        let fault = run(&mut chaos, &["fine", behaviour, "fine"]).expect_err(behaviour);
        eprintln!("{}: {behaviour} -> {fault:?} in {:?}", language.name(), started.elapsed());
        assert!(expected(&fault), "{}: {behaviour} classified as {fault:?}", language.name());
        if let GuestFault::Timeout(_) = fault {
            // The ceiling is generous: the point is that 120 s never pass.
            assert!(started.elapsed() < Duration::from_secs(60), "{behaviour} held the call past its deadline");
        }
        // The faulted store is gone: the next batch runs on a fresh instance.
        assert_eq!(run(&mut chaos, &["fine", "fine"]).unwrap(), ["processed", "processed"], "after {behaviour}");
        assert_eq!(run(&mut healthy, &["a", "b", "c"]).unwrap().len(), 3, "the healthy guest serves after {behaviour}");
    }
    // An ordinary exception is not a fault: the SDK rejects the record with the
    // exception's type and message, as a Rust processor returns an error.
    let outcomes = run(&mut chaos, &["fine", "error", "fine"]).unwrap();
    let prefix = match language {
        GuestLanguage::Python => "reject: KeyError: 'missing'",
        GuestLanguage::JavaScript => "reject: TypeError: ",
    };
    assert!(outcomes[1].starts_with(prefix), "{outcomes:?}");
    assert_eq!([&outcomes[0], &outcomes[2]], ["processed", "processed"]);
    assert_eq!(chaos.instantiations(), 1 + cases.len() as u64, "one fresh instance per fault, plus the first");
    assert_eq!(healthy.instantiations(), 1, "the healthy guest was never disturbed");
}

#[test]
fn hostile_python_guests_are_contained_classified_and_replaced() {
    hostile_guests_are_contained(GuestLanguage::Python);
}

#[test]
fn hostile_javascript_guests_are_contained_classified_and_replaced() {
    hostile_guests_are_contained(GuestLanguage::JavaScript);
}

/// A componentize-py component instantiates 15 core modules: the pool holds as
/// many live Python instances as `max_instances` says, not a quarter of them.
#[test]
fn the_pool_holds_max_instances_live_python_instances() {
    let sandbox = Sandbox::new(SandboxSettings {
        max_instances: 8,
        cache_dir: ferry_host::sandbox::default_cache_dir(),
        ..SandboxSettings::default()
    })
    .unwrap();
    let path = polyglot_guest(GuestLanguage::Python, "tests/guests/python/passthrough");
    let bytes = std::fs::read(path).unwrap();
    let component = Arc::new(ProcessorComponent::load(&sandbox, &bytes, &Grants::default()).unwrap());
    let mut live = Vec::new();
    for i in 0..8 {
        let provisions = Provisions::simple("many", Grants::default());
        let mut instance = ProcessorInstance::new(sandbox.clone(), component.clone(), "many", provisions, limits());
        assert_eq!(run(&mut instance, &["x"]).unwrap_or_else(|f| panic!("instance {i}: {f}")), ["processed"]);
        live.push(instance);
    }
}

/// A memory limit below the memory an interpreter's snapshot starts with is refused
/// by name when the host starts, and by a clear fault for a deploy; `ferry check`
/// says what the component starts with.
#[test]
fn a_memory_limit_below_the_snapshot_is_refused_clearly() {
    let component = polyglot_guest(GuestLanguage::Python, "examples/python/orders");
    let config = ferry_host::config::Config::parse(&format!(
        r#"
        brokers = "127.0.0.1:1"
        [[pipeline]]
        name = "small"
        inputs = ["orders"]
        group = "small"
        component = "{}"
        output_topics = ["commissions"]
        limits = {{ memory_mib = 8 }}
        "#,
        component.display()
    ))
    .unwrap();
    let error = format!("{:#}", ferry_host::host::Host::start(&config).err().expect("refused"));
    assert!(
        error.contains("pipeline `small`.limits.memory_mib: 8 MiB is less than the 12.")
            && error.contains("at least 13"),
        "{error}"
    );

    let sandbox = sandbox();
    let grants = Grants { output_topics: ["commissions".to_owned()].into(), log: false, state: false, http: None };
    let loaded = Arc::new(ProcessorComponent::load(&sandbox, &std::fs::read(&component).unwrap(), &grants).unwrap());
    assert_eq!(ferry_host::sandbox::minimum_memory_mib(loaded.initial_memory()), 13);
    let small = Limits { memory_bytes: 8 << 20, ..limits() };
    let mut instance = ProcessorInstance::new(sandbox, loaded, "small", Provisions::simple("small", grants), small);
    let fault = instance.self_test().expect_err("no instance");
    assert!(matches!(&fault, GuestFault::Instantiate(m) if m.contains("limits.memory_mib")), "{fault:?}");

    let out = std::process::Command::new(ferry_tests::ferry_bin()).arg("check").arg(&component).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("initial linear memory: 12.") && text.contains("must be at least 13"), "{text}");
}
