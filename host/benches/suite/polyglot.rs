//! Section 6: Rust, Python and JavaScript guests side by side, in one run: component size, compile and cached load time, memory, fresh instance and
//! trap recovery, per-record cost at batch sizes 1, 100 and 1000, and end to end
//! against the bare rdkafka loop.
//!
//! Each language has the same three guests: a passthrough (every record processed,
//! no capability: `examples/passthrough`, `tests/guests/{python,js}/passthrough`),
//! the orders example (`examples/orders`, `examples/{python,js}/orders`) and the
//! chaos guest (`tests/guests/chaos`, `tests/guests/{python,js}/chaos`), each built
//! from source (Python with componentize-py 0.25.1, JavaScript with componentize-js
//! 0.23.0, both pre-initialised snapshots).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use ferry_host::devtools::{GuestLanguage, build_polyglot_guest};
use ferry_host::sandbox::{
    Batch, Grants, Limits, ProcessorComponent, ProcessorInstance, Provisions, Sandbox, SandboxSettings,
};
use ferry_sdk::wire::BatchEncoder;

use crate::boundary::far;
use crate::common::{self, median, proc_status, quantile};
use crate::e2e;

/// The fresh-instance target for the interpreter guests, in µs.
pub const FRESH_TARGET_US: f64 = 5_000.0;
/// Per-record batch sizes.
pub const BATCHES: [usize; 3] = [1, 100, 1000];
/// The guests' memory limit here: the default `limits.memory_mib`.
const MEMORY: u64 = 64 << 20;
/// Live instances held at once to measure resident memory per instance.
const LIVE: usize = 16;
/// The host the density row is stated for: 24 GiB, in KiB.
const DENSITY_HOST_KIB: f64 = 24.0 * 1024.0 * 1024.0;

/// One language's guests.
#[derive(Debug, Clone)]
pub struct Language {
    pub name: &'static str,
    pub passthrough: PathBuf,
    pub orders: PathBuf,
    pub chaos: PathBuf,
}

/// Builds the three guests of each language (Python and JS builds are cached by
/// source digest under `target/guests`).
pub fn languages() -> anyhow::Result<Vec<Language>> {
    let mut out = vec![Language {
        name: "Rust",
        passthrough: common::guest("ferry-example-passthrough")?,
        orders: common::guest("ferry-example-orders")?,
        chaos: common::guest("ferry-guest-chaos")?,
    }];
    for (language, name) in [(GuestLanguage::Python, "Python"), (GuestLanguage::JavaScript, "JavaScript")] {
        let dir = language.name();
        out.push(Language {
            name,
            passthrough: build_polyglot_guest(language, &format!("tests/guests/{dir}/passthrough"))?,
            orders: build_polyglot_guest(language, &format!("examples/{dir}/orders"))?,
            chaos: build_polyglot_guest(language, &format!("tests/guests/{dir}/chaos"))?,
        });
    }
    Ok(out)
}

/// One language's figures (times in µs unless named otherwise).
#[derive(Debug, Clone)]
pub struct Figures {
    pub name: &'static str,
    pub orders_bytes: usize,
    pub passthrough_bytes: usize,
    pub compile_ms: f64,
    pub cached_load_ms: f64,
    pub initial_memory: u64,
    /// Linear memory of an orders instance after a batch of 1 and of 1000.
    pub high_water: [u64; 2],
    /// Resident memory each live orders instance adds (after a 100-record batch), KiB.
    pub rss_per_instance_kib: f64,
    pub warm: f64,
    pub cold: f64,
    pub cold_p99: f64,
    pub trap_call: f64,
    pub recovery: f64,
    pub recovery_p99: f64,
    /// ns per record at [`BATCHES`].
    pub passthrough_ns: [f64; 3],
    pub orders_ns: [f64; 3],
    /// The native decode of the same batches (the passthrough's work, natively).
    pub native_ns: [f64; 3],
    pub e2e: Option<e2e::Comparison>,
}

impl Figures {
    pub fn fresh(&self) -> f64 {
        self.cold - self.warm
    }
}

fn sandbox(cache: Option<&Path>) -> anyhow::Result<Sandbox> {
    Sandbox::new(SandboxSettings { max_instances: 64, cache_dir: cache.map(Path::to_path_buf), ..Default::default() })
}

fn grants() -> Grants {
    Grants {
        output_topics: ["commissions".to_owned(), "bench-out".to_owned()].into(),
        log: true,
        state: false,
        http: None,
    }
}

fn instance(sandbox: &Sandbox, component: &Arc<ProcessorComponent>) -> ProcessorInstance {
    let limits = Limits { memory_bytes: MEMORY, ..Limits::default() };
    ProcessorInstance::new(sandbox.clone(), component.clone(), "bench", Provisions::simple("bench", grants()), limits)
}

fn load(sandbox: &Sandbox, path: &Path) -> anyhow::Result<Arc<ProcessorComponent>> {
    let bytes = std::fs::read(path)?;
    Ok(Arc::new(ProcessorComponent::load(sandbox, &bytes, &grants())?))
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

fn us(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e6
}

/// A batch of `n` records with these values, at offsets from 1000.
fn batch(values: impl Iterator<Item = Vec<u8>>) -> (Batch, Vec<i64>) {
    let mut encoder = BatchEncoder::new();
    let mut offsets = Vec::new();
    for (i, value) in values.enumerate() {
        let offset = 1000 + i as i64;
        encoder.push(offset, Some(1_700_000_000_000), Some(b"key-00000001"), Some(&value), []);
        offsets.push(offset);
    }
    let batch = Batch { topic: "bench".into(), partition: 0, count: encoder.count(), records: encoder.into_bytes() };
    (batch, offsets)
}

/// `n` valid orders (about 70 B each).
fn orders(n: usize) -> (Batch, Vec<i64>) {
    let agents = ["alice", "bob", "carol", "dave", "erin"];
    batch((0..n).map(|i| {
        format!(r#"{{"id":"o-{i}","agent":"{}","amount_cents":{}}}"#, agents[i % 5], 1000 + (i * 7919) % 90_000)
            .into_bytes()
    }))
}

/// `n` records of 100 B.
fn plain(n: usize) -> (Batch, Vec<i64>) {
    batch((0..n).map(|i| common::record(common::Shape { value_len: 100 }, i as u64).1))
}

fn call(instance: &mut ProcessorInstance, batch: &Batch, offsets: &[i64]) -> anyhow::Result<()> {
    let (reply, _) = instance.process(black_box(batch), offsets, far()).map_err(anyhow::Error::from)?;
    anyhow::ensure!(reply.len() == offsets.len() && reply.all_processed(), "a record was not processed");
    Ok(())
}

/// ns per record of `instance` on `batch`: medians of 5 samples of at least 100 ms.
fn per_record(instance: &mut ProcessorInstance, batch: &Batch, offsets: &[i64]) -> anyhow::Result<f64> {
    call(instance, batch, offsets)?;
    let started = Instant::now();
    call(instance, batch, offsets)?;
    let once = started.elapsed().as_secs_f64();
    let iters = ((0.1 / once.max(1e-9)) as usize).clamp(1, 200_000);
    let mut samples = Vec::new();
    for _ in 0..6 {
        let started = Instant::now();
        for _ in 0..iters {
            call(instance, batch, offsets)?;
        }
        samples.push(started.elapsed().as_nanos() as f64 / (iters * offsets.len()) as f64);
    }
    samples.remove(0);
    Ok(median(&mut samples))
}

/// The native decode of `batch` (what the passthrough guests do), ns per record.
fn native_per_record(batch: &Batch) -> f64 {
    let iters = (200_000 / batch.count as usize).max(10);
    let mut samples: Vec<f64> = (0..6)
        .map(|_| common::ns_per_call(iters, || drop(black_box(crate::boundary::native(black_box(batch))))))
        .map(|ns| ns / batch.count as f64)
        .collect();
    samples.remove(0);
    median(&mut samples)
}

/// Measures one language (everything but end to end).
pub fn measure(language: &Language) -> anyhow::Result<Figures> {
    let name = language.name;
    eprintln!("  {name}: compile and cached load...");
    let orders_bytes = std::fs::read(&language.orders)?.len();
    let passthrough_bytes = std::fs::read(&language.passthrough)?.len();
    let mut compile = Vec::new();
    for _ in 0..3 {
        let sandbox = sandbox(None)?;
        let started = Instant::now();
        black_box(load(&sandbox, &language.orders)?);
        compile.push(ms(started));
    }
    let cache = tempfile::tempdir()?;
    let cached = sandbox(Some(cache.path()))?;
    load(&cached, &language.orders)?;
    let mut cached_load = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let component = load(&cached, &language.orders)?;
        cached_load.push(ms(started));
        anyhow::ensure!(component.artifact().as_str() == "cache", "the load did not come from the cache");
    }
    drop(cached);

    eprintln!("  {name}: memory...");
    let sandbox = sandbox(None)?;
    let orders_component = load(&sandbox, &language.orders)?;
    let initial_memory = orders_component.initial_memory();
    let mut probe = instance(&sandbox, &orders_component);
    let (one, one_offsets) = orders(1);
    call(&mut probe, &one, &one_offsets)?;
    let after_one = probe.memory_high_water().context("live")?;
    let (thousand, thousand_offsets) = orders(1000);
    call(&mut probe, &thousand, &thousand_offsets)?;
    // An instance past half its room is replaced after its batch: the figure is
    // then the one it reached before.
    let after_thousand = probe.memory_high_water().unwrap_or(after_one);
    let (hundred, hundred_offsets) = orders(100);
    let before = proc_status("VmRSS");
    let mut live: Vec<ProcessorInstance> = Vec::new();
    for _ in 0..LIVE {
        let mut instance = instance(&sandbox, &orders_component);
        call(&mut instance, &hundred, &hundred_offsets)?;
        live.push(instance);
    }
    let rss_per_instance_kib = proc_status("VmRSS").saturating_sub(before) as f64 / LIVE as f64;
    drop(live);

    eprintln!("  {name}: fresh instances and traps...");
    let passthrough = load(&sandbox, &language.passthrough)?;
    let mut instance_p = instance(&sandbox, &passthrough);
    let (single, single_offsets) = plain(1);
    for _ in 0..20 {
        call(&mut instance_p, &single, &single_offsets)?;
    }
    let pairs = if name == "Rust" { 1000 } else { 200 };
    let (mut warm, mut cold) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        let started = Instant::now();
        call(&mut instance_p, &single, &single_offsets)?;
        warm.push(us(started));
        instance_p.recycle();
        let started = Instant::now();
        call(&mut instance_p, &single, &single_offsets)?;
        cold.push(us(started));
    }
    let chaos = load(&sandbox, &language.chaos)?;
    let mut chaos_instance = instance(&sandbox, &chaos);
    let (panic, panic_offsets) = batch(std::iter::once(b"panic".to_vec()));
    let (fine, fine_offsets) = batch(std::iter::once(b"fine".to_vec()));
    call(&mut chaos_instance, &fine, &fine_offsets)?;
    let (mut trap_call, mut recovery) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        let started = Instant::now();
        let fault = chaos_instance.process(&panic, &panic_offsets, far());
        trap_call.push(us(started));
        anyhow::ensure!(fault.is_err(), "the {name} chaos guest did not trap on \"panic\"");
        let started = Instant::now();
        call(&mut chaos_instance, &fine, &fine_offsets)?;
        recovery.push(us(started));
    }

    eprintln!("  {name}: per record...");
    let (mut passthrough_ns, mut orders_ns, mut native_ns) = ([0.0; 3], [0.0; 3], [0.0; 3]);
    let mut orders_instance = instance(&sandbox, &orders_component);
    for (i, &n) in BATCHES.iter().enumerate() {
        let (records, offsets) = plain(n);
        passthrough_ns[i] = per_record(&mut instance_p, &records, &offsets)?;
        native_ns[i] = native_per_record(&records);
        let (records, offsets) = orders(n);
        orders_ns[i] = per_record(&mut orders_instance, &records, &offsets)?;
    }
    Ok(Figures {
        name,
        orders_bytes,
        passthrough_bytes,
        compile_ms: median(&mut compile),
        cached_load_ms: median(&mut cached_load),
        initial_memory,
        high_water: [after_one, after_thousand],
        rss_per_instance_kib,
        warm: median(&mut warm),
        cold: median(&mut cold),
        cold_p99: quantile(&mut cold, 0.99),
        trap_call: median(&mut trap_call),
        recovery: median(&mut recovery),
        recovery_p99: quantile(&mut recovery, 0.99),
        passthrough_ns,
        orders_ns,
        native_ns,
        e2e: None,
    })
}

fn mb(bytes: usize) -> String {
    if bytes >= 1 << 20 { format!("{:.1} MB", bytes as f64 / 1e6) } else { format!("{:.0} KB", bytes as f64 / 1e3) }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn time(us: f64) -> String {
    if us >= 1000.0 { format!("{:.2} ms", us / 1000.0) } else { format!("{us:.1} µs") }
}

fn per(ns: f64) -> String {
    if ns >= 10_000.0 { format!("{:.1} µs", ns / 1000.0) } else { format!("{ns:.0} ns") }
}

/// The three-language table.
pub fn table(figures: &[Figures]) -> String {
    let mut out = String::from("| measure |");
    for f in figures {
        out.push_str(&format!(" {} |", f.name));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(figures.len()));
    out.push('\n');
    let mut row = |label: &str, cell: &dyn Fn(&Figures) -> String| {
        out.push_str(&format!("| {label} |"));
        for f in figures {
            out.push_str(&format!(" {} |", cell(f)));
        }
        out.push('\n');
    };
    row("component size: orders (passthrough)", &|f| format!("{} ({})", mb(f.orders_bytes), mb(f.passthrough_bytes)));
    row("compile, no cache (orders; median of 3)", &|f| format!("{:.0} ms", f.compile_ms));
    row("load from the artifact cache (orders; median of 5)", &|f| format!("{:.1} ms", f.cached_load_ms));
    row("initial linear memory", &|f| mib(f.initial_memory));
    row("linear memory after a batch of 1 / 1000 orders", &|f| {
        format!("{} / {}", mib(f.high_water[0]), mib(f.high_water[1]))
    });
    row("resident memory per live instance (orders, after 100 records)", &|f| {
        format!("{:.2} MiB", f.rss_per_instance_kib / 1024.0)
    });
    row("live instances that fit 24 GiB (resident memory alone)", &|f| {
        format!("{:.0}", DENSITY_HOST_KIB / f.rss_per_instance_kib.max(1.0))
    });
    row("warm batch of 1 record (passthrough)", &|f| time(f.warm));
    row("batch of 1 after `recycle()`, median (p99)", &|f| format!("{} ({})", time(f.cold), time(f.cold_p99)));
    row("**fresh instance** (difference; target < 5 ms for Python and JS)", &|f| {
        let verdict = if f.name == "Rust" {
            String::new()
        } else if f.fresh() < FRESH_TARGET_US {
            " met".into()
        } else {
            " **missed**".into()
        };
        format!("**{}**{verdict}", time(f.fresh()))
    });
    row("call that traps (chaos `panic`)", &|f| time(f.trap_call));
    row("**trap → next processed record**, median (p99)", &|f| {
        format!("**{}** ({})", time(f.recovery), time(f.recovery_p99))
    });
    for (i, n) in BATCHES.iter().enumerate() {
        row(
            &format!("per record, passthrough, batch of {n} (native decode: {:.0} ns)", figures[0].native_ns[i]),
            &|f| per(f.passthrough_ns[i]),
        );
    }
    for (i, n) in BATCHES.iter().enumerate() {
        row(&format!("per record, orders, batch of {n}"), &|f| per(f.orders_ns[i]));
    }
    if figures.iter().any(|f| f.e2e.is_some()) {
        let e = |f: &Figures, pick: fn(&e2e::Comparison) -> String| f.e2e.as_ref().map_or("—".into(), pick);
        row("end to end (passthrough): bare rdkafka", &|f| e(f, |c| e2e::rate(c.bare)));
        row("end to end: ferry, processed", &|f| e(f, |c| format!("{} (**{:.2}**)", e2e::rate(c.ferry), c.ratio)));
        row("end to end: ferry, committed", &|f| {
            e(f, |c| format!("{} ({:.2})", e2e::rate(c.ferry_committed), c.ratio_committed))
        });
        row("end to end: once flowing, ferry (ratio)", &|f| {
            e(f, |c| format!("{} ({:.2})", e2e::rate(c.ferry_steady), c.ratio_steady))
        });
        row("end to end: pipeline thread CPU per record (bare loop)", &|f| {
            e(f, |c| format!("{:.0} ns ({:.0} ns)", c.loop_cpu.1, c.loop_cpu.0))
        });
    }
    out
}
