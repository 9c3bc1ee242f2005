//! Test guest: misbehaves on request. Each record's value (UTF-8) picks what happens:
//!
//! | value | behaviour |
//! | --- | --- |
//! | `loop` | spins forever (epoch deadline) |
//! | `oom` | allocates 1 MiB chunks forever, touching every page (memory cap) |
//! | `recurse` | unbounded recursion (stack limit) |
//! | `panic` | `panic!` (trap) |
//! | `retry` | `Retry("asked to retry")` |
//! | `reject` | `Reject("asked to reject")` |
//! | `emit:<topic>` | emits the record's key and value to `<topic>`; `Retry` if refused |
//! | `log:<message>` | logs `<message>` at info level |
//! | `sleep:<ms>` | busy-waits that many milliseconds, then `Processed` |
//! | anything else | `Processed` |

use std::hint::black_box;
use std::time::{Duration, Instant};

use ferry_sdk::{Context, Outcome, Processor, Record};

/// The chaos processor.
#[derive(Debug, Default)]
pub struct Chaos;

impl Processor for Chaos {
    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Outcome {
        let command = record.value().and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("");
        if let Some(topic) = command.strip_prefix("emit:") {
            return match ctx.emit(topic, record.key(), record.value()) {
                Ok(()) => Outcome::Processed,
                Err(e) => Outcome::Retry(format!("emit refused: {e}")),
            };
        }
        if let Some(message) = command.strip_prefix("log:") {
            ctx.info(message);
            return Outcome::Processed;
        }
        if let Some(ms) = command.strip_prefix("sleep:") {
            let Ok(ms) = ms.trim().parse::<u64>() else {
                return Outcome::reject(format!("bad sleep duration {ms:?}"));
            };
            busy_wait(Duration::from_millis(ms));
            return Outcome::Processed;
        }
        match command {
            "loop" => spin(),
            "oom" => hog(),
            "recurse" => {
                black_box(recurse(black_box(0)));
                Outcome::Processed
            }
            "panic" => panic!("chaos: asked to panic at offset {}", record.offset()),
            "retry" => Outcome::retry("asked to retry"),
            "reject" => Outcome::reject("asked to reject"),
            _ => Outcome::Processed,
        }
    }
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
