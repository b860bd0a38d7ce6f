"""Replicas: crash and restart, spreading over replicas, backpressure,
PENDING placement, GPU assignment."""
import os
import re
import threading
import time

import pytest
import requests

from conftest import app, pid_alive, replicas_of, touch, wait_for_file

REPL = lambda var: app("replicas.lua:" + var)  # noqa: E731


def _parallel_get(urls, timeout=30):
    """GETs every url at once; returns a list of (status, json-or-text) or repr(exception)."""
    out = [None] * len(urls)
    start = threading.Barrier(len(urls))

    def one(i, u):
        try:
            start.wait(10)
            r = requests.get(u, timeout=timeout)
            try:
                out[i] = (r.status_code, r.json())
            except ValueError:
                out[i] = (r.status_code, r.text)
        except Exception as e:  # noqa: BLE001
            out[i] = repr(e)

    ts = [threading.Thread(target=one, args=(i, u)) for i, u in enumerate(urls)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout + 15)
    return out


def test_crashed_replica_is_restarted(serve):
    srv = serve(app("basic.lua:app"))
    before = srv.get("/ctx").json()
    old_pid = before["pid"]
    assert old_pid in srv.seen_pids
    r = srv.get("/die", timeout=30)
    assert r.status_code == 500, (r.status_code, r.text)
    assert re.search(r"die|dead|crash", r.text, re.I), "500 body does not say the replica died: %r" % r.text
    assert r.headers.get("x-request-id")
    # The proxy waits for the restarted replica: the very next request succeeds.
    r = srv.get("/ctx", timeout=30)
    assert r.status_code == 200, (r.status_code, r.text)
    after = r.json()
    assert after["replica_id"] == "Basic#0"
    assert after["pid"] != old_pid
    st = srv.wait_status(lambda s: replicas_of(s)["Basic"][0]["state"] == "RUNNING"
                         and replicas_of(s)["Basic"][0]["pid"] == after["pid"], "restarted replica in /-/status")
    assert len(replicas_of(st)["Basic"]) == 1
    deadline = time.monotonic() + 10
    while pid_alive(old_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(old_pid), "the crashed worker %d is still alive" % old_pid


def test_repeated_crashes_keep_restarting(serve):
    srv = serve(app("basic.lua:app"))
    pids = {srv.get("/ctx").json()["pid"]}
    for _ in range(3):
        assert srv.get("/die", timeout=30).status_code == 500
        r = srv.get("/ctx", timeout=30)
        assert r.status_code == 200, r.text
        pids.add(r.json()["pid"])
    assert len(pids) == 4


def test_three_replicas_three_pids_concurrent(serve):
    """max_ongoing_requests = 1 per replica: three held requests must be on three replicas."""
    srv = serve(REPL("three"))
    st = srv.status()
    status_pids = {r["pid"] for r in replicas_of(st)["W"]}
    assert len(status_pids) == 3
    res = _parallel_get([srv.url("/?s=1") for _ in range(3)])
    assert all(isinstance(x, tuple) and x[0] == 200 for x in res), res
    pids = {x[1]["pid"] for x in res}
    ids = {x[1]["replica_id"] for x in res}
    assert ids == {"W#0", "W#1", "W#2"}, res
    assert pids == status_pids
    assert srv.proc.pid not in pids


def test_three_replicas_sequential_requests_spread(serve):
    """Power of two choices picks at random among idle replicas: sequential
    requests reach all three worker processes."""
    srv = serve(REPL("three_wide"))
    seen = set()
    with requests.Session() as s:
        for _ in range(60):
            r = s.get(srv.url("/"), timeout=10)
            assert r.status_code == 200
            seen.add(r.json()["pid"])
    assert len(seen) == 3, "60 requests reached only %d replicas" % len(seen)


def test_backpressure_503(serve, workdir):
    """max_ongoing_requests = 1, max_queued_requests = 1: with one request
    running and more arriving, one waits in the queue and the rest get 503."""
    srv = serve(REPL("backpressure"))
    held = {}

    def hold():
        try:
            r = requests.get(srv.url("/?dir=%s&name=h" % workdir), timeout=40)
            held["r"] = (r.status_code, r.json().get("gated") if r.status_code == 200 else r.text)
        except Exception as e:  # noqa: BLE001
            held["r"] = repr(e)

    t = threading.Thread(target=hold)
    t.start()
    assert wait_for_file(os.path.join(workdir, "h.started")), "the first request never ran"
    results = [None] * 5
    done = threading.Semaphore(0)

    rids = []

    def extra(i):
        try:
            r = requests.get(srv.url("/"), timeout=40)
            results[i] = r.status_code
            rids.append(r.headers.get("x-request-id"))
        except Exception as e:  # noqa: BLE001
            results[i] = repr(e)
        done.release()

    ts = [threading.Thread(target=extra, args=(i,)) for i in range(5)]
    for x in ts:
        x.start()
    got = 0
    deadline = time.monotonic() + 15
    while got < 4 and time.monotonic() < deadline:
        if done.acquire(timeout=0.1):
            got += 1
    early = [x for x in results if x is not None]
    touch(os.path.join(workdir, "h.release"))
    for x in ts:
        x.join(45)
    t.join(45)
    assert got >= 4, "with 1 running and 1 queued allowed, only %d of 5 extra requests were answered " \
                     "before the first finished: %r" % (got, early)
    assert sorted(results, key=str) == [200] + [503] * 4, results
    assert held.get("r") == (200, "released"), held
    assert all(rids), "a response without x-request-id"


def test_max_ongoing_requests_is_enforced(serve):
    """max_ongoing_requests = 2: eight concurrent requests run at most two at a time."""
    srv = serve(REPL("peak"))
    res = _parallel_get([srv.url("/") for _ in range(8)])
    assert all(isinstance(x, tuple) and x == (200, "done") for x in res), res
    p = srv.get("/peak").json()
    assert p == {"peak": 2, "total": 8}, p


def test_unlimited_queue_by_default(serve):
    """max_queued_requests = -1: 12 requests on a single max_ongoing=1 replica all succeed."""
    srv = serve(REPL("queue_unlimited"))
    res = _parallel_get([srv.url("/?s=0.05") for _ in range(12)])
    assert all(isinstance(x, tuple) and x[0] == 200 for x in res), res


def test_starting_state_and_requests_wait_for_init(serve, workdir):
    """While the constructor runs the replica is STARTING; a request sent then
    waits for it and is served once init finishes."""
    srv = serve(app("slow_init.lua:app"), env={"AS_E2E_GATE_DIR": workdir}, wait_running=False)
    assert wait_for_file(os.path.join(workdir, "init.started")), "init never ran"
    st = srv.status()
    rep = replicas_of(st)["SlowInit"][0]
    assert rep["state"] == "STARTING", rep
    out = {}

    def call():
        try:
            r = requests.get(srv.url("/"), timeout=40)
            out["r"] = (r.status_code, r.text)
        except requests.RequestException as e:
            out["r"] = repr(e)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)
    assert "r" not in out, "answered before the replica finished init: %r" % out
    touch(os.path.join(workdir, "init.release"))
    t.join(45)
    assert out.get("r") == (200, "init released"), out
    srv.wait_running()


def _pending(srv, dep):
    def pred(st):
        reps = replicas_of(st).get(dep) or []
        return bool(reps) and all(r["state"] == "PENDING" for r in reps)
    return srv.wait_status(pred, "%s PENDING" % dep)


def test_pending_cpu(serve):
    srv = serve(REPL("big_cpu"), "--num-cpus", "2", "--request-timeout-s", "2", wait_running=False)
    assert srv.get("/-/healthz").text == "success"
    st = _pending(srv, "Big")
    rep = replicas_of(st)["Big"][0]
    msg = rep["message"]
    assert "needs" in msg and re.search(r"CPU: 64\b", msg), msg
    assert "free" in msg and re.search(r"CPU: 2\b", msg), msg
    assert not rep.get("pid"), rep
    # Requests to it wait (here: until the request timeout) or are refused, never served.
    try:
        r = requests.get(srv.url("/"), timeout=10)
        assert r.status_code in (408, 503), (r.status_code, r.text)
    except requests.Timeout:
        pass
    # Still pending, server still up.
    assert replicas_of(srv.status())["Big"][0]["state"] == "PENDING"
    assert srv.get("/-/healthz").status_code == 200


def test_pending_gpu(serve):
    srv = serve(REPL("need_gpu"), "--num-gpus", "0", "--request-timeout-s", "2", wait_running=False)
    st = _pending(srv, "NeedGpu")
    msg = replicas_of(st)["NeedGpu"][0]["message"]
    assert "needs" in msg and re.search(r"GPU: 1\b", msg), msg
    assert re.search(r"GPU: 0\b", msg), msg
    assert st["node"]["total"]["GPU"] == 0


def test_custom_resources_partial_fit(serve):
    srv = serve(REPL("custom"), "--resources", '{"foo": 2}', wait_running=False)

    def pred(st):
        reps = replicas_of(st).get("Custom") or []
        return sorted(r["state"] for r in reps) == ["PENDING", "RUNNING", "RUNNING"]
    st = srv.wait_status(pred, "2 RUNNING + 1 PENDING")
    assert st["node"]["total"].get("foo") == 2, st["node"]
    pend = [r for r in replicas_of(st)["Custom"] if r["state"] == "PENDING"][0]
    assert "foo" in pend["message"], pend
    r = srv.get("/")
    assert r.status_code == 200 and r.json()["deployment"] == "Custom"


@pytest.mark.parametrize("var,dep,expected,share", [
    ("gpu_half", "GHalf", ["0", "0"], "0.5000"),
    ("gpu_whole", "GWhole", ["0", "1"], "1.0000"),
    ("gpu_none", "GNone", ["", ""], "0.0000"),
], ids=["half-shares-device-0", "whole-gets-0-and-1", "zero-gets-empty"])
def test_cuda_visible_devices(serve, var, dep, expected, share):
    srv = serve(REPL(var), "--num-gpus", "2")
    st = srv.status()
    reps = replicas_of(st)[dep]
    assert len(reps) == 2
    by_id = {r["replica_id"]: r for r in reps}
    assert sorted(r["gpu_ids"] for r in reps) == expected, reps
    # max_ongoing_requests = 1: two held requests run on both replicas.
    res = _parallel_get([srv.url("/?s=1") for _ in range(2)])
    assert all(isinstance(x, tuple) and x[0] == 200 for x in res), res
    assert {x[1]["replica_id"] for x in res} == set(by_id), res
    for x in res:
        assert x[1]["cvd"] == by_id[x[1]["replica_id"]]["gpu_ids"], (x, by_id)
    assert sorted(x[1]["cvd"] for x in res) == expected
    assert all(x[1]["share"] == share for x in res), res  # what actorserve.llm sizes its cache to
    assert st["node"]["total"]["GPU"] == 2
