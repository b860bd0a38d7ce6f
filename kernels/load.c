/* load.c — finding a backend by name (ask_backend): the plain-C reference,
 * its device-contract twin, and the CUDA backend.
 *
 * The CUDA backend is a module of its own (libactorserve_cuda.so, built
 * from kernels/cuda when nvcc is found) that the process loads with dlopen
 * the first time a model asks for device "cuda". So the actorserve binary
 * has no CUDA dependency: CPU-only deployments and the worker processes of
 * plain Lua replicas never map the CUDA runtime or cuBLASLt (~0.5 GB), and
 * a build made on a CPU machine runs on a GPU machine unchanged. The module
 * is looked for in $ACTORSERVE_CUDA_MODULE, then next to the executable.
 */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels.h"

static struct {
  const ask_ops_t *ops;
  char why[PATH_MAX + 640];
} ask__cuda;

static pthread_once_t ask__cuda_once = PTHREAD_ONCE_INIT;

static void ask__cuda_load(void) {
  char path[PATH_MAX + 64];
  const char *env = getenv("ACTORSERVE_CUDA_MODULE");
  void *h;
  if (env != NULL && env[0] != '\0') {
    snprintf(path, sizeof path, "%s", env);
  } else {
    ssize_t n = readlink("/proc/self/exe", path, PATH_MAX);
    char *slash;
    if (n <= 0) {
      snprintf(ask__cuda.why, sizeof ask__cuda.why,
               "the executable's folder is unknown (/proc/self/exe): set "
               "ACTORSERVE_CUDA_MODULE to libactorserve_cuda.so");
      return;
    }
    path[n] = '\0';
    slash = strrchr(path, '/');
    snprintf(slash != NULL ? slash + 1 : path, 64, "libactorserve_cuda.so");
  }
  if (access(path, R_OK) != 0) {
    snprintf(ask__cuda.why, sizeof ask__cuda.why,
             "%s is missing: this build has no CUDA backend (nvcc was not found when it was "
             "built, or AS_CUDA=OFF)",
             path);
    return;
  }
  h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    snprintf(ask__cuda.why, sizeof ask__cuda.why, "%s cannot be loaded: %s", path, dlerror());
    return;
  }
  const ask_ops_t *(*ops)(void) = (const ask_ops_t *(*)(void))dlsym(h, "ask_cuda_ops");
  const char *(*why)(void) = (const char *(*)(void))dlsym(h, "ask_cuda_unavailable");
  int (*abi)(void) = (int (*)(void))dlsym(h, "ask_cuda_module_abi");
  if (ops == NULL || why == NULL || abi == NULL) {
    snprintf(ask__cuda.why, sizeof ask__cuda.why, "%s does not export ask_cuda_ops", path);
    return; /* the module stays mapped: harmless */
  }
  if (abi() != ASK_ABI) {
    snprintf(ask__cuda.why, sizeof ask__cuda.why,
             "%s was built from another version of kernels.h (ABI %d, this program %d): "
             "rebuild both",
             path, abi(), ASK_ABI);
    return;
  }
  ask__cuda.ops = ops();
  if (ask__cuda.ops == NULL)
    snprintf(ask__cuda.why, sizeof ask__cuda.why, "%s", why());
}

const ask_ops_t *ask_backend(const char *name, const char **why) {
  if (why != NULL)
    *why = "";
  if (strcmp(name, "ref") == 0 || strcmp(name, "cpu") == 0)
    return ask_ref_ops();
  if (strcmp(name, "refdev") == 0)
    return ask_refdev_ops();
  if (strcmp(name, "cuda") == 0) {
    pthread_once(&ask__cuda_once, ask__cuda_load);
    if (ask__cuda.ops == NULL && why != NULL)
      *why = ask__cuda.why;
    return ask__cuda.ops;
  }
  if (why != NULL)
    *why = "no such backend (\"cpu\", \"cuda\" or \"refdev\")";
  return NULL;
}
