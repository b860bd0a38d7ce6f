/* http.c — small pure HTTP helpers of the proxy: reason phrases, route
 * matching by longest route_prefix, request ids, and the checks that keep a
 * handler's headers from splitting a response. Unit-tested in tests/unit.
 */
#include <string.h>
#include <strings.h>

#include "actors.h"

const char *as_http_reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error" : "Server Error";
  }
}

int as_http_route_match(const as_route_t *routes, int n, const char *path, size_t len) {
  int best = -1;
  size_t best_len = 0;
  for (int i = 0; i < n; i++) {
    const char *pre = routes[i].prefix;
    size_t pl = strlen(pre);
    int ok;
    if (pl == 1 && pre[0] == '/') ok = len >= 1 && path[0] == '/';
    else ok = len >= pl && memcmp(path, pre, pl) == 0 && (len == pl || path[pl] == '/');
    if (ok && (best < 0 || pl > best_len)) {
      best = i;
      best_len = pl;
    }
  }
  return best;
}

int as_http_request_id_valid(const char *s, size_t n) {
  if (n == 0 || n > 128) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
          c == '.' || c == ':'))
      return 0;
  }
  return 1;
}

void as_http_new_request_id(char out[33], uint64_t *rng) {
  static const char hex[] = "0123456789abcdef";
  uint64_t a = as_rand(rng), b = as_rand(rng);
  for (int i = 0; i < 16; i++) {
    out[i] = hex[(a >> (i * 4)) & 15];
    out[16 + i] = hex[(b >> (i * 4)) & 15];
  }
  out[32] = 0;
}

int as_http_header_ok(const char *name, size_t nlen, const char *value, size_t vlen) {
  if (nlen == 0) return 0;
  for (size_t i = 0; i < nlen; i++) {
    unsigned char c = (unsigned char)name[i];
    if (c <= 32 || c >= 127 || strchr("()<>@,;:\\\"/[]?={}", c)) return 0;
  }
  for (size_t i = 0; i < vlen; i++)
    if (value[i] == '\r' || value[i] == '\n' || value[i] == 0) return 0;
  return 1;
}

int as_http_header_reserved(const char *name, size_t nlen) {
  static const char *const reserved[] = {"content-length", "transfer-encoding", "connection", "x-request-id"};
  for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
    if (strlen(reserved[i]) == nlen && strncasecmp(name, reserved[i], nlen) == 0) return 1;
  return 0;
}
