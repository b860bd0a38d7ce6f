"""Concurrency: 64 clients, a slow handler beside fast ones, SIGTERM under load."""
import os
import signal
import subprocess
import threading
import time

import requests

from conftest import RawReader, app, connect, curl, new_id, pid_alive, session_members, touch, wait_for_file

LOAD = app("load.lua:app")
PAD = "z" * 1000


def test_64_concurrent_clients_no_error(serve):
    srv = serve(LOAD)
    errors = []
    ok = [0]
    lock = threading.Lock()
    start = threading.Barrier(64)

    def client(i):
        try:
            start.wait(15)
            with requests.Session() as s:
                for j in range(3):
                    n = "%d-%d" % (i, j)
                    r = s.get(srv.url("/?n=%s&s=0.01" % n), timeout=60)
                    if r.status_code != 200 or r.text != "ok:%s:%s" % (n, PAD):
                        errors.append((n, r.status_code, r.text[:200]))
                    else:
                        with lock:
                            ok[0] += 1
        except Exception as e:  # noqa: BLE001
            errors.append((i, repr(e)))

    ts = [threading.Thread(target=client, args=(i,)) for i in range(64)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, "%d errors, first: %r" % (len(errors), errors[:5])
    assert ok[0] == 192


def test_concurrent_curl_clients(serve):
    srv = serve(LOAD)
    procs = []
    for i in range(16):
        procs.append(subprocess.Popen(["curl", "-sS", "--max-time", "60", srv.url("/?n=c%d&s=0.05" % i)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
        assert out.decode() == "ok:c%d:%s" % (i, PAD)


def test_slow_handler_does_not_block_others(serve, workdir):
    """One replica: a request parked in serve.sleep-based waiting does not stop
    the same replica answering others."""
    srv = serve(app("basic.lua:app"))
    out = {}

    def gated():
        try:
            r = requests.get(srv.url("/gate?dir=%s&name=slow" % workdir), timeout=40)
            out["r"] = (r.status_code, r.text)
        except requests.RequestException as e:
            out["r"] = repr(e)

    t = threading.Thread(target=gated)
    t.start()
    try:
        assert wait_for_file(os.path.join(workdir, "slow.started"))
        for i in range(10):
            r = srv.get("/pipe?i=%d" % i, timeout=10)
            assert r.status_code == 200 and r.text == "pipe-%d" % i
        # Other sleeping requests overlap with it too.
        code, _, body, _ = curl(srv.url("/sleep?s=0.2"))
        assert code == 200 and body == b"slept 0.2"
        assert t.is_alive(), "the gated request returned before its release"
    finally:
        touch(os.path.join(workdir, "slow.release"))
        t.join(30)
    assert out.get("r") == (200, "released"), out


def test_sigterm_under_load_loses_no_accepted_request(serve, workdir):
    srv = serve(LOAD)
    pids = set(srv.seen_pids) | {srv.proc.pid}
    results = []          # (id, status, body_ok)
    conn_errors = []      # (id, repr) requests refused / dropped before any response
    bad = []              # anything else: 5xx, truncated bodies, protocol errors
    lock = threading.Lock()
    stop = threading.Event()

    def client(i):
        for j in range(300):
            if stop.is_set():
                return
            rid = new_id()
            n = "%d-%d" % (i, j)
            try:
                r = requests.get(srv.url("/?n=%s&s=0.1&dir=%s" % (n, workdir)),
                                 headers={"x-request-id": rid}, timeout=30)
                body_ok = r.text == "ok:%s:%s" % (n, PAD)
                with lock:
                    results.append((rid, r.status_code, body_ok))
                    if r.status_code != 200 or not body_ok:
                        bad.append((rid, r.status_code, r.text[:200]))
            except requests.ConnectionError as e:
                with lock:
                    conn_errors.append((rid, repr(e)))
                return
            except Exception as e:  # noqa: BLE001  (ChunkedEncodingError, timeouts, ...)
                with lock:
                    bad.append((rid, "exception", repr(e)))
                return

    ts = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if len(results) >= 40:
                break
        time.sleep(0.02)
    srv.snapshot_pids()
    pids |= srv.seen_pids
    srv.send(signal.SIGTERM)
    rc = srv.wait_exit(25)
    stop.set()
    for t in ts:
        t.join(40)
    started = set(os.listdir(workdir))
    print("answers=%d connection-errors=%d handler-starts=%d" % (len(results), len(conn_errors), len(started)))
    assert rc == 0, "exit code %s after SIGTERM under load" % rc
    assert len(results) >= 40, "load never got going: %d answers" % len(results)
    assert not bad, "%d bad answers, first: %r" % (len(bad), bad[:5])
    answered = {rid for rid, st, ok in results if st == 200 and ok}
    lost = started - answered
    assert not lost, "%d requests reached a replica but got no 200: %s; their errors: %r" % (
        len(lost), sorted(lost)[:5], [c for c in conn_errors if c[0] in lost][:5])
    time.sleep(0.2)
    left = [p for p in pids if pid_alive(p)] + session_members(srv.proc.pid)
    assert not left, "processes left after SIGTERM: %s" % left


def test_sigterm_with_idle_and_stalled_connections(serve):
    """Open idle keep-alive and half-sent connections do not hold shutdown."""
    srv = serve(LOAD)
    idle = connect(srv.port, timeout=30)
    stalled = connect(srv.port, timeout=30)
    try:
        idle.sendall(b"GET /?n=idle HTTP/1.1\r\nHost: t\r\n\r\n")
        assert RawReader(idle).read_response().status == 200
        stalled.sendall(b"GET /?n=stalled HTTP/1.1\r\nHost: t\r\nX-Half")
        time.sleep(0.2)
        srv.send(signal.SIGTERM)
        rc = srv.wait_exit(22)
        assert rc is not None, "open idle/stalled connections kept the server from exiting"
        assert rc == 0
    finally:
        idle.close()
        stalled.close()


def test_sigterm_during_stream_lets_it_finish(serve, workdir):
    srv = serve(app("basic.lua:app"))
    with requests.get(srv.url("/stream/gated?dir=%s" % workdir), stream=True, timeout=(5, 25)) as r:
        assert r.status_code == 200
        it = r.iter_content(chunk_size=None)
        got = b""
        while len(got) < len(b"first\n"):
            got += next(it)
        srv.send(signal.SIGTERM)
        time.sleep(0.3)
        touch(os.path.join(workdir, "release"))
        for chunk in it:
            got += chunk
    assert got == b"first\nsecond\n"
    assert srv.wait_exit(25) == 0
