#!/usr/bin/env python3
"""train_tiny_model.py — trains the small model actorserve ships (models/tiny-kjv).

Run by hand (never from `make test`):

    python3 tools/train_tiny_model.py            # at most 16 minutes of training on 2 CPU cores
    python3 tools/train_tiny_model.py --minutes 0   # 500 steps whatever they take: exactly reproducible
    python3 tools/train_tiny_model.py --steps 20 --out /tmp/tiny   # a quick smoke run

What it does (fixed seed; with --minutes 0 the step count alone sets the schedule, so the run is
reproducible; by default a busy machine trains fewer steps within the time bound):

1. Reads the King James Bible (public domain) from the Debian package bible-kjv-text.
   That package holds the text only in the compressed, randomly accessible format of
   the `bible` program (/usr/lib/bible.data, magic "EC02Compressed Data File"), so the
   text is decoded with that program (package bible-kjv, a dependency of installing
   bible-kjv-text via apt): `bible -f gen1:1-rev22:21` prints all 31,102 verses, one per
   line, as "Ge1:1 In the beginning God created ...". Install with
   `apt-get install -y bible-kjv-text bible-kjv`.
2. Trains a byte-level BPE tokenizer (vocabulary 4096) with the `tokenizers` library:
   Qwen2's split regex + ByteLevel (the exact pattern actors/llm/tok_pretok.c recognises),
   NFC normalizer, special tokens <|endoftext|>, <|im_start|>, <|im_end|>, and a plain
   ChatML chat template (family "chatml" in actors/llm/tok_template.c).
3. Trains a small Llama (hidden 256, 6 layers, 8 heads / 4 KV heads, SwiGLU 688, tied
   embeddings, context 256; ~5.4 M parameters) with transformers' LlamaForCausalLM on
   the CPU (torch limited to 2 threads): next-token prediction on random 256-token
   windows of the verses, plus a share of ChatML conversations ("Recite a verse about
   water." -> a verse that contains "water") so that chat prompts get an answer.
4. Saves the model (bf16 safetensors), tokenizer.json, tokenizer_config.json,
   generation_config.json and a README.md to models/tiny-kjv/, reloads the folder and
   prints greedy and sampled continuations.

It re-executes itself in build/venv-fixtures (torch, transformers, tokenizers), the venv of
tests/fixtures/make_fixtures.py.
"""
import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV = os.path.join(ROOT, "build", "venv-fixtures")


def ensure_venv():
    py = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if not os.path.exists(py):
        sys.exit("%s missing: run python3 tests/fixtures/make_fixtures.py first "
                 "(it creates the venv with torch, transformers and tokenizers)" % VENV)
    os.execv(py, [py] + sys.argv)


ensure_venv()

import torch  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

# Qwen2's pre-tokenizer regex, byte for byte as actors/llm/tok_pretok.c recognises it
QWEN2_RE = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# plain ChatML (no default system prompt): family "chatml" in actors/llm/tok_template.c
CHATML_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
                   "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                   "{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
N_VERSES = 31102

# words the chat examples ask about; each occurs in at least a few verses
TOPICS = """love light water bread wine fire earth heaven sea mountain shepherd sheep king peace war
sword faith hope mercy sin death life wisdom fear joy heart soul spirit truth prayer angel children
father mother brother woman city temple house gold silver tree fruit river wilderness night day sun
moon stars rain wind lion eagle fish horse law covenant prophet servant blood grace glory praise
righteousness judgment salvation kingdom throne word voice name land field harvest seed garden rock
stone gate way strength power hand eye mouth tongue friend enemy poor rich money oil honey milk
cloud thunder snow dust ship gift altar lamb ox camel dove vine fig olive cedar wheat corn barley
salt darkness morning evening sabbath feast music song harp trumpet battle prison bed table cup""".split()
PROMPTS_TOPIC = ["Recite a verse about {w}.", "Give me a verse about {w}.", "What does the Bible say about {w}?",
                 "Tell me about {w}.", "Quote scripture about {w}.", "Do you know a verse about {w}?",
                 "Say something about {w}.", "{W}?"]
PROMPTS_ANY = ["Recite a verse.", "Hello!", "Hi", "Tell me something.", "Say a verse from the Bible.",
               "Quote the scriptures.", "What should I read today?", "Speak to me.", "Who are you?",
               "Can you help me?", "Could you explain something to me?", "Give me a word of wisdom."]


def log(*a):
    print(*a, flush=True)


# ---- corpus ------------------------------------------------------------------------------

def read_kjv():
    """All verses of the KJV from bible-kjv-text, decoded by the `bible` program."""
    exe = shutil.which("bible")
    if exe is None or not os.path.exists("/usr/lib/bible.data"):
        sys.exit("the KJV text is missing: apt-get install -y bible-kjv-text bible-kjv")
    out = subprocess.run([exe, "-f", "gen1:1-rev22:21"], check=True, capture_output=True, cwd="/",
                         env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}).stdout.decode("utf-8")
    verses = []
    for line in out.splitlines():
        m = re.match(r"^(\S+?\d+:\d+) (.*)$", line)
        if m:
            verses.append(m.group(2).strip())
    if len(verses) != N_VERSES:
        sys.exit("expected %d verses from `bible`, got %d" % (N_VERSES, len(verses)))
    return verses


def chat_text(user, answer):
    return "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n%s<|im_end|>\n" % (user, answer)


class ChatMaker:
    """Random ChatML examples: a question about a topic word answered by a verse containing it."""

    def __init__(self, verses, rng):
        self.verses, self.rng = verses, rng
        self.by_topic = {}
        for w in TOPICS:
            pat = re.compile(r"\b%s\b" % re.escape(w), re.IGNORECASE)
            hits = [i for i, v in enumerate(verses) if pat.search(v)]
            if len(hits) >= 3:
                self.by_topic[w] = hits
        self.topics = sorted(self.by_topic)

    def example(self):
        r = self.rng
        if r.random() < 0.8:
            w = r.choice(self.topics)
            i = r.choice(self.by_topic[w])
            q = r.choice(PROMPTS_TOPIC).format(w=w, W=w.capitalize())
        else:
            i = r.randrange(len(self.verses))
            q = r.choice(PROMPTS_ANY)
        ans = self.verses[i]
        if r.random() < 0.3 and i + 1 < len(self.verses):
            ans += " " + self.verses[i + 1]
        return chat_text(q, ans)


# ---- tokenizer -----------------------------------------------------------------------------

def train_tokenizer(texts, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, min_frequency=2,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, tr)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def tokenizer_config():
    return {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>", "unk_token": None, "add_bos_token": False,
            "chat_template": CHATML_TEMPLATE, "model_max_length": 256, "clean_up_tokenization_spaces": False}


# ---- training ------------------------------------------------------------------------------

def lr_at(step, progress, peak, warmup):
    """linear warm-up over `warmup` steps, then cosine from peak to 10% as progress goes 0 -> 1"""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_batch(stream, chat_ids, eot, rng_t, rng_py, maker_rows, batch, ctx):
    """batch rows of ctx+1 tokens: random windows of the verse stream, plus maker_rows rows of
    packed chat examples (each followed by <|endoftext|>)."""
    rows = []
    n_text = batch - maker_rows
    starts = torch.randint(0, stream.numel() - ctx - 1, (n_text,), generator=rng_t)
    for s in starts.tolist():
        rows.append(stream[s:s + ctx + 1])
    for _ in range(maker_rows):
        ids = []
        while len(ids) < ctx + 1:
            ids += chat_ids[rng_py.randrange(len(chat_ids))] + [eot]
        rows.append(torch.tensor(ids[:ctx + 1], dtype=torch.long))
    x = torch.stack(rows)
    return x[:, :-1], x[:, 1:]


@torch.no_grad()
def evaluate(model, val, ctx, n=16):
    model.eval()
    g = torch.Generator().manual_seed(1234)
    starts = torch.randint(0, val.numel() - ctx - 1, (n,), generator=g).tolist()
    x = torch.stack([val[s:s + ctx + 1] for s in starts])
    loss = model(input_ids=x[:, :-1], labels=x[:, :-1].clone()).loss  # HF shifts labels itself
    model.train()
    return loss.item()


def samples(out_dir, seed):
    """reloads the saved folder (f32, as our engine computes) and prints continuations"""
    tok = AutoTokenizer.from_pretrained(out_dir)
    model = LlamaForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    chat = tok.apply_chat_template([{"role": "user", "content": "Recite a verse about water."}],
                                   tokenize=False, add_generation_prompt=True)
    chat2 = tok.apply_chat_template([{"role": "user", "content": "Could you explain what is dask?"}],
                                    tokenize=False, add_generation_prompt=True)
    prompts = ["In the beginning", "And the LORD said", "Blessed are the", chat, chat2]
    lines = []
    for p in prompts:
        ids = tok(p, return_tensors="pt", add_special_tokens=False).input_ids
        for mode in ("greedy", "sampled"):
            kw = dict(do_sample=False) if mode == "greedy" else dict(do_sample=True, temperature=0.8, top_k=40)
            torch.manual_seed(seed)
            with torch.no_grad():
                o = model.generate(ids, max_new_tokens=48, pad_token_id=tok.pad_token_id, **kw)
            text = tok.decode(o[0, ids.shape[1]:], skip_special_tokens=True)
            lines.append("%-7s %r -> %r" % (mode, p, text))
            log(lines[-1])
    return lines


def write_readme(out_dir, info, sample_lines):
    s = info
    body = """# tiny-kjv

A very small Llama-architecture language model, trained from scratch on the King James
Version of the Bible, that ships with actorserve so that `make run` and the tests have a
model to serve without downloading anything. It writes KJV-flavoured English; it knows
nothing else and is not useful as an assistant. Do not expect facts from it.

## Files

Hugging Face format, as `save_pretrained` writes it: `config.json` (`LlamaForCausalLM`),
`model.safetensors` (bf16), `generation_config.json`, and a byte-level BPE tokenizer
(`tokenizer.json`, `tokenizer_config.json` with a plain ChatML `chat_template`; eos
`<|im_end|>`, pad `<|endoftext|>`, no BOS). Loads in transformers and in actorserve's C
engine.

## Model

| | |
|---|---|
| architecture | Llama: RMSNorm, RoPE (theta 10000), SwiGLU, GQA |
| hidden / layers / heads / KV heads | {hidden} / {layers} / {heads} / {kv_heads} |
| intermediate (MLP) | {inter} |
| vocabulary | {vocab} (3 special tokens, 256 bytes, BPE merges) |
| context | {ctx} tokens |
| embeddings | tied (input embedding = output head) |
| parameters | {params:,} |

## Training

Made by `tools/train_tiny_model.py` (run by hand; fixed seed {seed}; this run stopped after
{steps_done} steps by its {bound}; `--minutes 0 --steps {steps_done}` trains the same number of
steps with a schedule that depends on the step count only):

- **Text**: all {verses:,} verses of the King James Bible from the Debian package
  `bible-kjv-text` 4.38, decoded with the `bible` program of package `bible-kjv`
  (`bible -f gen1:1-rev22:21`), one verse per line without the references. One verse in 50
  is held out for validation.
- **Tokenizer**: `tokenizers` BpeTrainer, vocabulary {vocab}, NFC normalizer, Qwen2's split
  regex + ByteLevel pre-tokenizer, ByteLevel decoder.
- **Chat**: {chat_pct}% of the training rows are packed ChatML conversations in which the user
  asks for a verse ("Recite a verse about water.", "What does the Bible say about mercy?",
  "Hello!") and the assistant answers with a verse (one containing the topic word, when there
  is one).
- **Optimisation**: next-token cross-entropy over every token, AdamW (betas 0.9/0.95, weight
  decay 0.1), peak learning rate {lr}, {warmup} warm-up steps then cosine to 10%, gradient
  clipping 1.0, batch {batch} × {ctx} tokens, {steps_done} steps ({tokens:,} tokens, about
  {epochs:.1f} passes over the text), {precision} on {threads} CPU threads, {minutes:.1f} minutes.
  torch {torch}, transformers {transformers}, tokenizers {tokenizers}.
- **Result**: training loss {train_loss:.3f} (mean of the last 20 steps), validation loss
  {val_loss:.3f} on held-out verses.

## Samples (transformers, f32, greedy and temperature 0.8 / top-k 40)

```
{samples}
```

## License

The King James Version text is in the public domain (outside the United Kingdom, where the
Crown's letters patent apply to printing; this model contains no copy of the text, only
weights trained on it). The weights, tokenizer and this card are released under the same
terms as actorserve, and may also be used as public domain.
""".format(samples="\n".join(sample_lines), **s)
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(body)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "tiny-kjv"))
    ap.add_argument("--steps", type=int, default=500, help="optimiser steps at most")
    ap.add_argument("--minutes", type=float, default=16.0,
                    help="training time at most (0: no bound). The learning-rate schedule follows "
                         "max(step/steps, elapsed/minutes), so it completes whichever bound comes first; "
                         "with --minutes 0 the run depends on the seed only (exactly reproducible)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2.5e-3)
    ap.add_argument("--no-autocast", action="store_true", help="train in plain f32 (default: bf16 autocast)")
    ap.add_argument("--chat-share", type=float, default=0.125, help="share of rows that are chat examples")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1611)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    t0 = time.time()

    verses = read_kjv()
    train_v = [v for i, v in enumerate(verses) if i % 50 != 49]
    val_v = [v for i, v in enumerate(verses) if i % 50 == 49]
    maker = ChatMaker(train_v, rng)
    chats = [maker.example() for _ in range(20000)]
    log("%d verses (%d train, %d validation), %d chat topics, %d chat examples"
        % (len(verses), len(train_v), len(val_v), len(maker.topics), len(chats)))

    vocab = 4096
    tok = train_tokenizer(train_v + chats[:2000], vocab)
    assert tok.get_vocab_size() == vocab, tok.get_vocab_size()
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    eot, im_end = ids["<|endoftext|>"], ids["<|im_end|>"]
    stream = torch.tensor(tok.encode("\n".join(train_v) + "\n").ids, dtype=torch.long)
    val = torch.tensor(tok.encode("\n".join(val_v) + "\n").ids, dtype=torch.long)
    chat_ids = [e.ids for e in tok.encode_batch(chats)]
    log("tokenizer: vocab %d; train stream %d tokens, validation %d (%.2f chars/token)"
        % (vocab, stream.numel(), val.numel(), len("\n".join(train_v)) / stream.numel()))

    ctx = 256
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=688, num_hidden_layers=6,
                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=ctx,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, hidden_act="silu",
                      initializer_range=0.02, bos_token_id=eot, eos_token_id=[im_end, eot], pad_token_id=eot,
                      attention_bias=False, mlp_bias=False)
    model = LlamaForCausalLM(cfg)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log("model: %d parameters" % n_params)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    warmup = min(100, max(1, args.steps // 10))
    autocast = not args.no_autocast
    chat_rows = int(round(args.batch * args.chat_share))
    g = torch.Generator().manual_seed(args.seed)
    losses = []
    t_train = time.time()
    step = 0
    val_loss = float("nan")
    for step in range(args.steps):
        progress = step / args.steps
        if args.minutes > 0:
            progress = max(progress, (time.time() - t_train) / (args.minutes * 60))
        if progress >= 1.0:
            log("--minutes %.1f reached after %d of %d steps" % (args.minutes, step, args.steps))
            break
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, progress, args.lr, warmup)
        x, y = make_batch(stream, chat_ids, eot, g, rng, chat_rows, args.batch, ctx)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == args.steps - 1:
            el = time.time() - t_train
            msg = "step %5d/%d  loss %.3f  lr %.2e  %.1f min  %.2f s/step" % (
                step, args.steps, sum(losses[-20:]) / len(losses[-20:]), opt.param_groups[0]["lr"], el / 60,
                el / (step + 1))
            if step % 200 == 0 or step == args.steps - 1:
                val_loss = evaluate(model, val, ctx)
                msg += "  val %.3f" % val_loss
            log(msg)
    else:
        step = args.steps
    steps_done = step if step < args.steps else args.steps
    train_minutes = (time.time() - t_train) / 60
    val_loss = evaluate(model, val, ctx)
    train_loss = sum(losses[-20:]) / max(1, len(losses[-20:]))
    log("trained %d steps in %.1f min: loss %.3f, validation %.3f" % (steps_done, train_minutes, train_loss, val_loss))

    # ---- save --------------------------------------------------------------------------
    out = args.out
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    model.config.use_cache = True
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    GenerationConfig(bos_token_id=eot, eos_token_id=[im_end, eot], pad_token_id=eot,
                     max_new_tokens=128, do_sample=True, temperature=0.8, top_k=40).save_pretrained(out)
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(), f, indent=2)
        f.write("\n")
    for extra in ("chat_template.jinja",):  # the template lives in tokenizer_config.json only
        if os.path.exists(os.path.join(out, extra)):
            os.remove(os.path.join(out, extra))

    log("\nsamples (reloaded from %s, f32):" % out)
    sample_lines = samples(out, args.seed)
    info = dict(hidden=256, layers=6, heads=8, kv_heads=4, inter=688, vocab=vocab, ctx=ctx, params=n_params,
                seed=args.seed, verses=len(verses), chat_pct=round(100 * chat_rows / args.batch, 1), lr=args.lr,
                warmup=warmup, batch=args.batch, steps_done=steps_done, tokens=steps_done * args.batch * ctx,
                epochs=steps_done * args.batch * ctx / stream.numel() * (1 - chat_rows / args.batch),
                threads=args.threads, minutes=train_minutes,
                bound="time bound (--minutes %g)" % args.minutes if steps_done < args.steps else "step count",
                precision="f32" if args.no_autocast else "bf16 autocast (f32 weights and optimiser state)", torch=torch.__version__,
                transformers=transformers.__version__, tokenizers=__import__("tokenizers").__version__,
                train_loss=train_loss, val_loss=val_loss)
    write_readme(out, info, sample_lines)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    log("\nwrote %s: %s (%.1f MB in all); %.1f min overall" % (
        out, ", ".join(sorted(os.listdir(out))), total / 1e6, (time.time() - t0) / 60))


if __name__ == "__main__":
    main()
