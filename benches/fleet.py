#!/usr/bin/env python3
"""Fleet mode against memory, on loopback: the latency Redis adds to each path and the Redis
commands each request costs.

    GATEWAY_BIN=target/release/idenfy-gateway python3 benches/fleet.py [requests per path]

Starts its own redis-server (no persistence) and the simulator on free ports, then one gateway
with `state.backend = "memory"` and one with `"redis"`, each in front of the simulator, and sends
sequential keep-alive requests per path: status (`POST /api/v2/status`), token as a leader (a new
clientId each time) and token replayed (the same clientIds again). Prints p50 and p99 per path and
backend, and per request the Redis commands (`INFO commandstats`, `calls` summed) the redis
gateway made. Needs redis-server and redis-cli (Debian's redis-server package) and python3.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.abspath(os.environ.get("GATEWAY_BIN", os.path.join(ROOT, "target/release/idenfy-gateway")))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 500


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"nothing listens on {port}")


# Commands a client sends (round trips); the commands a script runs inside Redis (TIME, GET,
# SET, PTTL, PUBLISH, ...) are counted by commandstats too, and left out here.
ROUND_TRIPS = ("evalsha", "eval", "subscribe", "ping", "hello", "client", "select", "auth")


def commands(redis_port):
    out = subprocess.run(["redis-cli", "-p", str(redis_port), "info", "commandstats"],
                         capture_output=True, text=True, check=True).stdout
    total = 0
    for line in out.splitlines():
        name = line.split(":")[0].removeprefix("cmdstat_")
        if line.startswith("cmdstat_") and name in ROUND_TRIPS:
            total += int(line.split("calls=")[1].split(",")[0])
    return total


def gateway(tmp, name, sim_port, state):
    proxy, admin = free_port(), free_port()
    config = f"""
[listen]
proxy = "127.0.0.1:{proxy}"
admin = "127.0.0.1:{admin}"
[upstream]
url = "http://127.0.0.1:{sim_port}"
[[account]]
name = "main"
api_key = "sim-api-key"
api_secret = "sim-api-secret"
rate = "100000/s"
burst = 100000
[[team]]
name = "bench"
rate = "100000/s"
burst = 100000
[log]
level = "warn"
[state]
{state}
"""
    path = os.path.join(tmp, f"{name}.toml")
    with open(path, "w") as f:
        f.write(config)
    proc = subprocess.Popen([BIN, "run", "--config", path, "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(proxy)
    return proc, proxy


def timed(port, path, bodies):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    took = []
    for body in bodies:
        start = time.perf_counter()
        conn.request("POST", path, body=body, headers={"content-type": "application/json"})
        res = conn.getresponse()
        res.read()
        took.append(time.perf_counter() - start)
        # A status for an unknown scanRef is the simulator's 404: an answer all the same.
        if res.status >= 500 or (path.endswith("token") and res.status >= 300):
            sys.exit(f"{path}: {res.status}")
    conn.close()
    took.sort()
    return took[len(took) // 2] * 1e6, took[int(len(took) * 0.99)] * 1e6


def main():
    procs = []
    tmp = tempfile.mkdtemp()
    try:
        redis_port, sim_port = free_port(), free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            [BIN, "simulate", "--listen", f"127.0.0.1:{sim_port}", "--hourly-limit", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(redis_port)
        wait_port(sim_port)
        backends = {
            "memory": 'backend = "memory"',
            "redis": f'backend = "redis"\nredis_url = "redis://127.0.0.1:{redis_port}/0"',
        }
        status = [json.dumps({"scanRef": "bench"})] * N
        print(f"{N} sequential requests per path; latency in µs (p50 / p99)")
        print("| path | memory p50 | memory p99 | redis p50 | redis p99 | Redis round trips per request |")
        print("|---|---|---|---|---|---|")
        rows = {}
        for name, state in backends.items():
            proc, port = gateway(tmp, name, sim_port, state)
            procs.append(proc)
            time.sleep(0.5)  # the redis gateway's first PING
            timed(port, "/api/v2/status", status[:50])  # warm-up: connections, scripts loaded
            tokens = [json.dumps({"clientId": f"{name}-{i}"}) for i in range(N)]
            for path, label, bodies in [("/api/v2/status", "status", status),
                                        ("/api/v2/token", "token, leader", tokens),
                                        ("/api/v2/token", "token, replayed", tokens)]:
                before = commands(redis_port)
                p50, p99 = timed(port, path, bodies)
                per_request = (commands(redis_port) - before) / N
                rows.setdefault(label, {})[name] = (p50, p99, per_request)
            if name == "redis":
                # A second replica on the same Redis replays the first one's tokens.
                other, other_port = gateway(tmp, "redis-b", sim_port, state)
                procs.append(other)
                time.sleep(0.5)
                timed(other_port, "/api/v2/status", status[:50])
                before = commands(redis_port)
                p50, p99 = timed(other_port, "/api/v2/token", tokens)
                per_request = (commands(redis_port) - before) / N
                rows["token, replayed by another replica"] = {
                    "memory": (float("nan"),) * 3, "redis": (p50, p99, per_request)}
        for label, by in rows.items():
            m, r = by["memory"], by["redis"]
            print(f"| {label} | {m[0]:.0f} | {m[1]:.0f} | {r[0]:.0f} | {r[1]:.0f} | {r[2]:.2f} |")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
