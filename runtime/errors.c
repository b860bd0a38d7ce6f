/* errors.c — messages for the AS_E* error codes of runtime.h.
 *
 * The codes and their messages come from one X-macro table (AS_ERRNO_MAP),
 * so adding an error there adds its message here too.
 */
#include "runtime.h"

/* Returns a static message for err; "unknown error" for a code not in the map
 * and "success" for 0. */
const char *as_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
#define AS__ERR_MSG(name, code, msg) \
  case (code):                       \
    return (msg);
    AS_ERRNO_MAP(AS__ERR_MSG)
#undef AS__ERR_MSG
  default:
    return "unknown error";
  }
}
