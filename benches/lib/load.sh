# shellcheck shell=bash
# Shared by the load scripts (benches/instructions.sh, benches/pgo-build.sh, benches/soak.sh, and the
# peer scripts benches/peers-gateway.sh, benches/peers-ab.sh): the gateway binary to measure,
# cleaning up, a minimal keep-alive upstream, the gateway configuration of
# benches/peers-gateway.sh (and the peer harness's command for it), and starting the gateway.
# Sourced, not run. The caller owns `root` (the repository), a `pids` array (killed by its EXIT
# trap, load_cleanup) and a temp dir `tmp`.
# Everything binds 127.0.0.1 on ports the system picks.

# load_require WHO TOOL...: fails, naming WHO, when a TOOL is not on PATH.
load_require() {
  local who="$1" tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$who: $tool is missing" >&2; return 1; }
  done
}

# load_gateway_bin WHO: sets `gateway_bin`: GATEWAY_BIN made absolute (call this before leaving
# the directory the script was started in: a relative GATEWAY_BIN means from there), or else the
# release build of `root`, built here. Fails, naming WHO, when that is not an executable.
load_gateway_bin() {
  gateway_bin="${GATEWAY_BIN:+$(realpath -m "$GATEWAY_BIN")}"
  if [ -z "$gateway_bin" ]; then
    # shellcheck disable=SC2154 # the caller's
    (cd "$root" && cargo build --release --quiet)
    gateway_bin="$root/target/release/idenfy-gateway"
  fi
  [ -x "$gateway_bin" ] || { echo "$1: $gateway_bin is not an executable" >&2; return 1; }
}

# load_stop: kills the processes in `pids` and waits for them.
load_stop() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

# load_cleanup: load_stop, then removes `tmp`. The callers' EXIT trap.
load_cleanup() {
  load_stop
  # shellcheck disable=SC2154 # the caller's
  rm -rf "$tmp"
}

# load_start_upstream DIR: starts the upstream in the background, adds it to `pids` and sets
# `upstream_port`. (Not printed: the upstream must stay a child of the calling shell, which a
# command substitution would not allow.)
# Every POST is answered 200 with keep-alive, like the peer harness's nginx mock (the gateway's work
# does not depend on how fast the upstream is): `/api/v2/token` with a token answer the gateway's
# dedup layer stores and replays (non-empty `authToken`, `expiryTime`), for the request's
# clientId; any other path with a status-like body.
load_start_upstream() {
  local dir="$1"
  python3 - "$dir/upstream.port" <<'PY' &
import http.server, json, os, sys
STATUS = b'{"status":"APPROVED","scanRef":"6b1f3c2e-9d4a-11ee-8c90-0242ac120002","clientId":"user-0"}'
def token(client_id):
    return json.dumps({
        "message": "Token created successfully",
        "authToken": "Xq7gKpL2mNv9RtYw4ZsB8cHdJf3Ae6Uo",
        "scanRef": "6b1f3c2e-9d4a-11ee-8c90-0242ac120002",
        "clientId": client_id,
        "firstName": None,
        "lastName": None,
        "successUrl": None,
        "errorUrl": None,
        "unverifiedUrl": None,
        "callbackUrl": None,
        "locale": "en",
        "country": None,
        "expiryTime": 3600,
        "sessionLength": 600,
        "documents": [],
        "tokenType": "DOCUMENT",
        "digitString": "1234567890",
    }, separators=(",", ":")).encode()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        body = STATUS
        if self.path.split("?")[0] == "/api/v2/token":
            try:
                client_id = json.loads(raw).get("clientId", "user-0")
            except (ValueError, AttributeError):
                client_id = "user-0"
            body = token(str(client_id))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024  # not 5: the gateway opens many connections at once under load
    daemon_threads = True
server = Server(("127.0.0.1", 0), Handler)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
PY
  pids+=($!)
  local _
  for _ in $(seq 100); do [ -s "$dir/upstream.port" ] && break; sleep 0.1; done
  [ -s "$dir/upstream.port" ] || { echo "load.sh: the upstream did not start" >&2; return 1; }
  # shellcheck disable=SC2034 # for the caller
  upstream_port="$(cat "$dir/upstream.port")"
}

# load_config_text PROXY UPSTREAM_URL KEY SECRET: the benchmarks' gateway configuration, the
# whole request path on: a tokenless sidecar team, limits that never refuse (every request still
# goes through their decision), JSON logs at info (LOAD_LOG_LEVEL=warn: no access line per
# request, as the harness's nginx runs with `access_log off`). benches/peers-gateway.sh hands it to the peer
# harness with the harness's placeholders as arguments.
load_config_text() {
  cat <<EOF
[listen]
proxy = "$1"
admin = "127.0.0.1:0"
[upstream]
url = "$2"
[[account]]
name = "main"
api_key = "$3"
api_secret = "$4"
rate = "100000000/h"
burst = 1000000
[[team]]
name = "app"
rate = "1000000/s"
burst = 1000000
[log]
format = "json"
level = "${LOAD_LOG_LEVEL:-info}"
EOF
}

# load_harness_command BIN [TREE]: the peer harness's `--gateway` command that runs BIN with that
# configuration; the harness fills in its placeholders. With TREE, the configuration is that
# tree's benches/lib/load.sh's (a build of an older commit, whose keys may differ).
load_harness_command() {
  local bin="$1" config
  if [ -n "${2:-}" ]; then
    # shellcheck source=benches/lib/load.sh
    config="$(. "$2/benches/lib/load.sh" &&
      load_config_text '127.0.0.1:{PORT}' '{UPSTREAM}' '{KEY}' '{SECRET}')"
  else
    config="$(load_config_text '127.0.0.1:{PORT}' '{UPSTREAM}' '{KEY}' '{SECRET}')"
  fi
  # The text goes inside the command's double quotes.
  config="${config//\"/\\\"}"
  printf '%s' "printf '%s' \"$config\" > {TMPDIR}/gw.toml && exec $bin run --config {TMPDIR}/gw.toml --workers {WORKERS}"
}

# load_write_config FILE UPSTREAM_PORT: that configuration, on a port the system picks, in front
# of the upstream on UPSTREAM_PORT.
load_write_config() {
  load_config_text 127.0.0.1:0 "http://127.0.0.1:$2" bench-api-key bench-api-secret > "$1"
}

# load_start_gateway LOG COMMAND...: runs COMMAND (the gateway, possibly under a wrapper such as
# valgrind) in the background with its stderr to LOG, adds it to `pids`, sets `gateway` (its pid)
# and `proxy` (the proxy's address, read from the log) once it listens.
load_start_gateway() {
  local log="$1"
  shift
  "$@" 2> "$log" &
  gateway=$!
  pids+=("$gateway")
  proxy=""
  local _
  for _ in $(seq 600); do
    proxy="$(grep -o '"proxy":"127.0.0.1:[0-9]*"' "$log" 2>/dev/null | head -1 | cut -d'"' -f4)" || true
    [ -n "$proxy" ] && return 0
    kill -0 "$gateway" 2>/dev/null || { tail "$log" >&2; echo "load.sh: the gateway exited" >&2; return 1; }
    sleep 0.1
  done
  echo "load.sh: the gateway did not start" >&2
  return 1
}

# load_write_status_lua FILE: a wrk script for `POST /api/v2/status`.
load_write_status_lua() {
  cat > "$1" <<'EOF'
wrk.method = "POST"
wrk.body = '{"scanRef":"6b1f3c2e-9d4a-11ee-8c90-0242ac120002"}'
wrk.headers["Content-Type"] = "application/json"
EOF
}

# load_write_token_lua FILE: a wrk script for `POST /api/v2/token`, cycling through 1024 distinct
# clientIds (the first request of each is a flight to the upstream, the later ones replays). The
# requests are built once, in `init`. With an argument after `--` (wrk ... -- N), it stops after N
# answers (with one wrk thread: N in all).
load_write_token_lua() {
  cat > "$1" <<'EOF'
local requests = {}
local n = 0
local answers = 0
local limit = nil
function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  for i = 0, 1023 do
    requests[i] = wrk.format("POST", nil, headers, '{"clientId":"user-' .. i .. '"}')
  end
  limit = tonumber(args[1])
end
function request()
  local r = requests[n % 1024]
  n = n + 1
  return r
end
function response(status, headers, body)
  answers = answers + 1
  if limit and answers >= limit then
    wrk.thread:stop()
  end
end
EOF
}

# load_check_wrk WHO OUTPUT: fails, with wrk's output on stderr, when wrk saw non-2xx answers or
# socket errors.
load_check_wrk() {
  if grep -q "Non-2xx\|Socket errors" <<< "$2"; then
    echo "$1: failed requests under load:" >&2
    echo "$2" >&2
    return 1
  fi
}
