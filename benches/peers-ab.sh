#!/usr/bin/env bash
# Two builds of the gateway in one run of the peer harness, beside nginx: the way to see a
# difference of a few per cent between builds. Separate runs of benches/peers-gateway.sh move
# by ±10 % on a shared VM; within one run the targets take turns round by round, so the
# per-round ratios between them cancel most of what the machine does meanwhile.
#
#   PEERS_DIR=/path/to/bench/peers benches/peers-ab.sh BIN_A BIN_B [compare.sh options...]
#   A_NAME=before B_NAME=after PEERS_DIR=... benches/peers-ab.sh /tmp/gw-old /tmp/gw-new \
#       --path /api/v2/status --targets nginx --rounds 5 --out /tmp/ab.json
#
# Each build gets the configuration of benches/peers-gateway.sh (benches/lib/load.sh). For a
# build of an older commit whose configuration keys differ, give its tree as A_TREE or B_TREE:
# its own benches/lib/load.sh is used for it. Swap A and B in a second run: the order of the
# targets in a round matters a little.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
peers="${PEERS_DIR:?set PEERS_DIR to the directory of the peer harness (compare.sh)}"
[ $# -ge 2 ] || { echo "usage: benches/peers-ab.sh BIN_A BIN_B [compare.sh options...]" >&2; exit 64; }
bin_a="$1" bin_b="$2"
shift 2

# The harness fills in the placeholders; the text goes inside the command's double quotes.
command_for() {
  local tree="$1" bin="$2" config
  # shellcheck source=benches/lib/load.sh
  config="$(. "$tree/benches/lib/load.sh" &&
    load_config_text '127.0.0.1:{PORT}' '{UPSTREAM}' '{KEY}' '{SECRET}')"
  config="${config//\"/\\\"}"
  printf '%s' "printf '%s' \"$config\" > {TMPDIR}/gw.toml && exec $bin run --config {TMPDIR}/gw.toml --workers {WORKERS}"
}

exec "$peers/compare.sh" \
  --gateway "$(command_for "${A_TREE:-$root}" "$bin_a")" --gateway-name "${A_NAME:-a}" \
  --gateway "$(command_for "${B_TREE:-$root}" "$bin_b")" --gateway-name "${B_NAME:-b}" \
  "$@"
