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
#
# Needs valgrind and wrk (Debian packages) and python3 (the upstream). Everything binds
# 127.0.0.1 on ports the system picks.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-5}"
for tool in valgrind callgrind_control wrk python3; do
  command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is missing" >&2; exit 1; }
done
cd "$root"
cargo build --release --quiet

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP_CALLGRIND:-}" ]; then cp "$tmp"/callgrind.out.* "$KEEP_CALLGRIND" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# The upstream: answers every POST with a status-like JSON body, keep-alive, like the peer
# harness's nginx mock (the gateway's work does not depend on how fast the upstream is).
python3 - "$tmp/upstream.port" <<'PY' &
import http.server, sys
BODY = b'{"status":"APPROVED","scanRef":"6b1f3c2e-9d4a-11ee-8c90-0242ac120002","clientId":"user-0"}'
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
PY
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/upstream.port" ] && break; sleep 0.1; done
upstream_port="$(cat "$tmp/upstream.port")"

cat > "$tmp/gw.toml" <<EOF
[listen]
proxy = "127.0.0.1:0"
admin = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:$upstream_port"
[[account]]
name = "main"
api_key = "bench-api-key"
api_secret = "bench-api-secret"
rate = "100000000/h"
burst = 1000000
[[team]]
name = "app"
rate = "1000000/s"
burst = 1000000
[log]
format = "json"
level = "info"
EOF

valgrind --tool=callgrind --callgrind-out-file="$tmp/callgrind.out" \
  target/release/idenfy-gateway run --config "$tmp/gw.toml" --workers 1 \
  2> "$tmp/gateway.log" &
gateway=$!
pids+=($gateway)
proxy=""
for _ in $(seq 600); do
  proxy="$(grep -o '"proxy":"127.0.0.1:[0-9]*"' "$tmp/gateway.log" 2>/dev/null | head -1 | cut -d'"' -f4)" || true
  [ -n "$proxy" ] && break
  kill -0 "$gateway" 2>/dev/null || { tail "$tmp/gateway.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$proxy" ] || { echo "instructions.sh: the gateway did not start" >&2; exit 1; }

cat > "$tmp/status.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"scanRef":"6b1f3c2e-9d4a-11ee-8c90-0242ac120002"}'
wrk.headers["Content-Type"] = "application/json"
EOF
load() { wrk -t1 -c16 -d"$1"s -s "$tmp/status.lua" "http://$proxy/api/v2/status"; }

load 2 > /dev/null
callgrind_control -z "$gateway" > /dev/null 2>&1
out="$(load "$seconds")"
callgrind_control -d "$gateway" > /dev/null 2>&1
if grep -q "Non-2xx\|Socket errors" <<< "$out"; then
  echo "instructions.sh: failed requests under load:" >&2
  echo "$out" >&2
  exit 1
fi
requests="$(awk '/requests in/ {print $1}' <<< "$out")"
dump="$(ls -t "$tmp"/callgrind.out.* | head -1)"
total="$(awk '/^summary:/ {print $2}' "$dump")"
echo "requests: $requests"
echo "instructions: $total"
echo "instructions per request: $((total / requests))"
