//! Test guest: misbehaves on request, as a hostile tenant would. Each record's value
//! (UTF-8) picks what happens:
//!
//! | value | behaviour |
//! | --- | --- |
//! | `loop` | spins forever (a computing guest past its deadline) |
//! | `oom` | allocates 1 MiB chunks forever, touching every page (memory cap) |
//! | `recurse` | unbounded recursion (stack limit) |
//! | `panic` | `panic!` (trap) |
//! | `retry` | `Retry("asked to retry")` |
//! | `reject` | `Reject("asked to reject")` |
//! | `emit:<topic>` | emits the record's key and value to `<topic>`; `Retry` if refused |
//! | `emit-then:<topic>:<retry\|reject\|panic>` | emits to `<topic>`, then ends that way |
//! | `bomb:<topic>` | emits records of 900 KiB to `<topic>` until the host refuses one, then `Processed` |
//! | `headerbomb:<topic>:<n>` | emits records (with the record's key) of `n` empty headers to `<topic>` until the host refuses one, then `Processed` |
//! | `aliasbomb:<topic>:<n>` | emits one record of `n` headers all named by the same 900 KiB string (one copy in guest memory); `Processed` if the host refuses it, `Reject` if it takes it |
//! | `log:<message>` | logs `<message>` at info level |
//! | `logflood:<n>` | logs `n` lines |
//! | `print:<n>` | prints `n` lines of 4 KiB to stdout |
//! | `sleep:<ms>` | busy-waits that many milliseconds, then `Processed` |
//! | `block:<ms>` | logs `blocking for <ms> ms`, `std::thread::sleep`s that long (a blocking WASI clock wait), then `Processed` |
//! | `poll` | logs, then waits on a pollable that never fires (`wasi:io/poll`) |
//! | anything else | `Processed` |
//!
//! With the setting `self_test_ms`, its self-test says `chaos self-test: busy for <ms> ms`
//! on stderr and busy-waits that long.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ferry_sdk::{Context, Error, Output, Processor, Record, Settings};

/// The chaos processor.
#[derive(Debug, Default)]
pub struct Chaos {
    /// How long its self-test takes.
    self_test_ms: u64,
}

impl Processor for Chaos {
    fn configure(&mut self, settings: &Settings) -> Result<(), String> {
        self.self_test_ms = settings.get("self_test_ms").and_then(|ms| ms.parse().ok()).unwrap_or(0);
        Ok(())
    }

    fn self_test(&mut self) -> Result<(), String> {
        if self.self_test_ms > 0 {
            eprintln!("chaos self-test: busy for {} ms", self.self_test_ms);
            busy_wait(Duration::from_millis(self.self_test_ms));
        }
        Ok(())
    }

    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let command = record.value().and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("");
        if let Some(topic) = command.strip_prefix("emit:") {
            return emit(record, topic, ctx);
        }
        if let Some(rest) = command.strip_prefix("emit-then:") {
            let (topic, end) = rest.rsplit_once(':').unwrap_or((rest, "retry"));
            emit(record, topic, ctx)?;
            return match end {
                "reject" => Err(Error::reject("emitted, then rejected")),
                "panic" => panic!("chaos: emitted, then panicked"),
                _ => Err(Error::retry("emitted, then asked to retry")),
            };
        }
        if let Some(topic) = command.strip_prefix("bomb:") {
            let chunk = vec![0x42u8; 900 << 10];
            while ctx.emit_value(topic, &chunk).is_ok() {}
            return Ok(());
        }
        if let Some(rest) = command.strip_prefix("headerbomb:") {
            let (topic, n) = rest.rsplit_once(':').unwrap_or((rest, "400000"));
            let headers: Vec<(&str, Option<&[u8]>)> = vec![("", None); number(n)? as usize];
            let bomb = || Output::to(topic).optional_key(record.key()).headers(headers.iter().copied());
            while ctx.emit(bomb()).is_ok() {}
            return Ok(());
        }
        if let Some(rest) = command.strip_prefix("aliasbomb:") {
            let (topic, n) = rest.rsplit_once(':').unwrap_or((rest, "1000"));
            let name = "x".repeat(900 << 10);
            let headers: Vec<(&str, Option<&[u8]>)> = vec![(name.as_str(), None); number(n)? as usize];
            return match ctx.emit(Output::to(topic).optional_key(record.key()).headers(headers)) {
                Err(_) => Ok(()),
                Ok(()) => Err(Error::reject("the host took a record of aliased header names")),
            };
        }
        if let Some(message) = command.strip_prefix("log:") {
            ctx.info(message);
            return Ok(());
        }
        if let Some(n) = command.strip_prefix("logflood:") {
            for i in 0..number(n)? {
                ctx.info(&format!("flood line {i}"));
            }
            return Ok(());
        }
        if let Some(n) = command.strip_prefix("print:") {
            let line = "x".repeat(4095);
            for _ in 0..number(n)? {
                println!("{line}");
            }
            return Ok(());
        }
        if let Some(ms) = command.strip_prefix("sleep:") {
            busy_wait(Duration::from_millis(number(ms)?));
            return Ok(());
        }
        if let Some(ms) = command.strip_prefix("block:") {
            let ms = number(ms)?;
            ctx.info(&format!("blocking for {ms} ms"));
            std::thread::sleep(Duration::from_millis(ms));
            return Ok(());
        }
        match command {
            "loop" => spin(),
            "oom" => hog(),
            "recurse" => {
                black_box(recurse(black_box(0)));
                Ok(())
            }
            "panic" => panic!("chaos: asked to panic at offset {}", record.offset()),
            "poll" => {
                ctx.info("polling a pollable that never fires");
                let never = wasi::clocks::monotonic_clock::subscribe_instant(u64::MAX);
                wasi::io::poll::poll(&[&never]);
                Ok(())
            }
            "retry" => Err(Error::retry("asked to retry")),
            "reject" => Err(Error::reject("asked to reject")),
            _ => Ok(()),
        }
    }
}

fn emit(record: &Record<'_>, topic: &str, ctx: &mut Context) -> Result<(), Error> {
    let out = Output::to(topic).optional_key(record.key()).optional_value(record.value());
    ctx.emit(out).map_err(|e| Error::retry(format!("emit refused: {e}")))
}

fn number(text: &str) -> Result<u64, Error> {
    text.trim().parse().map_err(|_| Error::reject(format!("not a number: {text:?}")))
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn hog() -> ! {
    const CHUNK: usize = 1 << 20;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        for page in chunk.chunks_mut(4096) {
            page[0] = 0xA5;
        }
        chunks.push(black_box(chunk));
    }
}

/// Never returns in practice: the depth it stops at is out of reach. The work done
/// after the recursive call (a multiply, then an add) keeps the optimizer from turning
/// it into a loop, and nothing in the frame lives in linear memory, so it exhausts the
/// wasm call stack (a stack-overflow trap) rather than Rust's shadow stack.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return depth;
    }
    recurse(depth + 1).wrapping_mul(3).wrapping_add(depth)
}

fn busy_wait(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        black_box(());
    }
}

ferry_sdk::export_processor!(Chaos);
