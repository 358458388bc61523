/*
 * A llama.cpp program using a skill pack through skillpack's C API: load a model with llama.cpp,
 * open the pack, route the prompt with the pack's default router, apply the weighted skills to
 * the context, and generate greedily. The text equals `skillpack run --temp 0 --repeat-penalty 1
 * -n N` for the same prompt (crates/skillpack-capi/tests/c_api.rs checks it).
 *
 *   route_and_generate MODEL.gguf PACK_DIR N_TOKENS "prompt"
 *
 * Build: cc -Iinclude -I<llama.cpp include> route_and_generate.c libskillpack_capi.a \
 *          -lstdc++ -lgomp -lpthread -ldl -lm
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"
#include "skillpack.h"

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)level;
    (void)text;
    (void)user;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL.gguf PACK_DIR N_TOKENS PROMPT\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[1], *pack_dir = argv[2], *prompt = argv[4];
    int n_gen = atoi(argv[3]);
    llama_log_set(quiet, NULL);
    llama_backend_init();

    struct llama_model *model = llama_model_load_from_file(model_path, llama_model_default_params());
    if (!model) {
        fprintf(stderr, "cannot load %s\n", model_path);
        return 1;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 2048;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    const struct llama_vocab *vocab = llama_model_get_vocab(model);

    skillpack_pack *pack = NULL;
    if (skillpack_pack_open(model, model_path, pack_dir, &pack) != SKILLPACK_OK) {
        fprintf(stderr, "skillpack: %s\n", skillpack_last_error());
        return 1;
    }
    size_t n_skills = skillpack_skill_count(pack);
    float *weights = calloc(n_skills, sizeof(float));
    if (skillpack_route(pack, prompt, weights, n_skills) != SKILLPACK_OK) {
        fprintf(stderr, "skillpack: %s\n", skillpack_last_error());
        return 1;
    }
    fprintf(stderr, "[skills]");
    for (size_t i = 0; i < n_skills; i++) {
        fprintf(stderr, " %s=%.3f", skillpack_skill_id(pack, i), weights[i]);
    }
    fprintf(stderr, "\n");

    /* The prompt as `skillpack run` renders it: the model's chat template, one user message. */
    struct llama_chat_message message = {"user", prompt};
    const char *tmpl = llama_model_chat_template(model, NULL);
    int len = llama_chat_apply_template(tmpl, &message, 1, true, NULL, 0);
    char *text = malloc((size_t)len + 1);
    llama_chat_apply_template(tmpl, &message, 1, true, text, len + 1);
    int n_prompt = -llama_tokenize(vocab, text, len, NULL, 0, true, true);
    llama_token *tokens = malloc(sizeof(llama_token) * (size_t)n_prompt);
    llama_tokenize(vocab, text, len, tokens, n_prompt, true, true);

    if (skillpack_apply(pack, ctx, weights, n_skills, (size_t)(n_prompt + n_gen)) != SKILLPACK_OK) {
        fprintf(stderr, "skillpack: %s\n", skillpack_last_error());
        return 1;
    }
    if (llama_decode(ctx, llama_batch_get_one(tokens, n_prompt)) != 0) {
        fprintf(stderr, "decode failed\n");
        return 1;
    }
    int n_vocab = llama_vocab_n_tokens(vocab);
    for (int i = 0; i < n_gen; i++) {
        const float *logits = llama_get_logits_ith(ctx, -1);
        llama_token best = 0;
        for (llama_token t = 1; t < n_vocab; t++) {
            if (logits[t] > logits[best]) {
                best = t;
            }
        }
        if (llama_vocab_is_eog(vocab, best)) {
            break;
        }
        char piece[256];
        int n = llama_token_to_piece(vocab, best, piece, sizeof piece, 0, false);
        if (n > 0) {
            fwrite(piece, 1, (size_t)n, stdout);
        }
        if (llama_decode(ctx, llama_batch_get_one(&best, 1)) != 0) {
            fprintf(stderr, "decode failed\n");
            return 1;
        }
    }
    printf("\n");

    skillpack_pack_free(pack);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    free(tokens);
    free(text);
    free(weights);
    return 0;
}
