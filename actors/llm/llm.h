/* llm.h — the public header of actors/llm/: the model engine's C API.
 * Loading Hugging Face model folders (config.json, safetensors, tokenizer),
 * tokenizers, the forward pass over a KV cache holding many sequences,
 * sampling and generation. The math goes through the ops table of kernels/
 * (kernels/kernels.h): kernels/ref is the plain-C source of truth.
 * Functions return 0 or a negative AS_E* code (runtime.h) and write a
 * message naming the file / tensor / field into an error buffer.
 */
#ifndef AS_LLM_H
#define AS_LLM_H

#include <stddef.h>
#include <stdint.h>

#include "runtime.h"

/* ==== tokenizer section (owned by the tokenizer work) ==== */

/* ==== end tokenizer section ==== */

/* ==== model section (owned by the model work) ==== */

/* ==== end model section ==== */

#endif /* AS_LLM_H */
