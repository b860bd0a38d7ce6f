#!/usr/bin/env python3
"""bench/serve_overhead.py — serving overhead of actorserve against its anchors.

One run, one machine, one load generator (wrk), one system after the other:
  nginx       answering a fixed body (../shared/anchors/nginx-hello.conf): the physical limit
  ray-noop    Ray Serve serving ../shared/anchors/ray_noop.py
  as-hello    actorserve serving apps/hello.lua
  ray-pipe    Ray Serve serving bench/ray_pipeline.py
  as-pipe     actorserve serving apps/pipeline.lua (same deployments and scoring)
at concurrency 1, 64 and 256: requests/s, p50, p99, errors; then the resident
memory of all of each system's processes after the load, and the time from
launch to the first 200 answer. Prints a table with ratios (to nginx, and of
actorserve to Ray Serve) and writes bench/results/serve-<time>.json.
Usage: serve_overhead.py [--duration 8] [--only as-hello,nginx] [--conc 1,64,256]
Run through `make bench-serve`, which installs wrk, nginx and ray[serve] first.
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANCHORS = os.environ.get("ANCHORS", os.path.join(os.path.dirname(ROOT), "shared", "anchors"))
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
VENV = os.path.join(BUILD, "venv-bench")


def descendants(pid):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def rss_mib(pid):
    total = 0
    for p in descendants(pid):
        try:
            with open("/proc/%d/status" % p) as f:
                m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
                total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return round(total / 1024.0, 1)


def first_200(url, proc, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError("exited with %s before answering" % proc.returncode)
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001 (not up yet)
            pass
        time.sleep(0.02)
    raise RuntimeError("no 200 from %s within %d s" % (url, timeout))


def wrk(url, conc, duration):
    out = subprocess.run(["wrk", "-t1", "-c%d" % conc, "-d%ds" % duration, "--latency", "--timeout", "10s", url],
                         capture_output=True, text=True, timeout=duration + 60).stdout

    def ms(label):
        m = re.search(r"^\s+%s\s+([\d.]+)(us|ms|s)\s*$" % label, out, re.M)
        if not m:
            return None
        return round(float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)], 3)

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {"concurrency": conc, "rps": float(rps.group(1)) if rps else 0.0, "p50_ms": ms("50%"),
            "p99_ms": ms("99%"), "errors": errors}


def systems(port):
    asbin = os.path.join(BUILD, "actorserve")
    py = os.path.join(VENV, "bin", "python")
    return {
        "nginx": dict(cmd=["nginx", "-c", os.path.join(ANCHORS, "nginx-hello.conf"), "-p", "/tmp/nginx-hello/"],
                      url="http://127.0.0.1:8099/", setup=lambda: os.makedirs("/tmp/nginx-hello/logs", exist_ok=True)),
        "ray-noop": dict(cmd=[py, os.path.join(ROOT, "bench", "ray_host.py"), "ray_noop:app", str(port)],
                         url="http://127.0.0.1:%d/" % port, timeout=180),
        "as-hello": dict(cmd=[asbin, "run", os.path.join(ROOT, "apps", "hello.lua") + ":app", "--host", "127.0.0.1",
                              "--port", str(port), "--log-level", "warn"], url="http://127.0.0.1:%d/" % port),
        "ray-pipe": dict(cmd=[py, os.path.join(ROOT, "bench", "ray_host.py"), "ray_pipeline:app", str(port)],
                         url="http://127.0.0.1:%d/?user=alice&k=3" % port, timeout=180),
        "as-pipe": dict(cmd=[asbin, "run", os.path.join(ROOT, "apps", "pipeline.lua") + ":app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warn"],
                        url="http://127.0.0.1:%d/?user=alice&k=3" % port),
    }


def run_system(name, spec, concs, duration):
    if spec.get("setup"):
        spec["setup"]()
    # Ray's workers import the app modules by name: they inherit PYTHONPATH.
    env = dict(os.environ, ANCHORS=ANCHORS, RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "bench"), ANCHORS]))
    t0 = time.time()
    proc = subprocess.Popen(spec["cmd"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    res = {"system": name}
    try:
        first_200(spec["url"], proc, spec.get("timeout", 60))
        res["startup_s"] = round(time.time() - t0, 3)
        wrk(spec["url"], 16, 2)  # warm-up
        res["runs"] = [wrk(spec["url"], c, duration) for c in concs]
        res["rss_mib"] = rss_mib(proc.pid)
    except Exception as e:  # noqa: BLE001
        res["error"] = str(e)
        err = proc.stderr.read1(4000) if proc.poll() is not None else b""
        res["stderr"] = err.decode(errors="replace")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except Exception:  # noqa: BLE001
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if name.startswith("ray"):
            subprocess.run([os.path.join(VENV, "bin", "ray"), "stop", "--force"], capture_output=True)
    return res


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip() or \
            subprocess.run(cmd, capture_output=True, text=True, timeout=30).stderr.strip()
    except Exception:  # noqa: BLE001
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--conc", default="1,64,256")
    ap.add_argument("--only", default="nginx,ray-noop,as-hello,ray-pipe,as-pipe")
    ap.add_argument("--port", type=int, default=8765)
    a = ap.parse_args()
    concs = [int(c) for c in a.conc.split(",")]
    specs = systems(a.port)
    results = []
    for name in a.only.split(","):
        print("== %s" % name, flush=True)
        r = run_system(name, specs[name], concs, a.duration)
        print(json.dumps(r), flush=True)
        results.append(r)
    by = {r["system"]: r for r in results}

    def rps(name, c):
        for run in by.get(name, {}).get("runs", []):
            if run["concurrency"] == c:
                return run["rps"]
        return None

    print("\n%-9s %5s %10s %9s %9s %7s %9s %11s" % ("system", "conc", "req/s", "p50 ms", "p99 ms", "errors",
                                                   "x nginx", "x ray"))
    for r in results:
        for run in r.get("runs", []):
            c = run["concurrency"]
            ng = rps("nginx", c)
            ray = rps({"as-hello": "ray-noop", "as-pipe": "ray-pipe"}.get(r["system"], ""), c)
            run["ratio_nginx"] = round(run["rps"] / ng, 3) if ng else None
            run["ratio_ray"] = round(run["rps"] / ray, 1) if ray else None
            print("%-9s %5d %10.0f %9s %9s %7d %9s %11s" % (r["system"], c, run["rps"], run["p50_ms"], run["p99_ms"],
                                                         run["errors"], run["ratio_nginx"], run["ratio_ray"]))
    print("\n%-9s %12s %12s" % ("system", "startup s", "RSS MiB"))
    for r in results:
        print("%-9s %12s %12s" % (r["system"], r.get("startup_s"), r.get("rss_mib")))
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cores": os.cpu_count(), "machine": platform.machine(),
        "kernel": platform.release(), "duration_s": a.duration,
        "versions": {"actorserve": version([os.path.join(BUILD, "actorserve"), "--version"]),
                     "nginx": version(["nginx", "-v"]), "wrk": (version(["wrk", "-v"]) or "").split("\n")[0],
                     "ray": version([os.path.join(VENV, "bin", "python"), "-c", "import ray; print(ray.__version__)"])},
    }
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    path = os.path.join(ROOT, "bench", "results", "serve-%s.json" % time.strftime("%Y%m%d-%H%M%S"))
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print("\nwrote %s" % path)


if __name__ == "__main__":
    sys.exit(main())
