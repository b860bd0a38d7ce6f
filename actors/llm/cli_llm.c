/* cli_llm.c — `actorserve generate` and `actorserve embed`: try a Hugging
 * Face model folder from the command line without writing an application.
 *
 *   actorserve generate MODEL_DIR "prompt" [options]
 *     streams the continuation to stdout as it is generated (whole UTF-8
 *     characters), then a summary line on stderr. The prompt is encoded
 *     with the folder's tokenizer (BOS added as transformers does); --chat
 *     formats it as one user message with the family's chat template first.
 *     Sampling defaults come from generation_config.json, as transformers'
 *     generate() takes them; the options override them.
 *   actorserve embed MODEL_DIR "text" ["text" ...]
 *     prints one JSON array (the L2-normalised mean-pooled sentence
 *     embedding) per text, one per line; needs a BERT encoder.
 *
 * --bench turns `generate` into the engine's CPU benchmark: one prefill of
 * the prompt then greedy decode, timed, as one JSON object on stdout (used
 * by bench/llm_cpu.py). Exit status: 0, 1 on an error of the model or the
 * tokenizer, 2 on bad usage.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels.h"
#include "llm.h"

#define AS_CLI_MAX_STOPS 16

/* cli_bench.c: `actorserve bench-llm`. */
int as__cli_bench_llm(int argc, char **argv);

static const char as__cli_usage[] =
    "usage: actorserve generate MODEL_DIR \"prompt\" [options]\n"
    "       actorserve embed MODEL_DIR \"text\" [\"text\" ...]\n"
    "\n"
    "generate: streams the model's continuation of the prompt to stdout.\n"
    "  --max-new-tokens N   tokens to generate at most (default: generation_config.json, else 256)\n"
    "  --temperature T      0 is greedy (default: generation_config.json, else greedy)\n"
    "  --top-k K            keep the K most likely tokens (0: off)\n"
    "  --top-p P            nucleus sampling (1: off)\n"
    "  --seed S             sampling seed (default: from the clock)\n"
    "  --stop STRING        stop when the text contains STRING (repeatable)\n"
    "  --ignore-eos         do not stop at the model's end-of-sequence tokens\n"
    "  --chat               format the prompt as a user message with the chat template\n"
    "  --system TEXT        with --chat: a system message first\n"
    "  --ids 1,2,3          the prompt as token ids (no tokenizer needed)\n"
    "  --bench              time prefill and greedy decode; print JSON, not text\n"
    "  --bench-prompt-tokens N  with --bench: a prompt of N pseudo-random ids\n"
    "  --bench-repeat R     with --bench: runs timed (default 3; medians reported)\n"
    "  --device D           cpu (default), cuda (the first visible GPU), or refdev (the\n"
    "                       device code path on the CPU, for tests)\n"
    "  --kv-tokens N        KV cache size in tokens (default: cpu unbounded; cuda as much\n"
    "                       as fits in 90%% of the GPU's memory)\n"
    "embed: prints one JSON array per text (BERT encoders: mean pooling, L2 norm).\n";

static int as__cli_bad(const char *fmt, const char *a) {
  fprintf(stderr, "actorserve: ");
  fprintf(stderr, fmt, a);
  fprintf(stderr, "\n%s", "try 'actorserve generate --help'\n");
  return 2;
}

static int as__cli_num(const char *s, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || v != v || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

static double as__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Parses "1,2,3" into ids; returns 0 or -1. */
static int as__cli_ids(const char *s, as_ids_t *ids) {
  while (*s) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || v < 0 || v > INT32_MAX || (*end && *end != ','))
      return -1;
    if (as_ids_push(ids, (int32_t)v) != 0)
      return -1;
    s = *end ? end + 1 : end;
  }
  return ids->n > 0 ? 0 : -1;
}

/* Loads the folder's tokenizer: 0, 1 when the folder has none, or -1 (a
 * broken one; the message is printed). */
static int as__cli_tok(const char *dir, as_tokenizer_t **tok) {
  char path[4096], err[512];
  *tok = NULL;
  snprintf(path, sizeof path, "%s/tokenizer.json", dir);
  if (access(path, R_OK) != 0)
    return 1;
  if (as_tokenizer_load(dir, tok, err, sizeof err) != 0) {
    fprintf(stderr, "actorserve: %s\n", err);
    return -1;
  }
  return 0;
}

static int as__cmp_dbl(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* --bench: one prefill of the prompt, then greedy decode of max_new tokens
 * (no stop token), `repeat` times after a short warm-up; medians as JSON. */
static int as__cli_bench(const as_model_t *m, const as_ids_t *prompt, int max_new, int repeat,
                         size_t kv_tokens) {
  char err[512];
  double *pre = calloc((size_t)repeat, sizeof(double)), *dec = calloc((size_t)repeat, sizeof(double));
  int rc = 0, got = 0;
  for (int rep = -1; rep < repeat && rc == 0; rep++) {
    as_gen_t *g;
    as_gen_opts_t o;
    int64_t id;
    const as_gen_event_t *ev;
    int ne, n = 0;
    if ((rc = as_gen_new(&g, m, NULL, kv_tokens, err, sizeof err)) != 0)
      break;
    as_gen_opts_init(&o);
    o.n_stop_ids = 0;
    o.max_new_tokens = rep < 0 ? 4 : max_new; /* rep -1: warm-up */
    as_gen_set_step_tokens(g, (int)prompt->n);
    if ((rc = as_gen_add(g, prompt->v, (int)prompt->n, &o, &id, err, sizeof err)) == 0) {
      double t0 = as__now(), t1 = 0;
      while (rc == 0 && as_gen_active(g) > 0) {
        rc = as_gen_step(g, &ev, &ne, err, sizeof err);
        if (n == 0 && ne > 0)
          t1 = as__now(); /* the prompt is in and the first token sampled */
        n += ne;
      }
      if (rc == 0 && rep >= 0) {
        pre[rep] = t1 - t0;
        dec[rep] = as__now() - t1;
        got = n;
      }
    }
    as_gen_free(g);
  }
  if (rc != 0) {
    fprintf(stderr, "actorserve: %s\n", err);
    free(pre);
    free(dec);
    return 1;
  }
  qsort(pre, (size_t)repeat, sizeof(double), as__cmp_dbl);
  qsort(dec, (size_t)repeat, sizeof(double), as__cmp_dbl);
  double p = pre[repeat / 2], d = dec[repeat / 2];
  printf("{\"engine\": \"actorserve\", \"backend\": \"%s\", \"prompt_tokens\": %zu, "
         "\"new_tokens\": %d, \"prefill_s\": %.6f, \"prefill_tok_s\": %.2f, "
         "\"decode_s\": %.6f, \"decode_tok_s\": %.2f, \"repeat\": %d}\n",
         as_model_device(m), prompt->n, got, p, (double)prompt->n / p, d,
         got > 1 ? (double)(got - 1) / d : 0.0, repeat);
  free(pre);
  free(dec);
  return 0;
}

static int as__cli_generate(int argc, char **argv) {
  const char *dir = NULL, *text = NULL, *ids_arg = NULL, *system = NULL, *device = "cpu";
  const char *stops[AS_CLI_MAX_STOPS];
  double kv_tokens = 0;
  int nstops = 0, chat = 0, ignore_eos = 0, bench = 0, bench_n = 0, repeat = 3;
  int have_max = 0, have_t = 0, have_k = 0, have_p = 0, have_seed = 0;
  double max_new = 0, temp = 0, top_k = 0, top_p = 1, seed = 0, v;
  char err[512];
  int rc = 1;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(as__cli_usage, stdout);
      return 0;
    }
    if (a[0] != '-' || a[1] == '\0') {
      if (dir == NULL)
        dir = a;
      else if (text == NULL)
        text = a;
      else
        return as__cli_bad("unexpected argument '%s'", a);
      continue;
    }
    if (strcmp(a, "--chat") == 0) {
      chat = 1;
      continue;
    }
    if (strcmp(a, "--ignore-eos") == 0) {
      ignore_eos = 1;
      continue;
    }
    if (strcmp(a, "--bench") == 0) {
      bench = 1;
      continue;
    }
    if (i + 1 >= argc)
      return as__cli_bad("option %s needs a value", a);
    const char *val = argv[++i];
    if (strcmp(a, "--max-new-tokens") == 0) {
      if (as__cli_num(val, 0, 1e9, &max_new) != 0 || max_new != floor(max_new))
        return as__cli_bad("--max-new-tokens needs a whole number >= 0, not '%s'", val);
      have_max = 1;
    } else if (strcmp(a, "--temperature") == 0) {
      if (as__cli_num(val, 0, 1e6, &temp) != 0)
        return as__cli_bad("--temperature needs a number >= 0, not '%s'", val);
      have_t = 1;
    } else if (strcmp(a, "--top-k") == 0) {
      if (as__cli_num(val, 0, 1e9, &top_k) != 0 || top_k != floor(top_k))
        return as__cli_bad("--top-k needs a whole number >= 0, not '%s'", val);
      have_k = 1;
    } else if (strcmp(a, "--top-p") == 0) {
      if (as__cli_num(val, 0, 1, &top_p) != 0)
        return as__cli_bad("--top-p needs a number in [0, 1], not '%s'", val);
      have_p = 1;
    } else if (strcmp(a, "--seed") == 0) {
      if (as__cli_num(val, 0, 9.2e18, &seed) != 0 || seed != floor(seed))
        return as__cli_bad("--seed needs a whole number >= 0, not '%s'", val);
      have_seed = 1;
    } else if (strcmp(a, "--stop") == 0) {
      if (nstops == AS_CLI_MAX_STOPS)
        return as__cli_bad("at most 16 --stop strings%s", "");
      if (val[0] == '\0')
        return as__cli_bad("--stop needs a non-empty string%s", "");
      stops[nstops++] = val;
    } else if (strcmp(a, "--device") == 0) {
      device = val;
    } else if (strcmp(a, "--kv-tokens") == 0) {
      if (as__cli_num(val, 1, 1e12, &kv_tokens) != 0)
        return as__cli_bad("--kv-tokens needs a positive number, not '%s'", val);
    } else if (strcmp(a, "--system") == 0) {
      system = val;
    } else if (strcmp(a, "--ids") == 0) {
      ids_arg = val;
    } else if (strcmp(a, "--bench-prompt-tokens") == 0) {
      if (as__cli_num(val, 1, 1e6, &v) != 0 || v != floor(v))
        return as__cli_bad("--bench-prompt-tokens needs a whole number >= 1, not '%s'", val);
      bench_n = (int)v;
    } else if (strcmp(a, "--bench-repeat") == 0) {
      if (as__cli_num(val, 1, 1000, &v) != 0 || v != floor(v))
        return as__cli_bad("--bench-repeat needs a whole number >= 1, not '%s'", val);
      repeat = (int)v;
    } else {
      return as__cli_bad("unknown option %s", a);
    }
  }
  if (dir == NULL)
    return as__cli_bad("generate needs MODEL_DIR%s", "");
  if (text == NULL && ids_arg == NULL && !(bench && bench_n > 0))
    return as__cli_bad("generate needs a prompt (or --ids 1,2,3)%s", "");
  if (text != NULL && ids_arg != NULL)
    return as__cli_bad("give the prompt as text or as --ids, not both%s", "");

  as_model_t *m = NULL;
  as_tokenizer_t *tok = NULL;
  as_gen_t *g = NULL;
  as_ids_t ids;
  as_buf_t fmt;
  as_ids_init(&ids);
  as_buf_init(&fmt);
  as_model_opts_t mo = {device};
  if (as_model_open(&m, dir, &mo, err, sizeof err) != 0) {
    fprintf(stderr, "actorserve: %s\n", err);
    goto done;
  }
  int tr = as__cli_tok(dir, &tok);
  if (tr < 0)
    goto done;
  if (tr == 1 && (text != NULL || nstops > 0 || chat)) {
    fprintf(stderr,
            "actorserve: %s has no tokenizer.json: the prompt must be given as ids "
            "(--ids 1,2,3), and the output is printed as ids\n",
            dir);
    goto done;
  }
  if (ids_arg != NULL) {
    if (as__cli_ids(ids_arg, &ids) != 0) {
      fprintf(stderr, "actorserve: --ids needs token ids like 1,2,3, not '%s'\n", ids_arg);
      rc = 2;
      goto done;
    }
  } else if (text != NULL) {
    const char *src = text;
    size_t len = strlen(text);
    int flags = AS_TOK_ADD_SPECIAL;
    if (chat) {
      as_chat_msg_t msgs[2];
      size_t nm = 0;
      if (system != NULL)
        msgs[nm++] = (as_chat_msg_t){"system", system};
      msgs[nm++] = (as_chat_msg_t){"user", text};
      if (as_tokenizer_apply_chat(tok, msgs, nm, 1, &fmt, err, sizeof err) != 0) {
        fprintf(stderr, "actorserve: %s\n", err);
        goto done;
      }
      src = fmt.data != NULL ? fmt.data : "";
      len = fmt.len;
      flags = 0; /* the template writes BOS itself (apply_chat_template's tokenize) */
    }
    if (as_tokenizer_encode(tok, src, len, flags, &ids) != 0) {
      fprintf(stderr, "actorserve: the tokenizer could not encode the prompt\n");
      goto done;
    }
  } else { /* --bench-prompt-tokens: pseudo-random ids, the same every run */
    uint64_t rng = ask_rng_seed(1234);
    int V = as_model_config(m)->vocab_size;
    for (int i = 0; i < bench_n; i++)
      if (as_ids_push(&ids, (int32_t)(ask_rng_next(&rng) % (uint64_t)V)) != 0)
        goto done;
  }
  if (ids.n == 0) {
    fprintf(stderr, "actorserve: the prompt encodes to no tokens\n");
    goto done;
  }
  if (bench) {
    rc = as__cli_bench(m, &ids, have_max ? (int)max_new : 128, repeat, (size_t)kv_tokens);
    goto done;
  }

  if (as_gen_new(&g, m, dir, (size_t)kv_tokens, err, sizeof err) != 0) {
    fprintf(stderr, "actorserve: %s\n", err);
    goto done;
  }
  as_gen_opts_t o;
  as_gen_opts_model(g, &o);
  if (have_max)
    o.max_new_tokens = (int)max_new;
  if (have_t)
    o.temperature = (float)temp;
  if (have_k)
    o.top_k = (int)top_k;
  if (have_p)
    o.top_p = (float)top_p;
  if (have_seed)
    o.seed = (int64_t)seed;
  if (ignore_eos)
    o.n_stop_ids = 0;
  o.stop_strs = stops;
  o.n_stop_strs = nstops;
  o.tok = tok;
  int64_t id;
  if (as_gen_add(g, ids.v, (int)ids.n, &o, &id, err, sizeof err) != 0) {
    fprintf(stderr, "actorserve: %s\n", err);
    goto done;
  }
  double t0 = as__now(), t1 = 0;
  int ntok = 0;
  const char *reason = "length";
  while (as_gen_active(g) > 0) {
    const as_gen_event_t *ev;
    int ne;
    if (as_gen_step(g, &ev, &ne, err, sizeof err) != 0) {
      fprintf(stderr, "\nactorserve: %s\n", err);
      goto done;
    }
    for (int e = 0; e < ne; e++) {
      if (ev[e].token >= 0) {
        if (ntok++ == 0)
          t1 = as__now();
        if (tok == NULL)
          printf("%s%d", ntok > 1 ? " " : "", (int)ev[e].token);
      }
      if (ev[e].text_len > 0)
        fwrite(ev[e].text, 1, ev[e].text_len, stdout);
      if (ev[e].finished)
        reason = ev[e].finish_reason;
    }
    fflush(stdout);
  }
  double t2 = as__now();
  printf("\n");
  fprintf(stderr, "[%zu prompt tokens, %d new, finish: %s; prefill %.1f tok/s, decode %.1f tok/s]\n",
          ids.n, ntok, reason, t1 > t0 ? (double)ids.n / (t1 - t0) : 0.0,
          ntok > 1 && t2 > t1 ? (ntok - 1) / (t2 - t1) : 0.0);
  rc = 0;
done:
  as_gen_free(g);
  as_tokenizer_free(tok);
  as_model_free(m);
  as_ids_free(&ids);
  as_buf_free(&fmt);
  return rc;
}

static int as__cli_embed(int argc, char **argv) {
  const char *dir = NULL;
  char err[512];
  int rc = 1, ntext = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      fputs(as__cli_usage, stdout);
      return 0;
    }
    if (argv[i][0] == '-' && argv[i][1] == '-' && argv[i][2] != '\0')
      return as__cli_bad("unknown option %s", argv[i]);
    if (dir == NULL)
      dir = argv[i];
    else
      ntext++;
  }
  if (dir == NULL || ntext == 0)
    return as__cli_bad("embed needs MODEL_DIR and at least one text%s", "");
  as_model_t *m = NULL;
  as_tokenizer_t *tok = NULL;
  as_ids_t *enc = calloc((size_t)ntext, sizeof *enc);
  int32_t *ids = NULL, *mask = NULL;
  float *out = NULL;
  if (enc == NULL)
    goto done;
  if (as_model_load(&m, dir, err, sizeof err) != 0) {
    fprintf(stderr, "actorserve: %s\n", err);
    goto done;
  }
  const as_llm_config_t *c = as_model_config(m);
  if (c->arch != AS_ARCH_BERT) {
    fprintf(stderr, "actorserve: %s is a %s model: embed needs a BERT encoder "
                    "(all-MiniLM style)\n", dir, c->model_type);
    goto done;
  }
  int tr = as__cli_tok(dir, &tok);
  if (tr != 0) {
    if (tr == 1)
      fprintf(stderr, "actorserve: %s has no tokenizer.json: embed needs the tokenizer\n", dir);
    goto done;
  }
  int S = 0, maxlen = c->max_positions < 512 ? c->max_positions : 512, t = 0;
  for (int i = 1; i < argc; i++) {
    if (argv[i] == dir)
      continue;
    as_ids_init(&enc[t]);
    if (as_tokenizer_encode(tok, argv[i], strlen(argv[i]), AS_TOK_ADD_SPECIAL, &enc[t]) != 0) {
      fprintf(stderr, "actorserve: the tokenizer could not encode text %d\n", t + 1);
      goto done;
    }
    if (enc[t].n > (size_t)maxlen) { /* truncate, keeping the final [SEP] */
      enc[t].v[maxlen - 1] = enc[t].v[enc[t].n - 1];
      enc[t].n = (size_t)maxlen;
    }
    if ((int)enc[t].n > S)
      S = (int)enc[t].n;
    t++;
  }
  int32_t pad = as_tokenizer_pad_id(tok) >= 0 ? as_tokenizer_pad_id(tok) : 0;
  ids = malloc((size_t)ntext * S * sizeof(int32_t));
  mask = malloc((size_t)ntext * S * sizeof(int32_t));
  out = malloc((size_t)ntext * c->hidden_size * sizeof(float));
  if (ids == NULL || mask == NULL || out == NULL || S == 0)
    goto done;
  for (int b = 0; b < ntext; b++)
    for (int k = 0; k < S; k++) {
      int in = k < (int)enc[b].n;
      ids[(size_t)b * S + k] = in ? enc[b].v[k] : pad;
      mask[(size_t)b * S + k] = in;
    }
  if (as_model_embed(m, ids, mask, NULL, ntext, S, out, err, sizeof err) != 0) {
    fprintf(stderr, "actorserve: %s\n", err);
    goto done;
  }
  for (int b = 0; b < ntext; b++) {
    putchar('[');
    for (int k = 0; k < c->hidden_size; k++)
      printf("%s%.8g", k ? ", " : "", out[(size_t)b * c->hidden_size + k]);
    printf("]\n");
  }
  rc = 0;
done:
  if (enc != NULL)
    for (int b = 0; b < ntext; b++)
      as_ids_free(&enc[b]);
  free(enc);
  free(ids);
  free(mask);
  free(out);
  as_tokenizer_free(tok);
  as_model_free(m);
  return rc;
}

int as_llm_cli(int argc, char **argv) {
  if (argc < 1 || argv == NULL || argv[0] == NULL)
    return as__cli_bad("%s", "expected generate or embed");
  if (strcmp(argv[0], "generate") == 0)
    return as__cli_generate(argc, argv);
  if (strcmp(argv[0], "embed") == 0)
    return as__cli_embed(argc, argv);
  if (strcmp(argv[0], "bench-llm") == 0)
    return as__cli_bench_llm(argc, argv);
  return as__cli_bad("unknown command '%s' (expected generate, embed or bench-llm)", argv[0]);
}
