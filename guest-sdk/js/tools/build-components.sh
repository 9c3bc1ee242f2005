#!/usr/bin/env bash
# Builds the Python and JS orders examples and chaos guests into <dir>, printing
# size and build time for each; then `FERRY_COMPONENTS=<dir> node --test test/`
# runs them through tools/run-component.mjs.
set -euo pipefail
out="$(realpath -m "${1:?usage: build-components.sh <output dir>}")"
repo="$(cd "$(dirname "$0")/../../.." && pwd)"
mkdir -p "$out"
build() { # name, command...
  local name="$1" start end
  shift
  start=$(date +%s.%N)
  "$@" >/dev/null 2>"$out/$name.log" || { cat "$out/$name.log" >&2; exit 1; }
  end=$(date +%s.%N)
  printf '%-22s %6.1f MB %6.1f s\n' "$name.wasm" "$(echo "$(stat -c %s "$out/$name.wasm") / 1000000" | bc -l)" "$(echo "$end - $start" | bc -l)"
}
build orders-python python3 "$repo/guest-sdk/python/build.py" "$repo/examples/python/orders" "$out/orders-python.wasm"
build chaos-python python3 "$repo/guest-sdk/python/build.py" "$repo/tests/guests/python/chaos" "$out/chaos-python.wasm"
build orders-js node "$repo/guest-sdk/js/build.mjs" "$repo/examples/js/orders" "$out/orders-js.wasm"
build chaos-js node "$repo/guest-sdk/js/build.mjs" "$repo/tests/guests/js/chaos" "$out/chaos-js.wasm"
