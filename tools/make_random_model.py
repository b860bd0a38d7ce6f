#!/usr/bin/env python3
"""tools/make_random_model.py — a Hugging Face model folder with random weights
of a named shape, for the GPU checks and benchmarks (no real checkpoint is
needed: speed depends only on the shape, and the comparison with transformers
runs on the very weights written).

    python3 tools/make_random_model.py --shape gemma-2b --out /tmp/m/gemma-2b [--seed 0] [--device cuda]
                                       [--init-range R] [--reuse]

Shapes:
  gemma-2b       GemmaConfig of ../shared/anchors/hf_generate.py gemma2b() (2.51 B params)
  llama-3.2-1b   LlamaConfig of ../shared/anchors/hf_generate.py llama1b() (1.24 B params;
                 as in the anchor: rope_theta 5e5, no rope scaling)
  tiny-llama     the llama structure at hidden 64, 2 layers, vocab 512 (GQA 4/2, tied,
                 llama3 rope scaling with all three frequency bands hit), for CPU tests
  tiny-gemma     the gemma structure at hidden 64, 2 layers, vocab 512 (MQA, tied, GeGLU)
                 (both tiny ones with initializer_range 0.15, see TINY_INIT)

Weights are initialised exactly as the anchor does it: torch.manual_seed(seed),
then AutoModelForCausalLM.from_config(cfg, dtype=bfloat16) created under
torch.device(device) (transformers' own _init_weights: normal(0,
initializer_range) linears and embeddings, norms at their defaults). With
--seed 0 --device cuda the big shapes get the anchor's very weights.
--init-range R replaces the shape's initializer_range (0.02; tiny 0.15): at 0.02 the
gemma-2b shape's greedy continuation is degenerate (after one token it
repeats one token forever, whatever the prompt or a bug in rope or an MLP),
which makes a token comparison weak; 0.05 gives varied tokens. Written
with save_pretrained(safe_serialization=True) in bf16 as one model.safetensors,
plus config.json, generation_config.json and random_model.json (shape, seed,
versions; read back to reuse a folder).

Also importable: make(shape, out, seed=0, device="cpu") and ensure(...) (reuse
a folder made with the same shape and seed).
"""
import argparse
import json
import os
import sys
import time

SHAPES = ("gemma-2b", "llama-3.2-1b", "tiny-llama", "tiny-gemma")
MARKER = "random_model.json"
# The tiny shapes use initializer_range 0.15 (as tests/fixtures/make_fixtures.py
# does) instead of 0.02: at hidden 64 with 0.02 the tied head makes every
# greedy step repeat the last prompt token, which tests nothing.
TINY_INIT = 0.15
DEFAULT_INIT = {"gemma-2b": 0.02, "llama-3.2-1b": 0.02, "tiny-llama": TINY_INIT,
                "tiny-gemma": TINY_INIT}  # = config(shape).initializer_range


def quiet_progress():
    """No progress bars in the logs (loading and writing shards)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as tl
        tl.disable_progress_bar()
    except ImportError:
        pass


def config(shape, init_range=None):
    """The transformers config of a named shape (initializer_range replaced when given)."""
    cfg = _config(shape)
    if init_range is not None:
        cfg.initializer_range = init_range
    return cfg


def _config(shape):
    from transformers import GemmaConfig, LlamaConfig
    quiet_progress()
    if shape == "gemma-2b":  # = anchors/hf_generate.py gemma2b()
        return GemmaConfig(vocab_size=256000, hidden_size=2048, intermediate_size=16384,
                           num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1,
                           head_dim=256, max_position_embeddings=8192,
                           hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True)
    if shape == "llama-3.2-1b":  # = anchors/hf_generate.py llama1b()
        return LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                           num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                           max_position_embeddings=8192, rope_theta=500000.0,
                           tie_word_embeddings=True)
    if shape == "tiny-llama":
        # head_dim 16, theta 5e5: wavelengths 6..610k positions, so with
        # Llama 3.2's scaling (original 8192, low 1, high 4, factor 32, max
        # positions 131072) the rotary frequencies fall in all three llama3
        # bands (kept, smoothed, divided by 32).
        return LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=256,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=131072, rope_theta=500000.0,
                           rope_scaling={"rope_type": "llama3", "factor": 32.0,
                                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                         "original_max_position_embeddings": 8192},
                           tie_word_embeddings=True, initializer_range=TINY_INIT)
    if shape == "tiny-gemma":
        return GemmaConfig(vocab_size=512, hidden_size=64, intermediate_size=256,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                           head_dim=16, max_position_embeddings=8192,
                           hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
                           initializer_range=TINY_INIT)
    raise ValueError("unknown shape %r (known: %s)" % (shape, ", ".join(SHAPES)))


def _dtype_kw(torch):
    """transformers 5 names the argument dtype; 4.x torch_dtype."""
    import transformers
    major = int(transformers.__version__.split(".")[0])
    return {"dtype" if major >= 5 else "torch_dtype": torch.bfloat16}


def build(shape, seed=0, device="cpu", init_range=None):
    """The random-weight model (bf16, eval) on device, initialised as the anchor does."""
    import torch
    from transformers import AutoModelForCausalLM
    cfg = config(shape, init_range)
    torch.manual_seed(seed)
    with torch.device(device):
        m = AutoModelForCausalLM.from_config(cfg, **_dtype_kw(torch))
    return m.eval()


def read_marker(out):
    try:
        with open(os.path.join(out, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def make(shape, out, seed=0, device="cpu", quiet=False, init_range=None):
    """Writes the folder (replacing what is there); returns its path."""
    import torch
    import transformers
    from transformers import GenerationConfig
    t0 = time.time()
    m = build(shape, seed, device, init_range)
    nparam = sum(p.numel() for p in m.parameters())
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):  # no stale shards or index from an earlier shape
        p = os.path.join(out, f)
        if os.path.isfile(p):
            os.remove(p)
    # Greedy by default, eos/bos/pad of the config (the engine reads this file).
    c = m.config
    m.generation_config = GenerationConfig(bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id,
                                           pad_token_id=c.pad_token_id, do_sample=False)
    # One file: max_shard_size above gemma-2b's 5.0 GB (4.x defaults to 5GB shards).
    m.save_pretrained(out, safe_serialization=True, max_shard_size="50GB")
    with open(os.path.join(out, MARKER), "w") as f:
        json.dump({"shape": shape, "seed": seed, "device": device, "params": nparam,
                   "initializer_range": m.config.initializer_range,
                   "dtype": "bfloat16", "torch": torch.__version__,
                   "transformers": transformers.__version__,
                   "made": time.strftime("%Y-%m-%dT%H:%M:%S")}, f, indent=1)
    del m
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    if not quiet:
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        print("%s: %s, %.4g M params, %.4g MB on disk, seed %d, %s, %.1f s"
              % (out, shape, nparam / 1e6, size / 1e6, seed, device, time.time() - t0), flush=True)
    return out


def ensure(shape, out, seed=0, device="cpu", quiet=False, init_range=None):
    """Reuses out when it holds this shape, seed and init (and its weights), else makes it."""
    mk = read_marker(out)
    want_init = DEFAULT_INIT[shape] if init_range is None else init_range  # no transformers import
    if (mk and mk.get("shape") == shape and mk.get("seed") == seed
            and mk.get("initializer_range") == want_init
            and os.path.exists(os.path.join(out, "config.json"))
            and (os.path.exists(os.path.join(out, "model.safetensors"))
                 or os.path.exists(os.path.join(out, "model.safetensors.index.json")))):
        if not quiet:
            print("%s: reusing %s (seed %d, made on %s)" % (out, shape, seed, mk.get("device")),
                  flush=True)
        return out
    return make(shape, out, seed, device, quiet, init_range)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", required=True, choices=SHAPES)
    ap.add_argument("--out", required=True, help="the model folder to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="where to initialise: cpu (default) or cuda")
    ap.add_argument("--init-range", type=float, default=None,
                    help="initializer_range instead of the shape's (0.02; tiny shapes 0.15)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep OUT when it already holds this shape and seed")
    a = ap.parse_args()
    (ensure if a.reuse else make)(a.shape, a.out, a.seed, a.device, init_range=a.init_range)
    return 0


if __name__ == "__main__":
    sys.exit(main())
