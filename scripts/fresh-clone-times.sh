#!/usr/bin/env bash
# Times the README's two commands from a fresh clone, as a newcomer runs them:
# HEAD of this repository cloned into a temporary directory, an empty target
# directory, the commands taken from README.md as written, one after the other.
# Run it on a quiet machine (it compiles everything: many minutes).
#
#   scripts/fresh-clone-times.sh [--no-wasm-target] [--fresh-cargo-home]
#
#   --no-wasm-target    remove the wasm32-wasip2 target first, as on a fresh machine
#                       (the first command then adds it again; changes the toolchain)
#   --fresh-cargo-home  an empty CARGO_HOME too, so crates are downloaded again
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
remove_target=false
fresh_home=false
for arg in "$@"; do
    case "$arg" in
        --no-wasm-target) remove_target=true ;;
        --fresh-cargo-home) fresh_home=true ;;
        *) echo "unknown option $arg" >&2; exit 2 ;;
    esac
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone --quiet "$root" "$work/ferry"
cd "$work/ferry"
export CARGO_TARGET_DIR="$work/target"
if $fresh_home; then
    export CARGO_HOME="$work/cargo-home"
fi
if $remove_target && rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target remove wasm32-wasip2
fi

# The README's first ```sh block: one command per line, comments dropped.
mapfile -t commands < <(awk '/^```sh$/ { inside = 1; next } inside && /^```/ { exit } inside' README.md |
    sed 's/[[:space:]]*#.*$//' | grep -v '^$')

echo "fresh clone of $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
total=0
for i in "${!commands[@]}"; do
    command=${commands[$i]}
    log="$root/target/fresh-clone-$((i + 1)).log"
    mkdir -p "$root/target"
    start=$(date +%s)
    if bash -c "$command" >"$log" 2>&1; then result=ok; else result="FAILED (see $log)"; fi
    seconds=$(($(date +%s) - start))
    total=$((total + seconds))
    printf '%-48s %3dm%02ds  %s\n' "$command" $((seconds / 60)) $((seconds % 60)) "$result"
done
printf '%-48s %3dm%02ds\n' "both" $((total / 60)) $((total % 60))
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
