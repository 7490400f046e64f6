#!/usr/bin/env bash
# The TLS mode of the peer comparison: what TLS costs per request, the gateway against nginx
# terminating TLS with the same certificate, each also measured over plain HTTP in the same run.
# The peer harness (compare.sh) speaks plain HTTP only and lives outside this repository, so this
# script reuses its pieces (the nginx upstream mock and nginx proxy configs, the wrk script) and
# its method: the shared CPU layout (wrk on CPU 0; upstream mock and proxy on CPU 1), one worker
# per proxy, wrk -t1 -c64 keep-alive, interleaved rounds, medians over rounds, CPU per request
# from /proc. Handshakes happen once per connection, so this measures the per-request cost of
# TLS records on kept-alive connections, which is what callers of a gateway pay.
#
#   PEERS_DIR=/path/to/bench/peers benches/peers-tls.sh
#   ROUNDS=5 DURATION=10 REQ_PATH=/api/v2/token GATEWAY_BIN=... benches/peers-tls.sh
#
# Targets: nginx (http), nginx-tls, gateway (http), gateway-tls; the gateway with the
# configuration of benches/peers-gateway.sh (the whole request path on), plus
# listen.tls_cert_file / tls_key_file for gateway-tls. Certificate: tests/fixtures/localhost.pem
# (ECDSA P-256), the same for both servers; protocol and cipher as each negotiates with wrk's
# OpenSSL.
# Prints one line per run and a medians table; TSV of every run in $OUT if set.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
peers="${PEERS_DIR:?set PEERS_DIR to the directory of the peer harness (compare.sh)}"
rounds="${ROUNDS:-3}" duration="${DURATION:-10}" connections="${CONNECTIONS:-64}"
path="${REQ_PATH:-/api/v2/status}" base="${BASE_PORT:-18280}"
cert="$root/tests/fixtures/localhost.pem" key="$root/tests/fixtures/localhost.key"
tmp="$(mktemp -d)"
chmod 755 "$tmp" # nginx workers drop to 'nobody' when started as root
pids=()
# shellcheck source=benches/lib/load.sh
. "$root/benches/lib/load.sh"
trap load_cleanup EXIT
load_require peers-tls nginx wrk taskset
load_gateway_bin peers-tls
taskset -p -c 0 $$ >/dev/null # this script and wrk on CPU 0

auth="Basic $(printf '%s' bench-api-key:bench-api-secret | base64 -w0)"
bogus="Basic $(printf '%s' 'client-key:client-secret-must-be-stripped' | base64 -w0)"
up_port=$base
render() { # render TEMPLATE DIR PORT
  mkdir -p "$2"
  sed -e "s|@DIR@|$2|g" -e "s|@PORT@|$3|g" -e "s|@UPSTREAM_PORT@|$up_port|g" \
    -e "s|@WORKERS@|1|g" -e "s|@UPSTREAM_WORKERS@|1|g" -e "s|@EXPECTED_AUTH@|$auth|g" "$1" \
    > "$2/nginx.conf"
}
# with_tls CONF: nginx's listener with TLS and the gateway's certificate.
with_tls() {
  sed -i -e "s|listen 127.0.0.1:\([0-9]*\) backlog=4096;|listen 127.0.0.1:\1 ssl backlog=4096;\n        ssl_certificate $cert;\n        ssl_certificate_key $key;|" "$1"
  grep -q ssl_certificate "$1" || { echo "peers-tls: could not add TLS to $1" >&2; exit 1; }
}
wait_port() { # wait_port PORT
  local _
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "peers-tls: nothing listens on $1" >&2
  exit 1
}
start() { # start NAME CPU COMMAND...: in the background, logged, pid in `started`
  local name="$1" cpu="$2"
  shift 2
  taskset -c "$cpu" "$@" > "$tmp/$name.log" 2>&1 &
  started=$!
  pids+=("$started")
}

render "$peers/conf/upstream-nginx.conf.in" "$tmp/upstream" "$up_port"
start upstream 1 nginx -c "$tmp/upstream/nginx.conf" -p "$tmp/upstream"
wait_port "$up_port"

names=(nginx nginx-tls gateway gateway-tls)
ports=($((base + 1)) $((base + 2)) $((base + 3)) $((base + 4)))
schemes=(http https http https)
roots=()
render "$peers/conf/proxy-nginx.conf.in" "$tmp/nginx" "${ports[0]}"
render "$peers/conf/proxy-nginx.conf.in" "$tmp/nginx-tls" "${ports[1]}"
with_tls "$tmp/nginx-tls/nginx.conf"
for i in 0 1; do
  start "${names[$i]}" 1 nginx -c "$tmp/${names[$i]}/nginx.conf" -p "$tmp/${names[$i]}"
  roots+=("$started")
done
for i in 2 3; do
  load_config_text "127.0.0.1:${ports[$i]}" "http://127.0.0.1:$up_port" bench-api-key \
    bench-api-secret > "$tmp/${names[$i]}.toml"
  if [ "${schemes[$i]}" = https ]; then
    sed -i "s|^\[listen\]$|[listen]\ntls_cert_file = \"$cert\"\ntls_key_file = \"$key\"|" \
      "$tmp/${names[$i]}.toml"
  fi
  start "${names[$i]}" 1 "$gateway_bin" run --config "$tmp/${names[$i]}.toml" --workers 1
  roots+=("$started")
done
for port in "${ports[@]}"; do wait_port "$port"; done

# cpu_ticks PID: user+system clock ticks of PID and its children (nginx: master and worker).
cpu_ticks() {
  local total=0 pid rest
  for pid in "$1" $(pgrep -P "$1" || true); do
    rest="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null)" || continue
    set -- $rest
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
run() { # run INDEX SECONDS OUTFILE
  wrk -t1 -c"$connections" -d"$2"s --timeout 2s -s "$peers/conf/wrk-token.lua" \
    "${schemes[$1]}://127.0.0.1:${ports[$1]}" -- "$bogus" "$path" > "$3" 2>&1
}

hz="$(getconf CLK_TCK)"
for i in "${!names[@]}"; do run "$i" 2 "$tmp/warmup.txt"; done
printf 'round\ttarget\trps\tp50_ms\tp99_ms\tus_per_req\tnon2xx\terrors\n' > "$tmp/runs.tsv"
for round in $(seq "$rounds"); do
  for i in "${!names[@]}"; do
    before="$(cpu_ticks "${roots[$i]}")"
    run "$i" "$duration" "$tmp/run.txt"
    after="$(cpu_ticks "${roots[$i]}")"
    line="$(grep WRKRESULT "$tmp/run.txt")" || { cat "$tmp/run.txt" >&2; exit 1; }
    awk -v round="$round" -v name="${names[$i]}" -v ticks="$((after - before))" -v hz="$hz" '{
      for (f = 2; f <= NF; f++) { split($f, kv, "="); v[kv[1]] = kv[2] }
      errors = v["connect_err"] + v["read_err"] + v["write_err"] + v["timeout_err"]
      printf "%s\t%s\t%.0f\t%.2f\t%.2f\t%.2f\t%d\t%d\n", round, name,
        v["requests"] / (v["duration_us"] / 1e6), v["p50_us"] / 1000, v["p99_us"] / 1000,
        ticks / hz * 1e6 / v["requests"], v["status_err"], errors
    }' <<< "$line" | tee -a "$tmp/runs.tsv"
  done
done

echo "== medians over $rounds round(s): wrk -t1 -c$connections -d${duration}s, POST $path"
awk -F'\t' 'NR > 1 {
    n[$2]++; rps[$2, n[$2]] = $3; p50[$2, n[$2]] = $4; p99[$2, n[$2]] = $5; us[$2, n[$2]] = $6
    bad[$2] += $7 + $8; if (!($2 in seen)) { seen[$2] = 1; order[++k] = $2 }
  }
  function median(a, t, m,   i, j, x, s) {
    for (i = 1; i <= m; i++) s[i] = a[t, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (s[j] < s[i]) { x = s[i]; s[i] = s[j]; s[j] = x }
    return m % 2 ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
  }
  END {
    printf "%-12s %9s %8s %8s %8s %11s\n", "target", "req/s", "p50 ms", "p99 ms", "us/req", "non2xx+err"
    for (i = 1; i <= k; i++) { t = order[i]; m = n[t]
      printf "%-12s %9.0f %8.2f %8.2f %8.2f %11d\n", t, median(rps, t, m), median(p50, t, m),
        median(p99, t, m), median(us, t, m), bad[t] }
  }' "$tmp/runs.tsv"
[ -z "${OUT:-}" ] || cp "$tmp/runs.tsv" "$OUT"
if awk -F'\t' 'NR > 1 && ($7 > 0 || $8 > 0) { bad = 1 } END { exit !bad }' "$tmp/runs.tsv"; then
  echo "FAILED: some run had non-2xx answers or socket errors" >&2
  exit 2
fi
