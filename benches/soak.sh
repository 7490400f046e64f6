#!/usr/bin/env bash
# Soak: a million mixed requests through the release gateway in front of the iDenfy simulator,
# and the gateway's resident memory before, during and after them. The question it answers:
# does memory come back once the load is gone (within 10 % of the warm baseline), or does
# something grow with the number of requests served?
#
#   benches/soak.sh                              # 1,000,000 requests (builds the release binary)
#   SOAK_REQUESTS=50000 benches/soak.sh          # a smaller run, to check the script works
#   GATEWAY_BIN=$(benches/pgo-build.sh) benches/soak.sh   # soak another build
#
# The mix, in a fixed pattern of 20 requests (benches/soak.sh writes it as a wrk script):
#   8  POST /api/v2/status with a known scanRef       200 from the simulator
#   6  POST /api/v2/token, SOAK_CLIENT_IDS clientIds  201: a flight the first time, then replays
#   2  POST /api/v2/status without credentials        401 (refused from the head)
#   2  GET  /unknown/...                              404 route_not_found
#   1  POST /api/v2/token {"clientId":""}             400 validation
#   1  POST /api/v2/token/                            400 bad_path
# Memory (VmRSS and RssAnon from /proc/PID/status): the warm baseline after a warm-up of
# SOAK_WARMUP requests of the same mix and SOAK_SETTLE seconds of quiet; the peak, sampled every
# 0.5 s during the load; "after", SOAK_SETTLE seconds after the load ends. Exits 1 when VmRSS
# after is more than 10 % above the warm baseline.
#
# Settings (environment): SOAK_REQUESTS (1000000), SOAK_WARMUP (20000), SOAK_CLIENT_IDS (1000),
# SOAK_CONNECTIONS (32), SOAK_THREADS (2), SOAK_SETTLE (5, seconds), SOAK_MAX_SECONDS (900: wrk
# stops there even if the count is not reached), GATEWAY_BIN (default: the release build, built
# here). Needs wrk (Debian package), curl and awk. Everything binds 127.0.0.1 on ports the system
# picks; the gateway logs JSON at info to a temporary file, removed at exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
requests="${SOAK_REQUESTS:-1000000}"
warmup="${SOAK_WARMUP:-20000}"
client_ids="${SOAK_CLIENT_IDS:-1000}"
connections="${SOAK_CONNECTIONS:-32}"
threads="${SOAK_THREADS:-2}"
settle="${SOAK_SETTLE:-5}"
max_seconds="${SOAK_MAX_SECONDS:-900}"
# shellcheck source=benches/lib/load.sh
. "$root/benches/lib/load.sh"
load_require soak.sh wrk curl awk
load_gateway_bin soak.sh
cd "$root"

tmp="$(mktemp -d)"
pids=()
trap load_cleanup EXIT

readonly team_token="soak-team-token"

# start_simulator: the simulator on a port the system picks, with the account's key pair and no
# hourly limit; sets `simulator_url`.
start_simulator() {
  IDENFY_SIM_API_SECRET=bench-api-secret "$gateway_bin" simulate --listen 127.0.0.1:0 \
    --api-key bench-api-key --hourly-limit 0 > "$tmp/simulator.out" 2> "$tmp/simulator.log" &
  pids+=($!)
  local _
  simulator_url=""
  for _ in $(seq 100); do
    simulator_url="$(grep -o 'http://127.0.0.1:[0-9]*' "$tmp/simulator.out" 2>/dev/null | head -1)" || true
    [ -n "$simulator_url" ] && return 0
    sleep 0.1
  done
  echo "soak.sh: the simulator did not start" >&2
  cat "$tmp/simulator.log" >&2
  return 1
}

# write_config FILE: the benchmarks' configuration (benches/lib/load.sh) in front of the
# simulator, with a team token, so that a request without one is refused.
write_config() {
  load_config_text 127.0.0.1:0 "$simulator_url" bench-api-key bench-api-secret \
    | sed "/^name = \"app\"\$/a token = \"$team_token\"" > "$1"
  grep -q "^token = " "$1" || { echo "soak.sh: no team token in the config" >&2; return 1; }
}

# status_scan_ref: the scanRef of a session created for the status requests.
status_scan_ref() {
  curl -sf -X POST "http://$proxy/api/v2/token" -H "authorization: Bearer $team_token" \
    -H 'content-type: application/json' -d '{"clientId":"soak-status"}' \
    | grep -o '"scanRef":"[^"]*"' | cut -d'"' -f4
}

# write_lua FILE: the wrk script of the mix (see the header). `wrk ... -- LIMIT SCANREF CLIENTS
# MARKER`: each thread stops after LIMIT answers and then creates the file MARKER.<thread> (wrk
# itself runs until its -d or a SIGINT: `load` sends the signal once every thread stopped);
# done() prints the answers by status.
write_lua() {
  cat > "$1" <<EOF
local token = "$team_token"
EOF
  cat >> "$1" <<'EOF'
local threads = {}
local fixed, tokens, pattern = {}, {}, {}
local sent, answers, limit, clients, marker = 0, 0, nil, 1, nil
statuses = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  limit = tonumber(args[1])
  clients = tonumber(args[3])
  marker = args[4] .. "." .. id
  local json = { ["Content-Type"] = "application/json" }
  local auth = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }
  fixed.status = wrk.format("POST", "/api/v2/status", auth, '{"scanRef":"' .. args[2] .. '"}')
  fixed.anonymous = wrk.format("POST", "/api/v2/status", json, '{"scanRef":"x"}')
  fixed.unknown = wrk.format("GET", "/unknown/route", auth)
  fixed.invalid = wrk.format("POST", "/api/v2/token", auth, '{"clientId":""}')
  fixed.bad_path = wrk.format("POST", "/api/v2/token/", auth, '{"clientId":"soak-0"}')
  for i = 0, clients - 1 do
    tokens[i] = wrk.format("POST", "/api/v2/token", auth, '{"clientId":"soak-' .. i .. '"}')
  end
  pattern = { "status", "token", "status", "token", "anonymous", "status", "token", "unknown",
              "status", "invalid", "status", "token", "status", "token", "anonymous", "status",
              "token", "unknown", "status", "bad_path" }
end

local token_sent = 0
function request()
  local kind = pattern[sent % #pattern + 1]
  sent = sent + 1
  if kind == "token" then
    token_sent = token_sent + 1
    return tokens[token_sent % clients]
  end
  return fixed[kind]
end

function response(status, headers, body)
  answers = answers + 1
  statuses[status] = (statuses[status] or 0) + 1
  if answers == limit then
    io.open(marker, "w"):close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
  end
  local line = "answers by status:"
  for _, status in ipairs({ 200, 201, 400, 401, 404 }) do
    line = line .. " " .. status .. "=" .. (total[status] or 0)
    total[status] = nil
  end
  for status, n in pairs(total) do
    line = line .. " " .. status .. "=" .. n .. "(unexpected)"
  end
  io.write(line .. "\n")
end
EOF
}

# load N OUT: N requests of the mix (rounded up to a multiple of the threads), at most
# `max_seconds`; wrk's report in OUT.
load() {
  local per_thread=$(( ($1 + threads - 1) / threads ))
  rm -f "$tmp"/stopped.*
  wrk -t"$threads" -c"$connections" -d"${max_seconds}s" --timeout 10s -s "$tmp/soak.lua" \
    "http://$proxy/" -- "$per_thread" "$scan_ref" "$client_ids" "$tmp/stopped" > "$2" &
  local wrk_pid=$!
  pids+=("$wrk_pid")
  while kill -0 "$wrk_pid" 2>/dev/null; do
    if [ "$(find "$tmp" -maxdepth 1 -name 'stopped.*' | wc -l)" -ge "$threads" ]; then
      kill -INT "$wrk_pid"
      break
    fi
    sleep 0.2
  done
  wait "$wrk_pid"
}

# rss_kib FIELD: a field of the gateway's /proc/PID/status, in KiB.
rss_kib() {
  awk -v field="$1:" '$1 == field { print $2 }' "/proc/$gateway/status"
}

# sample_rss FILE: appends "VmRSS RssAnon" (KiB) to FILE every 0.5 s, until killed.
sample_rss() {
  while kill -0 "$gateway" 2>/dev/null; do
    echo "$(rss_kib VmRSS) $(rss_kib RssAnon)" >> "$1"
    sleep 0.5
  done
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

start_simulator
write_config "$tmp/gw.toml"
load_start_gateway "$tmp/gateway.log" "$gateway_bin" run --config "$tmp/gw.toml"
scan_ref="$(status_scan_ref)"
[ -n "$scan_ref" ] || { echo "soak.sh: no session for the status requests" >&2; exit 1; }
write_lua "$tmp/soak.lua"

echo "soak: warm-up, $warmup requests" >&2
load "$warmup" "$tmp/warmup.txt"
sleep "$settle"
base_rss="$(rss_kib VmRSS)"
base_anon="$(rss_kib RssAnon)"

echo "soak: $requests requests (at most ${max_seconds} s)" >&2
echo "$base_rss $base_anon" > "$tmp/samples.txt"
sample_rss "$tmp/samples.txt" &
sampler=$!
pids+=("$sampler")
load "$requests" "$tmp/load.txt"
kill "$sampler" 2>/dev/null || true
echo "$(rss_kib VmRSS) $(rss_kib RssAnon)" >> "$tmp/samples.txt"
sleep "$settle"
after_rss="$(rss_kib VmRSS)"
after_anon="$(rss_kib RssAnon)"
peak_rss="$(awk '$1 > m { m = $1 } END { print m }' "$tmp/samples.txt")"
peak_anon="$(awk '$2 > m { m = $2 } END { print m }' "$tmp/samples.txt")"

grep -E "requests in|Requests/sec|Socket errors|answers by status" "$tmp/load.txt"
printf '%-26s %10s %10s\n' "gateway memory (MiB)" VmRSS RssAnon
printf '%-26s %10s %10s\n' "warm baseline" "$(mib "$base_rss")" "$(mib "$base_anon")"
printf '%-26s %10s %10s\n' "peak (0.5 s samples)" "$(mib "$peak_rss")" "$(mib "$peak_anon")"
printf '%-26s %10s %10s\n' "after (${settle} s quiet)" "$(mib "$after_rss")" "$(mib "$after_anon")"
ratio="$(awk -v a="$after_rss" -v b="$base_rss" 'BEGIN { printf "%.3f", a / b }')"
if awk -v a="$after_rss" -v b="$base_rss" 'BEGIN { exit !(a <= b * 1.10) }'; then
  echo "after/baseline VmRSS: $ratio: within 10 % of the warm baseline"
else
  echo "after/baseline VmRSS: $ratio: NOT within 10 % of the warm baseline"
  exit 1
fi
