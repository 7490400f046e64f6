#!/usr/bin/env bash
# Runs the peer comparison (direct vs nginx vs HAProxy vs this gateway) with the gateway's
# full request path on: sidecar mode (a tokenless team on loopback), caller identification,
# routing, validation, dedup, team and account limits, retry loop, metrics, JSON logs at info
# to stderr (which the harness captures).
#
#   benches/peers-gateway.sh [compare.sh options...]
#   PEERS_DIR=/path/to/bench/peers benches/peers-gateway.sh --path /api/v2/status --out /tmp/s.json
#
# PEERS_DIR (required): the directory of the peer harness's compare.sh.
# GATEWAY_BIN (optional): the gateway binary to measure, e.g. the profile-guided build that
# benches/pgo-build.sh prints; by default the plain release build, built here.
# LOAD_LOG_LEVEL (optional, default info): warn drops the access line per request, the
# like-for-like setting against the harness's nginx (`access_log off`).
# The limits are set high enough never to throttle the benchmark, so every request passes
# through the limiters' decision without being refused.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
peers="${PEERS_DIR:?set PEERS_DIR to the directory of the peer harness (compare.sh)}"
cd "$root"
if [ -z "${GATEWAY_BIN:-}" ]; then
  cargo build --release --quiet
  GATEWAY_BIN="$root/target/release/idenfy-gateway"
fi
# shellcheck source=benches/lib/load.sh
. "$root/benches/lib/load.sh"
exec "$peers/compare.sh" --gateway "$(load_harness_command "$GATEWAY_BIN")" \
  --gateway-name gateway "$@"
