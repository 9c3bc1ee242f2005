//! ferry's benchmark suite, one command: `scripts/bench.sh`, or
//! `cargo bench -p ferry-host --bench suite [-- SECTION...]` with sections
//! `boundary`, `e2e`, `instantiate`, `memory`, `scaling`, `exactly-once`, `partitions`, `polyglot`,
//! `workers`, `instructions`, `state`, `http`, `shadow` (default: all).
//!
//! Plain `Instant` timing with warm-up and medians. Prints the figures as markdown
//! tables on stdout (progress on stderr). Nothing here asserts a time: the targets
//! are reported against, never enforced.

mod boundary;
mod common;
mod e2e;
mod exactly_once;
mod http;
mod instantiate;
mod instructions;
mod memory;
mod polyglot;
mod scaling;
mod shadow;
mod state;
mod workers;

use std::path::PathBuf;

use anyhow::{Context as _, bail};

const SECTIONS: [&str; 13] = [
    "boundary",
    "e2e",
    "instantiate",
    "memory",
    "scaling",
    "exactly-once",
    "partitions",
    "polyglot",
    "workers",
    "instructions",
    "state",
    "http",
    "shadow",
];

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; flags are not ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    match args.first().map(String::as_str) {
        Some("child-memory") => {
            let [count, component, brokers, prefix] = &args[1..] else {
                bail!("child-memory COUNT COMPONENT BROKERS TOPIC-PREFIX")
            };
            return memory::child(count.parse()?, &PathBuf::from(component), brokers, prefix);
        }
        Some("child-instructions") => return instructions::child(&args[1..]),
        Some("child-http-server") => {
            return http::child_server(args.get(1).context("child-http-server DELAY_MS")?.parse()?);
        }
        Some("child-cores") => {
            let cpus = args.get(1).context("child-cores CPUS COMPONENT")?;
            return scaling::child(cpus, &PathBuf::from(args.get(2).context("component path")?));
        }
        _ => {}
    }
    // `FERRY_BENCH_LOG=<target=level,...>`: the hosts' log on stderr, to see why a run is slow.
    if let Ok(directives) = std::env::var("FERRY_BENCH_LOG") {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let filter: tracing_subscriber::filter::Targets = directives.parse().context("FERRY_BENCH_LOG")?;
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
    for arg in &args {
        anyhow::ensure!(SECTIONS.contains(&arg.as_str()), "unknown section {arg:?}; sections: {}", SECTIONS.join(", "));
    }
    let wanted = |section: &str| args.is_empty() || args.iter().any(|a| a == section);

    eprintln!("building the guests (profile guest)...");
    let passthrough = common::guest("ferry-example-passthrough")?;
    let chaos = common::guest("ferry-guest-chaos")?;
    let kafka = e2e::kafka_from_env();
    println!("# ferry benchmarks\n\n{}", machine());
    if !kafka.is_empty() {
        println!("librdkafka properties from FERRY_BENCH_KAFKA, for both sides: {kafka:?}\n");
    }

    if wanted("boundary") {
        eprintln!("boundary...");
        let rows = boundary::run(&passthrough)?;
        println!("## 1. Boundary: passthrough guest vs native, ns per record\n\n{}", boundary::table(&rows));
        if let Some(row) = rows.iter().find(|r| r.batch == 1000 && r.value_len == 100) {
            let overhead = row.overhead();
            println!(
                "Target: ≤ {} ns/record overhead at 1000 × 100 B. Measured: **{overhead:.1} ns** ({}).\n",
                boundary::TARGET_NS,
                if overhead <= boundary::TARGET_NS { "met" } else { "missed" }
            );
        }
    }
    if wanted("e2e") {
        eprintln!("end to end...");
        let broker = common::Broker::start()?;
        let topic = e2e::Topic { name: common::unique("e2e"), partitions: 4 };
        let records = scaling::PER_PARTITION * 4;
        broker.fill(&topic.name, topic.partitions, scaling::PER_PARTITION, common::Shape { value_len: 100 })?;
        let members = [(vec![topic], records)];
        let c = e2e::compare(broker.brokers(), &kafka, &passthrough, &members, 5, true, e2e::Setup::PerBatch)?;
        let mut rows = e2e::table_row("after every batch; max_wait_ms = 0", &c);
        for (label, setup) in [
            ("every 100 ms; max_wait_ms = 0", e2e::Setup::Interval),
            ("after every batch; max_wait_ms = 10", e2e::Setup::PerBatchWait),
        ] {
            rows.push_str(&e2e::table_row(
                label,
                &e2e::compare(broker.brokers(), &kafka, &passthrough, &members, 5, false, setup)?,
            ));
        }
        println!(
            "## 2. End to end: {records} records of 100 B in 4 partitions, embedded broker\n\n\
             Rates in records/s, medians of 5 interleaved rounds, timed from the group's assignment.\n\n{}{rows}",
            e2e::table_header("ferry commits; batch wait")
        );
        if let Some([rate, steady, ratio, ratio_steady, cpu]) = c.bare_headers {
            println!(
                "\nThe bare loop when it also reads each record's headers (as a consumer that hands them on must; \
                 ferry reads them only for guests that do): {} ({} once flowing, {cpu:.0} ns of CPU per record); \
                 ferry against it: {ratio:.2} ({ratio_steady:.2} once flowing).",
                e2e::rate(rate),
                e2e::rate(steady)
            );
        }
        if let Some(b) = c.bare_batch {
            println!(
                "\nThe fastest bare loop librdkafka allows (`kafka::baseline`: batch consumption from a forwarded queue, \
                 per-batch commits with one in flight, no guest): {} to the last record, {} to the last commit ({} once \
                 flowing, {:.0} ns of CPU per record); ferry against it: **{:.2}** to the last record processed, \
                 **{:.2}** to the last commit, {:.2} once flowing.",
                e2e::rate(b.rate),
                e2e::rate(b.commit_rate),
                e2e::rate(b.steady),
                b.loop_cpu,
                b.ratio,
                b.ratio_committed,
                b.ratio_steady
            );
        }
        println!(
            "\nCPU of the consuming thread, per record (median): bare loop {:.0} ns, ferry's pipeline thread {:.0} ns.",
            c.loop_cpu.0, c.loop_cpu.1
        );
        let verdict = |ratio: f64| if ratio >= e2e::TARGET_RATIO { "met" } else { "missed" };
        println!(
            "\nTarget: ferry ≥ {} × bare. Measured: **{:.2}** to the last record processed ({}), {:.2} to the last \
             commit ({}), {:.2} once flowing ({}).\n\nCPU per thread in the last round:\n\n{}",
            e2e::TARGET_RATIO,
            c.ratio,
            verdict(c.ratio),
            c.ratio_committed,
            verdict(c.ratio_committed),
            c.ratio_steady,
            verdict(c.ratio_steady),
            e2e::cpu_table(&c)
        );
    }
    if wanted("instantiate") {
        eprintln!("instantiation and trap recovery...");
        let figures = instantiate::run(&passthrough, &chaos)?;
        println!("## 3. Instantiation and trap recovery\n\n{}", instantiate::table(&figures));
    }
    if wanted("memory") {
        eprintln!("memory (child processes)...");
        let samples = [memory::measure(1, &passthrough)?, memory::measure(100, &passthrough)?];
        println!("## 4. Memory: idle pipelines in one host\n\n{}", memory::table(&samples));
    }
    if wanted("scaling") {
        let mut out = e2e::table_header("partitions");
        for (label, c) in scaling::partitions(&kafka, &passthrough)? {
            out.push_str(&e2e::table_row(&label, &c));
        }
        out.push('\n');
        out.push_str(&e2e::table_header("pipelines (4 partitions each)"));
        for (count, c) in scaling::pipelines(&kafka, &passthrough)? {
            out.push_str(&e2e::table_row(&count.to_string(), &c));
        }
        out.push('\n');
        out.push_str(&e2e::table_header("cores (100k records, 4 partitions)"));
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        for set in ["0", "0,1"].into_iter().take(cpus) {
            out.push_str(&e2e::table_row(
                &format!("{} (cpus {set})", set.split(',').count()),
                &scaling::cores(set, &passthrough)?,
            ));
        }
        println!("## 5. Scaling\n\n{out}");
    }
    if wanted("exactly-once") {
        eprintln!("exactly-once against at-least-once...");
        let (forward, counter) = (common::guest("ferry-guest-forward")?, common::guest("ferry-example-counter")?);
        let rows = exactly_once::run(&kafka, &forward, &counter)?;
        let (mut shares, mut started) = exactly_once::round_shares(&rows);
        let listed = |v: &[f64]| v.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", ");
        let verdict = |v: &[f64]| if v.iter().all(|s| *s >= exactly_once::TARGET_SHARE) { "met" } else { "missed" };
        let (listed_shares, listed_started) = (listed(&shares), listed(&started));
        let (met, met_started) = (verdict(&shares), verdict(&started));
        println!(
            "## 6. Exactly-once against at-least-once: {} records of 100 B in 4 partitions, one output each, \
             embedded broker\n\nMedians of {} interleaved rounds, from the group's assignment, by ferry's own stats.\n\n{}\n\
             Target: exactly-once at 100 ms ≥ {} × at-least-once in every round. From the assignment: median \
             **{:.2}** (rounds: {listed_shares}; {met}). Once started (from the first batch): median **{:.2}** \
             (rounds: {listed_started}; {met_started}).\n",
            exactly_once::PER_PARTITION * 4,
            exactly_once::ROUNDS,
            exactly_once::table(&rows),
            exactly_once::TARGET_SHARE,
            common::median(&mut shares),
            common::median(&mut started),
        );
        let mut with_state = exactly_once::state_shares(&rows);
        println!(
            "Exactly-once at 100 ms with keyed state (the counter: a get, a put and a changelog record per record, in \
             the transaction) against without (the forward guest): median **{:.2}** (rounds: {}).\n",
            common::median(&mut with_state),
            listed(&with_state)
        );
    }
    if wanted("partitions") {
        let forward = common::guest("ferry-guest-forward")?;
        eprintln!("partitions per host: footprint...");
        let mut footprints = Vec::new();
        for partitions in exactly_once::FOOTPRINT_PARTITIONS {
            for eos in [false, true] {
                footprints.push(exactly_once::footprint(&kafka, &forward, partitions, eos)?);
            }
        }
        println!(
            "### Partitions per host\n\nOne host, one pipeline, 20 records of 100 B per partition, embedded broker: from \
             the start until every record is committed, and what the process holds meanwhile (above the bench's own).\n\n{}",
            exactly_once::footprint_table(&footprints)
        );
    }
    if wanted("polyglot") {
        eprintln!("Rust, Python and JavaScript side by side (building the Python and JS guests)...");
        let languages = polyglot::languages()?;
        let mut figures = Vec::new();
        for language in &languages {
            figures.push(polyglot::measure(language)?);
        }
        let broker = common::Broker::start()?;
        let topic = e2e::Topic { name: common::unique("polyglot"), partitions: 4 };
        let records = scaling::PER_PARTITION * 4;
        broker.fill(&topic.name, topic.partitions, scaling::PER_PARTITION, common::Shape { value_len: 100 })?;
        let members = [(vec![topic], records)];
        for (language, figures) in languages.iter().zip(&mut figures) {
            eprintln!("  {}: end to end...", language.name);
            figures.e2e = Some(e2e::compare(
                broker.brokers(),
                &kafka,
                &language.passthrough,
                &members,
                3,
                false,
                e2e::Setup::PerBatch,
            )?);
        }
        println!(
            "## 7. Rust, Python and JavaScript guests\n\nThe same measures for each language's passthrough, orders \
             and chaos guests, one run; end to end: {records} records of 100 B in 4 partitions, medians of 3 \
             interleaved rounds, commits after every batch, `max_wait_ms = 0`, `batch_size = {}`.\n\n{}",
            e2e::BATCH_SIZE,
            polyglot::table(&figures)
        );
    }
    if wanted("state") {
        eprintln!("state: the counter against the forward guest, and memory per key (3 rounds)...");
        let (forward, counter) = (common::guest("ferry-guest-forward")?, common::guest("ferry-example-counter")?);
        let rounds = (0..3).map(|_| state::round(&forward, &counter)).collect::<anyhow::Result<Vec<_>>>()?;
        println!("## 10. Keyed state: get + put per record, and memory per key\n\n{}", state::table(&rounds));
        eprintln!("state: restore against a bare consumer (3 rounds)...");
        println!("### Restore\n\n{}", state::restore_table(&state::restore(3)?));
    }
    if wanted("http") {
        eprintln!("http: guest requests against native clients, sequential against at once, memory in flight...");
        let (fetcher, enrich) = (common::guest("ferry-guest-enrich")?, common::guest("ferry-example-enrich")?);
        println!(
            "## 11. Guest HTTP: per-request overhead, batch-concurrent requests, memory in flight\n\n{}",
            http::table(&http::run(&fetcher, &enrich)?)
        );
    }
    if wanted("shadow") {
        eprintln!("shadow: the live rate with and without a shadow doing the same work...");
        let (live, twin) = (common::guest("ferry-guest-mirror-v1")?, common::guest("ferry-guest-mirror-v2")?);
        println!(
            "## 12. Shadow: the live version's rate with a shadow beside it\n\n\
             One pipeline, one worker, {} partitions, {} records of 100 B per run, the mirror guest (one output \
             per record) live, `batch_size = {}`, `max_wait_ms = 0`; the shadow is the same code under another \
             digest (every record compared, all equal: its `ts` clock header ignored), `max_time_share = 100`; a \
             third run compares the `ts` header too, so every record differs. Rates in records/s by ferry's own \
             stats, from the first batch the shadow ran; the runs of a round back to back.\n\n{}",
            shadow::PARTITIONS,
            shadow::PER_PARTITION * shadow::PARTITIONS as u64,
            e2e::BATCH_SIZE,
            shadow::table(&shadow::run(&kafka, &live, &twin)?)
        );
    }
    if wanted("workers") {
        eprintln!("workers: a CPU-heavy guest and the passthrough with 1 and 2 workers...");
        let busy = common::guest("ferry-guest-busy")?;
        let cases = [
            workers::Case { guest: "busy (~5 µs/record)", component: &busy, workers: 1 },
            workers::Case { guest: "busy (~5 µs/record)", component: &busy, workers: 2 },
            workers::Case { guest: "passthrough", component: &passthrough, workers: 1 },
            workers::Case { guest: "passthrough", component: &passthrough, workers: 2 },
        ];
        let figures = workers::run(&kafka, &cases)?;
        let busy_flowing = figures.speedups(cases[0].guest, |s| s.flowing);
        let busy_whole = figures.speedups(cases[0].guest, |s| s.from_assignment);
        let pass_flowing = figures.speedups("passthrough", |s| s.flowing);
        let met = |v: &[f64]| if v.iter().all(|r| *r >= workers::TARGET_SPEEDUP) { "met" } else { "missed" };
        println!(
            "## 8. Workers: one pipeline, {} partitions, {} records of 100 B, 1 and 2 workers\n\n\
             Rates in records/s by ferry's own stats, {} interleaved rounds (every round listed), commits every \
             100 ms, `max_wait_ms = 0`, `batch_size = {}`; the embedded broker waits 3 s for a new group's members \
             (Kafka's default `group.initial.rebalance.delay.ms`), so the workers share the first assignment.\n\n{}\n\
             Two workers against one, per round: busy guest {} once flowing, {} from the assignment; passthrough {} \
             once flowing.\n\nTarget: ≥ {} × with 2 workers on the CPU-heavy guest (every round). Measured once \
             flowing: **{}** ({}).\n",
            workers::PARTITIONS,
            workers::PER_PARTITION * workers::PARTITIONS as u64,
            busy_flowing.len(),
            e2e::BATCH_SIZE,
            figures.table(),
            workers::ratios(&busy_flowing),
            workers::ratios(&busy_whole),
            workers::ratios(&pass_flowing),
            workers::TARGET_SPEEDUP,
            workers::ratios(&busy_flowing),
            met(&busy_flowing),
        );
    }
    let asked_for = |section: &str| args.iter().any(|a| a == section);
    if wanted("instructions") && !asked_for("instructions") && !instructions::valgrind_installed() {
        println!("## 9. Instructions per record\n\nSkipped: valgrind is not installed.\n");
    } else if wanted("instructions") {
        eprintln!("instructions per record (valgrind --tool=callgrind, child processes)...");
        let read_headers = common::guest("ferry-guest-headers")?;
        let figures = instructions::run(&passthrough, &read_headers, 2)?;
        println!(
            "## 9. Instructions per record: {} − {} records of 100 B in 4 partitions, batch {}, embedded broker\n\n\
             Instructions executed by the consuming thread (`valgrind --tool=callgrind --separate-threads=yes`): \
             the run on {} records minus the run on {}, over the difference, so start-up and shutdown cancel out; \
             each run is the median of {} such pairs. Profiles of the measured threads: `target/callgrind/`.\n\n{}",
            instructions::LARGE,
            instructions::SMALL,
            e2e::BATCH_SIZE,
            instructions::LARGE,
            instructions::SMALL,
            instructions::PAIRS,
            instructions::table(&figures),
        );
        let ratios = instructions::ratios(&figures);
        let list = |side: fn(&(f64, f64)) -> f64| {
            let values: Vec<String> = ratios.iter().map(|r| format!("{:.3}", side(r))).collect();
            values.join(", ")
        };
        let met = |target: f64, side: fn(&(f64, f64)) -> f64| {
            if ratios.iter().all(|r| side(r) <= target) { "met" } else { "missed" }
        };
        println!(
            "Targets: passthrough ≤ {} × the bare loop: **{}** ({}); a guest reading headers ≤ {} × the bare loop \
             reading headers: **{}** ({}).\n",
            instructions::TARGET_NO_HEADERS,
            list(|r| r.0),
            met(instructions::TARGET_NO_HEADERS, |r| r.0),
            instructions::TARGET_HEADERS,
            list(|r| r.1),
            met(instructions::TARGET_HEADERS, |r| r.1),
        );
    }
    Ok(())
}

/// The machine, from /proc.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into());
    let meminfo = read("/proc/meminfo");
    let mem_kib: u64 =
        meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    format!(
        "Machine: {} CPUs ({model}), {:.1} GiB memory, Linux {}.\n",
        std::thread::available_parallelism().map_or(1, usize::from),
        mem_kib as f64 / 1024.0 / 1024.0,
        read("/proc/sys/kernel/osrelease").trim()
    )
}
