#!/usr/bin/env python3
"""tests/gpu/hf_compare.py — greedy tokens of `actorserve generate --device cuda`
against transformers' generate() on the same random bf16 weights.

For each shape (gemma-2b, llama-3.2-1b by default): make the model folder with
tools/make_random_model.py (or reuse it), draw a fixed prompt of 16 ids
(random.Random(--prompt-seed)), then

  ours: actorserve generate DIR --device cuda --ids ... --max-new-tokens 32 --ignore-eos
  HF:   from_pretrained(DIR, bf16, attn_implementation="eager").generate(greedy,
        32 new tokens, eos ignored)

and compare token by token.

Equality rule. bf16 keeps 8 significant bits, so every bf16 number x carries a
rounding error up to |x|*2^-9, and two correct implementations that round at
different places (fused kernels, f32 vs bf16 residual stream, another
summation order) end with logits that differ by a few units of |x|*2^-8, the
errors of the layers adding up. Random-weight models spread their logits
evenly (llama-3.2-1b: ~N(0, 0.9)) over 128k-256k tokens, so the top two are
often closer than that (exact bf16 ties happen): such a model's greedy
continuation legitimately forks. So:
tokens equal at every step, PASS; otherwise, at the first difference, one
teacher-forced HF forward over prompt + OUR 32 tokens gives HF's logits at
every position, and every one of our tokens from the first difference on must
be a tie with HF's best there:

    margin = max(logits) - logits[our token]  <=  tol = UNITS * 2^-8 * max|logits|

UNITS = 12 by default (--tie-units), i.e. 4.7% of the largest logit
magnitude: ~0.2 for llama-3.2-1b (top logit ~4), ~0.5 for gemma-2b at init
0.05 (top ~11). Measured on the CPU on the same weights, in units of
2^-8 * max|logit|: HF generate's own tokens against its teacher-forced
forward, margins <= 0.9 (llama) and <= 4.1 (gemma); an f32 implementation
forks from HF bf16 (llama at token 10, gemma at 14) with margins <= 1.9 and
<= 6.0; so 12 is twice the largest margin of a correct implementation. A
wrong rope theta or a missing last MLP gives margins of 11-200 units
(0.19-3.5 logits on llama) from the first token on, at most steps (one
above the tolerance fails). The margin of every divergence is printed.

Weights: the anchor's initialisation (from_config, seed 0), except gemma-2b,
made with initializer_range 0.05 (--init-range gemma-2b=0.05, folder
gemma-2b-init0.05): at the anchor's 0.02 its greedy continuation is one token
then a single token repeated (measured on the CPU: the same 32 tokens with a
wrong rope theta or without the last MLP), so equal tokens would prove
little; at 0.05 the 32 tokens vary. llama-3.2-1b at 0.02 varies already.

Output: one line per shape (PASS/FAIL, equal prefix, margins), and
hf_compare.json in --out (default $OUT, else the current folder); our stderr
goes to hf_compare-SHAPE.log there. Exit status 1 when a shape fails.

CPU check of this script (no GPU): --device-ours refdev --torch-device cpu
--shapes tiny-llama,tiny-gemma. --selftest also feeds the rule HF's own
tokens, an f32 model's tokens (must pass) and corrupted tokens (must fail).
When $ACTORSERVE_LD_LIBRARY_PATH is set it becomes LD_LIBRARY_PATH for our
binary only (tests/gpu/run.sh: python keeps its own libraries).
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for d in (HERE, os.path.join(ROOT, "tools")):  # the bundle holds it next to this file
    if os.path.exists(os.path.join(d, "make_random_model.py")):
        sys.path.insert(0, d)
        break
import make_random_model as mrm  # noqa: E402

UNIT = 2.0 ** -8


def dumps(obj):
    """Indented JSON with lists of numbers on one line."""
    text = json.dumps(obj, indent=1)
    return re.sub(r"\[\s+([-0-9.,\seE]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def default_bin():
    for p in (os.environ.get("ACTORSERVE_BIN"), os.path.join(HERE, "actorserve"),
              os.path.join(ROOT, "build", "actorserve")):
        if p and os.path.exists(p):
            return p
    return os.path.join(ROOT, "build", "actorserve")


def bin_env():
    env = dict(os.environ)
    if os.environ.get("ACTORSERVE_LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = os.environ["ACTORSERVE_LD_LIBRARY_PATH"]
    return env


def run_ours(a, model_dir, prompt, log_path):
    """Our greedy tokens (list of ints), or raises RuntimeError with the reason."""
    cmd = [a.bin, "generate", model_dir, "--device", a.device_ours,
           "--ids", ",".join(map(str, prompt)), "--max-new-tokens", str(a.new), "--ignore-eos"]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, env=bin_env())
    except subprocess.TimeoutExpired as e:
        err = e.stderr or b""
        with open(log_path, "w") as f:
            f.write("$ %s\n[timeout after %d s]\n--- stderr\n%s"
                    % (" ".join(cmd), a.timeout,
                       err.decode("utf-8", "replace") if isinstance(err, bytes) else err))
        raise RuntimeError("timeout after %d s" % a.timeout)
    dt = time.time() - t0
    with open(log_path, "w") as f:
        f.write("$ %s\n[rc %d, %.2f s]\n--- stdout\n%s--- stderr\n%s"
                % (" ".join(cmd), p.returncode, dt, p.stdout, p.stderr))
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise RuntimeError("exit status %d: %s" % (p.returncode, tail))
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    for ln in reversed(lines):
        try:
            return [int(t) for t in ln.split()], round(dt, 2)
        except ValueError:
            continue
    raise RuntimeError("no line of token ids on stdout: %r" % p.stdout[-200:])


def load_hf(model_dir, device):
    import torch
    from transformers import AutoModelForCausalLM
    # Loaded on the CPU, then moved: device_map needs accelerate in some versions.
    m = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager",
                                             **mrm._dtype_kw(torch)).to(device)
    m.eval()
    # eos ignored as --ignore-eos does it: nothing stops and nothing is masked
    # (min_new_tokens would mask eos: a different argmax where eos is the best).
    m.generation_config.eos_token_id = None
    m.generation_config.min_new_tokens = None
    return m


def hf_greedy(m, prompt, new, device):
    import torch
    ids = torch.tensor([prompt], device=device)
    with torch.no_grad():
        out = m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                         do_sample=False, pad_token_id=0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    toks = out[0, len(prompt):].tolist()
    if len(toks) != new:
        raise RuntimeError("HF generated %d tokens, not %d" % (len(toks), new))
    return toks


def teacher_forced(m, prompt, toks, device):
    """HF's logits (float32, on the CPU) predicting each of toks after prompt + toks[:j]."""
    import torch
    ids = torch.tensor([prompt + toks], device=device)
    with torch.no_grad():
        lg = m(input_ids=ids, use_cache=False).logits[0]
    return lg[len(prompt) - 1:len(prompt) - 1 + len(toks)].float().cpu()


def judge(m, prompt, hf, ours, device, units, vocab):
    """The equality rule on one continuation; returns a result dict."""
    import torch
    n = len(hf)
    r = {"ours": ours, "hf": hf}
    if len(ours) != n or any(t < 0 or t >= vocab for t in ours):
        r.update(passed=False, reason="ours has %d tokens (want %d) or ids outside the vocabulary"
                 % (len(ours), n))
        return r
    first = next((i for i in range(n) if ours[i] != hf[i]), None)
    r["equal_prefix"] = n if first is None else first
    r["n_equal"] = sum(1 for a, b in zip(ours, hf) if a == b)
    if first is None:
        r.update(passed=True, reason="all %d tokens equal" % n, divergences=[])
        return r
    lg = teacher_forced(m, prompt, ours, device)
    mx = lg.max(-1).values
    mine = lg[torch.arange(n), torch.tensor(ours)]
    scale = lg.abs().max(-1).values
    top2 = lg.topk(2, -1).values
    per = []
    for j in range(n):
        margin, tol = float(mx[j] - mine[j]), units * UNIT * float(scale[j])
        per.append({"pos": j, "ours": ours[j], "hf_argmax": int(lg[j].argmax()),
                    "margin": round(margin, 5), "tol": round(tol, 5),
                    "max_logit": round(float(mx[j]), 4),
                    "top2_gap": round(float(top2[j, 0] - top2[j, 1]), 5),
                    "tie": margin <= tol})
    checked = per[first:]
    bad = [p for p in checked if not p["tie"]]
    r["divergences"] = [p for p in checked if p["ours"] != p["hf_argmax"]]
    r["max_margin"] = max(p["margin"] for p in checked)
    r["margins"] = [p["margin"] for p in per]
    r["tols"] = [p["tol"] for p in per]
    r["passed"] = not bad
    if bad:
        b = bad[0]
        r["reason"] = ("first difference at token %d; %d of our next %d tokens are not ties, the first "
                       "at %d: token %d margin %.4f > tol %.4f (HF best %d, logit %.3f)"
                       % (first, len(bad), len(checked), b["pos"], b["ours"], b["margin"], b["tol"],
                          b["hf_argmax"], b["max_logit"]))
    else:
        w = max(checked, key=lambda p: p["margin"] - p["tol"])
        r["reason"] = ("first difference at token %d, then every token a tie: %d below HF's best, "
                       "the closest to its tolerance at token %d: margin %.4f, tol %.4f"
                       % (first, len(r["divergences"]), w["pos"], w["margin"], w["tol"]))
    return r


def selftest(m, prompt, hf, device, units, vocab, shape, seed, init_range):
    """The rule against known answers: HF's own tokens and an f32 model's pass, corrupted fail."""
    out = {}
    r = judge(m, prompt, hf, list(hf), device, units, vocab)
    out["hf-own"] = (r["passed"], r["reason"])
    f32 = mrm.build(shape, seed, device, init_range).float()
    f32.load_state_dict({k: v.float() for k, v in m.state_dict().items()}, strict=False)
    f32.config._attn_implementation = "eager"
    f32.generation_config.eos_token_id = None
    tf = hf_greedy(f32, prompt, len(hf), device)
    del f32
    r = judge(m, prompt, hf, tf, device, units, vocab)
    out["f32-model"] = (r["passed"], r["reason"])
    bad = list(hf)
    lg = teacher_forced(m, prompt, hf, device)
    bad[5] = int(lg[5].argmin())  # HF's worst token at step 5
    r = judge(m, prompt, hf, bad, device, units, vocab)
    out["corrupted"] = (not r["passed"], r["reason"])
    ok = out["hf-own"][0] and out["f32-model"][0] and out["corrupted"][0]
    for k, (good, why) in out.items():
        print("  selftest %-10s %s: %s" % (k, "ok" if good else "WRONG", why), flush=True)
    return ok, {k: {"as_expected": v[0], "reason": v[1]} for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="gemma-2b,llama-3.2-1b")
    ap.add_argument("--models-dir", default="/tmp/actorserve-gpu-models",
                    help="model folders SHAPE (made when missing)")
    ap.add_argument("--seed", type=int, default=0, help="weights seed (0: the anchor's weights)")
    ap.add_argument("--init-range", default="gemma-2b=0.05",
                    help="SHAPE=R,...: initializer_range for these shapes (folder SHAPE-initR)")
    ap.add_argument("--prompt-seed", type=int, default=1234)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--bin", default=default_bin(), help="the actorserve binary")
    ap.add_argument("--device-ours", default="cuda", help="actorserve --device (cuda, refdev, cpu)")
    ap.add_argument("--torch-device", default="cuda", help="where transformers runs (cuda, cpu)")
    ap.add_argument("--tie-units", type=float, default=12.0,
                    help="tie tolerance in units of 2^-8 * max|logit| (default 12)")
    ap.add_argument("--timeout", type=int, default=180, help="seconds for one actorserve run")
    ap.add_argument("--out", default=os.environ.get("OUT") or ".", help="folder for the JSON and logs")
    ap.add_argument("--selftest", action="store_true",
                    help="also check the rule on HF's own, an f32 model's and corrupted tokens")
    a = ap.parse_args()

    inits = {k: float(v) for k, v in (x.split("=") for x in a.init_range.split(",") if x)}
    import torch
    import transformers
    os.makedirs(a.out, exist_ok=True)
    res = {"rule": "equal, or from the first difference on every token's HF teacher-forced margin "
                   "<= %g * 2^-8 * max|logit|" % a.tie_units,
           "bin": a.bin, "device_ours": a.device_ours, "torch_device": a.torch_device,
           "torch": torch.__version__, "transformers": transformers.__version__,
           "gpu": torch.cuda.get_device_name(0) if a.torch_device.startswith("cuda") else None,
           "prompt_seed": a.prompt_seed, "new": a.new, "shapes": {}}
    all_ok = True
    for shape in [s for s in a.shapes.split(",") if s]:
        t0 = time.time()
        r = {"shape": shape}
        res["shapes"][shape] = r
        try:
            ir = inits.get(shape)
            d = os.path.join(a.models_dir, shape if ir is None else "%s-init%g" % (shape, ir))
            mrm.ensure(shape, d, a.seed, a.torch_device, init_range=ir)
            r["model_dir"], r["initializer_range"] = d, mrm.config(shape, ir).initializer_range
            vocab = mrm.config(shape).vocab_size
            rng = random.Random(a.prompt_seed)
            prompt = [rng.randrange(vocab) for _ in range(a.prompt_len)]
            r["prompt"] = prompt
            try:
                ours, r["ours_s"] = run_ours(a, d, prompt, os.path.join(a.out, "hf_compare-%s.log" % shape))
            except RuntimeError as e:  # still run HF: its tokens are worth keeping
                ours, r["ours_error"] = None, str(e)
            t1 = time.time()
            m = load_hf(d, a.torch_device)
            hf = hf_greedy(m, prompt, a.new, a.torch_device)
            r["hf_s"] = round(time.time() - t1, 2)
            if ours is None:
                r.update(passed=False, hf=hf, reason="actorserve failed: " + r["ours_error"])
            else:
                r.update(judge(m, prompt, hf, ours, a.torch_device, a.tie_units, vocab))
            if a.selftest:
                ok, r["selftest"] = selftest(m, prompt, hf, a.torch_device, a.tie_units, vocab,
                                             shape, a.seed, ir)
                if not ok:
                    r["passed"] = False
                    r["reason"] += "; SELFTEST WRONG"
            del m
            if a.torch_device.startswith("cuda"):
                torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001 (one shape's failure must not hide the next)
            r.update(passed=False, reason="%s: %s" % (type(e).__name__, e))
        r["seconds"] = round(time.time() - t0, 1)
        all_ok &= bool(r.get("passed"))
        print("%s %s: %s (%.0f s)" % ("PASS" if r.get("passed") else "FAIL", shape, r["reason"],
                                     r["seconds"]), flush=True)
        for p in r.get("divergences", []):
            print("  token %2d: ours %d, HF best %d, margin %.4f (tol %.4f, HF top-2 gap %.4f)"
                  % (p["pos"], p["ours"], p["hf_argmax"], p["margin"], p["tol"], p["top2_gap"]))
    res["passed"] = all_ok
    path = os.path.join(a.out, "hf_compare.json")
    with open(path, "w") as f:
        f.write(dumps(res) + "\n")
    print("hf_compare: %s (%s)" % ("PASS" if all_ok else "FAIL", path), flush=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
