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

# shellcheck source=benches/lib/load.sh
. "$root/benches/lib/load.sh"
exec "$peers/compare.sh" \
  --gateway "$(load_harness_command "$bin_a" "${A_TREE:-}")" --gateway-name "${A_NAME:-a}" \
  --gateway "$(load_harness_command "$bin_b" "${B_TREE:-}")" --gateway-name "${B_NAME:-b}" \
  "$@"
