/* test_http.c — the proxy's pure HTTP helpers (actors/http.c): route
 * matching by longest prefix, request ids, header checks, reason phrases. */
#include <string.h>

#include "actors.h"
#include "test.h"

static const as_route_t routes[] = {
  {"/", "root", "root/A"}, {"/api", "api", "api/B"}, {"/api/v2", "v2", "v2/C"},
};

static int match(const char *path) { return as_http_route_match(routes, 3, path, strlen(path)); }

TEST(test_route_longest_prefix) {
  ASSERT_EQ(match("/"), 0);
  ASSERT_EQ(match("/x"), 0);
  ASSERT_EQ(match("/api"), 1);
  ASSERT_EQ(match("/api/"), 1);
  ASSERT_EQ(match("/api/items/1"), 1);
  ASSERT_EQ(match("/apix"), 0);          /* a prefix matches whole segments only */
  ASSERT_EQ(match("/api/v2"), 2);
  ASSERT_EQ(match("/api/v2/x"), 2);
  ASSERT_EQ(match("/api/v20"), 1);
}

TEST(test_route_no_root) {
  ASSERT_EQ(as_http_route_match(routes + 1, 2, "/other", 6), -1);
  ASSERT_EQ(as_http_route_match(routes + 1, 2, "/api", 4), 0);
  ASSERT_EQ(as_http_route_match(routes, 0, "/", 1), -1);
  ASSERT_EQ(as_http_route_match(routes, 3, "", 0), -1);
}

TEST(test_request_id) {
  ASSERT_TRUE(as_http_request_id_valid("abc-123_x.y:z", 13));
  ASSERT_FALSE(as_http_request_id_valid("", 0));
  ASSERT_FALSE(as_http_request_id_valid("a b", 3));
  ASSERT_FALSE(as_http_request_id_valid("a\r\nb", 4));
  char big[200];
  memset(big, 'a', sizeof big);
  ASSERT_TRUE(as_http_request_id_valid(big, 128));
  ASSERT_FALSE(as_http_request_id_valid(big, 129));
  uint64_t rng = 42;
  char a[33], b[33];
  as_http_new_request_id(a, &rng);
  as_http_new_request_id(b, &rng);
  ASSERT_EQ(strlen(a), 32);
  ASSERT_TRUE(as_http_request_id_valid(a, 32));
  ASSERT_NE(strcmp(a, b), 0);
}

TEST(test_header_checks) {
  ASSERT_TRUE(as_http_header_ok("x-a", 3, "b", 1));
  ASSERT_TRUE(as_http_header_ok("X-Empty", 7, "", 0));
  ASSERT_FALSE(as_http_header_ok("", 0, "b", 1));
  ASSERT_FALSE(as_http_header_ok("x a", 3, "b", 1));
  ASSERT_FALSE(as_http_header_ok("x:a", 3, "b", 1));
  ASSERT_FALSE(as_http_header_ok("x-a", 3, "b\r\nset-cookie: x", 17));
  ASSERT_FALSE(as_http_header_ok("x-a", 3, "b\0c", 3));
  ASSERT_TRUE(as_http_header_reserved("Content-Length", 14));
  ASSERT_TRUE(as_http_header_reserved("transfer-encoding", 17));
  ASSERT_TRUE(as_http_header_reserved("CONNECTION", 10));
  ASSERT_FALSE(as_http_header_reserved("content-type", 12));
}

TEST(test_reasons) {
  ASSERT_STR_EQ(as_http_reason(200), "OK");
  ASSERT_STR_EQ(as_http_reason(408), "Request Timeout");
  ASSERT_STR_EQ(as_http_reason(431), "Request Header Fields Too Large");
  ASSERT_STR_EQ(as_http_reason(503), "Service Unavailable");
  ASSERT_STR_EQ(as_http_reason(299), "OK");
  ASSERT_STR_EQ(as_http_reason(599), "Server Error");
}

TEST_MAIN(test_route_longest_prefix, test_route_no_root, test_request_id, test_header_checks, test_reasons)
