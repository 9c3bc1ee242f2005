#!/usr/bin/env bash
# ferry's benchmark suite (issue 6) in one command: builds the guests and the
# bench in release mode, then measures the boundary, end to end, instantiation,
# memory and scaling. Markdown on stdout (also kept in target/bench-report.md);
# pass section names to run only some: boundary e2e instantiate memory scaling.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null
cargo bench -p ferry-host --bench suite -- "$@" | tee target/bench-report.md
