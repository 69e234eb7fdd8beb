/*
 * test_gp_lite: checks the C interface of gp-lite (run by tests/it/c_api.rs, also under valgrind).
 *
 *   test_gp_lite MODEL_DIR CORRUPT_MODEL_DIR [ROUNDS]
 *
 * ROUNDS (default 3): how many times each of 8 threads predicts the sample texts and a long
 * one (while another thread loads and frees models).
 * MODEL_DIR is a trained model; CORRUPT_MODEL_DIR a copy of it with model.safetensors truncated.
 * Prints one line per check and exits 1 when any fails.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gp_lite.h"

static int failures = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);          \
            failures++;                                                              \
        }                                                                            \
    } while (0)

/* Texts for the consistency checks (CLUENER-like sentences; non-ASCII on purpose). */
static const char *TEXTS[] = {
    "彭小军认为，国内银行现在走的是台湾的发卡模式，先通过跑马圈地再在圈的地里面选择客户，",
    "温格的球队终于又踢了一场经典的比赛，2比1战胜曼联之后枪手仍然留在了夺冠集团之内，",
    "突袭黑暗雅典娜》中Riddick发现之前抓住他的赏金猎人Johns，",
    "北京大学的张教授在上海参加了中国移动举办的会议。",
};
#define NTEXTS (sizeof TEXTS / sizeof TEXTS[0])

/* A threshold below every score: every valid span is an entity. */
#define LOWEST (-1e300)

/* Checks that `err` is set with code `code` and a non-empty message containing `needle`, then
 * frees it. */
static void expect_error(GpError *err, int code, const char *needle, const char *what) {
    const char *msg = gp_error_message(err);
    if (!msg || !*msg || (needle && !strstr(msg, needle))) {
        fprintf(stderr, "FAIL %s: error message \"%s\" does not contain \"%s\"\n", what,
                msg ? msg : "(null)", needle ? needle : "");
        failures++;
    } else if (gp_error_code(err) != code) {
        fprintf(stderr, "FAIL %s: error code %d, expected %d (message \"%s\")\n", what,
                gp_error_code(err), code, msg);
        failures++;
    } else {
        printf("ok %s: code %d: %s\n", what, code, msg);
    }
    gp_error_free(err);
}

/* Entities are well formed for `text` of `len` bytes: ordered offsets inside the text on UTF-8
 * character boundaries, a type among the model's labels. Returns the number of entities. */
static size_t check_entities(const GpModel *m, const char *text, size_t len, const GpEntities *e) {
    size_t n = gp_entities_len(e);
    for (size_t i = 0; i < n; i++) {
        const GpEntity *x = gp_entities_get(e, i);
        CHECK(x != NULL);
        if (!x) continue;
        CHECK(x->start < x->end && x->end <= len);
        CHECK(x->start == len || ((unsigned char)text[x->start] & 0xC0) != 0x80);
        CHECK(x->end == len || ((unsigned char)text[x->end] & 0xC0) != 0x80);
        int known = 0;
        for (size_t l = 0; l < gp_model_num_labels(m); l++)
            known |= strcmp(gp_model_label(m, l), x->type) == 0;
        CHECK(known);
    }
    CHECK(gp_entities_get(e, n) == NULL);
    return n;
}

/* Same entities (offsets, types, scores bit for bit). */
static int same_entities(const GpEntities *a, const GpEntities *b) {
    if (gp_entities_len(a) != gp_entities_len(b)) return 0;
    for (size_t i = 0; i < gp_entities_len(a); i++) {
        const GpEntity *x = gp_entities_get(a, i), *y = gp_entities_get(b, i);
        if (x->start != y->start || x->end != y->end || strcmp(x->type, y->type) != 0 ||
            x->score != y->score)
            return 0;
    }
    return 1;
}

static GpEntities *predict_or_fail(const GpModel *m, const char *text, size_t len) {
    GpEntities *e = NULL;
    GpError *err = NULL;
    if (gp_predict(m, text, len, &e, &err) != GP_OK) {
        fprintf(stderr, "FAIL predict: %s\n", gp_error_message(err));
        gp_error_free(err);
        failures++;
        return NULL;
    }
    CHECK(err == NULL);
    return e;
}

/* Entities of one text with `threshold` (gp_predict_batch with one text). */
static GpEntities *predict_at(const GpModel *m, const char *text, size_t len, double threshold) {
    GpPredictOptions opts = gp_predict_options_default();
    opts.threshold = threshold;
    GpEntities *e = NULL;
    GpError *err = NULL;
    if (gp_predict_batch(m, &text, &len, 1, &opts, &e, &err) != GP_OK) {
        fprintf(stderr, "FAIL predict_batch: %s\n", gp_error_message(err));
        gp_error_free(err);
        failures++;
        return NULL;
    }
    return e;
}

static int by_score_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* A threshold that about `k` spans of two of TEXTS exceed: a briefly trained model may score every
 * span below the default 0, and the checks below need entities to compare. */
static double threshold_for(const GpModel *m, size_t k) {
    size_t n = 0, cap = 1024;
    double *scores = malloc(cap * sizeof *scores);
    for (size_t i = 0; i < 2; i++) {
        GpEntities *e = predict_at(m, TEXTS[i], strlen(TEXTS[i]), LOWEST);
        for (size_t j = 0; j < gp_entities_len(e); j++) {
            if (n == cap) scores = realloc(scores, (cap *= 2) * sizeof *scores);
            scores[n++] = gp_entities_get(e, j)->score;
        }
        gp_entities_free(e);
    }
    qsort(scores, n, sizeof *scores, by_score_desc);
    /* halfway between two distinct scores, so that no score sits on the threshold */
    while (k + 1 < n && scores[k] - scores[k + 1] <= 1e-4) k++;
    double t = k + 1 < n ? (scores[k] + scores[k + 1]) / 2 : LOWEST;
    free(scores);
    return t;
}

/* A directory whose config.json is not JSON: a model directory that was read but is unusable. */
static void test_bad_config(void) {
    char dir[] = "/tmp/gp-lite-bad-config-XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "FAIL cannot create a temporary directory\n");
        failures++;
        return;
    }
    char config[sizeof dir + 16];
    snprintf(config, sizeof config, "%s/config.json", dir);
    FILE *f = fopen(config, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("{\"labels\": [", f);
        fclose(f);
    }
    GpError *err = NULL;
    CHECK(gp_model_load(dir, &err) == NULL);
    expect_error(err, GP_ERR_MODEL, "config.json", "malformed config.json");
    unlink(config);
    rmdir(dir);
}

static void test_load_errors(const char *corrupt_dir) {
    GpError *err = NULL;
    CHECK(gp_model_load("/nonexistent/gp-lite-model", &err) == NULL);
    expect_error(err, GP_ERR_IO, "/nonexistent/gp-lite-model", "missing model directory");
    err = NULL;
    CHECK(gp_model_load(corrupt_dir, &err) == NULL);
    expect_error(err, GP_ERR_MODEL, "model.safetensors", "corrupt model.safetensors");
    test_bad_config();
    /* err may be NULL: the failure is only in the return value. */
    CHECK(gp_model_load("/nonexistent/gp-lite-model", NULL) == NULL);
    CHECK(gp_error_code(NULL) == GP_OK);
}

/* gp_answer on this NER model: refused as not a reader (GP_ERR_MODEL), after the argument
 * checks (GP_ERR_ARGUMENT); `*out` is left as it was. */
static void test_answer_needs_a_reader(const GpModel *m) {
    GpError *err = NULL;
    GpAnswer a = {true, 7, 9, 1.5};
    CHECK(gp_answer(m, "q", 1, "context", 7, &a, &err) == GP_ERR);
    expect_error(err, GP_ERR_MODEL, "not a reader", "gp_answer on an NER model");
    CHECK(a.found && a.start == 7 && a.end == 9);
    err = NULL;
    CHECK(gp_answer(NULL, "q", 1, "c", 1, &a, &err) == GP_ERR);
    expect_error(err, GP_ERR_ARGUMENT, "model", "gp_answer NULL model");
    err = NULL;
    CHECK(gp_answer(m, "q", 1, "c", 1, NULL, &err) == GP_ERR);
    expect_error(err, GP_ERR_ARGUMENT, "out", "gp_answer NULL out");
    err = NULL;
    CHECK(gp_answer(m, "q", 1, "\xff", 1, &a, &err) == GP_ERR);
    expect_error(err, GP_ERR_INPUT, "context", "gp_answer invalid UTF-8");
}

static void test_null_arguments(const GpModel *m) {
    GpError *err = NULL;
    GpEntities *e = (GpEntities *)&err; /* any non-NULL value: must be reset to NULL */
    CHECK(gp_model_load(NULL, &err) == NULL);
    expect_error(err, GP_ERR_ARGUMENT, "model_dir", "NULL model_dir");
    err = NULL;
    CHECK(gp_predict(NULL, "a", 1, &e, &err) == GP_ERR);
    CHECK(e == NULL);
    expect_error(err, GP_ERR_ARGUMENT, "model", "NULL model");
    err = NULL;
    CHECK(gp_predict(m, NULL, 0, &e, &err) == GP_ERR);
    expect_error(err, GP_ERR_ARGUMENT, "text", "NULL text");
    err = NULL;
    CHECK(gp_predict(m, "a", 1, NULL, &err) == GP_ERR);
    expect_error(err, GP_ERR_ARGUMENT, "out", "NULL out");
    CHECK(gp_predict(m, NULL, 0, &e, NULL) == GP_ERR);
    err = NULL;
    GpEntities *two[2]; /* `out` holds n pointers (AddressSanitizer caught this test passing one) */
    CHECK(gp_predict_batch(m, NULL, NULL, 2, NULL, two, &err) == GP_ERR);
    CHECK(two[0] == NULL && two[1] == NULL);
    expect_error(err, GP_ERR_ARGUMENT, "texts", "NULL texts");
    CHECK(gp_entities_len(NULL) == 0);
    CHECK(gp_entities_get(NULL, 0) == NULL);
    CHECK(gp_error_message(NULL) == NULL);
    CHECK(gp_model_num_labels(NULL) == 0);
    CHECK(gp_model_label(NULL, 0) == NULL);
    CHECK(gp_model_label(m, gp_model_num_labels(m)) == NULL);
    CHECK(gp_model_max_len(NULL) == 0);
    CHECK(gp_model_num_threads(NULL) == 0);
    gp_entities_free(NULL);
    gp_error_free(NULL);
    gp_model_free(NULL);
    printf("ok NULL arguments\n");
}

static void test_invalid_utf8(const GpModel *m) {
    const char bad[] = "ab\xff" "cd";
    GpEntities *e = NULL;
    GpError *err = NULL;
    CHECK(gp_predict(m, bad, 5, &e, &err) == GP_ERR);
    CHECK(e == NULL);
    expect_error(err, GP_ERR_INPUT, "position 2", "invalid UTF-8");
    /* A truncated multi-byte character at the end: 北 is e5 8c 97. */
    err = NULL;
    CHECK(gp_predict(m, "\xe5\x8c\x97\xe5\x8c", 5, &e, &err) == GP_ERR);
    expect_error(err, GP_ERR_INPUT, "position 3", "truncated UTF-8");
}

static void test_empty_and_unterminated(const GpModel *m) {
    GpEntities *e = predict_or_fail(m, "", 0);
    CHECK(e != NULL && gp_entities_len(e) == 0);
    gp_entities_free(e);
    /* The text need not be NUL-terminated: predict on a prefix of a buffer, which must equal
     * predicting on a copy of that prefix. */
    size_t len = strlen(TEXTS[0]) / 2;
    while (((unsigned char)TEXTS[0][len] & 0xC0) == 0x80) len--;
    char *copy = malloc(len + 1);
    memcpy(copy, TEXTS[0], len);
    copy[len] = '\0';
    GpEntities *a = predict_or_fail(m, TEXTS[0], len), *b = predict_or_fail(m, copy, len);
    CHECK(a && b && same_entities(a, b));
    if (a) check_entities(m, TEXTS[0], len, a);
    gp_entities_free(a);
    gp_entities_free(b);
    free(copy);
    printf("ok empty text, unterminated text\n");
}

static void test_long_text(const GpModel *m, double threshold) {
    /* Over three times the model's maximum length in characters: predicted in windows. */
    size_t max_len = gp_model_max_len(m);
    CHECK(max_len > 0);
    size_t one = strlen(TEXTS[1]);
    size_t copies = 3 * max_len / 20 + 1; /* each copy is over 20 characters */
    char *text = malloc(copies * one + 1);
    for (size_t i = 0; i < copies; i++) memcpy(text + i * one, TEXTS[1], one);
    text[copies * one] = '\0';
    size_t len = copies * one;
    /* Every span of every window: together they cover the whole text. */
    GpEntities *all = predict_at(m, text, len, LOWEST);
    size_t n = all ? check_entities(m, text, len, all) : 0;
    size_t first = len, last = 0;
    for (size_t i = 0; i < n; i++) {
        const GpEntity *e = gp_entities_get(all, i);
        if (e->start < first) first = e->start;
        if (e->end > last) last = e->end;
    }
    CHECK(first == 0 && last == len);
    gp_entities_free(all);
    GpEntities *e = predict_at(m, text, len, threshold);
    size_t found = e ? check_entities(m, text, len, e) : 0;
    size_t beyond = 0;
    for (size_t i = 0; i < found; i++) beyond += gp_entities_get(e, i)->start >= len / 2;
    printf("ok long text: %zu bytes, max_len %zu, %zu spans cover [%zu, %zu), %zu entities "
           "(%zu in the second half)\n",
           len, max_len, n, first, last, found, beyond);
    gp_entities_free(e);
    free(text);
}

static void test_batch(const GpModel *m) {
    const char *texts[NTEXTS];
    size_t lens[NTEXTS];
    GpEntities *out[NTEXTS];
    for (size_t i = 0; i < NTEXTS; i++) {
        texts[i] = TEXTS[i];
        lens[i] = strlen(TEXTS[i]);
    }
    GpError *err = NULL;
    GpPredictOptions flat = gp_predict_options_default();
    flat.flat = true;
    flat.threshold = -5.0; /* many candidates, so that flattening has work to do */
    CHECK(gp_predict_batch(m, texts, lens, NTEXTS, &flat, out, &err) == GP_OK);
    CHECK(err == NULL);
    for (size_t i = 0; i < NTEXTS; i++) {
        size_t n = check_entities(m, texts[i], lens[i], out[i]);
        for (size_t k = 1; k < n; k++) /* flat: sorted, no overlaps */
            CHECK(gp_entities_get(out[i], k - 1)->end <= gp_entities_get(out[i], k)->start);
        gp_entities_free(out[i]);
    }
    /* An error in one text fails the batch and names it. */
    texts[2] = "\xff";
    lens[2] = 1;
    CHECK(gp_predict_batch(m, texts, lens, NTEXTS, NULL, out, &err) == GP_ERR);
    for (size_t i = 0; i < NTEXTS; i++) CHECK(out[i] == NULL);
    expect_error(err, GP_ERR_INPUT, "texts[2]", "batch with invalid UTF-8");
    CHECK(gp_predict_batch(m, texts, lens, 0, NULL, out, NULL) == GP_OK);
    printf("ok batch\n");
}

/* Texts the threads predict: TEXTS, then a long text (windows) made of 12 copies of them. */
#define NALL (NTEXTS + 1)
static const char *ALL[NALL];

struct job {
    const GpModel *model;
    double threshold;
    GpEntities **expected;     /* NALL single-thread results of gp_predict */
    GpEntities **expected_thr; /* NALL single-thread results at `threshold` */
    int rounds;
    int mismatches;
};

static void *worker(void *arg) {
    struct job *j = arg;
    for (int r = 0; r < j->rounds; r++) {
        for (size_t i = 0; i < NALL; i++) {
            size_t len = strlen(ALL[i]);
            GpEntities *e = predict_or_fail(j->model, ALL[i], len);
            if (!e || !same_entities(e, j->expected[i])) j->mismatches++;
            gp_entities_free(e);
            e = predict_at(j->model, ALL[i], len, j->threshold);
            if (!e || !same_entities(e, j->expected_thr[i])) j->mismatches++;
            gp_entities_free(e);
        }
    }
    return NULL;
}

/* Loads and frees models of the same directory while the workers predict on theirs. */
struct loader {
    const char *dir;
    GpEntities *expected; /* result of gp_predict on ALL[0] */
    int rounds;
    int loaded;
    int mismatches;
};

static void *load_and_free(void *arg) {
    struct loader *l = arg;
    for (int r = 0; r < l->rounds; r++) {
        GpError *err = NULL;
        GpModel *m = gp_model_load_threads(l->dir, 1 + r % 2, &err);
        if (!m) {
            l->mismatches++;
            gp_error_free(err);
            continue;
        }
        l->loaded++;
        GpEntities *e = predict_or_fail(m, ALL[0], strlen(ALL[0]));
        if (!e || !same_entities(e, l->expected)) l->mismatches++;
        gp_entities_free(e);
        gp_model_free(m);
    }
    return NULL;
}

#define NWORKERS 8

static void test_threads(const GpModel *m, const char *dir, double threshold, int rounds) {
    size_t one = 0;
    for (size_t i = 0; i < NTEXTS; i++) one += strlen(TEXTS[i]);
    char *long_text = malloc(12 * one + 1);
    char *p = long_text;
    for (int c = 0; c < 12; c++)
        for (size_t i = 0; i < NTEXTS; i++) p += sprintf(p, "%s", TEXTS[i]);
    for (size_t i = 0; i < NTEXTS; i++) ALL[i] = TEXTS[i];
    ALL[NTEXTS] = long_text;
    GpEntities *expected[NALL], *expected_thr[NALL];
    size_t total = 0;
    for (size_t i = 0; i < NALL; i++) {
        size_t len = strlen(ALL[i]);
        expected[i] = predict_or_fail(m, ALL[i], len);
        check_entities(m, ALL[i], len, expected[i]);
        expected_thr[i] = predict_at(m, ALL[i], len, threshold);
        total += check_entities(m, ALL[i], len, expected_thr[i]);
    }
    CHECK(total > 0);
    pthread_t threads[NWORKERS], loader_thread;
    struct job jobs[NWORKERS];
    struct loader loader = {dir, expected[0], 2 * rounds + 1, 0, 0};
    CHECK(pthread_create(&loader_thread, NULL, load_and_free, &loader) == 0);
    for (int t = 0; t < NWORKERS; t++) {
        jobs[t] = (struct job){m, threshold, expected, expected_thr, rounds, 0};
        CHECK(pthread_create(&threads[t], NULL, worker, &jobs[t]) == 0);
    }
    int mismatches = 0;
    for (int t = 0; t < NWORKERS; t++) {
        CHECK(pthread_join(threads[t], NULL) == 0);
        mismatches += jobs[t].mismatches;
    }
    CHECK(pthread_join(loader_thread, NULL) == 0);
    CHECK(mismatches == 0);
    CHECK(loader.mismatches == 0 && loader.loaded == loader.rounds);
    printf("ok %d threads x %d rounds x %zu texts (one of %zu bytes) on one model while another "
           "thread loaded and freed %d models: %d mismatches with one thread (%zu entities at "
           "threshold %g)\n",
           NWORKERS, rounds, (size_t)NALL, strlen(long_text), loader.loaded,
           mismatches + loader.mismatches, total, threshold);
    for (size_t i = 0; i < NALL; i++) {
        gp_entities_free(expected[i]);
        gp_entities_free(expected_thr[i]);
    }
    free(long_text);
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s MODEL_DIR CORRUPT_MODEL_DIR [ROUNDS]\n", argv[0]);
        return 2;
    }
    int rounds = argc == 4 ? atoi(argv[3]) : 3;
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress in order with stderr, even into a pipe */
    const char *version = gp_version();
    CHECK(version && *version);
    test_load_errors(argv[2]);
    GpError *err = (GpError *)argv; /* any non-NULL value: must be reset to NULL */
    GpModel *m = gp_model_load_threads(argv[1], 2, &err);
    if (!m) {
        fprintf(stderr, "FAIL cannot load %s: %s\n", argv[1], gp_error_message(err));
        return 1;
    }
    CHECK(err == NULL);
    CHECK(gp_model_num_threads(m) == 2);
    CHECK(gp_model_num_labels(m) > 0);
    for (size_t l = 0; l < gp_model_num_labels(m); l++) CHECK(gp_model_label(m, l) != NULL);
    printf("ok loaded: gp-lite %s, %zu labels, max_len %zu\n", version, gp_model_num_labels(m),
           gp_model_max_len(m));
    test_null_arguments(m);
    test_answer_needs_a_reader(m);
    test_invalid_utf8(m);
    test_empty_and_unterminated(m);
    double threshold = threshold_for(m, 20);
    test_long_text(m, threshold);
    test_batch(m);
    test_threads(m, argv[1], threshold, rounds);
    gp_model_free(m);
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
