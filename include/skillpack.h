/*
 * skillpack C API: use a skill pack from a program built on llama.cpp's C API.
 *
 * Open a pack against the llama_model you loaded, route a prompt to skill weights with the
 * pack's default router, apply the weighted skills to your llama_context, then decode as usual.
 * Link libskillpack_capi.a (it contains the llama.cpp it was built with: use its llama.h) plus
 * -lstdc++ -lgomp -lpthread -ldl -lm, or libskillpack_capi.so.
 *
 * Errors: every call returning int gives SKILLPACK_OK or an SKILLPACK_ERR_* code, with a
 * message for the calling thread from skillpack_last_error().
 *
 * Threads: a pack may move between threads but must be used by one thread at a time; different
 * packs are independent; skillpack_last_error() is per thread.
 *
 * Checked against crates/skillpack-capi/src/lib.rs by crates/skillpack-capi/tests/c_api.rs.
 */
#ifndef SKILLPACK_H
#define SKILLPACK_H

#include <stddef.h>

#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SKILLPACK_OK 0
/* A null pointer, bad UTF-8, a wrong length, or a context of another model. */
#define SKILLPACK_ERR_INVALID_ARGUMENT 1
/* The pack could not be opened or does not fit the model. */
#define SKILLPACK_ERR_PACK 2
/* The pack has no router (give weights to skillpack_apply instead). */
#define SKILLPACK_ERR_NO_ROUTER 3
/* llama.cpp refused an operation. */
#define SKILLPACK_ERR_LLAMA 4
/* A bug in skillpack (caught at the boundary). */
#define SKILLPACK_ERR_INTERNAL 5

typedef struct SkillpackPack skillpack_pack;

/* Opens the pack in pack_dir for model, loaded by you from the GGUF at model_path (the pack is
 * checked against that file). Free it with skillpack_pack_free before the model and before any
 * context it applied skills to. Thread-safe: yes (packs are independent). */
int skillpack_pack_open(struct llama_model *model, const char *model_path, const char *pack_dir,
                        skillpack_pack **out);

/* Frees a pack (NULL is allowed); contexts it applied skills to are left without adapters.
 * Thread-safety: not concurrently with any other call on the same pack. */
void skillpack_pack_free(skillpack_pack *pack);

/* Number of skills: the length of every weight array. Thread-safe (reads only). */
size_t skillpack_skill_count(const skillpack_pack *pack);

/* The id of skill index (owned by the pack), or NULL when out of range. Thread-safe (reads
 * only). */
const char *skillpack_skill_id(const skillpack_pack *pack, size_t index);

/* Routes prompt (one user message, rendered with the model's chat template as `skillpack run`
 * does) with the pack's default router; writes n_weights == skillpack_skill_count weights.
 * Thread-safety: one call at a time per pack (it uses the pack's feature extractor). */
int skillpack_route(skillpack_pack *pack, const char *prompt, float *weights, size_t n_weights);

/* Applies the skills at weights (the pack's top-k and minimum weight apply) to ctx, a context of
 * the pack's model; multi-adapter or fused application is chosen from expected_tokens (tokens
 * ctx will process under these weights). Clear the KV cache when weights change.
 * Thread-safety: one call at a time per pack, and not while ctx is decoding. */
int skillpack_apply(skillpack_pack *pack, struct llama_context *ctx, const float *weights,
                    size_t n_weights, size_t expected_tokens);

/* Removes the pack's adapters from ctx and forgets it: call before freeing ctx if the pack
 * lives on. Thread-safety: one call at a time per pack. */
int skillpack_context_release(skillpack_pack *pack, struct llama_context *ctx);

/* The last error message on this thread ("" when none), valid until the next call on this
 * thread. Thread-safe (per-thread storage). */
const char *skillpack_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* SKILLPACK_H */
