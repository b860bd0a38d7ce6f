/* asl_internal.h — shared between the files of lua/ only (never included
 * from outside it): the host record that every state carries, and the
 * serve.null sentinel. */
#ifndef ASL_INTERNAL_H
#define ASL_INTERNAL_H

#include "asl.h"

typedef struct asl_host_s {
  const asl_host_ops *ops;   /* NULL in the head */
  void *ud;                  /* passed back to every op */
  asl_context_t ctx;         /* replica identity (strings owned by the caller) */
  int has_ctx;               /* ctx is set (worker) */
} asl_host_t;

asl_host_t *asl_host(lua_State *L);   /* the state's host record */
void *asl_null_sentinel(void);        /* the lightuserdata behind serve.null */

#endif
