"""The control plane (issue 4, points 5 to 7): actorserve start/deploy/status/
config/shutdown/build, the REST API on 127.0.0.1 only, updates under steady
load without a failed request (in place: num_replicas, max_ongoing_requests,
user_config; rolling: code, ray_actor_options; an application removed), and
health checks that mark a replica UNHEALTHY and replace it."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import (APPS, Load, free_port, pid_alive, replicas_of, rest_url, run_cli,
                      session_members, status_pids, touch, write_file)

LUA = lambda name: os.path.join(APPS, name)  # noqa: E731


def _dep(st, app_name, dep):
    return st["applications"][app_name]["deployments"][dep]


def _wait(pred, what, timeout=30.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out waiting for " + what)


def _deploy(addr, path, **kw):
    cp = run_cli("deploy", path, "-a", addr, **kw)
    assert cp.returncode == 0, cp
    assert "Sent deploy request" in cp.stdout, cp
    return cp


def _settled(app_name, dep, n):
    """pred(status): the deployment runs exactly n replicas of its current version, HEALTHY."""
    def ok(st):
        d = _dep(st, app_name, dep)
        reps = d["replicas"]
        return (d["status"] == "HEALTHY" and len(reps) == n
                and all(r["state"] == "RUNNING" and r["current_version"] for r in reps))
    return ok


def _pids(st, app_name, dep):
    return {r["pid"] for r in _dep(st, app_name, dep)["replicas"]}


def _refused(port):
    """Nothing accepts connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        return False
    except OSError:
        return True


# ---- background heads (actorserve start) --------------------------------------------------

class Head:
    """A head started with `actorserve start` on free ports; its log and run
    directory go to the test's workdir (TMPDIR)."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.dash = free_port()
        self.port = free_port()
        self.addr = "http://127.0.0.1:%d" % self.dash
        self.env = {"TMPDIR": workdir}
        self.pid = None
        self.seen = set()

    def start(self):
        cp = run_cli("start", "--dashboard-port", self.dash, "--host", "127.0.0.1", "--port", self.port,
                     env=self.env, timeout=30)
        m = re.search(r"\(pid (\d+)\)", cp.stdout)
        if m:
            self.pid = int(m.group(1))
        return cp

    def cli(self, *args, **kw):
        env = dict(self.env)
        env.update(kw.pop("env", {}))
        return run_cli(*args, env=env, **kw)

    def status(self):
        st = requests.get(rest_url(self.dash), timeout=10).json()
        self.seen |= status_pids(st)
        return st

    def wait_status(self, pred, what, timeout=30.0):
        last = [None]

        def ok():
            try:
                last[0] = self.status()
                return pred(last[0]) and last[0]
            except (requests.RequestException, ValueError, KeyError, IndexError, TypeError):
                return False
        try:
            return _wait(ok, what, timeout)
        except AssertionError:
            raise AssertionError("timed out waiting for %s; last status %s\nlog:\n%s"
                                 % (what, json.dumps(last[0]), self.log()[-4000:]))

    def log(self):
        try:
            with open(os.path.join(self.workdir, "actorserve-head-%d.log" % self.dash)) as f:
                return f.read()
        except OSError:
            return ""

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def leftovers(self):
        pids = set(self.seen)
        if self.pid:
            pids.add(self.pid)
            pids |= set(session_members(self.pid))
        return {p for p in pids if pid_alive(p)}


@pytest.fixture
def heads(workdir):
    made = []

    def make():
        h = Head(workdir)
        made.append(h)
        return h

    yield make
    for h in made:  # a test that failed half-way may leave its head running
        for p in h.leftovers():
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


# ---- 5. CLI -------------------------------------------------------------------------------

def test_cli_start_deploy_status_config_shutdown(heads, workdir):
    h = heads()
    cp = h.start()
    assert cp.returncode == 0, (cp, h.log())
    assert h.pid and pid_alive(h.pid), cp.stdout
    assert h.addr in cp.stdout

    # No application yet. ACTORSERVE_ADDRESS instead of -a.
    env = {"ACTORSERVE_ADDRESS": h.addr}
    cp = h.cli("status", env=env)
    assert cp.returncode == 0, cp
    assert re.search(r"^applications:\n  \{\}\n", cp.stdout), cp.stdout
    assert h.cli("config", env=env).stdout == ""

    shutil.copy(LUA("cfg_multi.lua"), os.path.join(workdir, "multi.lua"))
    text = """\
applications:
- name: first
  route_prefix: /alpha
  import_path: multi:alpha
  deployments:
  - name: A
    num_replicas: 2
- name: big
  route_prefix: /big
  import_path: multi:beta
  deployments:
  - name: A
    ray_actor_options: {num_cpus: 64}
"""
    cfg = write_file(os.path.join(workdir, "config.yaml"), text)
    _deploy(h.addr, cfg, env=h.env)
    st = h.wait_status(lambda s: _settled("first", "A", 2)(s) and
                       replicas_of(s, "big")["A"][0]["state"] == "PENDING", "first RUNNING, big PENDING")
    r = requests.get(h.url("/alpha"), timeout=20)
    assert r.status_code == 200 and r.json()["tag"] == "alpha", r.text

    cp = h.cli("status", env=env)
    assert cp.returncode == 0, cp
    out = cp.stdout
    assert re.search(r"^  first:\n    status: RUNNING\n    route_prefix: /alpha\n", out, re.M), out
    assert re.search(r"^  big:\n    status: DEPLOYING\n", out, re.M), out
    for rep in replicas_of(st, "first")["A"]:
        assert re.search(r"replica_id: %s\n +state: RUNNING\n +pid: %d\n" % (re.escape(rep["replica_id"]), rep["pid"]),
                         out), out
    assert re.search(r"state: PENDING\n +pid: 0\n +message: \"not enough resources: needs \{CPU: 64", out), out
    assert "node:" in out

    cp = h.cli("status", "--json", "-a", h.addr)
    assert cp.returncode == 0, cp
    js = json.loads(cp.stdout)
    assert _pids(js, "first", "A") == _pids(st, "first", "A")

    cp = h.cli("config", "-a", h.addr)
    assert cp.returncode == 0 and cp.stdout == text, cp

    cp = h.cli("shutdown", "-a", h.addr)
    assert cp.returncode == 0, cp
    _wait(lambda: not pid_alive(h.pid), "the head to exit after shutdown", timeout=30)
    _wait(lambda: not h.leftovers(), "every process of the head to exit", timeout=10)
    assert _refused(h.dash) and _refused(h.port)
    cp = h.cli("status", "-a", h.addr)
    assert cp.returncode == 1 and "no head answers" in cp.stderr, cp
    assert "stopped" in h.log()
    rundirs = [d for d in os.listdir(workdir) if d.startswith("actorserve-") and os.path.isdir(os.path.join(workdir, d))]
    assert not rundirs, "run directory left after shutdown: %r" % rundirs


def test_cli_without_a_head(workdir):
    addr = "127.0.0.1:%d" % free_port()
    cfg = write_file(os.path.join(workdir, "ok.yaml"), "applications:\n- import_path: %s:alpha\n"
                     % LUA("cfg_multi.lua"))
    for args in (["status", "-a", addr], ["config", "--address", addr], ["shutdown", "-a", "http://" + addr],
                 ["deploy", cfg, "-a", addr]):
        cp = run_cli(*args)
        assert cp.returncode == 1 and "no head answers" in cp.stderr, (args, cp)
    cp = run_cli("status", env={"ACTORSERVE_ADDRESS": "http://" + addr})
    assert cp.returncode == 1 and addr in cp.stderr, cp


def test_deploy_refuses_invalid_config_and_keeps_running_one(serve, workdir):
    dash = free_port()
    addr = "127.0.0.1:%d" % dash
    good = write_file(os.path.join(workdir, "good.yaml"), """\
applications:
- name: app
  route_prefix: /
  import_path: %s:app
""" % LUA("cfg_prec.lua"))
    srv = serve(good, "--dashboard-port", str(dash))
    before = srv.status()
    cases = [
        ("applications:\n- name: app\n  route_prefix: api\n  import_path: %s:app\n" % LUA("cfg_prec.lua"),
         r":3:17: applications\[0\]\.route_prefix: "),
        ("applications:\n- name: app\n  import_path: %s:app\n  deployments:\n  - name: Nope\n" % LUA("cfg_prec.lua"),
         r":5:11: applications\[0\]\.deployments\[0\]\.name: .*Nope"),
        ("applications:\n- name: app\n  import_path: %s/nope:app\n" % workdir,
         r":3:16: applications\[0\]\.import_path: "),
    ]
    wrong = []
    for text, want in cases:
        bad = write_file(os.path.join(workdir, "bad.yaml"), text)
        cp = run_cli("deploy", bad, "-a", addr)
        assert cp.returncode == 1, cp
        lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, cp.stderr
        if not re.search(re.escape(bad) + want, lines[0]):
            wrong.append("%r does not match %r" % (lines[0], want))
    cp = run_cli("config", "-a", addr)
    assert cp.stdout == open(good).read()
    after = srv.status()
    assert _pids(after, "app", "P") == _pids(before, "app", "P")
    assert set(after["applications"]) == {"app"}
    assert not wrong, "\n".join(wrong)


def test_build_writes_a_config_that_deploy_accepts(serve, workdir):
    out = os.path.join(workdir, "built.yaml")
    cp = run_cli("build", LUA("cfg_prec.lua") + ":app", "-o", out)
    assert cp.returncode == 0, cp
    assert out in cp.stdout
    text = open(out).read()
    cp = run_cli("build", LUA("cfg_prec.lua") + ":app")
    assert cp.returncode == 0 and cp.stdout == text, cp
    for line in ("- name: default", "  route_prefix: /", "  - name: P", "    num_replicas: 2",
                 "    max_ongoing_requests: 3"):
        assert line + "\n" in text, text
    assert re.search(r"import_path: .*cfg_prec\.lua:app\n", text), text
    assert re.search(r"user_config: \{\"greeting\": \"code\"\}", text), text
    cp = run_cli("build", LUA("cfg_prec.lua") + ":nothing", "-o", os.path.join(workdir, "x.yaml"))
    assert cp.returncode == 1 and "nothing" in cp.stderr, cp

    # A head serving something else takes the built file as it is.
    dash = free_port()
    first = write_file(os.path.join(workdir, "first.yaml"), """\
applications:
- name: first
  route_prefix: /alpha
  import_path: %s:alpha
""" % LUA("cfg_multi.lua"))
    srv = serve(first, "--dashboard-port", str(dash))
    old = status_pids(srv.status())
    _deploy("127.0.0.1:%d" % dash, out)
    st = srv.wait_status(lambda s: set(s["applications"]) == {"default"} and _settled("default", "P", 2)(s),
                         "the built application")
    d = _dep(st, "default", "P")
    assert (d["num_replicas"], d["max_ongoing_requests"], d["max_queued_requests"]) == (2, 3, -1), d
    assert srv.get("/").json()["greeting"] == "code"
    assert srv.get("/alpha").json()["replica_id"].startswith("P#")  # "/" serves it now
    assert run_cli("config", "-a", "127.0.0.1:%d" % dash).stdout == text
    _wait(lambda: not any(pid_alive(p) for p in old), "the first application's replicas to stop", 20)


# ---- 5. REST API ------------------------------------------------------------------------

def test_rest_api_get_put_delete(serve, workdir):
    dash = free_port()
    first = write_file(os.path.join(workdir, "first.yaml"), """\
applications:
- name: first
  route_prefix: /alpha
  import_path: %s:alpha
""" % LUA("cfg_multi.lua"))
    srv = serve(first, "--dashboard-port", str(dash))
    api = rest_url(dash)
    r = requests.get(api, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r
    assert r.json()["applications"]["first"]["status"] == "RUNNING"
    assert requests.get(rest_url(dash, "/api/serve/applications"), timeout=10).status_code == 200
    old = status_pids(r.json())

    # PUT a YAML body (no file behind it: absolute import paths)
    text = """\
applications:
- name: second
  route_prefix: /beta
  import_path: %s:beta
  deployments:
  - {name: A, num_replicas: 2, max_ongoing_requests: 4}
""" % LUA("cfg_multi.lua")
    r = requests.put(api, data=text, headers={"content-type": "text/yaml"}, timeout=30)
    assert r.status_code == 200 and r.json() == {"deployed": 1}, r.text
    st = srv.wait_status(lambda s: set(s["applications"]) == {"second"} and _settled("second", "A", 2)(s),
                         "second deployed")
    assert _dep(st, "second", "A")["max_ongoing_requests"] == 4
    assert srv.get("/beta").json()["tag"] == "beta"
    assert srv.get("/alpha").status_code == 404
    r = requests.get(rest_url(dash, "/api/actorserve/config"), timeout=10)
    assert r.status_code == 200 and r.text == text
    _wait(lambda: not any(pid_alive(p) for p in old), "first's replicas to stop", 20)

    # PUT a JSON body
    cfg = {"applications": [{"name": "third", "route_prefix": "/gamma", "import_path": LUA("cfg_builder.lua") + ":build",
                             "args": {"message": "json"}}]}
    r = requests.put(api, data=json.dumps(cfg), headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 200, r.text
    srv.wait_status(lambda s: set(s["applications"]) == {"third"} and _settled("third", "B", 1)(s), "third")
    assert srv.get("/gamma").json()["args"] == {"message": "json"}

    # An invalid body is refused with the position and field; nothing changes.
    before = srv.status()
    r = requests.put(api, data="applications:\n- name: x\n  route_prefix: nope\n  import_path: a:b\n", timeout=30)
    assert r.status_code == 400, r.text
    assert re.search(r":3:17: applications\[0\]\.route_prefix: ", r.text), r.text
    assert status_pids(srv.status()) == status_pids(before)
    assert set(srv.status()["applications"]) == {"third"}

    # Unknown endpoints
    assert requests.get(rest_url(dash, "/api/nothing"), timeout=10).status_code == 404
    assert requests.post(api, data="", timeout=10).status_code == 404

    # DELETE removes every application
    pids = status_pids(srv.status())
    r = requests.delete(api, timeout=30)
    assert r.status_code == 200 and r.json() == {"deleted": True}, r.text
    srv.wait_status(lambda s: s["applications"] == {}, "no application")
    assert srv.get("/gamma").status_code == 404
    _wait(lambda: not any(pid_alive(p) for p in pids), "replicas to stop after DELETE", 20)
    assert requests.get(rest_url(dash, "/api/actorserve/config"), timeout=10).text == ""

    # POST shutdown stops the head (the fixture checks exit 0 and no leftovers)
    r = requests.post(rest_url(dash, "/api/actorserve/shutdown"), timeout=10)
    assert r.status_code == 200, r.text
    assert srv.wait_exit(30) == 0


def _other_ipv4():
    """A non-loopback IPv4 address of this machine that accepts connections, or None."""
    cands = []
    try:
        cands += subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.connect(("192.0.2.1", 9))
        cands.append(u.getsockname()[0])
        u.close()
    except OSError:
        pass
    for ip in cands:
        if ":" in ip or ip.startswith("127.") or ip == "0.0.0.0":
            continue
        try:  # usable: we can listen on it and connect to it
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((ip, 0))
            s.listen(1)
            c = socket.create_connection((ip, s.getsockname()[1]), timeout=3)
            c.close()
            s.close()
            return ip
        except OSError:
            continue
    return None


def _listeners(port):
    """Local addresses (hex, as /proc/net/tcp* writes them) listening on port."""
    out = []
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(f) as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    addr, p = parts[1].split(":")
                    if parts[3] == "0A" and int(p, 16) == port:
                        out.append(addr)
        except OSError:
            pass
    return out


def test_rest_api_listens_on_loopback_only(serve, workdir):
    dash = free_port()
    cfg = write_file(os.path.join(workdir, "c.yaml"), "applications:\n- name: a\n  route_prefix: /a\n"
                     "  import_path: %s:alpha\n" % LUA("cfg_multi.lua"))
    srv = serve(cfg, "--dashboard-port", str(dash))
    assert requests.get(rest_url(dash), timeout=10).status_code == 200
    assert _listeners(dash) == ["0100007F"], _listeners(dash)
    ip = _other_ipv4()
    if ip is None:
        pytest.skip("this machine has no usable non-loopback IPv4 address")
    with pytest.raises(OSError):
        socket.create_connection((ip, dash), timeout=3).close()
    with pytest.raises(requests.RequestException):
        requests.get("http://%s:%d/api/serve/applications/" % (ip, dash), timeout=3)
    assert srv.status()["applications"]["a"]["status"] == "RUNNING"


# ---- 6. updates under load ------------------------------------------------------------------

def _update_yaml(num_replicas=2, max_ongoing=None, greeting=None, num_cpus=None, with_other=False,
                 health=None):
    lines = ["applications:", "- name: main", "  route_prefix: /u", "  import_path: update:app",
             "  deployments:", "  - name: U", "    num_replicas: %d" % num_replicas]
    if max_ongoing is not None:
        lines.append("    max_ongoing_requests: %d" % max_ongoing)
    if greeting is not None:
        lines.append("    user_config: {greeting: %s}" % greeting)
    if num_cpus is not None:
        lines.append("    ray_actor_options: {num_cpus: %s}" % num_cpus)
    if with_other:
        lines += ["- name: other", "  route_prefix: /o", "  import_path: update:other"]
    return "\n".join(lines) + "\n"


def _update_setup(serve, workdir, **kw):
    shutil.copy(LUA("cfg_update.lua"), os.path.join(workdir, "update.lua"))
    cfg = write_file(os.path.join(workdir, "config.yaml"), _update_yaml(**kw))
    dash = free_port()
    srv = serve(cfg, "--dashboard-port", str(dash))
    return srv, cfg, "127.0.0.1:%d" % dash


def _redeploy(addr, cfg, **kw):
    write_file(cfg, _update_yaml(**kw))
    _deploy(addr, cfg)


def _assert_no_failures(load, results, url=None, ok=(200,)):
    bad = load.failed(url, ok)
    n = sum(1 for r in results if url is None or r[0] == url)
    assert n > 0, "no request was sent"
    assert not bad, "%d of %d requests failed, first: %r" % (len(bad), n, bad[:5])


def test_in_place_updates_under_load_keep_pids(serve, workdir):
    srv, cfg, addr = _update_setup(serve, workdir, num_replicas=2)
    url = srv.url("/u")
    st = srv.wait_status(_settled("main", "U", 2), "2 replicas")
    pids2 = _pids(st, "main", "U")
    load = Load([url], threads_per_url=3).start()
    try:
        assert load.wait_count(20), "the load does not get answers"

        # num_replicas up: the two keep running, one more starts
        _redeploy(addr, cfg, num_replicas=3)
        st = srv.wait_status(_settled("main", "U", 3), "3 replicas")
        pids3 = _pids(st, "main", "U")
        assert pids2 < pids3, (pids2, pids3)
        assert load.wait_count(20)

        # num_replicas down: one of the old ones stays
        _redeploy(addr, cfg, num_replicas=1)
        st = srv.wait_status(_settled("main", "U", 1), "1 replica")
        (pid1,) = _pids(st, "main", "U")
        assert pid1 in pids2, (pid1, pids2)
        assert load.wait_count(20)

        # max_ongoing_requests: in place
        _redeploy(addr, cfg, num_replicas=1, max_ongoing=2)
        st = srv.wait_status(lambda s: _dep(s, "main", "U")["max_ongoing_requests"] == 2, "max_ongoing 2")
        assert _pids(st, "main", "U") == {pid1}
        assert load.wait_count(20)

        # user_config: reconfigure() in place
        _redeploy(addr, cfg, num_replicas=1, max_ongoing=2, greeting="bonjour")
        _wait(lambda: srv.get("/u").json()["greeting"] == "bonjour", "greeting bonjour", 20)
        body = srv.get("/u").json()
        assert body["pid"] == pid1 and body["reconf"] == 2, body
        assert load.wait_count(20)
        st = srv.wait_status(_settled("main", "U", 1), "settled")
        assert _pids(st, "main", "U") == {pid1}
    finally:
        results = load.stop()
    _assert_no_failures(load, results)
    assert {r[2]["pid"] for r in results} <= pids3
    assert {r[2]["greeting"] for r in results} <= {"hello", "bonjour"}


def _watch_rollout(srv, app_name, dep, n, timeout=60):
    """Polls /-/status until n replicas of the current version run; checks on every
    poll that replicas are replaced one at a time, and that old and new ones served
    side by side at some point. Returns (final status, polls)."""
    deadline = time.monotonic() + timeout
    polls = 0
    mixed = False
    while True:
        st = srv.status()
        polls += 1
        reps = _dep(st, app_name, dep)["replicas"]
        new_starting = [r for r in reps if r["current_version"] and r["state"] != "RUNNING"]
        stopping = [r for r in reps if r["state"] == "STOPPING"]
        running = [r for r in reps if r["state"] == "RUNNING"]
        assert len(new_starting) <= 1, "more than one new replica starting at once: %r" % reps
        assert len(stopping) <= 1, "more than one old replica stopping at once: %r" % reps
        assert len(running) >= n - 1, "fewer than %d replicas serving: %r" % (n - 1, reps)
        mixed |= len({r["current_version"] for r in running}) == 2
        if _settled(app_name, dep, n)(st):
            assert mixed, "never saw old and new replicas serving together (%d polls)" % polls
            return st, polls
        assert time.monotonic() < deadline, "rollout did not finish: %r" % reps
        time.sleep(0.02)


def test_code_change_replaces_replicas_one_at_a_time_under_load(serve, workdir):
    srv, cfg, addr = _update_setup(serve, workdir, num_replicas=3)
    url = srv.url("/u")
    st = srv.wait_status(_settled("main", "U", 3), "3 replicas")
    old = _pids(st, "main", "U")
    load = Load([url], threads_per_url=3).start()
    try:
        assert load.wait_count(20)
        lua = os.path.join(workdir, "update.lua")
        src = open(lua).read()
        assert 'local VERSION = "v1"' in src
        write_file(lua, src.replace('local VERSION = "v1"', 'local VERSION = "v2"'))
        _deploy(addr, cfg)
        st, polls = _watch_rollout(srv, "main", "U", 3)
        new = _pids(st, "main", "U")
        assert not (new & old), "pids kept across a code change: %r %r" % (old, new)
        assert load.wait_count(20)
        assert all(srv.get("/u").json()["version"] == "v2" for _ in range(10))
    finally:
        results = load.stop()
    _assert_no_failures(load, results)
    print("code change: %d requests, %d status polls" % (len(results), polls))
    versions = [r[2]["version"] for r in results]
    assert "v1" in versions and "v2" in versions
    _wait(lambda: not any(pid_alive(p) for p in old), "old replicas to exit", 20)


def test_ray_actor_options_change_replaces_replicas_under_load(serve, workdir):
    srv, cfg, addr = _update_setup(serve, workdir, num_replicas=3)
    url = srv.url("/u")
    st = srv.wait_status(_settled("main", "U", 3), "3 replicas")
    old = _pids(st, "main", "U")
    cpu_free = st["node"]["free"]["CPU"]
    load = Load([url], threads_per_url=3).start()
    try:
        assert load.wait_count(20)
        _redeploy(addr, cfg, num_replicas=3, num_cpus=0.25)
        st, _ = _watch_rollout(srv, "main", "U", 3)
        assert not (_pids(st, "main", "U") & old)
        assert st["node"]["free"]["CPU"] == pytest.approx(cpu_free - 0.75), st["node"]
        assert load.wait_count(20)
    finally:
        results = load.stop()
    _assert_no_failures(load, results)


def test_removed_application_is_deleted_under_load(serve, workdir):
    srv, cfg, addr = _update_setup(serve, workdir, num_replicas=2, with_other=True)
    st = srv.wait_status(lambda s: _settled("main", "U", 2)(s) and _settled("other", "Other", 2)(s), "both apps")
    main_pids = _pids(st, "main", "U")
    other_pids = _pids(st, "other", "Other")
    u, o = srv.url("/u"), srv.url("/o")
    load = Load([u, o], threads_per_url=2).start()
    try:
        assert load.wait_count(20, o)
        _redeploy(addr, cfg, num_replicas=2)
        st = srv.wait_status(lambda s: set(s["applications"]) == {"main"}, "other removed")
        assert _pids(st, "main", "U") == main_pids
        assert load.wait_count(20, o) and load.wait_count(20, u)
        _wait(lambda: not any(pid_alive(p) for p in other_pids), "other's replicas to exit", 20)
    finally:
        results = load.stop()
    _assert_no_failures(load, results, u)
    _assert_no_failures(load, results, o, ok=(200, 404))
    codes = [r[1] for r in results if r[0] == o]
    assert 200 in codes and 404 in codes and codes[-1] == 404, codes
    assert srv.get("/o").status_code == 404
    assert srv.get("/-/routes").json() == {"/u": "main"}


# ---- 7. health checks ----------------------------------------------------------------------

def _health_setup(serve, workdir):
    d = os.path.join(workdir, "h")
    os.makedirs(d)
    os.chmod(d, 0o777)
    cfg = write_file(os.path.join(workdir, "health.yaml"), """\
applications:
- name: h
  route_prefix: /
  import_path: %s:app
  args: {dir: %s}
  deployments:
  - name: H
    health_check_period_s: 0.5
    health_check_timeout_s: 1
""" % (LUA("cfg_health.lua"), d))
    dash = free_port()
    srv = serve(cfg, "--dashboard-port", str(dash))
    st = srv.wait_status(_settled("h", "H", 1), "H running")
    return srv, d, dash, st


def test_failing_health_check_marks_unhealthy_then_replaces(serve, workdir):
    srv, d, dash, st = _health_setup(serve, workdir)
    (pid1,) = _pids(st, "h", "H")
    # checks run every 0.5 s (the file's value, not the default 10 s)
    _wait(lambda: srv.get("/").json()["checks"] >= 2, "two health checks", 10)

    touch(os.path.join(d, "hold"))            # the replacement waits in its constructor
    touch(os.path.join(d, "fail.%d" % pid1))  # the running replica's check_health() raises
    st = srv.wait_status(lambda s: _dep(s, "h", "H")["status"] == "UNHEALTHY", "H UNHEALTHY", timeout=20)
    assert st["applications"]["h"]["status"] == "UNHEALTHY"
    (rep,) = _dep(st, "h", "H")["replicas"]
    assert "health check" in rep["message"] and "told to fail" in rep["message"], rep
    cp = run_cli("status", "-a", "127.0.0.1:%d" % dash)
    assert cp.returncode == 0 and re.search(r"H:\n +status: UNHEALTHY", cp.stdout), cp.stdout
    assert "UNHEALTHY after 3 failed health checks" in srv.stderr()
    _wait(lambda: not pid_alive(pid1), "the unhealthy replica to be killed", 10)

    os.unlink(os.path.join(d, "hold"))
    st = srv.wait_status(_settled("h", "H", 1), "H HEALTHY again", timeout=20)
    assert st["applications"]["h"]["status"] == "RUNNING"
    (pid2,) = _pids(st, "h", "H")
    assert pid2 != pid1
    r = srv.get("/")
    assert r.status_code == 200 and r.json()["pid"] == pid2
    cp = run_cli("status", "-a", "127.0.0.1:%d" % dash)
    assert re.search(r"H:\n +status: HEALTHY", cp.stdout) and "pid: %d" % pid2 in cp.stdout, cp.stdout


def test_health_check_timeout_replaces_replica(serve, workdir):
    srv, d, dash, st = _health_setup(serve, workdir)
    (pid1,) = _pids(st, "h", "H")
    touch(os.path.join(d, "hang.%d" % pid1))  # check_health() outlasts health_check_timeout_s
    st = srv.wait_status(lambda s: _settled("h", "H", 1)(s) and _pids(s, "h", "H") != {pid1},
                         "a new replica after timed-out checks", timeout=30)
    assert not pid_alive(pid1) or _wait(lambda: not pid_alive(pid1), "old replica gone", 10)
    assert "health check timed out" in srv.stderr()
    assert srv.get("/").json()["pid"] in _pids(st, "h", "H")


def test_replica_replaced_once_does_not_make_a_later_scale_down_unhealthy(serve, workdir):
    """A replica that was replaced after failed health checks and then ran
    healthily is stopped by a scale-down: while it drains, the deployment is
    UPDATING, not UNHEALTHY."""
    d = os.path.join(workdir, "h")
    os.makedirs(d)
    cfg = os.path.join(workdir, "health.yaml")

    def deploy_yaml(n):
        return write_file(cfg, """\
applications:
- name: h
  route_prefix: /
  import_path: %s:app
  args: {dir: %s}
  deployments:
  - name: H
    num_replicas: %d
    health_check_period_s: 0.5
    health_check_timeout_s: 1
""" % (LUA("cfg_health.lua"), d, n))

    deploy_yaml(2)
    dash = free_port()
    srv = serve(cfg, "--dashboard-port", str(dash))
    st = srv.wait_status(_settled("h", "H", 2), "2 replicas")
    h1 = [r for r in _dep(st, "h", "H")["replicas"] if r["replica_id"] == "H#1"][0]
    touch(os.path.join(d, "fail.%d" % h1["pid"]))
    st = srv.wait_status(lambda s: _settled("h", "H", 2)(s) and h1["pid"] not in _pids(s, "h", "H"),
                         "H#1 replaced", timeout=20)
    new1 = [r for r in _dep(st, "h", "H")["replicas"] if r["replica_id"] == "H#1"][0]["pid"]

    # park one request on the new H#1 so that it drains for a while when stopped
    held = []
    started = os.path.join(d, "started.%d" % new1)
    for _ in range(40):
        t = threading.Thread(target=lambda: held.append(srv.get("/?hold_if=%d" % new1, timeout=60)))
        t.start()
        deadline = time.monotonic() + 1
        while not os.path.exists(started) and time.monotonic() < deadline:
            time.sleep(0.02)
        if os.path.exists(started):
            break
    assert os.path.exists(started), "no request reached H#1"
    try:
        deploy_yaml(1)
        _deploy("127.0.0.1:%d" % dash, cfg)
        st = srv.wait_status(lambda s: any(r["state"] == "STOPPING" for r in _dep(s, "h", "H")["replicas"]),
                             "H#1 STOPPING")
        stopping = [r for r in _dep(st, "h", "H")["replicas"] if r["state"] == "STOPPING"]
        assert [r["pid"] for r in stopping] == [new1], st
        assert _dep(st, "h", "H")["status"] == "UPDATING", _dep(st, "h", "H")
        assert st["applications"]["h"]["status"] == "DEPLOYING", st["applications"]["h"]["status"]
    finally:
        touch(os.path.join(d, "release"))
    srv.wait_status(_settled("h", "H", 1), "one replica, HEALTHY")
    assert all(r.status_code == 200 for r in held), held
