"""Composition through handles, and the shipped pipeline example."""
import os
import threading

import pytest
import requests

from conftest import ROOT, app, curl, new_id, touch, wait_for_file

COMPOSE = app("compose.lua:app")


def test_handles_call_two_bound_copies(serve):
    srv = serve(COMPOSE)
    r = srv.get("/add?x=5")
    assert r.status_code == 200, r.text
    assert r.json() == {"a": 15, "b": 105, "label": "composed"}


def test_bind_twice_makes_name_1(serve):
    srv = serve(COMPOSE)
    st = srv.status()
    a = st["applications"]["default"]
    assert a["ingress"] == "Ingress"
    assert sorted(a["deployments"]) == ["Adder", "Adder_1", "Ingress", "Slow"]
    assert [r["replica_id"] for r in a["deployments"]["Adder_1"]["replicas"]] == ["Adder_1#0"]
    who = srv.get("/who").json()
    assert who["me"] == "Ingress"
    assert who["a"]["deployment"] == "Adder" and who["a"]["replica_id"] == "Adder#0" and who["a"]["n"] == 10
    assert who["b"]["deployment"] == "Adder_1" and who["b"]["replica_id"] == "Adder_1#0" and who["b"]["n"] == 100
    # Each replica is its own worker process, as /-/status says.
    pids = {d: a["deployments"][d]["replicas"][0]["pid"] for d in a["deployments"]}
    assert who["a"]["pid"] == pids["Adder"] and who["b"]["pid"] == pids["Adder_1"]
    assert len(set(pids.values())) == 4


def test_response_as_argument_is_resolved(serve):
    srv = serve(COMPOSE)
    r = srv.get("/chain?x=1")
    assert r.status_code == 200, r.text
    assert r.json() == {"result": 111}


def test_handle_calls_run_concurrently(serve, workdir):
    """a:rendezvous and b:rendezvous each wait for the other: both true only if
    the second call was issued before the first one's result was awaited."""
    srv = serve(COMPOSE)
    r = srv.get("/concurrent?dir=%s" % workdir, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"a": True, "b": True}


def test_error_reraises_with_deployment_name(serve):
    srv = serve(COMPOSE)
    r = srv.get("/fail")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is False
    assert "Adder_1" in body["err"], body
    assert "adder failed: boom" in body["err"], body


def test_missing_method_error_names_deployment(serve):
    srv = serve(COMPOSE)
    body = srv.get("/no_method").json()
    assert body["ok"] is False
    assert "Adder_1" in body["err"] and "no_such_method" in body["err"], body


def test_callee_death_is_an_error_and_it_restarts(serve):
    srv = serve(COMPOSE)
    old = srv.get("/who").json()["a"]["pid"]
    r = srv.get("/callee_dies", timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is False, body
    assert "Adder" in body["err"], body
    r = srv.get("/add?x=2", timeout=30)
    assert r.status_code == 200 and r.json()["a"] == 12, r.text
    assert srv.get("/who").json()["a"]["pid"] != old


def test_uncaught_callee_error_is_500(serve):
    srv = serve(COMPOSE)
    rid = new_id()
    r = srv.get("/fail_uncaught", headers={"x-request-id": rid})
    assert r.status_code == 500
    assert rid in r.text
    assert "traceback" not in r.text.lower()
    # Everything still serves.
    assert srv.get("/add?x=1").json()["b"] == 101


def test_result_suspends_only_the_caller(serve, workdir):
    """While one request waits in :result() on a gated call, the same ingress
    replica keeps answering other requests."""
    srv = serve(COMPOSE)
    out = {}

    def slow():
        try:
            r = requests.get(srv.url("/slow?dir=%s&name=g" % workdir), timeout=40)
            out["slow"] = (r.status_code, r.text)
        except requests.RequestException as e:
            out["slow"] = repr(e)

    t = threading.Thread(target=slow)
    t.start()
    try:
        assert wait_for_file(os.path.join(workdir, "g.started")), "gated call never reached Slow"
        for x in range(5):
            r = srv.get("/add?x=%d" % x, timeout=10)
            assert r.status_code == 200 and r.json()["a"] == 10 + x
        assert t.is_alive(), "the gated request finished before release"
    finally:
        touch(os.path.join(workdir, "g.release"))
        t.join(30)
    assert out.get("slow") == (200, "released"), out


def test_values_cross_workers_intact(serve):
    srv = serve(COMPOSE)
    r = srv.get("/values")
    assert r.status_code == 200, r.text
    assert r.json() == {"int": 7, "float": 2.5, "str": "hi there", "t": True, "f": False,
                        "arr": [1, "two", 3.5], "nested": {"k": [1]}}
    r = srv.get("/binary")
    assert r.status_code == 200
    assert r.content == bytes(range(256))


def test_concurrent_composed_requests(serve):
    srv = serve(COMPOSE)
    errors = []

    def worker(i):
        try:
            with requests.Session() as s:
                for j in range(4):
                    x = i * 10 + j
                    r = s.get(srv.url("/chain?x=%d" % x), timeout=30)
                    if r.status_code != 200 or r.json() != {"result": x + 110}:
                        errors.append((x, r.status_code, r.text[:200]))
        except Exception as e:  # noqa: BLE001
            errors.append((i, repr(e)))

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors[:5]


# ---- the shipped pipeline example -------------------------------------------------------

def _pipeline(serve):
    assert os.path.exists(os.path.join(ROOT, "apps", "pipeline.lua")), "apps/pipeline.lua is missing"
    return serve("apps/pipeline.lua:app", "--num-cpus", "16", cwd=ROOT)


def test_pipeline_recommends_k_items_deterministically(serve):
    srv = _pipeline(serve)
    r1 = srv.post("/", json={"user": "alice", "k": 3})
    assert r1.status_code == 200, r1.text
    body = r1.json()
    assert isinstance(body.get("items"), list) and len(body["items"]) == 3, body
    r2 = srv.post("/", json={"user": "alice", "k": 3})
    assert r2.json() == body, "same input, different output"
    r5 = srv.post("/", json={"user": "bob", "k": 5})
    assert r5.status_code == 200 and len(r5.json()["items"]) == 5
    code, _, out, _ = curl("-H", "Content-Type: application/json", "--data", '{"user": "alice", "k": 3}',
                           srv.url("/"))
    assert code == 200
    import json
    assert json.loads(out) == body


def test_pipeline_has_two_rankers(serve):
    srv = _pipeline(serve)
    st = srv.status()
    deps = st["applications"]["default"]["deployments"]
    rankers = [d for d in deps if d.startswith("Ranker")]
    assert len(rankers) >= 2, sorted(deps)
    assert "Ranker" in rankers and "Ranker_1" in rankers, sorted(deps)


def test_pipeline_bad_json_is_400(serve):
    srv = _pipeline(serve)
    r = srv.post("/", data=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400, (r.status_code, r.text[:200])


# ---- handle routing over replicas ----------------------------------------------------

FANOUT = app("fanout.lua:app")


def test_handle_calls_spread_over_replicas(serve):
    srv = serve(FANOUT)
    st = srv.status()
    multi = {r["pid"] for r in st["applications"]["default"]["deployments"]["Multi"]["replicas"]}
    assert len(multi) == 2
    pids = srv.get("/sequential?n=40", timeout=30).json()["pids"]
    assert set(pids) == multi, "40 handle calls reached %s of replicas %s" % (set(pids), multi)


def test_handle_calls_queue_at_max_ongoing(serve):
    """Six calls at once on two replicas that take one each: all succeed, each
    replica never runs two at once, both are used."""
    srv = serve(FANOUT)
    r = srv.get("/parallel?n=6&s=0.2", timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["pids"]) == 6 and len(set(body["pids"])) == 2, body
    assert set(body["peaks"]) == {1}, body


def test_streams_through_handle_calls(serve):
    srv = serve(app("handle_stream.lua:app"))
    with requests.get(srv.url("/relay"), stream=True, timeout=20) as r:
        assert r.status_code == 200
        parts = [c.decode() for c in r.iter_content(chunk_size=None) if c]
    assert "".join(parts) == "<1;><2;><3;><4;><5;>"
    assert len(parts) >= 3, "chunks should arrive one by one, not all at the end: %r" % parts
    assert srv.get("/joined").text == "1;2;3;4;"
    assert srv.get("/plain").json() == ["plain"]
    j = srv.get("/broken").json()
    assert j["ok"] is False and "boom in the stream" in j["err"] and "Gen" in j["err"]


def test_serve_batch_gathers_concurrent_calls(serve):
    srv = serve(app("batch.lua:app"))
    results = {}

    def one(x):
        results[x] = srv.get("/?x=%d" % x).json()

    ts = [threading.Thread(target=one, args=(x,)) for x in range(1, 11)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert all(results[x] == {"x": x, "y": x * x} for x in range(1, 11)), results
    sizes = srv.get("/sizes").json()
    assert sum(sizes) == 10 and max(sizes) <= 4 and max(sizes) > 1, sizes
    r = srv.get("/?x=-3")
    assert r.status_code == 400 and "negative input -3" in r.text
