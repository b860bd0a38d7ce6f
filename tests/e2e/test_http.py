"""HTTP ingress: the request object, return types, streaming, keep-alive,
pipelining, chunked bodies, error codes, x-request-id, built-in endpoints."""
import json
import os
import socket
import threading
import time

import pytest
import requests

from conftest import (RawReader, app, connect, curl, new_id, raw_exchange, touch, wait_for_file)

BASIC = app("basic.lua:app")


# ---- the request object ------------------------------------------------------------

def test_request_fields(serve):
    srv = serve(BASIC)
    r = srv.post("/echo/sub/path?a=1&b=two&a=3", data=b'{"x": 1}',
                 headers={"Content-Type": "application/json", "X-Custom": "Val"})
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["method"] == "POST"
    assert e["path"] == "/echo/sub/path"
    assert e["query_string"] == "a=1&b=two&a=3"
    assert e["query_params"] == {"a": "3", "b": "two"}, "last value must win"
    assert e["path_params"] == {}
    assert e["ct_lower"] == e["ct_mixed"] == e["ct_upper"] == "application/json"
    assert e["custom_lower"] == e["custom_mixed"] == "Val"
    assert e["body"] == '{"x": 1}' and e["body_len"] == 8
    assert e["greeting"] == "hi", "bind argument did not reach init"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_request_methods(serve, method):
    srv = serve(BASIC)
    r = srv.request(method, "/echo", data=b"m" if method != "GET" else None)
    assert r.status_code == 200, r.text
    assert r.json()["method"] == method


def test_request_without_query_or_body(serve):
    srv = serve(BASIC)
    e = srv.get("/echo").json()
    assert e.get("query_string", "") == ""
    assert e["query_params"] == {}
    assert e["body"] == "" and e["body_len"] == 0


def test_query_params_are_percent_decoded(serve):
    srv = serve(BASIC)
    e = srv.get("/echo?name=hello%20world&sym=%26%3D").json()
    assert e["query_params"] == {"name": "hello world", "sym": "&="}


def test_binary_body_round_trip(serve):
    srv = serve(BASIC)
    payload = bytes(range(256)) * 64 + b"\x00\r\n\r\n\x00"
    r = srv.post("/body", data=payload, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200
    assert r.content == payload


def test_large_body_with_curl(serve, tmp_path):
    """curl sends Expect: 100-continue for big bodies."""
    srv = serve(BASIC)
    f = tmp_path / "big.bin"
    payload = os.urandom(2 * 1024 * 1024 + 7)
    f.write_bytes(payload)
    code, _, body, cp = curl("--data-binary", "@%s" % f, srv.url("/body"))
    assert cp.returncode == 0, cp.stderr
    assert code == 200
    assert body == payload


def test_large_body_under_default_limit(serve):
    srv = serve(BASIC)
    payload = os.urandom(3 * 1024 * 1024)
    r = srv.post("/body", data=payload, timeout=60)
    assert r.status_code == 200
    assert len(r.content) == len(payload) and r.content == payload


def test_req_json(serve):
    srv = serve(BASIC)
    doc = {"a": [1, 2, {"b": "c"}], "n": 1.5, "t": True, "s": "é✓"}
    r = srv.post("/json", json=doc)
    assert r.status_code == 200, r.text
    assert r.json() == {"got": doc}


@pytest.mark.parametrize("bad", [b"{bad json", b"", b"[1, 2", b"\xff\xfe"], ids=["garbage", "empty", "unclosed", "bytes"])
def test_req_json_bad_input_is_400(serve, bad):
    srv = serve(BASIC)
    r = srv.post("/json", data=bad, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, "bad JSON gave %d: %r" % (r.status_code, r.text[:300])


def test_json_encode_decode_round_trip(serve):
    srv = serve(BASIC)
    doc = {"list": [1, "two", None, False], "obj": {"k": [0], "z": 0.25}}
    r = srv.post("/jsonrt", data=json.dumps(doc))
    assert r.status_code == 200, r.text
    assert r.json() == doc


# ---- return values ---------------------------------------------------------------------

@pytest.mark.parametrize("kind,ctype,expected", [
    ("string", "text/plain", "plain text"),
    ("array", "application/json", [1, 2, 3]),
    ("object", "application/json", {"a": 1, "b": "x", "nested": {"c": True, "d": [4, 5]}}),
    ("empty", "application/json", {}),
    ("int", "application/json", 42),
    ("float", "application/json", 1.5),
    ("true", "application/json", True),
    ("false", "application/json", False),
    ("null", "application/json", {"a": None, "b": 1}),
])
def test_return_types(serve, kind, ctype, expected):
    srv = serve(BASIC)
    r = srv.get("/ret/" + kind)
    assert r.status_code == 200, r.text
    assert r.headers.get("content-type", "").startswith(ctype), r.headers
    if ctype == "text/plain":
        assert r.text == expected
    else:
        assert r.json() == expected, r.text
        assert type(r.json()) is type(expected)


def test_return_nil_is_empty_200(serve):
    srv = serve(BASIC)
    r = srv.get("/ret/nil")
    assert r.status_code == 200
    assert r.content == b""


def test_return_types_with_curl(serve):
    srv = serve(BASIC)
    code, headers, body, _ = curl(srv.url("/ret/object"))
    assert code == 200 and headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"a": 1, "b": "x", "nested": {"c": True, "d": [4, 5]}}
    code, headers, body, _ = curl(srv.url("/ret/empty"))
    assert code == 200 and body.strip() == b"{}"


def test_serve_response(serve):
    srv = serve(BASIC)
    r = srv.get("/ret/response")
    assert r.status_code == 201
    assert r.headers.get("x-a") == "b"
    assert r.text == "created"
    r = srv.get("/ret/response_json")
    assert r.status_code == 202
    assert r.headers.get("x-kind") == "json"
    assert r.headers.get("content-type", "").startswith("application/json")
    assert r.json() == {"k": "v", "n": [1, 2]}
    r = srv.get("/ret/response_418")
    assert r.status_code == 418 and r.text == "teapot"


# ---- streaming -------------------------------------------------------------------------

@pytest.mark.parametrize("sse", [False, True], ids=["chunked", "event-stream"])
def test_stream_chunks_arrive_incrementally(serve, workdir, sse):
    """The first chunk reaches the client while the handler still waits for a
    signal that only the client gives after reading it."""
    srv = serve(BASIC)
    url = srv.url("/stream/gated?dir=%s%s" % (workdir, "&sse=1" if sse else ""))
    first = "data: first\n\n" if sse else "first\n"
    second = "data: second\n\n" if sse else "second\n"
    with requests.get(url, stream=True, timeout=(5, 25)) as r:
        assert r.status_code == 200
        assert r.headers.get("transfer-encoding", "").lower() == "chunked", r.headers
        assert r.headers.get("x-stream") == "gated"
        if sse:
            assert r.headers.get("content-type", "").startswith("text/event-stream"), r.headers
        assert r.headers.get("x-request-id")
        it = r.iter_content(chunk_size=None)
        got = b""
        while len(got) < len(first):
            got += next(it)
        assert got.decode() == first, "expected the first chunk alone before release, got %r" % got
        touch(os.path.join(workdir, "release"))
        for chunk in it:
            got += chunk
    assert got.decode() == first + second


def test_stream_multi_chunks_status_and_headers(serve):
    srv = serve(BASIC)
    with requests.get(srv.url("/stream/multi?n=6"), stream=True, timeout=(5, 20)) as r:
        assert r.status_code == 201
        assert r.headers.get("x-s") == "yes"
        assert r.headers.get("content-type", "").startswith("text/plain")
        assert r.headers.get("transfer-encoding", "").lower() == "chunked"
        body = b"".join(r.iter_content(chunk_size=None))
    assert body == b"".join(b"chunk%d;" % i for i in range(1, 7))


def test_stream_raw_chunk_framing(serve):
    srv = serve(BASIC)
    s = connect(srv.port)
    try:
        s.sendall(b"GET /stream/sse HTTP/1.1\r\nHost: t\r\n\r\n")
        resp = RawReader(s).read_response()
    finally:
        s.close()
    assert resp.status == 200
    assert resp.headers.get("content-type", "").startswith("text/event-stream")
    assert resp.chunks is not None, "not chunked: %r" % resp
    assert resp.body == b"data: 1\n\ndata: 2\n\ndata: 3\n\n"


def test_stream_with_curl(serve):
    srv = serve(BASIC)
    code, headers, body, cp = curl("-N", srv.url("/stream/sse"))
    assert cp.returncode == 0, cp.stderr
    assert code == 200
    assert headers.get("transfer-encoding", "").lower() == "chunked"
    assert body == b"data: 1\n\ndata: 2\n\ndata: 3\n\n"


# ---- connections -----------------------------------------------------------------------

def test_keep_alive_session_reuses_one_connection(serve):
    srv = serve(BASIC)
    with requests.Session() as sess:
        for i in range(25):
            r = sess.get(srv.url("/pipe?i=%d" % i), timeout=10)
            assert r.status_code == 200 and r.text == "pipe-%d" % i
        pool = sess.get_adapter(srv.url("/")).poolmanager.connection_from_url(srv.url("/"))
        assert pool.num_connections == 1, "requests opened %d connections" % pool.num_connections


def test_keep_alive_raw_socket(serve):
    srv = serve(BASIC)
    s = connect(srv.port)
    rd = RawReader(s)
    try:
        for i in range(20):
            s.sendall(b"GET /pipe?i=%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            resp = rd.read_response()
            assert resp.status == 200 and resp.body == b"pipe-%d" % i
        s.sendall(b"POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        assert rd.read_response().body == b"hello"
        # Connection: close is honoured: the server closes after answering.
        s.sendall(b"GET /pipe?i=last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert rd.read_response().body == b"pipe-last"
        assert rd.at_eof(10), "connection not closed after Connection: close"
    finally:
        s.close()


def test_keep_alive_timeout_closes_idle_connection(serve):
    srv = serve(BASIC, "--keep-alive-timeout-s", "1")
    s = connect(srv.port)
    try:
        s.sendall(b"GET /pipe?i=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        rd = RawReader(s)
        assert rd.read_response().body == b"pipe-1"
        assert rd.at_eof(15), "idle keep-alive connection still open long after --keep-alive-timeout-s 1"
    finally:
        s.close()


def test_pipelining_answers_in_order(serve):
    srv = serve(BASIC)
    s = connect(srv.port)
    try:
        # The first is the slowest: answers must still come back in request order.
        s.sendall(b"GET /pipe?i=1&s=0.3 HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\ntwo"
                  b"GET /pipe?i=3 HTTP/1.1\r\nHost: t\r\n\r\n")
        rd = RawReader(s)
        bodies = [rd.read_response().body for _ in range(3)]
    finally:
        s.close()
    assert bodies == [b"pipe-1", b"two", b"pipe-3"]


def test_pipelining_with_a_stream_in_the_middle(serve):
    srv = serve(BASIC)
    s = connect(srv.port)
    try:
        s.sendall(b"GET /pipe?i=1&s=0.1 HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /stream/multi?n=4 HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                  b"GET /ret/int HTTP/1.1\r\nHost: t\r\n\r\n")
        rd = RawReader(s)
        resps = [rd.read_response() for _ in range(4)]
    finally:
        s.close()
    assert [r.status for r in resps] == [200, 201, 200, 200], resps
    assert resps[0].body == b"pipe-1"
    assert resps[1].body == b"chunk1;chunk2;chunk3;chunk4;"
    assert resps[2].body == b"abc"
    assert resps[3].body == b"42"


def test_chunked_request_body_raw(serve):
    srv = serve(BASIC)
    resp = raw_exchange(srv.port, b"POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
    assert resp.status == 200, resp
    assert resp.body == b"hello world"


def test_chunked_request_body_requests_generator(serve):
    srv = serve(BASIC)
    parts = [b"alpha-", b"", b"beta-", bytes(range(256)), b"-gamma"]

    def gen():
        for p in parts:
            if p:
                yield p

    r = srv.post("/body", data=gen())
    assert r.status_code == 200
    assert r.content == b"".join(parts)


def test_chunked_request_body_curl(serve, tmp_path):
    srv = serve(BASIC)
    f = tmp_path / "payload.bin"
    payload = os.urandom(50000)
    f.write_bytes(payload)
    code, _, body, cp = curl("-H", "Transfer-Encoding: chunked", "--data-binary", "@%s" % f, srv.url("/body"))
    assert cp.returncode == 0, cp.stderr
    assert code == 200
    assert body == payload


# ---- error codes -----------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"THIS IS NOT HTTP\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
], ids=["request-line", "content-length", "chunk-size"])
def test_malformed_request_400_and_close(serve, raw):
    srv = serve(BASIC)
    s = connect(srv.port)
    try:
        s.sendall(raw)
        rd = RawReader(s)
        resp = rd.read_response()
        assert resp.status == 400, resp
        assert rd.at_eof(10), "connection left open after a malformed request"
    finally:
        s.close()
    # The server still serves.
    assert srv.get("/").text == "root:hi"


def test_body_limit_413(serve):
    srv = serve(BASIC, "--max-body-bytes", "1000")
    r = srv.post("/body", data=b"x" * 1000)
    assert r.status_code == 200 and len(r.content) == 1000
    r = srv.post("/body", data=b"x" * 1001)
    assert r.status_code == 413
    assert r.headers.get("x-request-id")
    r = srv.post("/body", data=b"x" * 200000)
    assert r.status_code == 413


def test_body_limit_413_chunked(serve):
    srv = serve(BASIC, "--max-body-bytes", "1000")
    s = connect(srv.port)
    try:
        s.sendall(b"POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + (b"200\r\n" + b"y" * 512 + b"\r\n") * 3 + b"0\r\n\r\n")
        resp = RawReader(s).read_response()
    finally:
        s.close()
    assert resp.status == 413, resp
    assert srv.get("/").text == "root:hi"


@pytest.mark.parametrize("limit_args,small,big", [
    ((), 8000, 20000),
    (("--max-header-bytes", "2048"), 1000, 4000),
], ids=["default-16384", "flag-2048"])
def test_header_limit_431(serve, limit_args, small, big):
    srv = serve(BASIC, *limit_args)
    r = srv.get("/echo", headers={"X-Custom": "a" * small})
    assert r.status_code == 200 and r.json()["custom_lower"] == "a" * small
    r = srv.get("/echo", headers={"X-Custom": "a" * big})
    assert r.status_code == 431
    assert r.headers.get("x-request-id")
    # Many headers add up too.
    many = {"X-H%03d" % i: "v" * 50 for i in range(big // 50)}
    r = srv.get("/echo", headers=many)
    assert r.status_code == 431
    assert srv.get("/").text == "root:hi"


def test_route_prefix_and_404(serve):
    srv = serve(BASIC, "--route-prefix", "/api")
    assert srv.get("/-/routes").json() == {"/api": "default"}
    r = srv.get("/api")
    assert r.status_code == 200 and r.text == "root:hi"
    e = srv.get("/api/echo?x=1").json()
    assert e["path"] == "/api/echo" and e["query_params"] == {"x": "1"}
    for path in ("/other", "/", "/apix", "/ap"):
        r = srv.get(path)
        assert r.status_code == 404, "%s gave %d" % (path, r.status_code)
        assert r.headers.get("x-request-id")
    code, _, _, _ = curl(srv.url("/other"))
    assert code == 404


def test_request_timeout_408(serve):
    srv = serve(BASIC, "--request-timeout-s", "1")
    r = srv.get("/sleep?s=5", timeout=30)
    assert r.status_code == 408, (r.status_code, r.text)
    assert r.headers.get("x-request-id")
    r = srv.get("/sleep?s=0")
    assert r.status_code == 200 and r.text == "slept 0"


def test_no_request_timeout_by_default(serve):
    srv = serve(BASIC)
    r = srv.get("/sleep?s=2", timeout=30)
    assert r.status_code == 200 and r.text == "slept 2"


def test_lua_error_is_500_with_request_id_not_traceback(serve):
    srv = serve(BASIC)
    rid = new_id()
    r = srv.get("/error", headers={"x-request-id": rid})
    assert r.status_code == 500
    assert r.headers.get("x-request-id") == rid
    assert rid in r.text, "500 body does not contain the request id: %r" % r.text
    assert "traceback" not in r.text.lower(), r.text
    # Without a client id, the generated one is in the body.
    r = srv.get("/error")
    assert r.status_code == 500
    gen = r.headers.get("x-request-id")
    assert gen and gen in r.text, r.text
    # The replica survives a Lua error.
    assert srv.get("/").text == "root:hi"


def test_slow_client_does_not_stall_others(serve):
    srv = serve(BASIC)
    slow_head = connect(srv.port, timeout=30)
    slow_body = connect(srv.port, timeout=30)
    try:
        slow_head.sendall(b"GET /pipe?i=slow HTTP/1.1\r\nHost: t\r\nX-Part")
        slow_body.sendall(b"POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        for i in range(10):
            r = srv.get("/pipe?i=%d" % i, timeout=10)
            assert r.status_code == 200 and r.text == "pipe-%d" % i
        code, _, body, _ = curl(srv.url("/pipe?i=c"))
        assert code == 200 and body == b"pipe-c"
        # The stalled ones complete when they finish sending.
        slow_head.sendall(b"ial: 1\r\n\r\n")
        assert RawReader(slow_head).read_response().body == b"pipe-slow"
        slow_body.sendall(b"defghij")
        assert RawReader(slow_body).read_response().body == b"abcdefghij"
    finally:
        slow_head.close()
        slow_body.close()


# ---- x-request-id -----------------------------------------------------------------------

def test_request_id_echoed_and_generated(serve):
    srv = serve(BASIC)
    rid = new_id()
    r = srv.get("/", headers={"X-Request-ID": rid})
    assert r.headers.get("x-request-id") == rid
    ids = set()
    for _ in range(10):
        r = srv.get("/")
        assert r.headers.get("x-request-id"), r.headers
        ids.add(r.headers["x-request-id"])
    assert len(ids) == 10, "generated request ids are not unique: %s" % ids
    code, headers, _, _ = curl("-H", "x-request-id: curl-id-1", srv.url("/ret/int"))
    assert code == 200 and headers.get("x-request-id") == "curl-id-1"


def test_request_id_on_builtin_endpoints(serve):
    srv = serve(BASIC)
    for path in ("/-/healthz", "/-/routes", "/-/status"):
        r = srv.get(path)
        assert r.status_code == 200 and r.headers.get("x-request-id"), (path, r.headers)


def test_request_id_on_400(serve):
    srv = serve(BASIC)
    resp = raw_exchange(srv.port, b"THIS IS NOT HTTP\r\n\r\n")
    assert resp.status == 400
    assert resp.headers.get("x-request-id"), resp.headers


# ---- built-in endpoints ---------------------------------------------------------------

def test_healthz_routes_status(serve):
    srv = serve(app("basic.lua:app_cpu1"), "--num-cpus", "4")
    r = srv.get("/-/healthz")
    assert r.status_code == 200 and r.text == "success"
    code, _, body, _ = curl(srv.url("/-/healthz"))
    assert code == 200 and body == b"success"
    assert srv.get("/-/routes").json() == {"/": "default"}
    st = srv.status()
    a = st["applications"]["default"]
    assert a["route_prefix"] == "/"
    assert a["ingress"] == "Basic"
    assert list(a["deployments"]) == ["Basic"]
    reps = a["deployments"]["Basic"]["replicas"]
    assert len(reps) == 1
    rep = reps[0]
    assert rep["replica_id"] == "Basic#0"
    assert rep["state"] == "RUNNING"
    assert isinstance(rep["pid"], int) and rep["pid"] > 0 and rep["pid"] != srv.proc.pid
    assert os.path.exists("/proc/%d" % rep["pid"])
    assert rep["gpu_ids"] == ""
    assert rep["message"] == ""
    assert st["node"]["total"]["CPU"] == 4 and st["node"]["total"]["GPU"] == 0, st["node"]
    assert st["node"]["free"]["CPU"] == 3, st["node"]
    assert st["node"]["free"]["GPU"] == 0
    # The replica's own context agrees with /-/status.
    ctx = srv.get("/ctx").json()
    assert ctx == {"deployment": "Basic", "replica_id": "Basic#0", "app_name": "default", "pid": rep["pid"]}


def test_app_name_flag(serve):
    srv = serve(BASIC, "--name", "myapp")
    assert srv.get("/-/routes").json() == {"/": "myapp"}
    st = srv.status()
    assert list(st["applications"]) == ["myapp"]
    assert srv.get("/ctx").json()["app_name"] == "myapp"


def test_default_num_cpus_is_one_per_replica(serve):
    srv = serve(app("basic.lua:app_default_cpus"), "--num-cpus", "2")
    assert srv.get("/").text == "default-cpus"
    st = srv.status()
    assert st["node"]["total"]["CPU"] == 2
    assert st["node"]["free"]["CPU"] == 1, st["node"]


def test_options_copy_with_overrides(serve):
    srv = serve(app("basic.lua:app3"), "--num-cpus", "2")
    st = srv.status()
    a = st["applications"]["default"]
    assert a["ingress"] == "Basic3"
    reps = a["deployments"]["Basic3"]["replicas"]
    assert sorted(r["replica_id"] for r in reps) == ["Basic3#0", "Basic3#1", "Basic3#2"]
    assert len({r["pid"] for r in reps}) == 3
    assert srv.get("/").text == "root:three"


# ---- serve.router / serve.ingress ---------------------------------------------------

def test_router_path_params_and_methods(serve):
    srv = serve(app("router.lua:app"), "--route-prefix", "/api")
    j = srv.get("/api/items/42?q=x").json()
    assert j == {"id": 42, "kind": "integer", "q": "x"}
    r = srv.request("PUT", "/api/items/7", json={"a": 1})
    assert r.status_code == 201 and r.json() == {"id": 7, "body": {"a": 1}}
    assert srv.get("/api/users/bob%20smith").text == "user bob smith"
    assert srv.get("/api/files/a/b/c.txt").text == "a/b/c.txt"
    assert srv.get("/api").text == "root of /api"
    assert srv.get("/api/items/abc").status_code == 404      # {id:int} does not match
    assert srv.request("DELETE", "/api/items/1").status_code == 405
    assert srv.get("/api/nothing").status_code == 404
    assert srv.get("/other").status_code == 404               # outside the route prefix
