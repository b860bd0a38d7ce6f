#!/usr/bin/env python3
"""bench/llm_serve.py — continuous batching, measured: total generated tokens/s of
apps/chat.lua (models/tiny-kjv on the CPU) with 1, 4, 16 and 32 concurrent
requests (POST /v1/completions, max_tokens 64, temperature 1, seeded), and the
ratio of each to one request alone. Writes bench/results/llm-serve-<time>.json.
Usage: llm_serve.py [--requests-per-client 3] [--max-tokens 64]
"""
import argparse
import json
import os
import socket
import subprocess
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("ACTORSERVE_BIN", os.path.join(ROOT, "build", "actorserve"))


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests-per-client", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--conc", default="1,4,16,32")
    a = ap.parse_args()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([BIN, "run", os.path.join(ROOT, "apps", "chat.lua") + ":chat", "--host", "127.0.0.1",
                             "--port", str(port), "--dashboard-port", "0", "--log-level", "warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = "http://127.0.0.1:%d/v1/completions" % port
    try:
        for _ in range(300):
            try:
                post(url, {"model": "tiny-kjv", "prompt": "In", "max_tokens": 2})
                break
            except Exception:  # noqa: BLE001 (not up yet)
                time.sleep(0.1)
        runs = []
        for conc in [int(c) for c in a.conc.split(",")]:
            tokens = [0]
            lock = threading.Lock()

            def client(i):
                for j in range(a.requests_per_client):
                    r = post(url, {"model": "tiny-kjv", "prompt": "And it came to pass", "max_tokens": a.max_tokens,
                                   "temperature": 1.0, "seed": i * 100 + j})
                    with lock:
                        tokens[0] += r["usage"]["completion_tokens"]

            t0 = time.perf_counter()
            ts = [threading.Thread(target=client, args=(i,)) for i in range(conc)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            dt = time.perf_counter() - t0
            runs.append({"concurrency": conc, "tokens": tokens[0], "seconds": round(dt, 3),
                         "tokens_per_s": round(tokens[0] / dt, 1)})
            print(json.dumps(runs[-1]), flush=True)
        base = runs[0]["tokens_per_s"]
        for r in runs:
            r["x_one_request"] = round(r["tokens_per_s"] / base, 2)
            print("concurrency %3d: %8.1f tokens/s  (%.2fx one request)" % (r["concurrency"], r["tokens_per_s"],
                                                                         r["x_one_request"]))
        os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
        path = os.path.join(ROOT, "bench", "results", "llm-serve-%s.json" % time.strftime("%Y%m%d-%H%M%S"))
        with open(path, "w") as f:
            json.dump({"cores": os.cpu_count(), "model": "models/tiny-kjv", "max_tokens": a.max_tokens,
                       "runs": runs}, f, indent=1)
        print("wrote", path)
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
