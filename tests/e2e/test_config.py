"""config.yaml in Ray Serve's schema (issue 4, points 1 to 4): Ray's documented
example as written, every field accepted, validation errors (exit 1 before any
port is bound, one line file:line:col: field: why), unknown keys warned about,
precedence of the file's values over the code's (and back on redeploy),
builder functions with args, many applications in one file."""
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import APPS, BIN, ROOT, free_port, replicas_of, run_cli, text_pos, write_file

LUA = lambda name: os.path.join(APPS, name)  # noqa: E731

# Ray Serve's documented example, word for word (llm.py renamed llm.lua).
RAY_EXAMPLE = """\
proxy_location: EveryNode
http_options: {host: 0.0.0.0, port: 8901}
grpc_options: {port: 9000, grpc_servicer_functions: []}
applications:
- name: llm
  route_prefix: /
  import_path: llm:chat
  runtime_env: {}
  deployments:
  - name: LLM
    num_replicas: 1
    ray_actor_options: {num_cpus: 8, num_gpus: 1}
"""


def _ray_example(workdir):
    shutil.copy(LUA("cfg_llm.lua"), os.path.join(workdir, "llm.lua"))
    return write_file(os.path.join(workdir, "config.yaml"), RAY_EXAMPLE)


def _dep(st, app_name, dep):
    return st["applications"][app_name]["deployments"][dep]


def _no_warnings(srv):
    err = srv.stderr()
    assert "unknown field" not in err and "warning:" not in err, err


# ---- 1. Ray's example and the whole schema -------------------------------------------

def test_ray_example_loads_replica_pending_for_resources(serve, workdir):
    cfg = _ray_example(workdir)
    srv = serve(cfg, "--num-cpus", "2", "--num-gpus", "0", "--dashboard-port", str(free_port()),
                wait_running=False)

    def pending(st):
        reps = replicas_of(st, "llm").get("LLM", [])
        return len(reps) == 1 and reps[0]["state"] == "PENDING" and reps[0]["message"]

    st = srv.wait_status(pending, "LLM#0 PENDING")
    rep = replicas_of(st, "llm")["LLM"][0]
    assert rep["pid"] == 0
    assert re.search(r"CPU: 8\b", rep["message"]) and re.search(r"GPU: 1\b", rep["message"]), rep
    assert "free" in rep["message"], rep
    assert st["applications"]["llm"]["status"] == "DEPLOYING"
    assert st["applications"]["llm"]["route_prefix"] == "/"
    assert st["applications"]["llm"]["import_path"] == os.path.join(os.path.realpath(workdir), "llm.lua")
    assert _dep(st, "llm", "LLM")["num_replicas"] == 1
    assert srv.get("/-/routes").json() == {"/": "llm"}
    _no_warnings(srv)


def test_ray_example_runs_with_enough_resources(serve, workdir):
    cfg = _ray_example(workdir)
    srv = serve(cfg, "--num-cpus", "8", "--num-gpus", "1", "--dashboard-port", str(free_port()))
    st = srv.status()
    assert st["applications"]["llm"]["status"] == "RUNNING"
    assert _dep(st, "llm", "LLM")["status"] == "HEALTHY"
    assert st["node"]["free"]["CPU"] == 0 and st["node"]["free"]["GPU"] == 0, st["node"]
    r = srv.post("/", data="Could you explain what is dask?")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reply"] == "echo: Could you explain what is dask?"
    assert body["app"] == "llm" and body["replica_id"] == "LLM#0"
    assert body["cvd"] == "0"
    _no_warnings(srv)


def test_import_path_forms_and_lookup_order(serve, workdir):
    """module:var beside the config first, then the working directory; dotted
    modules are folders; file.lua:var as it is; absolute paths."""
    conf = os.path.join(workdir, "conf")
    cwd = os.path.join(workdir, "cwd")
    os.makedirs(conf)
    os.makedirs(cwd)
    src = open(LUA("cfg_multi.lua")).read()
    write_file(os.path.join(conf, "m.lua"), src.replace('A:bind("alpha")', 'A:bind("beside-config")'))
    write_file(os.path.join(cwd, "m.lua"), src.replace('A:bind("alpha")', 'A:bind("in-cwd")'))
    write_file(os.path.join(cwd, "only_cwd.lua"), src)
    write_file(os.path.join(conf, "pkg", "sub", "mod.lua"), src)
    cfg = write_file(os.path.join(conf, "config.yaml"), """\
applications:
- name: beside
  route_prefix: /beside
  import_path: m:alpha
- name: cwd
  route_prefix: /cwd
  import_path: only_cwd:beta
- name: dotted
  route_prefix: /dotted
  import_path: pkg.sub.mod:beta
- name: literal
  route_prefix: /literal
  import_path: m.lua:alpha
- name: absolute
  route_prefix: /absolute
  import_path: %s:alpha
""" % LUA("cfg_multi.lua"))
    srv = serve(cfg, "--dashboard-port", str(free_port()), cwd=cwd)
    got = {p: srv.get("/" + p).json() for p in ("beside", "cwd", "dotted", "literal", "absolute")}
    assert got["beside"]["tag"] == "beside-config", got
    assert got["cwd"]["tag"] == "beta", got
    assert got["dotted"]["tag"] == "beta", got
    assert got["literal"]["tag"] == "beside-config", got
    assert got["absolute"]["tag"] == "alpha", got
    for p, b in got.items():
        assert b["app"] == p, got
    st = srv.status()
    assert st["applications"]["cwd"]["import_path"] == os.path.join(os.path.realpath(cwd), "only_cwd.lua")
    assert st["applications"]["dotted"]["import_path"] == os.path.join(os.path.realpath(conf), "pkg", "sub",
                                                                         "mod.lua")


FULL = """\
proxy_location: HeadOnly
http_options:
  host: 127.0.0.1
  port: {port}
  root_path: ""
  request_timeout_s: 2
  keep_alive_timeout_s: 30
grpc_options:
  port: 9000
  grpc_servicer_functions: []
logging_config:
  encoding: JSON
  log_level: INFO
  logs_dir: null
  enable_access_log: true
applications:
- name: full
  route_prefix: /full
  import_path: {prec}:app
  runtime_env: {{}}
  args: {{}}
  logging_config:
    encoding: TEXT
    log_level: DEBUG
  deployments:
  - name: P
    num_replicas: 1
    max_ongoing_requests: 7
    max_queued_requests: 50
    user_config:
      greeting: full
    health_check_period_s: 2
    health_check_timeout_s: 5
    graceful_shutdown_wait_loop_s: 2
    graceful_shutdown_timeout_s: 3
    logging_config:
      log_level: WARNING
    ray_actor_options:
      num_cpus: 0.25
      num_gpus: 0
      memory: 1000000
      resources: {{}}
- name: auto
  route_prefix: /auto
  import_path: {prec}:app
  deployments:
  - name: P
    num_replicas: auto
    autoscaling_config:
      min_replicas: 1
      initial_replicas: 3
      max_replicas: 5
      target_ongoing_requests: 2
- name: minonly
  route_prefix: /minonly
  import_path: {prec}:app
  deployments:
  - name: P
    autoscaling_config:
      min_replicas: 2
      max_replicas: 4
"""


def test_every_schema_field_is_accepted(serve, workdir):
    port = free_port()
    cfg = write_file(os.path.join(workdir, "full.yaml"), FULL.format(port=port, prec=LUA("cfg_prec.lua")))
    # No --host/--port: the file's http_options.host and port are used.
    srv = serve(cfg, "--dashboard-port", str(free_port()), host_flag=False, port=port)
    _no_warnings(srv)
    st = srv.status()
    p = _dep(st, "full", "P")
    assert (p["num_replicas"], p["max_ongoing_requests"], p["max_queued_requests"]) == (1, 7, 50), p
    assert len(p["replicas"]) == 1
    # autoscaling_config: initial_replicas, else min_replicas, start
    assert _dep(st, "auto", "P")["num_replicas"] == 3 and len(_dep(st, "auto", "P")["replicas"]) == 3
    assert _dep(st, "minonly", "P")["num_replicas"] == 2 and len(_dep(st, "minonly", "P")["replicas"]) == 2
    # ray_actor_options.num_cpus: 0.25 is reserved (the other apps reserve 0)
    assert st["node"]["total"]["CPU"] - st["node"]["free"]["CPU"] == pytest.approx(0.25), st["node"]
    r = srv.get("/full")
    assert r.status_code == 200 and r.json()["greeting"] == "full", r.text
    assert srv.get("/auto").json()["greeting"] == "code"
    # http_options.request_timeout_s: 2 from the file
    r = srv.get("/full?s=6", timeout=30)
    assert r.status_code == 408, (r.status_code, r.text)


def test_unknown_keys_only_warn(serve, workdir):
    text = """\
applications:
- name: app
  route_prefix: /
  import_path: %s:app
  colour: red
  deployments:
  - name: P
    num_replica: 5
    ray_actor_options: {num_cpus: 0, gpus: 1}
frobnicate: 1
http_options:
  hots: 127.0.0.1
""" % LUA("cfg_prec.lua")
    cfg = write_file(os.path.join(workdir, "warn.yaml"), text)
    srv = serve(cfg, "--dashboard-port", str(free_port()))
    err = srv.stderr()
    for needle, field in [("colour", "applications[0].colour"),
                          ("num_replica", "applications[0].deployments[0].num_replica"),
                          ("gpus", "applications[0].deployments[0].ray_actor_options.gpus"),
                          ("frobnicate", "frobnicate"),
                          ("hots", "http_options.hots")]:
        line, col = text_pos(text, needle + ":")
        want = "%s:%d:%d: warning: %s: unknown field" % (cfg, line, col, field)
        assert want in err, "missing %r in stderr:\n%s" % (want, err)
    st = srv.status()
    assert _dep(st, "app", "P")["num_replicas"] == 2  # the code's value: the typo was ignored
    assert srv.get("/").status_code == 200


# ---- 2. validation -----------------------------------------------------------------------

def _app_yaml(dep_lines="", app_extra="", top="", prefix="/", name="app", extra_apps=""):
    return top + """\
applications:
- name: %s
  route_prefix: %s
  import_path: %s:app
%s  deployments:
  - name: P
%s%s""" % (name, prefix, LUA("cfg_prec.lua"), app_extra, dep_lines, extra_apps)


D = "applications[0].deployments[0]"

# (id, yaml text, field path in the message, (needle, nth) where line:col must point, reason regex)
INVALID = [
    ("proxy_location", _app_yaml(top="proxy_location: Everywhere\n"), "proxy_location", ("Everywhere", 1),
     r"EveryNode"),
    ("num_replicas_negative", _app_yaml("    num_replicas: -1\n"), D + ".num_replicas", ("-1", 1), r"integer"),
    ("num_replicas_zero", _app_yaml("    num_replicas: 0\n"), D + ".num_replicas", ("0\n", 1), r"integer"),
    ("num_replicas_not_number", _app_yaml("    num_replicas: many\n"), D + ".num_replicas", ("many", 1),
     r"number"),
    ("max_ongoing_zero", _app_yaml("    max_ongoing_requests: 0\n"), D + ".max_ongoing_requests",
     ("0\n", 1), r"integer"),
    ("max_ongoing_negative", _app_yaml("    max_ongoing_requests: -3\n"), D + ".max_ongoing_requests",
     ("-3", 1), r"integer"),
    ("max_queued_negative", _app_yaml("    max_queued_requests: -5\n"), D + ".max_queued_requests", ("-5", 1),
     r"integer"),
    ("health_period_zero", _app_yaml("    health_check_period_s: 0\n"), D + ".health_check_period_s",
     ("0\n", 1), r"> 0"),
    ("health_timeout_negative", _app_yaml("    health_check_timeout_s: -1\n"), D + ".health_check_timeout_s",
     ("-1", 1), r"> 0"),
    ("graceful_timeout_negative", _app_yaml("    graceful_shutdown_timeout_s: -2\n"),
     D + ".graceful_shutdown_timeout_s", ("-2", 1), r"> 0"),
    ("num_cpus_negative", _app_yaml("    ray_actor_options: {num_cpus: -1}\n"),
     D + ".ray_actor_options.num_cpus", ("-1", 1), r"≥ 0"),
    ("http_port_zero", _app_yaml(top="http_options: {port: 0}\n"), "http_options.port", ("0}", 1), r"integer"),
    ("log_encoding", _app_yaml(top="logging_config: {encoding: XML}\n"), "logging_config.encoding", ("XML", 1),
     r"TEXT or JSON"),
    ("prefix_no_slash", _app_yaml(prefix="api"), "applications[0].route_prefix", ("api\n", 1), r"start with"),
    ("prefix_trailing_slash", _app_yaml(prefix="/api/"), "applications[0].route_prefix", ("/api/", 1),
     r"end with"),
    ("prefix_braces", _app_yaml(prefix="/api/{id}"), "applications[0].route_prefix", ("/api/{id}", 1),
     r"braces"),
    ("duplicate_names", _app_yaml(extra_apps="- name: app\n  route_prefix: /other\n  import_path: %s:app\n"
                                  % LUA("cfg_prec.lua")),
     "applications[1]", ("name: app", 2), r"twice"),
    ("duplicate_prefixes", _app_yaml(prefix="/same", extra_apps="- name: second\n  route_prefix: /same\n"
                                     "  import_path: %s:app\n" % LUA("cfg_prec.lua")),
     "applications[1]", ("name: second", 1), r"route_prefix '/same'"),
    ("autoscaling_with_int_replicas",
     _app_yaml("    num_replicas: 2\n    autoscaling_config: {min_replicas: 1, max_replicas: 3}\n"),
     D + ".num_replicas", ("2\n", 1), r"autoscaling_config"),
    ("max_below_min", _app_yaml("    autoscaling_config: {min_replicas: 4, max_replicas: 2}\n"),
     D + ".autoscaling_config.max_replicas", ("2}", 1), r"min_replicas"),
    ("deployment_not_defined", _app_yaml().replace("- name: P\n", "- name: Nope\n"), D + ".name",
     ("Nope", 1), r"Nope.*(P\b)"),
    ("deployment_without_name", _app_yaml().replace("  - name: P\n", "  - num_replicas: 1\n"), D,
     ("num_replicas", 1), r"name"),
]


def _hold_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_validation_error_exits_1_before_binding(workdir, case):
    _, text, field, (needle, nth), why = case
    cfg = write_file(os.path.join(workdir, "bad.yaml"), text)
    # The test holds the HTTP port: had the head bound ports before
    # validating, it would fail with "cannot listen" instead.
    held = _hold_port()
    dash = free_port()
    try:
        port = held.getsockname()[1]
        p = subprocess.Popen([BIN, "run", cfg, "--host", "127.0.0.1", "--port", str(port),
                              "--dashboard-port", str(dash)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.communicate()
            pytest.fail("actorserve run kept running on an invalid config")
    finally:
        held.close()
    assert p.returncode == 1, (p.returncode, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, "expected one error line, got:\n" + err
    line, col = text_pos(text, needle, nth)
    m = re.match(r"^actorserve: (.+):(\d+):(\d+): (\S+): (.+)$", lines[0])
    assert m, lines[0]
    assert m.group(1) == cfg, lines[0]
    assert (int(m.group(2)), int(m.group(3))) == (line, col), "position: %s, expected %d:%d" % (lines[0], line, col)
    assert m.group(4) == field, lines[0]
    assert re.search(why, m.group(5)), lines[0]
    assert "cannot listen" not in err
    assert out == ""


def test_invalid_yaml_names_the_position(workdir):
    text = "applications:\n- name: a\n  import_path: [unclosed\n"
    cfg = write_file(os.path.join(workdir, "broken.yaml"), text)
    cp = run_cli("run", cfg, "--host", "127.0.0.1", "--port", str(free_port()), "--dashboard-port",
                 str(free_port()), timeout=20)
    assert cp.returncode == 1, cp
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.match(r"^actorserve: %s:\d+:\d+: " % re.escape(cfg), lines[0]), cp.stderr


# ---- 3. precedence and builders ---------------------------------------------------------------

def _parallel(fn, n):
    out = [None] * n
    bar = threading.Barrier(n)

    def one(i):
        try:
            bar.wait(10)
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001
            out[i] = e

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return out


def _replica_views(srv, path, n_replicas, tries=200):
    """GETs path until each of n_replicas replicas answered; {replica_id: last body}."""
    seen = {}
    for _ in range(tries):
        b = srv.get(path).json()
        seen[b["replica_id"]] = b
        if len(seen) >= n_replicas:
            break
    return seen


def _deploy(dash, path):
    cp = run_cli("deploy", path, "-a", "127.0.0.1:%d" % dash)
    assert cp.returncode == 0, cp
    return cp


def test_precedence_file_beats_code_omitted_keeps_code_removed_reverts(serve, workdir):
    dash = free_port()
    prec = LUA("cfg_prec.lua")
    # A: the file sets max_ongoing_requests and user_config; num_replicas is left to the code (2).
    a = write_file(os.path.join(workdir, "a.yaml"), """\
applications:
- name: app
  route_prefix: /
  import_path: %s:app
  deployments:
  - name: P
    max_ongoing_requests: 1
    user_config: {greeting: file}
""" % prec)
    srv = serve(a, "--dashboard-port", str(dash))
    srv.wait_status(lambda s: len(replicas_of(s)["P"]) == 2, "2 replicas")
    d = _dep(srv.status(), "app", "P")
    assert (d["num_replicas"], d["max_ongoing_requests"]) == (2, 1), d
    pids_a = {r["pid"] for r in d["replicas"]}
    # behaviour: never more than one request at once in a replica
    res = _parallel(lambda i: srv.get("/?s=0.2", timeout=60), 6)
    assert all(not isinstance(r, Exception) and r.status_code == 200 for r in res), res
    views = _replica_views(srv, "/", 2)
    assert len(views) == 2
    for b in views.values():
        assert b["greeting"] == "file", views
        assert b["peak"] == 1, views

    # B: the file sets num_replicas 1 and no longer sets max_ongoing_requests or
    # user_config: both revert to the code's (3, greeting "code"), in place.
    b = write_file(os.path.join(workdir, "b.yaml"), """\
applications:
- name: app
  route_prefix: /
  import_path: %s:app
  deployments:
  - name: P
    num_replicas: 1
""" % prec)
    _deploy(dash, b)
    st = srv.wait_status(lambda s: len(replicas_of(s)["P"]) == 1 and replicas_of(s)["P"][0]["state"] == "RUNNING"
                         and _dep(s, "app", "P")["status"] == "HEALTHY", "one replica left")
    d = _dep(st, "app", "P")
    assert (d["num_replicas"], d["max_ongoing_requests"]) == (1, 3), d
    assert d["replicas"][0]["pid"] in pids_a  # scaled down in place
    deadline = time.monotonic() + 20
    while srv.get("/").json()["greeting"] != "code" and time.monotonic() < deadline:
        time.sleep(0.05)
    body = srv.get("/").json()
    assert body["greeting"] == "code" and body["reconf"] == 2, body
    # behaviour: three requests run at once in the one replica now
    gates = os.path.join(workdir, "gates")
    os.makedirs(gates)
    results = []
    ts = [threading.Thread(target=lambda i=i: results.append(srv.get("/?gate=g%d&dir=%s" % (i, gates),
                                                                     timeout=60)))
          for i in range(3)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len([f for f in os.listdir(gates) if f.endswith(".started")]) < 3:
        time.sleep(0.02)
    started = len([f for f in os.listdir(gates) if f.endswith(".started")])
    write_file(os.path.join(gates, "release"), "x")
    for t in ts:
        t.join(60)
    assert started == 3, "only %d of 3 requests ran at once with max_ongoing_requests 3" % started
    assert [r.status_code for r in results] == [200] * 3

    # C: the deployment is no longer listed: num_replicas reverts to the code's 2.
    c = write_file(os.path.join(workdir, "c.yaml"), """\
applications:
- name: app
  route_prefix: /
  import_path: %s:app
""" % prec)
    _deploy(dash, c)
    st = srv.wait_status(lambda s: len(replicas_of(s)["P"]) == 2 and
                         all(r["state"] == "RUNNING" for r in replicas_of(s)["P"]), "two replicas again")
    d = _dep(st, "app", "P")
    assert (d["num_replicas"], d["max_ongoing_requests"]) == (2, 3), d


def test_builder_function_receives_args(serve, workdir):
    b = LUA("cfg_builder.lua")
    cfg = write_file(os.path.join(workdir, "builder.yaml"), """\
applications:
- name: built
  route_prefix: /built
  import_path: %s:build
  args:
    message: hello
    n: 3
    ratio: 0.5
    flag: true
    nested: {a: [1, 2], b: "x y"}
- name: noargs
  route_prefix: /noargs
  import_path: %s:build
- name: plain
  route_prefix: /plain
  import_path: %s:plain
""" % (b, b, b))
    srv = serve(cfg, "--dashboard-port", str(free_port()))
    got = srv.get("/built").json()
    assert got["how"] == "builder" and got["app"] == "built", got
    assert got["args"] == {"message": "hello", "n": 3, "ratio": 0.5, "flag": True,
                           "nested": {"a": [1, 2], "b": "x y"}}, got
    assert srv.get("/noargs").json()["how"] == "builder-empty"
    assert srv.get("/plain").json() == {"args": {"message": "code"}, "how": "plain", "app": "plain"}


@pytest.mark.parametrize("var,why", [("plain", r"args.*builder"), ("broken", r"not an application")])
def test_args_need_a_builder_that_returns_an_application(workdir, var, why):
    cfg = write_file(os.path.join(workdir, "bad.yaml"), """\
applications:
- name: x
  import_path: %s:%s
  args: {message: hello}
""" % (LUA("cfg_builder.lua"), var))
    cp = run_cli("run", cfg, "--host", "127.0.0.1", "--port", str(free_port()), "--dashboard-port",
                 str(free_port()), timeout=20)
    assert cp.returncode == 1, cp
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.search(why, lines[0]), cp.stderr
    assert "cfg_builder.lua" in lines[0]


# ---- 4. many applications ------------------------------------------------------------------

def test_many_applications_in_one_file(serve, workdir):
    m, b = LUA("cfg_multi.lua"), LUA("cfg_builder.lua")
    cfg = write_file(os.path.join(workdir, "multi.yaml"), """\
applications:
- name: first
  route_prefix: /alpha
  import_path: %s:alpha
- name: second
  route_prefix: /beta/v1
  import_path: %s:beta
  deployments:
  - name: A
    num_replicas: 2
- name: third
  route_prefix: /b
  import_path: %s:build
  args: {message: third}
""" % (m, m, b))
    srv = serve(cfg, "--dashboard-port", str(free_port()))
    assert srv.get("/-/routes").json() == {"/alpha": "first", "/beta/v1": "second", "/b": "third"}
    r = srv.get("/alpha/x?q=1").json()
    assert (r["app"], r["tag"], r["path"]) == ("first", "alpha", "/alpha/x"), r
    r = srv.get("/beta/v1").json()
    assert (r["app"], r["tag"]) == ("second", "beta"), r
    r = srv.get("/b/anything").json()
    assert (r["app"], r["args"]) == ("third", {"message": "third"}), r
    for path in ("/beta", "/bx", "/", "/alphabet"):
        assert srv.get(path).status_code == 404, path
    st = srv.status()
    assert set(st["applications"]) == {"first", "second", "third"}
    assert all(a["status"] == "RUNNING" for a in st["applications"].values()), st
    assert len(replicas_of(st, "second")["A"]) == 2 and len(replicas_of(st, "first")["A"]) == 1
    # the same deployment name in two applications: two sets of processes
    assert not (status_pids_of(st, "first") & status_pids_of(st, "second"))


def status_pids_of(st, app_name):
    return {r["pid"] for rs in replicas_of(st, app_name).values() for r in rs}
