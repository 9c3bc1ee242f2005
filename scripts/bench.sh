#!/usr/bin/env bash
# ferry's benchmark suite in one command: builds the guests and the
# bench in release mode, then measures the boundary, end to end, instantiation,
# memory, scaling, and Rust, Python and JavaScript guests side by side. Markdown on
# stdout (also kept in target/bench-report.md); pass section names to run only
# some: boundary e2e instantiate memory scaling exactly-once polyglot instructions state http
# (instructions needs valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null
python3 -m pip show componentize-py 2>/dev/null | grep -qx "Version: 0.25.1" \
    || python3 -m pip install --quiet componentize-py==0.25.1
[ -d guest-sdk/js/node_modules/@bytecodealliance/componentize-js ] \
    || (cd guest-sdk/js && npm ci --no-audit --no-fund --silent)
cargo bench -p ferry-host --bench suite -- "$@" | tee target/bench-report.md
