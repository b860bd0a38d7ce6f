"""Shared harness for the actorserve end-to-end tests.

Every test starts the real binary (env ACTORSERVE_BIN, default build/actorserve)
on a free port of 127.0.0.1, waits (bounded) until it serves, talks to it with
real clients (requests, curl, raw sockets), and the `serve` fixture stops it:
SIGTERM, SIGKILL after 25 s, then asserts exit code 0 and that no process of
that server (the head and every worker pid /-/status ever reported, and
anything left in the head's session) remains. On failure the server's stderr
tail is attached to the report.
"""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
APPS = os.path.join(HERE, "apps")
BIN = os.environ.get("ACTORSERVE_BIN") or os.path.join(ROOT, "build", "actorserve")

START_TIMEOUT = 30.0     # seconds to wait for a server to answer /-/healthz
READY_TIMEOUT = 30.0     # seconds to wait for the expected replica states
KILL_AFTER = 25.0        # SIGTERM, then SIGKILL after this long
HTTP_TIMEOUT = 20.0      # default client timeout


def app(name):
    """`file.lua:variable` of a test app, by absolute path."""
    return os.path.join(APPS, name)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_is_free(port):
    """True when nothing accepts connections on 127.0.0.1:port and it can be bound."""
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(2)
    try:
        c.connect(("127.0.0.1", port))
        return False
    except OSError:
        pass
    finally:
        c.close()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def proc_stat(pid):
    """(state, ppid, pgrp, session) of a live pid, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[2]), int(rest[3])


def pid_alive(pid):
    """Alive and not a zombie."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def session_members(sid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = proc_stat(int(d))
        if st and st[3] == sid and st[0] not in ("Z", "X"):
            out.append(int(d))
    return out


def tail(text, n=80):
    lines = text.splitlines()
    return "\n".join(lines[-n:])


def status_pids(st):
    pids = set()
    for a in (st or {}).get("applications", {}).values():
        for d in a.get("deployments", {}).values():
            for r in d.get("replicas", []):
                if isinstance(r.get("pid"), int) and r["pid"] > 0:
                    pids.add(r["pid"])
    return pids


def replicas_of(st, app_name=None):
    """{deployment: [replica dict, ...]} over one app (or all)."""
    out = {}
    for name, a in (st or {}).get("applications", {}).items():
        if app_name is not None and name != app_name:
            continue
        for dn, d in a.get("deployments", {}).items():
            out.setdefault(dn, []).extend(d.get("replicas", []))
    return out


class ServerError(Exception):
    pass


class Server:
    def __init__(self, target, args=(), env=None, cwd=None, host_flag=True, port=None):
        self.target = target
        self.args = list(args)
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.cwd = cwd or ROOT
        self.host_flag = host_flag
        self.fixed_port = port      # a port the binary picks by itself (no --port flag)
        self.proc = None
        self.port = None
        self.rc = None
        self.seen_pids = set()
        self.expect_rc = 0
        self.errfile = tempfile.NamedTemporaryFile(prefix="actorserve-stderr-", suffix=".log", delete=False)
        self.outfile = tempfile.NamedTemporaryFile(prefix="actorserve-stdout-", suffix=".log", delete=False)

    # ---- lifecycle -----------------------------------------------------------
    def cmdline(self, port):
        cmd = [BIN, "run", self.target]
        if self.host_flag:
            cmd += ["--host", "127.0.0.1"]
        if self.fixed_port is None:
            cmd += ["--port", str(port)]
        return cmd + self.args

    def start(self):
        if not os.path.exists(BIN):
            raise ServerError("actorserve binary not found at %s (set ACTORSERVE_BIN)" % BIN)
        for attempt in range(3):
            self.port = self.fixed_port or free_port()
            self.errfile.seek(0)
            self.errfile.truncate()
            self.proc = subprocess.Popen(self.cmdline(self.port), cwd=self.cwd, env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=self.outfile,
                                         stderr=self.errfile, start_new_session=True)
            try:
                self._wait_healthz()
                return self
            except ServerError:
                if (self.proc.poll() is not None and "in use" in self.stderr().lower() and attempt < 2
                        and self.fixed_port is None):
                    continue  # lost the free-port race; try another port
                raise

    def _wait_healthz(self):
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.rc = self.proc.returncode
                raise ServerError("server exited with %s before serving:\n%s" % (self.rc, tail(self.stderr())))
            try:
                r = requests.get(self.url("/-/healthz"), timeout=2)
                if r.status_code == 200:
                    return
                last = "healthz %d %r" % (r.status_code, r.text[:200])
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.05)
        raise ServerError("server did not answer /-/healthz within %.0fs (last: %s)" % (START_TIMEOUT, last))

    def wait_status(self, pred, what, timeout=READY_TIMEOUT):
        """Polls /-/status until pred(status) is true; returns that status."""
        deadline = time.monotonic() + timeout
        st = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError("server exited with %s while waiting for %s" % (self.proc.returncode, what))
            try:
                st = self.status()
                if pred(st):
                    return st
            except (requests.RequestException, ValueError, KeyError, IndexError, TypeError, AttributeError):
                pass
            time.sleep(0.05)
        raise ServerError("timed out waiting for %s; last /-/status: %s" % (what, json.dumps(st)))

    def wait_running(self, timeout=READY_TIMEOUT):
        def ok(st):
            reps = replicas_of(st)
            return bool(reps) and all(rs and all(x.get("state") == "RUNNING" for x in rs) for rs in reps.values())
        return self.wait_status(ok, "every replica RUNNING", timeout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Waits for the head to exit; returns its rc, or None on timeout."""
        try:
            self.rc = self.proc.wait(timeout=timeout)
            return self.rc
        except subprocess.TimeoutExpired:
            return None

    def snapshot_pids(self):
        if self.alive():
            try:
                self.status()
            except (requests.RequestException, ValueError):
                pass

    def stop(self, sig=signal.SIGTERM):
        """SIGTERM (or sig), SIGKILL after 25 s; returns (rc, killed)."""
        if self.proc is None:
            return None, False
        self.snapshot_pids()
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=KILL_AFTER)
            except subprocess.TimeoutExpired:
                killed = True
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.rc = self.proc.returncode
        return self.rc, killed

    def leftovers(self, wait=5.0):
        """Pids of this server still alive (polls a little, workers may be exiting)."""
        deadline = time.monotonic() + wait
        while True:
            left = {p for p in self.seen_pids | {self.proc.pid} if pid_alive(p)}
            left |= set(session_members(self.proc.pid))
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def kill_leftovers(self, pids):
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass

    # ---- HTTP helpers -------------------------------------------------------
    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def get(self, path="/", **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return requests.get(self.url(path), **kw)

    def post(self, path="/", **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return requests.post(self.url(path), **kw)

    def request(self, method, path="/", **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return requests.request(method, self.url(path), **kw)

    def status(self):
        r = requests.get(self.url("/-/status"), timeout=5)
        r.raise_for_status()
        st = r.json()
        self.seen_pids |= status_pids(st)
        return st

    def stderr(self):
        if getattr(self, "_stderr_cache", None) is not None:
            return self._stderr_cache
        try:
            with open(self.errfile.name, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def cleanup_files(self):
        self._stderr_cache = self.stderr()
        for f in (self.errfile, self.outfile):
            try:
                f.close()
                os.unlink(f.name)
            except OSError:
                pass


# ---- fixtures -------------------------------------------------------------------

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for srv in getattr(item, "_as_servers", []):
            rep.sections.append(("actorserve stderr tail (port %s, %s)" % (srv.port, srv.target),
                                 tail(srv.stderr()) or "(empty)"))


@pytest.fixture
def serve(request):
    """serve(target, *args, env=None, wait_running=True, cwd=None) -> started Server.

    At teardown: stops every server (SIGTERM, SIGKILL after 25 s), asserts it
    exited with code 0 (unless srv.expect_rc is changed) within that time and
    that no process of it remains."""
    servers = []
    request.node._as_servers = servers

    def start(target, *args, env=None, wait_running=True, cwd=None, host_flag=True, port=None):
        srv = Server(target, args, env=env, cwd=cwd, host_flag=host_flag, port=port)
        servers.append(srv)
        srv.start()
        srv.snapshot_pids()
        if wait_running:
            srv.wait_running()
        return srv

    yield start

    problems = []
    for srv in servers:
        if srv.proc is None:
            continue
        rc, killed = srv.stop()
        left = srv.leftovers()
        if left:
            srv.kill_leftovers(left)
            problems.append("port %s: processes left after stop: %s" % (srv.port, sorted(left)))
        if killed:
            problems.append("port %s: server ignored SIGTERM for %.0fs and was SIGKILLed" % (srv.port, KILL_AFTER))
        elif srv.expect_rc is not None and rc != srv.expect_rc:
            problems.append("port %s: server exited with %s, expected %s" % (srv.port, rc, srv.expect_rc))
        # Under `make test-asan`, a sanitizer report from any process of the
        # server (the workers' exit codes are not checked) fails the test.
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in srv.stderr():
                problems.append("port %s: %s in the server's output" % (srv.port, marker))
    if problems:
        detail = "\n".join(problems)
        for srv in servers:
            detail += "\n--- stderr tail (port %s) ---\n%s" % (srv.port, tail(srv.stderr(), 40))
        for srv in servers:
            srv.cleanup_files()
        pytest.fail(detail, pytrace=False)
    for srv in servers:
        srv.cleanup_files()


@pytest.fixture
def workdir():
    """A scratch directory the test and the replicas share (marker files for gates)."""
    d = tempfile.mkdtemp(prefix="actorserve-e2e-")
    os.chmod(d, 0o777)
    yield d
    for root, dirs, files in os.walk(d, topdown=False):
        for f in files:
            try:
                os.unlink(os.path.join(root, f))
            except OSError:
                pass
        for x in dirs:
            try:
                os.rmdir(os.path.join(root, x))
            except OSError:
                pass
    try:
        os.rmdir(d)
    except OSError:
        pass


# ---- client helpers -------------------------------------------------------------

def wait_for_file(path, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.02)
    return False


def touch(path):
    with open(path, "w") as f:
        f.write("x")


def curl(*args, timeout=30):
    """Runs curl; returns (http_code, headers{lower: value}, body bytes, CompletedProcess)."""
    with tempfile.NamedTemporaryFile(delete=False) as hf, tempfile.NamedTemporaryFile(delete=False) as bf:
        hname, bname = hf.name, bf.name
    try:
        cmd = ["curl", "-sS", "--max-time", str(timeout - 5), "-D", hname, "-o", bname] + list(args)
        cp = subprocess.run(cmd, capture_output=True, timeout=timeout)
        with open(hname, "rb") as f:
            raw = f.read().decode("latin-1")
        with open(bname, "rb") as f:
            body = f.read()
    finally:
        os.unlink(hname)
        os.unlink(bname)
    # -D writes every response head (100-continue included): keep the last one.
    blocks = [b for b in re.split(r"\r?\n\r?\n", raw) if b.strip()]
    code, headers = None, {}
    if blocks:
        lines = blocks[-1].splitlines()
        m = re.match(r"HTTP/\S+\s+(\d+)", lines[0])
        code = int(m.group(1)) if m else None
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                headers[k.strip().lower()] = v.strip()
    return code, headers, body, cp


def connect(port, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


class RawResponse:
    def __init__(self, status, reason, headers, body, chunks):
        self.status = status
        self.reason = reason
        self.headers = headers      # {lower name: value} (last wins)
        self.body = body
        self.chunks = chunks        # chunk payloads for chunked bodies, else None

    def __repr__(self):
        return "RawResponse(%d %r, %r, %r)" % (self.status, self.reason, self.headers, self.body[:200])


class RawReader:
    """Reads HTTP/1.1 responses off a socket, one after another (pipelining)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed by server (buffered %r)" % self.buf[:200])
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, head_request=False):
        line = self._line()
        m = re.match(rb"HTTP/1\.[01] (\d{3}) ?(.*)", line)
        if not m:
            raise AssertionError("bad status line %r" % line)
        status, reason = int(m.group(1)), m.group(2).decode("latin-1")
        headers = {}
        while True:
            ln = self._line()
            if not ln:
                break
            k, v = ln.decode("latin-1").split(":", 1)
            headers[k.strip().lower()] = v.strip()
        chunks = None
        if head_request or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size = int(self._line().split(b";")[0].strip(), 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                chunks.append(self._exact(size))
                assert self._exact(2) == b"\r\n", "chunk not followed by CRLF"
            body = b"".join(chunks)
        elif "content-length" in headers:
            body = self._exact(int(headers["content-length"]))
        else:
            body = self.buf
            try:
                while True:
                    self._fill()
                    body = self.buf
            except EOFError:
                pass
            self.buf = b""
        return RawResponse(status, reason, headers, body, chunks)

    def at_eof(self, timeout=10.0):
        """True when the server closes the connection (nothing more buffered) within timeout."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        return data == b""


def raw_exchange(port, data, timeout=10.0):
    """Sends raw bytes, returns the first response parsed."""
    s = connect(port, timeout)
    try:
        s.sendall(data)
        return RawReader(s).read_response()
    finally:
        s.close()


def new_id():
    return "e2e-" + uuid.uuid4().hex


# ---- helpers of the config and control-plane tests (test_config.py, test_control.py) ----

def run_cli(*args, env=None, cwd=None, timeout=60):
    """Runs `actorserve ARGS...` to completion; returns the CompletedProcess (text)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([BIN] + [str(a) for a in args], capture_output=True, text=True, env=e,
                          cwd=cwd or ROOT, timeout=timeout, stdin=subprocess.DEVNULL)


def write_file(path, text):
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def text_pos(text, needle, nth=1):
    """(line, column), 1-based, where the nth occurrence of needle starts in text."""
    i = -1
    for _ in range(nth):
        i = text.index(needle, i + 1)
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return line, col


def rest_url(dash_port, path="/api/serve/applications/"):
    return "http://127.0.0.1:%d%s" % (dash_port, path)


class Load:
    """Client threads that send requests continuously until stop() (or max_s).

    results: list of (url, status or None, parsed JSON body or None, error repr or None)
    in the order they finished."""

    def __init__(self, urls, threads_per_url=2, pause=0.01, max_s=90.0, timeout=30.0):
        import threading
        self._threading = threading
        self.urls = list(urls)
        self.per_url = threads_per_url
        self.pause = pause
        self.max_s = max_s
        self.timeout = timeout
        self.results = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []

    def _run(self, url):
        deadline = time.monotonic() + self.max_s
        s = requests.Session()
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    r = s.get(url, timeout=self.timeout)
                    try:
                        body = r.json()
                    except ValueError:
                        body = None
                    rec = (url, r.status_code, body, None)
                except requests.RequestException as e:
                    rec = (url, None, None, repr(e))
                with self._lock:
                    self.results.append(rec)
                self._stop.wait(self.pause)
        finally:
            s.close()

    def start(self):
        for u in self.urls:
            for _ in range(self.per_url):
                t = self._threading.Thread(target=self._run, args=(u,), daemon=True)
                t.start()
                self._threads.append(t)
        return self

    def count(self, url=None):
        with self._lock:
            return sum(1 for r in self.results if url is None or r[0] == url)

    def wait_count(self, n, url=None, timeout=30.0):
        """Waits until n more results (for url) than now have arrived."""
        goal = self.count(url) + n
        deadline = time.monotonic() + timeout
        while self.count(url) < goal and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.count(url) >= goal

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 10)
        with self._lock:
            return list(self.results)

    def failed(self, url=None, ok=(200,)):
        with self._lock:
            return [r for r in self.results if (url is None or r[0] == url) and r[1] not in ok]
