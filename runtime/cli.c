/* cli.c — the commands that talk to a running head over its REST API on
 * 127.0.0.1 (Ray's dashboard port 8265 by default): deploy, status, config,
 * shutdown; `start`, which launches a head in the background and waits for
 * its REST API; and `build`, which writes a config file for an application.
 * The HTTP client here is deliberately small: one request per connection,
 * Connection: close, the whole answer read before it returns.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>

#include <cjson/cJSON.h>

#include "node.h"

/* "http://127.0.0.1:8265" → host, port (only numeric IPv4 hosts and localhost). */
static int parse_address(const char *addr, char *host, size_t hn, int *port) {
  const char *p = strncmp(addr, "http://", 7) == 0 ? addr + 7 : addr;
  const char *colon = strrchr(p, ':');
  size_t len = colon ? (size_t)(colon - p) : strcspn(p, "/");
  if (len == 0 || len >= hn) return AS_EINVAL;
  memcpy(host, p, len);
  host[len] = 0;
  if (strcmp(host, "localhost") == 0) snprintf(host, hn, "127.0.0.1");
  *port = colon ? atoi(colon + 1) : 8265;
  return *port > 0 && *port < 65536 ? 0 : AS_EINVAL;
}

/* One HTTP request; fills *status and body. Returns 0, or AS_EIO when the
 * head cannot be reached. */
static int http_request(const char *addr, const char *method, const char *path, const char *hdrs,
                        const char *body, size_t blen, int *status, as_buf_t *out) {
  char host[256];
  int port;
  if (parse_address(addr, host, sizeof host, &port)) return AS_EINVAL;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return AS_EINVAL;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return AS_EIO;
  struct timeval tv = {120, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    close(fd);
    return AS_EIO;
  }
  as_buf_t req;
  as_buf_init(&req);
  as_buf_appendf(&req, "%s %s HTTP/1.1\r\nhost: %s:%d\r\nconnection: close\r\ncontent-length: %zu\r\n%s\r\n", method,
                 path, host, port, blen, hdrs ? hdrs : "");
  as_buf_append(&req, body, blen);
  size_t off = 0;
  int rc = 0;
  while (off < req.len) {
    ssize_t w = write(fd, req.data + off, req.len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) { rc = AS_EIO; break; }
    off += (size_t)w;
  }
  as_buf_free(&req);
  as_buf_t resp;
  as_buf_init(&resp);
  char buf[8192];
  ssize_t r;
  while (rc == 0 && (r = read(fd, buf, sizeof buf)) != 0) {
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) { rc = AS_EIO; break; }
    as_buf_append(&resp, buf, (size_t)r);
  }
  close(fd);
  if (rc == 0) {
    as_buf_append(&resp, "", 1);
    char *end = strstr(resp.data, "\r\n\r\n");
    if (sscanf(resp.data, "HTTP/1.%*d %d", status) != 1 || !end) rc = AS_EIO;
    else as_buf_append(out, end + 4, resp.len - 1 - (size_t)(end + 4 - resp.data));
  }
  as_buf_free(&resp);
  return rc;
}

static const char *default_address(void) {
  const char *a = getenv("ACTORSERVE_ADDRESS");
  return a && *a ? a : "http://127.0.0.1:8265";
}

static int unreachable(const char *addr) {
  fprintf(stderr, "actorserve: no head answers at %s (start one with `actorserve start` or `actorserve run`)\n", addr);
  return 1;
}

static int cmd_deploy(const char *addr, const char *file) {
  /* Validate here first: the same errors, before anything is sent. */
  char err[1024];
  as_config_t cfg;
  if (as_config_load(&cfg, file, err, sizeof err)) {
    fprintf(stderr, "actorserve: %s\n", err);
    return 1;
  }
  as_config_free(&cfg);
  FILE *f = fopen(file, "rb");
  as_buf_t body, out;
  as_buf_init(&body);
  as_buf_init(&out);
  char buf[8192];
  size_t n;
  while (f && (n = fread(buf, 1, sizeof buf, f)) > 0) as_buf_append(&body, buf, n);
  if (f) fclose(f);
  char abs[PATH_MAX], hdr[PATH_MAX + 64] = "";
  if (realpath(file, abs)) snprintf(hdr, sizeof hdr, "x-actorserve-config-path: %s\r\ncontent-type: text/yaml\r\n", abs);
  int status = 0;
  int rc = http_request(addr, "PUT", "/api/serve/applications/", hdr, body.data ? body.data : "", body.len, &status,
                        &out);
  as_buf_free(&body);
  if (rc) {
    as_buf_free(&out);
    return unreachable(addr);
  }
  if (status != 200) {
    fprintf(stderr, "actorserve: deploy refused: %.*s", (int)out.len, out.data ? out.data : "");
    as_buf_free(&out);
    return 1;
  }
  printf("Sent deploy request for %s to %s.\n", file, addr);
  as_buf_free(&out);
  return 0;
}

static int cmd_status(const char *addr, int json) {
  as_buf_t out;
  as_buf_init(&out);
  int status = 0;
  if (http_request(addr, "GET", "/api/serve/applications/", NULL, "", 0, &status, &out)) {
    as_buf_free(&out);
    return unreachable(addr);
  }
  if (json || status != 200) {
    printf("%.*s\n", (int)out.len, out.data ? out.data : "");
    as_buf_free(&out);
    return status == 200 ? 0 : 1;
  }
  cJSON *root = cJSON_ParseWithLength(out.data, out.len);
  as_buf_free(&out);
  cJSON *apps = cJSON_GetObjectItem(root, "applications");
  printf("applications:\n");
  if (!cJSON_GetArraySize(apps)) printf("  {}\n");
  for (cJSON *a = apps ? apps->child : NULL; a; a = a->next) {
    printf("  %s:\n    status: %s\n    route_prefix: %s\n    deployments:\n", a->string,
           cJSON_GetStringValue(cJSON_GetObjectItem(a, "status")),
           cJSON_GetStringValue(cJSON_GetObjectItem(a, "route_prefix")));
    for (cJSON *d = cJSON_GetObjectItem(a, "deployments")->child; d; d = d->next) {
      printf("      %s:\n        status: %s\n        replicas:\n", d->string,
             cJSON_GetStringValue(cJSON_GetObjectItem(d, "status")));
      cJSON *r;
      cJSON_ArrayForEach(r, cJSON_GetObjectItem(d, "replicas")) {
        const char *msg = cJSON_GetStringValue(cJSON_GetObjectItem(r, "message"));
        printf("        - replica_id: %s\n          state: %s\n          pid: %d\n",
               cJSON_GetStringValue(cJSON_GetObjectItem(r, "replica_id")),
               cJSON_GetStringValue(cJSON_GetObjectItem(r, "state")),
               (int)cJSON_GetNumberValue(cJSON_GetObjectItem(r, "pid")));
        if (msg && *msg) printf("          message: \"%s\"\n", msg);
      }
    }
  }
  cJSON *node = cJSON_GetObjectItem(root, "node");
  char *total = cJSON_PrintUnformatted(cJSON_GetObjectItem(node, "total"));
  char *freer = cJSON_PrintUnformatted(cJSON_GetObjectItem(node, "free"));
  printf("node:\n  total: %s\n  free: %s\n", total ? total : "{}", freer ? freer : "{}");
  free(total);
  free(freer);
  cJSON_Delete(root);
  return 0;
}

static int cmd_simple(const char *addr, const char *method, const char *path, const char *done) {
  as_buf_t out;
  as_buf_init(&out);
  int status = 0;
  if (http_request(addr, method, path, NULL, "", 0, &status, &out)) {
    as_buf_free(&out);
    return unreachable(addr);
  }
  if (done) printf("%s\n", done);
  else printf("%.*s", (int)out.len, out.data ? out.data : "");
  as_buf_free(&out);
  return status == 200 ? 0 : 1;
}

/* ---- build: a config file for an application -------------------------------------- */

/* One codec value as YAML flow (JSON-style strings, which YAML reads as such). */
static void yaml_value(FILE *f, as_dec_t *d, int depth) {
  as_val_t v;
  if (depth > 64 || as_dec_next(d, &v)) return;
  switch (v.type) {
    case AS_T_NIL: fputs("null", f); break;
    case AS_T_FALSE: fputs("false", f); break;
    case AS_T_TRUE: fputs("true", f); break;
    case AS_T_INT: fprintf(f, "%lld", (long long)v.i); break;
    case AS_T_FLOAT: fprintf(f, "%.17g", v.f); break;
    case AS_T_STR:
      fputc('"', f);
      for (size_t i = 0; i < v.len; i++) {
        unsigned char ch = (unsigned char)v.s[i];
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\x%02x", ch);
        else fputc(ch, f);
      }
      fputc('"', f);
      break;
    case AS_T_TABLE:
      if (v.nhash == 0 && v.narr > 0) {
        fputc('[', f);
        for (uint32_t i = 0; i < v.narr; i++) {
          if (i) fputs(", ", f);
          yaml_value(f, d, depth + 1);
        }
        fputc(']', f);
      } else {
        fputc('{', f);
        for (uint32_t i = 0; i < v.narr; i++) {
          fprintf(f, "%s%u: ", i ? ", " : "", i + 1);
          yaml_value(f, d, depth + 1);
        }
        for (uint32_t i = 0; i < v.nhash; i++) {
          if (i || v.narr) fputs(", ", f);
          yaml_value(f, d, depth + 1);
          fputs(": ", f);
          yaml_value(f, d, depth + 1);
        }
        fputc('}', f);
      }
      break;
  }
}

static void fixed(FILE *f, const char *name, int64_t v) {
  fprintf(f, "%s: %g", name, (double)v / AS_RES_UNIT);
}

static int cmd_build(const char *target, const char *outpath) {
  char err[1024];
  as_app_t app;
  if (as_app_load(&app, target, "default", "/", NULL, err, sizeof err)) {
    fprintf(stderr, "actorserve: %s\n", err);
    return 1;
  }
  FILE *f = outpath ? fopen(outpath, "w") : stdout;
  if (!f) {
    fprintf(stderr, "actorserve: cannot write %s: %s\n", outpath, strerror(errno));
    as_app_free(&app);
    return 1;
  }
  const char *colon = strrchr(target, ':');
  fprintf(f, "# written by `actorserve build %s`; deploy it with `actorserve deploy`\n", target);
  fprintf(f, "proxy_location: EveryNode\nhttp_options:\n  host: 0.0.0.0\n  port: 8000\n");
  fprintf(f, "grpc_options:\n  port: 9000\n  grpc_servicer_functions: []\n");
  fprintf(f, "logging_config:\n  encoding: TEXT\n  log_level: INFO\n  logs_dir: null\n  enable_access_log: true\n");
  fprintf(f, "applications:\n- name: %s\n  route_prefix: %s\n  import_path: %s:%s\n  runtime_env: {}\n  deployments:\n",
          app.name, app.route_prefix, app.file, colon + 1);
  for (int i = 0; i < app.ndeps; i++) {
    as_dep_t *d = &app.deps[i];
    fprintf(f, "  - name: %s\n    num_replicas: %d\n    max_ongoing_requests: %d\n    max_queued_requests: %d\n",
            d->name, d->num_replicas, d->max_ongoing, d->max_queued);
    fprintf(f, "    graceful_shutdown_timeout_s: %g\n    health_check_period_s: %g\n    health_check_timeout_s: %g\n",
            d->graceful_s, d->health_period_s, d->health_timeout_s);
    if (d->user_config.len) {
      as_dec_t dd;
      as_dec_init(&dd, d->user_config.data, d->user_config.len);
      fputs("    user_config: ", f);
      yaml_value(f, &dd, 0);
      fputc('\n', f);
    }
    fputs("    ray_actor_options: {", f);
    fixed(f, "num_cpus", d->req.num_cpus);
    fputs(", ", f);
    fixed(f, "num_gpus", d->req.num_gpus);
    if (d->req.memory) fprintf(f, ", memory: %lld", (long long)d->req.memory);
    if (d->req.ncustom) {
      fputs(", resources: {", f);
      for (int k = 0; k < d->req.ncustom; k++) {
        fprintf(f, "%s\"%s\": ", k ? ", " : "", d->req.custom[k].name);
        fprintf(f, "%g", (double)d->req.custom[k].amount / AS_RES_UNIT);
      }
      fputc('}', f);
    }
    fputs("}\n", f);
  }
  if (outpath) {
    fclose(f);
    printf("wrote %s\n", outpath);
  }
  as_app_free(&app);
  return 0;
}

/* ---- start: a head in the background ------------------------------------------------ */

static int cmd_start(char **argv, int argc, const char *addr, const char *logpath) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return 1;
  exe[n] = 0;
  pid_t pid = fork();
  if (pid < 0) return 1;
  if (pid == 0) {
    setsid();
    int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
    int null = open("/dev/null", O_RDONLY);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    if (null >= 0) dup2(null, 0);
    char **args = calloc((size_t)argc + 3, sizeof *args);
    args[0] = exe;
    args[1] = "__head";
    for (int i = 0; i < argc; i++) args[i + 2] = argv[i];
    execv(exe, args);
    _exit(127);
  }
  /* Wait until the REST API answers (or the head gives up). */
  for (int i = 0; i < 200; i++) {
    as_buf_t out;
    as_buf_init(&out);
    int status = 0;
    int rc = http_request(addr, "GET", "/api/serve/applications/", NULL, "", 0, &status, &out);
    as_buf_free(&out);
    if (rc == 0 && status == 200) {
      printf("actorserve head started (pid %d); REST API at %s; log in %s\n", (int)pid, addr, logpath);
      return 0;
    }
    int wst;
    if (waitpid(pid, &wst, WNOHANG) == pid) {
      fprintf(stderr, "actorserve: the head exited during start; see %s\n", logpath);
      return 1;
    }
    usleep(50000);
  }
  fprintf(stderr, "actorserve: the head did not answer at %s within 10 s; see %s\n", addr, logpath);
  return 1;
}

int as_cli_main(int argc, char **argv) {
  const char *cmd = argv[0];
  const char *addr = default_address();
  const char *out = NULL, *target = NULL;
  int json = 0;
  char **rest = calloc((size_t)argc + 1, sizeof *rest);
  int nrest = 0;
  int dash_port = 8265;
  for (int i = 1; i < argc; i++) {
    if ((!strcmp(argv[i], "--address") || !strcmp(argv[i], "-a")) && i + 1 < argc) addr = argv[++i];
    else if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output-path")) && i + 1 < argc) out = argv[++i];
    else if (!strcmp(argv[i], "--json")) json = 1;
    else if (!strcmp(cmd, "start")) {
      if (!strcmp(argv[i], "--dashboard-port") && i + 1 < argc) dash_port = atoi(argv[i + 1]);
      rest[nrest++] = argv[i];
    } else if (argv[i][0] != '-' && !target) target = argv[i];
    else {
      fprintf(stderr, "actorserve %s: unexpected argument '%s'\n", cmd, argv[i]);
      free(rest);
      return 2;
    }
  }
  int rc;
  char start_addr[64];
  if (!strcmp(cmd, "deploy")) {
    rc = target ? cmd_deploy(addr, target) : (fprintf(stderr, "usage: actorserve deploy CONFIG.yaml\n"), 2);
  } else if (!strcmp(cmd, "status")) {
    rc = cmd_status(addr, json);
  } else if (!strcmp(cmd, "config")) {
    rc = cmd_simple(addr, "GET", "/api/actorserve/config", NULL);
  } else if (!strcmp(cmd, "shutdown")) {
    rc = cmd_simple(addr, "DELETE", "/api/serve/applications/", NULL);
    if (rc == 0) rc = cmd_simple(addr, "POST", "/api/actorserve/shutdown", "Sent shutdown request; the head stops.");
  } else if (!strcmp(cmd, "build")) {
    rc = target ? cmd_build(target, out) : (fprintf(stderr, "usage: actorserve build FILE.lua:VARIABLE [-o config.yaml]\n"), 2);
  } else { /* start */
    snprintf(start_addr, sizeof start_addr, "http://127.0.0.1:%d", dash_port);
    char logpath[PATH_MAX];
    snprintf(logpath, sizeof logpath, "%s/actorserve-head-%d.log", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             dash_port);
    rc = cmd_start(rest, nrest, start_addr, logpath);
  }
  free(rest);
  return rc;
}
