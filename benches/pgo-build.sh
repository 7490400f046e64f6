#!/usr/bin/env bash
# A profile-guided (PGO) release build of the gateway: an instrumented release build, trained
# with load through the whole request path (the configuration of benches/peers-gateway.sh: a
# tokenless sidecar team, limits that never refuse, JSON logs at info) to a minimal keep-alive
# upstream on loopback, then a release build optimized with the merged profile.
#
#   benches/pgo-build.sh                   # progress on stderr; stdout: the optimized binary's path
#   PGO_SECONDS=10 benches/pgo-build.sh    # seconds of load on each path (default 5)
#   PGO_CARGO_ARGS=--no-default-features benches/pgo-build.sh   # the production binary, without
#                                          # the simulator (the container image's build)
#   GATEWAY_BIN=$(benches/pgo-build.sh) benches/instructions.sh
#   GATEWAY_BIN=$(benches/pgo-build.sh) PEERS_DIR=... benches/peers-gateway.sh ...
#
# Training: `POST /api/v2/status` (a passthrough route) for PGO_SECONDS, then as many
# `POST /api/v2/token` cycling through 1024 clientIds (dedup's flights, then its replays), wrk
# -t1 -c64, one worker.
#
# The builds go to their own target dirs, target/pgo/generate and target/pgo/use, so that the
# plain target/release build stays valid; profiles to target/pgo/profiles (emptied each run) and
# target/pgo/merged.profdata. Two full release builds: minutes.
#
# Needs wrk (Debian package), python3 (the upstream, benches/lib/load.sh) and an llvm-profdata of
# the LLVM major version rustc was built with (`rustc -vV`), the first found of: $LLVM_PROFDATA;
# rustup's llvm-tools component; llvm-profdata-<major> on PATH (Debian's llvm-<major> package);
# llvm-profdata on PATH, if its version matches. Everything binds 127.0.0.1 on ports the system
# picks.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${PGO_SECONDS:-5}"
say() { echo "pgo-build.sh: $*" >&2; }
die() { say "$*"; exit 1; }

for tool in wrk python3 cargo rustc; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done

# The LLVM major version of a tool's `--version` output (LLVM 14's llvm-profdata only answers
# `merge --version`).
llvm_major() {
  { "$1" --version 2>/dev/null || "$1" merge --version 2>/dev/null || true; } |
    sed -n 's/.*LLVM version \([0-9][0-9]*\).*/\1/p' | head -1
}

llvm="$(rustc -vV | sed -n 's/^LLVM version: \([0-9][0-9]*\).*/\1/p')"
[ -n "$llvm" ] || die "cannot read rustc's LLVM version from \`rustc -vV\`"
profdata=""
if [ -n "${LLVM_PROFDATA:-}" ]; then
  profdata="$(command -v "$LLVM_PROFDATA")" || die "LLVM_PROFDATA=$LLVM_PROFDATA is not a command"
  found="$(llvm_major "$profdata")"
  [ "$found" = "$llvm" ] ||
    say "warning: LLVM_PROFDATA is LLVM ${found:-?}, rustc's LLVM is $llvm; the profile may not be readable"
else
  host="$(rustc -vV | sed -n 's/^host: //p')"
  sysroot="$(rustc --print sysroot)"
  for candidate in "$sysroot/lib/rustlib/$host/bin/llvm-profdata" \
    "$(command -v "llvm-profdata-$llvm" || true)" \
    "$(command -v llvm-profdata || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && [ "$(llvm_major "$candidate")" = "$llvm" ]; then
      profdata="$candidate"
      break
    fi
  done
  [ -n "$profdata" ] || die "no llvm-profdata of LLVM $llvm (rustc's); install Debian's \
llvm-$llvm package (apt-get install llvm-$llvm) or run \`rustup component add llvm-tools\`, \
or set LLVM_PROFDATA"
fi
say "llvm-profdata: $profdata (LLVM $(llvm_major "$profdata"))"

cd "$root"
# shellcheck source=benches/lib/load.sh
. "$root/benches/lib/load.sh"
pgo="$root/target/pgo"
profiles="$pgo/profiles"
merged="$pgo/merged.profdata"
# RUSTFLAGS replaces any rustflags of cargo's config; whatever the caller set is kept.
base_flags="${RUSTFLAGS:-}"

tmp="$(mktemp -d)"
pids=()
trap load_cleanup EXIT

say "1/4 instrumented build (target/pgo/generate)"
start=$SECONDS
RUSTFLAGS="$base_flags -Cprofile-generate=$profiles" \
  cargo build --release --locked --bin idenfy-gateway ${PGO_CARGO_ARGS:-} --target-dir "$pgo/generate" >&2
say "    built in $((SECONDS - start)) s"
# Build scripts compiled with these flags write profiles too, while building: not training.
rm -rf "$profiles"
mkdir -p "$profiles"

say "2/4 training: $seconds s of POST /api/v2/status, then of POST /api/v2/token"
load_start_upstream "$tmp"
load_write_config "$tmp/gw.toml" "$upstream_port"
load_start_gateway "$tmp/gateway.log" \
  "$pgo/generate/release/idenfy-gateway" run --config "$tmp/gw.toml" --workers 1
load_write_status_lua "$tmp/status.lua"
load_write_token_lua "$tmp/token.lua"
out="$(wrk -t1 -c64 -d"${seconds}s" --timeout 10s -s "$tmp/status.lua" "http://$proxy/api/v2/status")"
load_check_wrk pgo-build.sh "$out"
# As many token requests as status requests (at least 2048: each clientId a flight, then a
# replay), within the same time: unbounded, replays (no upstream) would outnumber the status
# requests some fifty to one and make the upstream path look cold to the optimizer.
status_requests="$(awk '/requests in/ {print $1}' <<< "$out")"
token_requests=$((status_requests > 2048 ? status_requests : 2048))
out="$(wrk -t1 -c64 -d"${seconds}s" --timeout 10s -s "$tmp/token.lua" \
  "http://$proxy/api/v2/token" -- "$token_requests")"
load_check_wrk pgo-build.sh "$out"
say "    status: $status_requests requests, token: $(awk '/requests in/ {print $1}' <<< "$out") requests"
# The token answers must be ones dedup stores: a clientId of the load is replayed now.
dedup="$(python3 - "http://$proxy/api/v2/token" <<'PY'
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=b'{"clientId":"user-0"}',
                             headers={"content-type": "application/json"})
with urllib.request.urlopen(req, timeout=10) as res:
    print(res.headers.get("x-gateway-dedup", ""))
PY
)" || true
[ "$dedup" = replayed ] ||
  say "    warning: token answers not replayed (x-gateway-dedup: ${dedup:-none}); the token path trained less"
# The profile is written when the process exits normally.
kill -TERM "$gateway"
status=0
wait "$gateway" || status=$?
pids=("${pids[0]}") # the upstream only, now
[ "$status" -eq 0 ] || { tail "$tmp/gateway.log" >&2; die "the instrumented gateway exited with $status"; }
compgen -G "$profiles/*.profraw" > /dev/null || die "the instrumented gateway wrote no .profraw"

say "3/4 merging $(find "$profiles" -name '*.profraw' | wc -l) profile(s) into target/pgo/merged.profdata"
"$profdata" merge -o "$merged" "$profiles"

say "4/4 optimized build (target/pgo/use)"
start=$SECONDS
RUSTFLAGS="$base_flags -Cprofile-use=$merged -Cllvm-args=-pgo-warn-missing-function=false" \
  cargo build --release --locked --bin idenfy-gateway ${PGO_CARGO_ARGS:-} --target-dir "$pgo/use" >&2
say "    built in $((SECONDS - start)) s"
echo "$pgo/use/release/idenfy-gateway"
