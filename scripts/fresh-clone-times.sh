#!/usr/bin/env bash
# Times the README's two commands as a newcomer runs them on a fresh machine of this
# project's kind (rustup and Rust 1.95, nothing else), without changing this
# machine's own setup:
#   - HEAD of this repository cloned into a temporary directory (an empty target/);
#   - an empty CARGO_HOME: no registry, every crate is downloaded again (cargo and
#     rustc are reached through rustup's proxies, as on a fresh machine);
#   - a private copy of the Rust toolchain (RUSTUP_HOME) without the wasm32-wasip2
#     target, which the first command adds again;
#   - `python3` and `pip` from an empty virtual environment, empty pip and npm
#     caches: Tansu, componentize-py, pytest and the npm tools are installed again;
#   - Chromium: installed system-wide by apt, so it is removed only with
#     --remove-chromium (apt-get remove; the test command installs it again). Use it
#     on a machine of your own.
# The commands are taken from README.md's first ```sh block as written. It prints the
# time of each command, of each phase (the demo's build and run; test.sh's own
# phases) and of each test binary (from nextest's junit report: from its first
# test's start to its last test's end). Logs: target/fresh-clone/ of this checkout.
# It compiles everything from scratch: run it on a quiet machine (tens of minutes).
#
#   scripts/fresh-clone-times.sh [--remove-chromium] [--keep]
#
#   --remove-chromium  apt-get remove chromium first (see above)
#   --keep             keep the temporary directory (its path is printed)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
remove_chromium=false
keep=false
for arg in "$@"; do
    case "$arg" in
        --remove-chromium) remove_chromium=true ;;
        --keep) keep=true ;;
        *) echo "unknown option $arg" >&2; exit 2 ;;
    esac
done

work=$(mktemp -d /tmp/ferry-fresh.XXXXXX)
$keep || trap 'rm -rf "$work"' EXIT
logs="$root/target/fresh-clone"
rm -rf "$logs"
mkdir -p "$logs"
git clone --quiet "$root" "$work/ferry"

# The toolchain rust-toolchain.toml names, as this machine resolves it (on machines
# of this kind `1.95.0` is a link to the installed stable), copied without its
# documentation; then the wasm target is removed from the copy only.
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$root/rust-toolchain.toml")
toolchain="$channel-$(rustc -vV | sed -n 's/^host: //p')"
mkdir -p "$work/rustup/toolchains"
cp "$rustup_home/settings.toml" "$work/rustup/"
source_dir=$(readlink -f "$rustup_home/toolchains/$toolchain")
name=$(basename "$source_dir")
(cd "$source_dir/.." && tar --exclude="$name/share/doc" -cf - "$name") | tar -C "$work/rustup/toolchains" -xf -
[ "$name" = "$toolchain" ] || ln -s "$work/rustup/toolchains/$name" "$work/rustup/toolchains/$toolchain"
export RUSTUP_HOME="$work/rustup"
if rustup +"$toolchain" target list --installed | grep -qx wasm32-wasip2; then
    rustup +"$toolchain" target remove wasm32-wasip2 >/dev/null 2>&1
fi

export CARGO_HOME="$work/cargo-home"
mkdir -p "$CARGO_HOME"
python3 -m venv "$work/venv"
export PATH="$work/venv/bin:$PATH"
export PIP_CACHE_DIR="$work/pip-cache"
export npm_config_cache="$work/npm-cache"
unset CARGO_TARGET_DIR VIRTUAL_ENV

if $remove_chromium && command -v chromium >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq chromium >/dev/null
fi

cd "$work/ferry"
# The README's first ```sh block: one command per line, comments dropped.
mapfile -t commands < <(awk '/^```sh$/ { inside = 1; next } inside && /^```/ { exit } inside' README.md |
    sed 's/[[:space:]]*#.*$//' | grep -v '^$')

echo "fresh clone of $(git rev-parse --short HEAD) in $work, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wasm target: $(rustup target list --installed | grep -c wasm32-wasip2 || true) installed; chromium: $(command -v chromium || echo absent); python3: $(command -v python3)"
fmt() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
total=0
for i in "${!commands[@]}"; do
    command=${commands[$i]}
    log="$logs/command-$((i + 1)).log"
    start=$EPOCHSECONDS
    # Each line stamped with the seconds since the command started.
    if bash -c "$command" 2>&1 | while IFS= read -r line; do printf '%6d %s\n' $((EPOCHSECONDS - start)) "$line"; done >"$log"; then
        result=ok
    else
        result="FAILED (see $log)"
    fi
    seconds=$((EPOCHSECONDS - start))
    total=$((total + seconds))
    printf '%-44s %9s  %s\n' "$command" "$(fmt $seconds)" "$result"
    # `cargo run`: building until cargo starts the program, then the program.
    if [[ $command == "cargo run "* ]] && running=$(grep -m1 -E '^ *[0-9]+ +Running `' "$log" | awk '{print $1}') \
        && [ -n "$running" ]; then
        printf '  %-42s %9s\n' "build" "$(fmt "$running")" "run" "$(fmt $((seconds - running)))"
    fi
    # test.sh's own phases.
    sed -n '/^ *[0-9]* test.sh phases:/,$p' "$log" | tail -n +2 | sed 's/^ *[0-9]* *//' | sed 's/^/  /'
done
printf '%-44s %9s\n' "both" "$(fmt $total)"

junit="$work/ferry/target/nextest/default/junit.xml"
if [ -f "$junit" ]; then
    echo
    echo "test binaries (nextest; wall time from the first test's start to the last one's end, and the sum of test times):"
    python3 - "$junit" <<'EOF'
import sys, xml.etree.ElementTree as ET
from datetime import datetime
spans = {}
for suite in ET.parse(sys.argv[1]).getroot().iter("testsuite"):
    binary = suite.get("name")
    for case in suite.iter("testcase"):
        took = float(case.get("time") or 0)
        stamp = case.get("timestamp")
        start = datetime.fromisoformat(stamp).timestamp() if stamp else 0.0
        first, last, total, n = spans.get(binary, (start, start + took, 0.0, 0))
        spans[binary] = (min(first, start), max(last, start + took), total + took, n + 1)
for binary, (first, last, total, n) in sorted(spans.items(), key=lambda kv: kv[1][0] - kv[1][1]):
    print(f"  {binary:44} {last - first:7.1f} s wall {total:8.1f} s summed  {n:3d} tests")
EOF
else
    # cargo test: each binary's "finished in" line.
    echo
    echo "test binaries (cargo test, one after another):"
    awk '/Running / { bin = $NF; sub(/\)$/, "", bin); n = split(bin, p, "/"); bin = p[n]; sub(/-[0-9a-f]+$/, "", bin) }
         /test result:/ { for (i = 1; i <= NF; i++) if ($i == "in") { t = $(i + 1); sub(/s$/, "", t); printf "  %-44s %7.1f s\n", bin, t } }' \
        "$logs/command-${#commands[@]}.log" | sort -k2 -rn
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
