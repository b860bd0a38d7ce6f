#!/usr/bin/env python3
"""bench/llm_gpu.py — the engine's decode speed on one GPU against transformers
and against the memory-bandwidth limit (ANCHORS.md, "LLM decode on one H100").

`make bench-llm-gpu` runs it from the repository; tests/gpu/run.sh runs it
from the GPU bundle (build/gpu-bundle, where this file, the binary,
make_random_model.py and hf_generate.py lie side by side). In one run:

 1. the two random-weight bf16 models of the anchor (gemma-2b, llama-3.2-1b:
    tools/make_random_model.py, seed 0 on the GPU = the anchor's own weights)
    in --models-dir (default /tmp/actorserve-gpu-models; reused when there);
 2. ours, per shape: `actorserve bench-llm DIR --device cuda --batch
    1,8,32,128,256 --prompt-tokens 128 --new-tokens 256 --ttft 128,2048`
    (JSON lines: info, decode per batch, ttft per prompt length);
 3. the copy bandwidth: torch device-to-device copy of 2 GiB, 10 times after
    3 warm-ups, counted as read + write bytes (the anchor's own code);
 4. the anchor: hf_generate.py (transformers eager generate(), batches 1, 8,
    32, prompt 128, 256 new tokens; ~2-3 minutes), unless --no-anchor.

Then per shape and batch: our tokens/s, HF's (batches it measured), ours/HF;
the batch-1 bandwidth limit = copy_bandwidth / weight_bytes tokens/s
(weight_bytes: what our info line says one decode step reads; ANCHORS.md:
5.0 GB at 3,023 GB/s => ~600 tokens/s for gemma-2b) and our fraction of it =
tok_s * weight_bytes / copy_bandwidth; time to first token, ours (prompts 128
and 2048) against HF's (prompt 128, batch 1); and the goals, met or not:
batch 1 at >= 75% of the limit for each shape, >= 50,000 tokens/s for
llama-3.2-1b at batch 256.

A failing part (our binary crashing, exiting non-zero or timing out, the
anchor failing) is recorded with its error and the rest goes on; the lines
our binary printed before it failed are kept. Writes llm-gpu-<time>.json and
llm-gpu-summary.txt (one PASS/FAIL/SKIP line per part, for run.sh) into
--out (default $OUT, else bench/results in the repository, else the current
folder), and our and the anchor's raw output as llm_gpu-*.log there.
Exit status 1 when our benchmark, the copy measurement or the requested
anchor failed (goals not met do not fail the run). When $ACTORSERVE_LD_LIBRARY_PATH is set it becomes
LD_LIBRARY_PATH for our binary only.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
IN_REPO = os.path.exists(os.path.join(ROOT, "Makefile")) and os.path.basename(HERE) == "bench"
COPY_CODE = r"""
import json, time, torch
x = torch.empty(2*1024**3, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize(); t0 = time.perf_counter()
for _ in range(10): y.copy_(x)
torch.cuda.synchronize(); dt = time.perf_counter() - t0
print(json.dumps(dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__,
                      copy_GBps_rw=round(2*2*1024**3*10/dt/1e9, 1))), flush=True)
"""
ANCHORS_COPY_GBPS = 3023.0  # ANCHORS.md, H100 80GB HBM3, if nothing is measured here
GOAL_FRACTION = 0.75
# The same decode without one part of the design each (batches --variant-batch, 64 new tokens):
# the fused norm/activation GEMVs, captured graphs, programmatic dependent launch.
VARIANTS = (("no_fuse", {"ASK_NO_FUSE": "1"}), ("no_graphs", {"ASK_NO_GRAPHS": "1"}),
            ("no_pdl", {"ASK_NO_PDL": "1"}))
GOAL_BATCH256 = ("llama-3.2-1b", 256, 50000.0)


def first_existing(*paths):
    for p in paths:
        if p and os.path.exists(p):
            return p
    return None


def default_bin():
    return first_existing(os.environ.get("ACTORSERVE_BIN"), os.path.join(HERE, "actorserve"),
                          os.path.join(ROOT, "build", "actorserve")) or os.path.join(ROOT, "build", "actorserve")


def default_out():
    if os.environ.get("OUT"):
        return os.environ["OUT"]
    return os.path.join(ROOT, "bench", "results") if IN_REPO else "."


def json_lines(text):
    out = []
    for ln in (text or "").splitlines():
        ln = ln.strip()
        if ln.startswith("{"):
            try:
                out.append(json.loads(ln))
            except ValueError:
                pass
    return out


def run_logged(cmd, timeout, log_path, env=None):
    """Runs cmd; returns (rc or None on timeout, stdout, stderr, seconds) and writes a log."""
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1, timeout), env=env)
        rc, so, se = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        def s(x):
            return x.decode("utf-8", "replace") if isinstance(x, bytes) else (x or "")
        rc, so, se = None, s(e.stdout), s(e.stderr)
    except OSError as e:
        rc, so, se = -1, "", "cannot run: %s" % e
    dt = time.time() - t0
    with open(log_path, "w") as f:
        f.write("$ %s\n[%s, %.1f s]\n--- stdout\n%s\n--- stderr\n%s\n"
                % (" ".join(cmd), "timeout after %d s" % timeout if rc is None else "rc %d" % rc,
                   dt, so, se))
    return rc, so, se, dt


def failure(rc, se, timeout):
    if rc is None:
        return "timeout after %d s" % timeout
    tail = [ln for ln in (se or "").strip().splitlines() if ln.strip()]
    return "exit status %d: %s" % (rc, tail[-1] if tail else "(no stderr)")


def fmt(x, nd=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        return "{:,.{}f}".format(x, nd)
    return str(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=default_bin(), help="the actorserve binary")
    ap.add_argument("--device", default="cuda", help="actorserve bench-llm --device (cuda)")
    ap.add_argument("--shapes", default="gemma-2b,llama-3.2-1b")
    ap.add_argument("--models-dir", default="/tmp/actorserve-gpu-models")
    ap.add_argument("--model-device", default="cuda", help="where the random weights are made")
    ap.add_argument("--batch", default="1,8,32,128,256")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--ttft", default="128,2048")
    ap.add_argument("--anchor", default=first_existing(
        os.path.join(HERE, "hf_generate.py"),
        os.path.join(ROOT, "..", "shared", "anchors", "hf_generate.py")),
        help="path of anchors/hf_generate.py (default: next to this file, else ../shared/anchors)")
    ap.add_argument("--no-anchor", action="store_true", help="skip the transformers run")
    ap.add_argument("--variant-batch", default="1,64",
                    help="batches of the runs without fusions (ASK_NO_FUSE=1), without "
                         "graphs (ASK_NO_GRAPHS=1) and without programmatic dependent launch "
                         "(ASK_NO_PDL=1), 64 new tokens; '' skips them")
    ap.add_argument("--profile-batch", default="1,64",
                    help="batches of the op-by-op profile run (ASK_PROFILE=1); '' skips it")
    ap.add_argument("--timeout-ours", type=int, default=180, help="seconds per shape")
    ap.add_argument("--timeout-anchor", type=int, default=300)
    ap.add_argument("--deadline-s", type=int, default=0,
                    help="whole run in at most this many seconds: the anchor gets what is left")
    ap.add_argument("--out", default=default_out())
    a = ap.parse_args()
    start = time.time()
    os.makedirs(a.out, exist_ok=True)

    def left(cap):
        if not a.deadline_s:
            return cap
        return int(min(cap, a.deadline_s - (time.time() - start) - 5))

    py = sys.executable
    shapes = [s for s in a.shapes.split(",") if s]
    benv = dict(os.environ)
    if os.environ.get("ACTORSERVE_LD_LIBRARY_PATH"):
        benv["LD_LIBRARY_PATH"] = os.environ["ACTORSERVE_LD_LIBRARY_PATH"]
    res = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
           "host": platform.node(), "bin": a.bin, "device": a.device,
           "args": {"batch": a.batch, "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens,
                    "ttft": a.ttft},
           "shapes": {}, "anchor": None, "copy": None, "goals": []}
    mkm = first_existing(os.path.join(HERE, "make_random_model.py"),
                         os.path.join(ROOT, "tools", "make_random_model.py"))

    # 1 + 2: models and ours, per shape
    for shape in shapes:
        r = {"error": None, "info": None, "decode": [], "ttft": []}
        res["shapes"][shape] = r
        d = os.path.join(a.models_dir, shape)
        t = left(300)
        rc, so, se, dt = run_logged([py, mkm, "--shape", shape, "--out", d, "--device", a.model_device,
                                     "--reuse"], t, os.path.join(a.out, "llm_gpu-model-%s.log" % shape))
        if rc != 0:
            r["error"] = "making the model: " + failure(rc, se, t)
            print("%s: %s" % (shape, r["error"]), flush=True)
            continue
        r["model_s"] = round(dt, 1)
        # stdbuf: the lines printed before a crash are not lost in a stdio buffer
        cmd = (["stdbuf", "-oL"] if shutil.which("stdbuf") else []) + [a.bin, "bench-llm", d, "--device", a.device, "--batch", a.batch,
               "--prompt-tokens", str(a.prompt_tokens), "--new-tokens", str(a.new_tokens),
               "--ttft", a.ttft]
        t = left(a.timeout_ours)
        rc, so, se, dt = run_logged(cmd, t, os.path.join(a.out, "llm_gpu-ours-%s.log" % shape), benv)
        r["seconds"] = round(dt, 1)
        for ln in json_lines(so):
            kind = ln.get("bench")
            if kind == "info":
                r["info"] = ln
            elif kind == "decode":
                r["decode"].append(ln)
            elif kind == "ttft":
                r["ttft"].append(ln)
        if rc != 0:
            r["error"] = failure(rc, se, t)
        elif not r["info"] or not r["decode"]:
            r["error"] = "no info or decode line on stdout"
        print("%s: ours %s in %.0f s%s" % (shape, "failed" if r["error"] else "done", dt,
                                          ": " + r["error"] if r["error"] else ""), flush=True)
        # what the fusions and the captured steps are worth: the same decode without them
        for vname, venv in VARIANTS:
            if r["error"] or not a.variant_batch:
                break
            t = left(60)
            vcmd = [a.bin, "bench-llm", d, "--device", a.device, "--batch", a.variant_batch,
                    "--prompt-tokens", str(a.prompt_tokens), "--new-tokens", "64", "--ttft", "none"]
            rc, so, se, dt = run_logged(vcmd, t, os.path.join(a.out, "llm_gpu-%s-%s.log" % (vname, shape)),
                                        dict(benv or os.environ, **venv))
            r[vname] = [ln for ln in json_lines(so) if ln.get("bench") == "decode"]
            r[vname + "_info"] = next((ln.get("device_info") for ln in json_lines(so)
                                       if ln.get("bench") == "info"), None)
            if rc != 0:
                r[vname + "_error"] = failure(rc, se, t)
        # where a step's time goes: a short run op by op (ASK_PROFILE=1, no graphs)
        if not r["error"] and a.profile_batch:
            t = left(60)
            pcmd = [a.bin, "bench-llm", d, "--device", a.device, "--batch", a.profile_batch,
                    "--prompt-tokens", str(a.prompt_tokens), "--new-tokens", "32", "--ttft", "none"]
            penv = dict(benv or os.environ, ASK_PROFILE="1")
            rc, so, se, dt = run_logged(pcmd, t, os.path.join(a.out, "llm_gpu-profile-%s.log" % shape), penv)
            r["profile"] = [ln for ln in json_lines(so) if ln.get("bench") in ("profile", "decode")]
            if rc != 0:
                r["profile_error"] = failure(rc, se, t)

    # 3: copy bandwidth (the limit's denominator)
    t = left(120)
    rc, so, se, dt = run_logged([py, "-c", COPY_CODE], t, os.path.join(a.out, "llm_gpu-copy.log"))
    lines = json_lines(so)
    if rc == 0 and lines:
        res["copy"] = dict(lines[-1], source="measured here (torch copy_, 2 GiB x 10, read + write)")
    else:
        res["copy"] = {"error": failure(rc, se, t)}

    # 4: the anchor
    if a.no_anchor:
        res["anchor"] = {"skipped": "--no-anchor"}
    elif not a.anchor or not os.path.exists(a.anchor):
        res["anchor"] = {"error": "hf_generate.py not found (--anchor PATH)"}
    else:
        t = left(a.timeout_anchor)
        if t < 30:
            res["anchor"] = {"error": "no time left for it (%d s)" % t}
        else:
            rc, so, se, dt = run_logged([py, a.anchor], t, os.path.join(a.out, "llm_gpu-anchor.log"))
            lines = json_lines(so)
            res["anchor"] = {"path": a.anchor, "seconds": round(dt, 1), "lines": lines,
                             "error": None if rc == 0 else failure(rc, se, t)}

    # the copy bandwidth: measured here, else the anchor's, else ANCHORS.md's
    bw, bw_src = None, None
    if res["copy"].get("copy_GBps_rw"):
        bw, bw_src = res["copy"]["copy_GBps_rw"], "measured here"
    else:
        for ln in (res["anchor"] or {}).get("lines", []):
            if ln.get("copy_GBps_rw"):
                bw, bw_src = ln["copy_GBps_rw"], "the anchor's run"
        if bw is None:
            bw, bw_src = ANCHORS_COPY_GBPS, "ANCHORS.md (nothing measured in this run)"
    res["copy_GBps_rw"], res["copy_source"] = bw, bw_src

    hf = {}  # (shape, batch) -> anchor line
    for ln in (res["anchor"] or {}).get("lines", []):
        if "model" in ln and "batch" in ln:
            hf[(ln["model"].replace("-arch", ""), ln["batch"])] = ln
        elif "gpu" in ln and "torch" in ln:
            res["anchor"]["env"] = ln

    # per shape: ratios, the limit, TTFT
    for shape, r in res["shapes"].items():
        info = r["info"] or {}
        wb = info.get("weight_bytes")
        r["limit_tok_s"] = round(bw * 1e9 / wb, 1) if wb else None
        for dl in r["decode"]:
            h = hf.get((shape, dl.get("batch")))
            dl["hf_tok_s"] = h.get("gen_tok_per_s") if h else None
            dl["ours_over_hf"] = round(dl["tok_s"] / dl["hf_tok_s"], 2) if h and dl.get("tok_s") else None
            if dl.get("batch") == 1 and wb and dl.get("tok_s"):
                dl["fraction_of_limit"] = round(dl["tok_s"] * wb / (bw * 1e9), 4)
                r["batch1_fraction"] = dl["fraction_of_limit"]
        h1 = hf.get((shape, 1))
        for tl in r["ttft"]:
            if h1 and tl.get("prompt") == h1.get("prompt") and tl.get("ms"):
                tl["hf_ms"] = h1.get("ttft_ms")
                tl["hf_over_ours"] = round(h1["ttft_ms"] / tl["ms"], 2)
        if h1 and info.get("params"):
            r["params_hf"] = h1.get("params")
            r["params_match"] = abs(info["params"] - h1["params"]) <= 0.001 * h1["params"]

    # goals
    for shape, r in res["shapes"].items():
        f = r.get("batch1_fraction")
        res["goals"].append({"goal": "%s batch 1 >= %d%% of the bandwidth limit" % (shape, GOAL_FRACTION * 100),
                             "value": f, "target": GOAL_FRACTION,
                             "met": None if f is None else f >= GOAL_FRACTION})
    gs, gb, gt = GOAL_BATCH256
    if gs in res["shapes"]:
        v = next((dl.get("tok_s") for dl in res["shapes"][gs]["decode"] if dl.get("batch") == gb), None)
        res["goals"].append({"goal": "%s batch %d >= %s tokens/s" % (gs, gb, "{:,.0f}".format(gt)),
                             "value": v, "target": gt, "met": None if v is None else v >= gt})

    # report
    print()
    print("copy bandwidth %s GB/s (read + write; %s)" % (fmt(bw), bw_src))
    print("%-13s %5s %11s %8s %6s %9s %8s" % ("shape", "batch", "ours tok/s", "step ms", "graphs",
                                              "HF tok/s", "ours/HF"))
    for shape, r in res["shapes"].items():
        if r["error"]:
            print("%-13s ERROR %s" % (shape, r["error"]))
        for dl in r["decode"]:
            print("%-13s %5s %11s %8s %6s %9s %8s" % (shape, dl.get("batch"), fmt(dl.get("tok_s")),
                                                      fmt(dl.get("step_ms"), 3), dl.get("graphs"),
                                                      fmt(dl.get("hf_tok_s")), fmt(dl.get("ours_over_hf"), 2)))
    for shape, r in res["shapes"].items():
        info = r["info"] or {}
        if info.get("weight_bytes"):
            print("%s: %.3f GB read per step, limit %s tok/s at batch 1, ours %s of it"
                  % (shape, info["weight_bytes"] / 1e9, fmt(r["limit_tok_s"]),
                     "-" if r.get("batch1_fraction") is None else "%.1f%%" % (100 * r["batch1_fraction"])))
        for tl in r["ttft"]:
            print("%s: time to first token, prompt %s: ours %s ms%s"
                  % (shape, tl.get("prompt"), fmt(tl.get("ms"), 2),
                     ", HF %s ms" % fmt(tl["hf_ms"]) if tl.get("hf_ms") is not None else ""))
    for g in res["goals"]:
        v = g["value"]
        print("goal %-55s %s (%s)" % (g["goal"], {True: "MET", False: "NOT MET", None: "UNKNOWN"}[g["met"]],
                                      "-" if v is None else fmt(float(v), 3 if g["target"] < 1 else 0)))
    an = res["anchor"] or {}
    ours_ok = all(not r["error"] for r in res["shapes"].values())
    anchor_status = ("SKIP" if an.get("skipped") else "FAIL" if an.get("error") else "PASS")
    summary = ["bench-llm (ours): %s %s" % ("PASS" if ours_ok else "FAIL", "; ".join(
                   "%s %s" % (s, r["error"] or "ok") for s, r in res["shapes"].items())),
               "copy bandwidth: %s %s GB/s (%s)" % ("PASS" if res["copy"].get("copy_GBps_rw") else "FAIL",
                                                   fmt(bw), bw_src),
               "hf anchor: %s %s" % (anchor_status, an.get("skipped") or an.get("error") or
                                     "%d lines in %s s" % (len(an.get("lines", [])), an.get("seconds")))]
    di = next((r["info"].get("device_info") for r in res["shapes"].values()
               if r.get("info") and r["info"].get("device_info")), None)
    if di:
        summary.append("device: %s" % di)
    for shape, r in res["shapes"].items():
        dec = {dl.get("batch"): dl for dl in r["decode"]}
        parts = ["batch %s %s tok/s%s" % (b, fmt(dl.get("tok_s"), 0),
                                          " (HF %s)" % fmt(dl["hf_tok_s"], 0) if dl.get("hf_tok_s") else "")
                 for b, dl in sorted(dec.items(), key=lambda kv: kv[0] or 0)]
        if r.get("batch1_fraction") is not None:
            parts.append("batch 1 = %.1f%% of the limit %s tok/s" % (100 * r["batch1_fraction"],
                                                                    fmt(r["limit_tok_s"], 0)))
        parts += ["ttft %s: %s ms" % (tl.get("prompt"), fmt(tl.get("ms"), 1)) for tl in r["ttft"]]
        for vname, _ in VARIANTS:  # what each part of the design is worth, batch by batch
            for vl in r.get(vname) or []:
                base = dec.get(vl.get("batch"))
                if base and base.get("tok_s") and vl.get("tok_s"):
                    parts.append("%s batch %s %s tok/s (ours/%s %.2f)"
                                 % (vname, vl["batch"], fmt(vl["tok_s"], 0), vname,
                                    base["tok_s"] / vl["tok_s"]))
        summary.append("%s: %s" % (shape, "; ".join(parts) or "no figures"))
    summary += ["goal %s: %s (%s)" % (g["goal"], {True: "MET", False: "NOT MET", None: "UNKNOWN"}[g["met"]],
                                      "-" if g["value"] is None else
                                      fmt(float(g["value"]), 3 if g["target"] < 1 else 0))
                for g in res["goals"]]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(a.out, "llm-gpu-%s.json" % stamp)
    res["seconds"] = round(time.time() - start, 1)
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(a.out, "llm-gpu-summary.txt"), "w") as f:
        f.write("\n".join(summary) + "\n")
    print("\n".join(summary))
    print("wrote %s (%.0f s)" % (path, res["seconds"]))
    return 0 if ours_ok and anchor_status != "FAIL" and res["copy"].get("copy_GBps_rw") else 1


if __name__ == "__main__":
    sys.exit(main())
