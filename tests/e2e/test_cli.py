"""CLI: --help, --version, flags, error exits, default host, signals."""
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import (BIN, ROOT, app, curl, free_port, new_id, pid_alive, port_is_free,
                      session_members, tail, touch, wait_for_file)

QUICK = 15  # seconds: the bound for commands that must exit by themselves


def run_cli(*args, timeout=QUICK):
    """Runs the binary to completion; if it is still running after timeout, kills
    its whole session (head and any worker) and fails."""
    assert os.path.exists(BIN), "actorserve binary not found at %s" % BIN
    p = subprocess.Popen([BIN] + list(args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(p)
        out, err = p.communicate()
        pytest.fail("`actorserve %s` still running after %ss; stderr:\n%s" % (" ".join(args), timeout, tail(err)))
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _kill_session(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass


def test_help_exits_0_with_usage_on_stdout():
    cp = run_cli("--help")
    assert cp.returncode == 0, cp.stderr
    assert "usage" in cp.stdout.lower(), "no usage on stdout: %r" % cp.stdout
    assert "run" in cp.stdout
    for flag in ("--port", "--host", "--num-cpus", "--num-gpus", "--request-timeout-s"):
        assert flag in cp.stdout, "--help does not mention %s" % flag


def test_version():
    cp = run_cli("--version")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "actorserve 0.1.0", repr(cp.stdout)


@pytest.mark.parametrize("bad", [
    ["--bogus-flag"],
    ["--port", "abc"],
    ["--port", "99999"],
    ["--num-cpus", "many"],
    ["--log-level", "loud"],
    ["--resources", "{not json"],
    ["--max-body-bytes", "ten"],
], ids=["unknown-flag", "port-abc", "port-out-of-range", "num-cpus-word", "log-level", "resources-json",
        "max-body-bytes"])
def test_bad_flag_values_exit_2(bad):
    port = free_port()
    args = ["run", app("basic.lua") + ":app", "--host", "127.0.0.1"]
    if "--port" not in bad:
        args += ["--port", str(port)]
    cp = run_cli(*(args + bad))
    assert cp.returncode == 2, "rc=%s stdout=%r stderr=%r" % (cp.returncode, cp.stdout, tail(cp.stderr))
    assert cp.stderr.strip(), "no message on stderr"
    assert port_is_free(port)


@pytest.mark.parametrize("target,expect_in_msg", [
    ("bad_syntax.lua:app", "bad_syntax.lua:3:"),
    ("not_app.lua:missing_variable", "not_app.lua"),
    ("not_app.lua:a_string", "not_app.lua"),
    ("not_app.lua:a_number", "not_app.lua"),
    ("not_app.lua:unbound", "not_app.lua"),
    ("top_error.lua:app", "top_error.lua"),
    ("no_such_file.lua:app", "no_such_file.lua"),
], ids=["syntax-error", "missing-variable", "string-variable", "number-variable", "unbound-deployment",
        "load-time-error", "missing-file"])
def test_app_file_errors_exit_1_before_binding(target, expect_in_msg):
    port = free_port()
    t0 = time.monotonic()
    cp = run_cli("run", app(target), "--host", "127.0.0.1", "--port", str(port))
    assert cp.returncode == 1, "rc=%s stderr=%r" % (cp.returncode, tail(cp.stderr))
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert any(expect_in_msg in ln for ln in lines), "stderr does not name %r: %r" % (expect_in_msg, cp.stderr)
    assert len(lines) == 1, "expected exactly one line on stderr, got %d: %r" % (len(lines), cp.stderr)
    assert port_is_free(port), "port %d was bound" % port
    assert time.monotonic() - t0 < QUICK


def test_app_file_error_never_listens(tmp_path):
    """While the binary handles a bad app file, the port never accepts a connection."""
    port = free_port()
    p = subprocess.Popen([BIN, "run", app("bad_syntax.lua:app"), "--host", "127.0.0.1", "--port", str(port)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    accepted = False
    deadline = time.monotonic() + QUICK
    while p.poll() is None and time.monotonic() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=0.2)
            s.close()
            accepted = True
        except OSError:
            time.sleep(0.005)
    try:
        out, err = p.communicate(timeout=QUICK)
    except subprocess.TimeoutExpired:
        _kill_session(p)
        out, err = p.communicate()
        pytest.fail("did not exit")
    assert p.returncode == 1, err
    assert not accepted, "port accepted a connection although the app file is broken"


def test_default_host_serves_loopback(serve):
    """Without --host (0.0.0.0 by default) the server answers on 127.0.0.1."""
    srv = serve(app("basic.lua:app"), host_flag=False)
    r = srv.get("/")
    assert r.status_code == 200 and r.text == "root:hi"


def test_default_port_8000(serve):
    """Without --port the server listens on 8000 (skipped when 8000 is taken)."""
    if not port_is_free(8000):
        pytest.skip("port 8000 is in use on this machine")
    srv = serve(app("basic.lua:app"), port=8000)
    r = requests.get("http://127.0.0.1:8000/", timeout=10)
    assert r.status_code == 200 and r.text == "root:hi"


@pytest.mark.parametrize("level", ["debug", "info", "warn", "error"])
def test_log_levels_start(serve, level):
    srv = serve(app("basic.lua:app"), "--log-level", level)
    assert srv.get("/").text == "root:hi"
    if level == "debug":
        assert srv.stderr().strip(), "debug level logged nothing on stderr"


def test_all_flags_together(serve):
    srv = serve(app("basic.lua:app"), "--route-prefix", "/api", "--name", "flagged", "--num-cpus", "3",
                "--num-gpus", "1", "--resources", '{"foo": 2}', "--request-timeout-s", "30",
                "--keep-alive-timeout-s", "5", "--max-body-bytes", "100000", "--max-header-bytes", "8192",
                "--graceful-shutdown-timeout-s", "5", "--log-level", "info")
    assert srv.get("/api").text == "root:hi"
    assert srv.get("/-/routes").json() == {"/api": "flagged"}
    st = srv.status()
    assert st["node"]["total"]["CPU"] == 3
    assert st["node"]["total"]["GPU"] == 1
    assert st["node"]["total"].get("foo") == 2, st["node"]
    assert "flagged" in st["applications"]


def test_hello_app_relative_path_with_curl(serve):
    """The shipped example, by the relative path a user types."""
    assert os.path.exists(os.path.join(ROOT, "apps", "hello.lua")), "apps/hello.lua is missing"
    srv = serve("apps/hello.lua:app", cwd=ROOT)
    code, headers, body, cp = curl(srv.url("/"))
    assert cp.returncode == 0, cp.stderr
    assert code == 200
    assert body == b"hello"
    assert headers.get("content-type", "").startswith("text/plain")
    assert headers.get("x-request-id")


def test_hello_app_with_requests(serve):
    srv = serve("apps/hello.lua:app", cwd=ROOT)
    r = srv.get("/")
    assert r.status_code == 200
    assert r.text == "hello"
    assert r.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_lets_inflight_request_finish(serve, workdir, sig):
    srv = serve(app("basic.lua:app"), "--num-cpus", "4")
    pids = srv.seen_pids | {srv.proc.pid}
    result = {}

    def client():
        try:
            r = requests.get(srv.url("/sleep?s=1.5&dir=%s&name=inflight" % workdir), timeout=30)
            result["status"], result["body"] = r.status_code, r.text
        except requests.RequestException as e:
            result["error"] = repr(e)

    t = threading.Thread(target=client)
    t.start()
    assert wait_for_file(os.path.join(workdir, "inflight.started")), "handler never started"
    srv.send(sig)
    rc = srv.wait_exit(25)
    t.join(30)
    assert rc == 0, "exit code %s after %s" % (rc, sig)
    assert result.get("status") == 200 and result.get("body") == "slept 1.5", result
    # Nothing accepts connections any more.
    with pytest.raises(requests.ConnectionError):
        requests.get(srv.url("/"), timeout=5)
    time.sleep(0.2)
    left = [p for p in pids if pid_alive(p)] + session_members(srv.proc.pid)
    assert not left, "processes left: %s" % left


def test_graceful_shutdown_timeout_bounds_shutdown(serve, workdir):
    """A handler sleeping 60 s does not hold shutdown past --graceful-shutdown-timeout-s."""
    srv = serve(app("basic.lua:app"), "--graceful-shutdown-timeout-s", "1")
    t = threading.Thread(target=lambda: _swallow(srv.url("/sleep?s=60&dir=%s&name=long" % workdir)), daemon=True)
    t.start()
    assert wait_for_file(os.path.join(workdir, "long.started"))
    srv.send(signal.SIGTERM)
    rc = srv.wait_exit(20)
    assert rc is not None, "still running 20 s after SIGTERM with --graceful-shutdown-timeout-s 1"
    assert rc == 0


def _swallow(url):
    try:
        requests.get(url, timeout=70)
    except requests.RequestException:
        pass
