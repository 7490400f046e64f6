#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: the release binary with the
# whole request path on (the configuration of benches/peers-gateway.sh: a tokenless sidecar team,
# limits that never refuse, JSON logs at info), `POST /api/v2/status` through it to a minimal
# keep-alive upstream. Instruction counts do not depend on how loaded the machine is, so two
# builds can be compared on a busy machine; wall-clock figures come from the other benches.
#
#   benches/instructions.sh [seconds]      # measured load, after a 2 s warm-up (default 5)
#   KEEP_CALLGRIND=/tmp/cg.out benches/instructions.sh   # also keep callgrind's output, for
#                                          # callgrind_annotate --inclusive=yes
#   GATEWAY_BIN=$(benches/pgo-build.sh) benches/instructions.sh   # count another binary, here
#                                          # the profile-guided build (default: the plain
#                                          # release build, built here)
#
# Needs valgrind and wrk (Debian packages) and python3 (the upstream, benches/lib/load.sh).
# Everything binds 127.0.0.1 on ports the system picks.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-5}"
# shellcheck source=benches/lib/load.sh
. "$root/benches/lib/load.sh"
load_require instructions.sh valgrind callgrind_control wrk python3
load_gateway_bin instructions.sh
cd "$root"

tmp="$(mktemp -d)"
pids=()
cleanup() {
  load_stop
  if [ -n "${KEEP_CALLGRIND:-}" ]; then cp "$tmp"/callgrind.out.* "$KEEP_CALLGRIND" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

load_start_upstream "$tmp"
load_write_config "$tmp/gw.toml" "$upstream_port"
load_start_gateway "$tmp/gateway.log" \
  valgrind --tool=callgrind --callgrind-out-file="$tmp/callgrind.out" \
  "$gateway_bin" run --config "$tmp/gw.toml" --workers 1
load_write_status_lua "$tmp/status.lua"
load() { wrk -t1 -c16 -d"$1"s -s "$tmp/status.lua" "http://$proxy/api/v2/status"; }

load 2 > /dev/null
callgrind_control -z "$gateway" > /dev/null 2>&1
out="$(load "$seconds")"
callgrind_control -d "$gateway" > /dev/null 2>&1
load_check_wrk instructions.sh "$out"
requests="$(awk '/requests in/ {print $1}' <<< "$out")"
dump="$(ls -t "$tmp"/callgrind.out.* | head -1)"
total="$(awk '/^summary:/ {print $2}' "$dump")"
echo "requests: $requests"
echo "instructions: $total"
echo "instructions per request: $((total / requests))"
