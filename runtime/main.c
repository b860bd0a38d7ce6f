/* main.c — the `actorserve` command line: `run FILE.lua:VARIABLE` with its
 * options (the head process), `--help`, `--version`, and the hidden
 * `__worker` mode that the head uses to start replica processes.
 * Bad usage exits 2; a bad application file exits 1 (see head.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"
#include "node.h"

static const char usage[] =
  "usage: actorserve run FILE.lua:VARIABLE [options]\n"
  "       actorserve run CONFIG.yaml [options]\n"
  "       actorserve start [options of run]       a head in the background, no application yet\n"
  "       actorserve deploy CONFIG.yaml [-a ADDRESS]\n"
  "       actorserve status [--json] [-a ADDRESS]\n"
  "       actorserve config [-a ADDRESS]          the config deployed last\n"
  "       actorserve shutdown [-a ADDRESS]        delete every application and stop the head\n"
  "       actorserve build FILE.lua:VARIABLE [-o CONFIG.yaml]\n"
  "       actorserve generate MODEL_DIR \"prompt\" [--max-new-tokens N] [--temperature T] [--chat] ...\n"
  "       actorserve embed MODEL_DIR \"text\" [\"text\" ...]\n"
  "       actorserve bench-llm MODEL_DIR [--device cuda] [--batch 1,8,32] [--ttft 128,2048] ...\n"
  "       actorserve --help | --version\n"
  "ADDRESS is the head's REST API (default http://127.0.0.1:8265, or $ACTORSERVE_ADDRESS).\n"
  "\n"
  "Serves the application that VARIABLE holds in FILE.lua (Deployment:bind(...)),\n"
  "or every application of a config file in Ray Serve's schema, over HTTP;\n"
  "each replica runs in its own worker process. Options given here beat the file's.\n"
  "\n"
  "options of run:\n"
  "  --host HOST                     address to listen on (default 0.0.0.0)\n"
  "  --port PORT                     port to listen on (default 8000)\n"
  "  --route-prefix PREFIX           where the application is served (default /)\n"
  "  --name NAME                     application name (default \"default\")\n"
  "  --num-cpus N                    CPUs this node offers (default: its cores)\n"
  "  --num-gpus N                    GPUs this node offers (default: devices found)\n"
  "  --resources JSON                custom resources, e.g. '{\"accel\": 2}'\n"
  "  --request-timeout-s S           answer 408 after S seconds (default: no limit)\n"
  "  --keep-alive-timeout-s S        close idle connections after S seconds (default 90)\n"
  "  --max-body-bytes N              answer 413 above N body bytes (default 10485760)\n"
  "  --max-header-bytes N            answer 431 above N header bytes (default 16384)\n"
  "  --graceful-shutdown-timeout-s S how long in-flight requests may run on SIGTERM (default 20)\n"
  "  --dashboard-port PORT           the REST API on 127.0.0.1 (default 8265; 0: none)\n"
  "  --log-level LEVEL               debug, info, warn or error (default info)\n";

static int bad(const char *fmt, const char *a, const char *b) {
  fprintf(stderr, "actorserve: ");
  fprintf(stderr, fmt, a, b);
  fprintf(stderr, "\n%s", "try 'actorserve --help'\n");
  return 2;
}

static int parse_num(const char *s, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || v != v || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int cmd_run(int argc, char **argv, int head_only) {
  as_head_opts_t o = {
    .host = "0.0.0.0", .port = 8000, .route_prefix = "/", .app_name = "default",
    .num_cpus = -1, .num_gpus = -1, .keep_alive_timeout_s = 90,
    .graceful_shutdown_timeout_s = 20, .max_body_bytes = 10485760, .max_header_bytes = 16384,
    .dashboard_port = 8265,
  };
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-') {
      if (o.target || head_only) return bad("unexpected argument '%s'%s", a, "");
      o.target = a;
      continue;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage, stdout);
      exit(0);
    }
    if (i + 1 >= argc) return bad("option %s needs a value%s", a, "");
    const char *v = argv[++i];
    double d;
    if (strcmp(a, "--host") == 0) o.host = v, o.host_set = 1;
    else if (strcmp(a, "--route-prefix") == 0) o.route_prefix = v;
    else if (strcmp(a, "--name") == 0) o.app_name = v;
    else if (strcmp(a, "--resources") == 0) o.resources_json = v;
    else if (strcmp(a, "--log-level") == 0) {
      static const char *const lv[] = {"debug", "info", "warn", "error"};
      int k = 0;
      while (k < 4 && strcmp(v, lv[k])) k++;
      if (k == 4) return bad("--log-level: expected debug, info, warn or error, got '%s'%s", v, "");
      as_log_level = k;
    } else {
      if (parse_num(v, 0, 1e12, &d)) return bad("%s: expected a number ≥ 0, got '%s'", a, v);
      if (strcmp(a, "--port") == 0) {
        if (d != (int)d || d > 65535 || strspn(v, "0123456789") != strlen(v))
          return bad("--port: expected a port number, got '%s'%s", v, "");
        o.port = (int)d;
        o.port_set = 1;
      } else if (strcmp(a, "--dashboard-port") == 0) {
        if (d != (int)d || d > 65535) return bad("--dashboard-port: expected a port number, got '%s'%s", v, "");
        o.dashboard_port = (int)d;
      } else if (strcmp(a, "--num-cpus") == 0) o.num_cpus = d;
      else if (strcmp(a, "--num-gpus") == 0) {
        if (d != (int)d) return bad("--num-gpus: expected a whole number, got '%s'%s", v, "");
        o.num_gpus = d;
      } else if (strcmp(a, "--request-timeout-s") == 0) o.request_timeout_s = d, o.request_timeout_set = 1;
      else if (strcmp(a, "--keep-alive-timeout-s") == 0) o.keep_alive_timeout_s = d, o.keep_alive_set = 1;
      else if (strcmp(a, "--graceful-shutdown-timeout-s") == 0) o.graceful_shutdown_timeout_s = d;
      else if (strcmp(a, "--max-body-bytes") == 0) o.max_body_bytes = (size_t)d;
      else if (strcmp(a, "--max-header-bytes") == 0) o.max_header_bytes = (size_t)d;
      else return bad("unknown option %s%s", a, "");
    }
  }
  if (!o.target && !head_only) return bad("run needs FILE.lua:VARIABLE or CONFIG.yaml%s%s", "", "");
  size_t pl = strlen(o.route_prefix);
  if (o.route_prefix[0] != '/' || (pl > 1 && o.route_prefix[pl - 1] == '/') || strpbrk(o.route_prefix, "{}"))
    return bad("--route-prefix: '%s' must start with '/', not end with '/' (unless it is '/'), and hold no braces%s",
               o.route_prefix, "");
  return as_head_main(&o);
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
    printf("actorserve %s\n", AS_VERSION);
    return 0;
  }
  if (strcmp(argv[1], "__worker") == 0) return as_worker_main();
  if (strcmp(argv[1], "run") == 0) return cmd_run(argc - 2, argv + 2, 0);
  if (strcmp(argv[1], "__head") == 0) return cmd_run(argc - 2, argv + 2, 1);
  if (!strcmp(argv[1], "generate") || !strcmp(argv[1], "embed") || !strcmp(argv[1], "bench-llm"))
    return as_llm_cli(argc - 1, argv + 1);
  if (!strcmp(argv[1], "start") || !strcmp(argv[1], "deploy") || !strcmp(argv[1], "status") ||
      !strcmp(argv[1], "config") || !strcmp(argv[1], "shutdown") || !strcmp(argv[1], "build"))
    return as_cli_main(argc - 1, argv + 1);
  return bad("unknown command '%s'%s", argv[1], "");
}
