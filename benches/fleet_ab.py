#!/usr/bin/env python3
"""The status path in fleet mode, two builds side by side: what a change to the Redis path buys,
measured so that a busy machine's drift falls on both alike.

    BASE_BIN=/tmp/base-gateway GATEWAY_BIN=target/release/idenfy-gateway \
        python3 benches/fleet_ab.py [requests per gateway]

Starts its own redis-server and the simulator (from GATEWAY_BIN), then three gateways in front
of them (`--workers 1` each): BASE_BIN and GATEWAY_BIN with `state.backend = "redis"` on the one
Redis, and GATEWAY_BIN with `"memory"` for reference. Sends sequential keep-alive
`POST /api/v2/status` requests, one to each gateway in turn (the order rotates), and prints p50
and p90 per gateway, after 100 warm-up rounds. Uses `benches/fleet.py`'s helpers.
"""

import http.client
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("fleet", os.path.join(HERE, "fleet.py"))
fleet = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fleet)

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
WARM_UP = 100
BINS = {"base (redis)": os.environ.get("BASE_BIN"), "new (redis)": fleet.BIN, "new (memory)": fleet.BIN}


def main():
    if not BINS["base (redis)"]:
        sys.exit("BASE_BIN: the build to compare against")
    procs, tmp = [], tempfile.mkdtemp()
    try:
        redis_port, sim_port = fleet.free_port(), fleet.free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            [fleet.BIN, "simulate", "--listen", f"127.0.0.1:{sim_port}", "--hourly-limit", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        fleet.wait_port(redis_port)
        fleet.wait_port(sim_port)
        redis = f'backend = "redis"\nredis_url = "redis://127.0.0.1:{redis_port}/0"'
        conns = {}
        for i, (label, binary) in enumerate(BINS.items()):
            fleet.BIN = os.path.abspath(binary)
            state = 'backend = "memory"' if "memory" in label else redis
            proc, port = fleet.gateway(tmp, f"gw{i}", sim_port, state)
            procs.append(proc)
            conns[label] = http.client.HTTPConnection("127.0.0.1", port)
        time.sleep(0.5)  # the redis gateways' first PING
        body = json.dumps({"scanRef": "bench"})
        took = {label: [] for label in conns}
        labels = list(conns)
        for round_ in range(WARM_UP + N):
            k = round_ % len(labels)
            for label in labels[k:] + labels[:k]:
                start = time.perf_counter()
                conns[label].request("POST", "/api/v2/status", body=body,
                                     headers={"content-type": "application/json"})
                conns[label].getresponse().read()
                if round_ >= WARM_UP:
                    took[label].append(time.perf_counter() - start)
        for label, times in took.items():
            times.sort()
            p50, p90 = times[len(times) // 2] * 1e6, times[int(len(times) * 0.9)] * 1e6
            print(f"{label}: p50 {p50:.0f} µs, p90 {p90:.0f} µs")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
