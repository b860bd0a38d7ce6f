/* fixture_json.h — reading a test fixture's JSON file (the reference
 * outputs of tests/fixtures/models/NAME/reference.json), shared by the
 * model tests. Header-only, for test programs that link cJSON.
 */
#ifndef AS_FIXTURE_JSON_H
#define AS_FIXTURE_JSON_H

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

/* The parsed JSON of `path`, or NULL when it is missing or not JSON. */
static inline cJSON *fixture_json(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
  size_t got = buf != NULL ? fread(buf, 1, (size_t)n, f) : 0;
  fclose(f);
  cJSON *j = buf != NULL ? cJSON_ParseWithLength(buf, got) : NULL;
  free(buf);
  return j;
}

#endif /* AS_FIXTURE_JSON_H */
