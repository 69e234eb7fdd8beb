/*
 * gp_lite_example: prints the entities of each line of stdin with a gp-lite model.
 *
 *   gp_lite_example MODEL_DIR [THRESHOLD] < texts.txt
 *
 * Lines are predicted 32 at a time with gp_predict_batch, as `gp-lite predict` does, so the
 * scores are the same; THRESHOLD (default 0) is that of `gp-lite predict --threshold`.
 * Output: one JSON line per input line (an empty line is an empty text):
 *   {"entities":[{"start":0,"end":9,"type":"name","text":"彭小军","score":3.25}]}
 * where start and end are BYTE offsets [start, end) into the line (unlike `gp-lite predict`,
 * which prints character offsets), text is the entity's bytes and score its score.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gp_lite.h"

/* Lines per gp_predict_batch call (the batch size of `gp-lite predict`). */
#define CHUNK 32

/* Writes `len` bytes of UTF-8 as a JSON string. */
static void print_json_string(const char *s, size_t len) {
    putchar('"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c < 0x20) {
            printf("\\u%04x", c);
        } else {
            putchar(c);
        }
    }
    putchar('"');
}

static void print_entities(const char *text, const GpEntities *ents) {
    printf("{\"entities\":[");
    for (size_t i = 0; i < gp_entities_len(ents); i++) {
        const GpEntity *e = gp_entities_get(ents, i);
        printf("%s{\"start\":%zu,\"end\":%zu,\"type\":", i ? "," : "", e->start, e->end);
        print_json_string(e->type, strlen(e->type));
        printf(",\"text\":");
        print_json_string(text + e->start, e->end - e->start);
        printf(",\"score\":%.17g}", e->score);
    }
    printf("]}\n");
}

/* Predicts `n` texts in one call and prints their entities. Returns 0, or 1 after an error. */
static int predict_chunk(const GpModel *model, char **texts, const size_t *lens, size_t n,
                         const GpPredictOptions *opts) {
    GpEntities *ents[CHUNK];
    GpError *err = NULL;
    if (gp_predict_batch(model, (const char *const *)texts, lens, n, opts, ents, &err) != GP_OK) {
        fprintf(stderr, "error: %s\n", gp_error_message(err));
        gp_error_free(err);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        print_entities(texts[i], ents[i]);
        gp_entities_free(ents[i]);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s MODEL_DIR [THRESHOLD] < texts.txt\n", argv[0]);
        return 2;
    }
    GpPredictOptions opts = gp_predict_options_default();
    opts.batch_size = CHUNK;
    if (argc == 3) opts.threshold = strtod(argv[2], NULL);
    GpError *err = NULL;
    GpModel *model = gp_model_load(argv[1], &err);
    if (!model) {
        /* The code tells a file that could not be read (GP_ERR_IO) from one that is not a
         * usable model (GP_ERR_MODEL); the message says which file and why. */
        const char *kind = gp_error_code(err) == GP_ERR_IO ? "cannot read the model" : "error";
        fprintf(stderr, "%s: %s\n", kind, gp_error_message(err));
        gp_error_free(err);
        return 1;
    }
    char *texts[CHUNK] = {0};
    size_t caps[CHUNK] = {0}, lens[CHUNK];
    size_t n = 0;
    int status = 0;
    ssize_t got;
    while (status == 0 && (got = getline(&texts[n], &caps[n], stdin)) >= 0) {
        size_t len = (size_t)got;
        if (len > 0 && texts[n][len - 1] == '\n') len--;
        if (len > 0 && texts[n][len - 1] == '\r') len--;
        lens[n++] = len;
        if (n == CHUNK) {
            status = predict_chunk(model, texts, lens, n, &opts);
            n = 0;
        }
    }
    if (status == 0 && n > 0) status = predict_chunk(model, texts, lens, n, &opts);
    for (size_t i = 0; i < CHUNK; i++) free(texts[i]);
    gp_model_free(model);
    return status;
}
