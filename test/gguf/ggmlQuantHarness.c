/*
 * Test harness: rows of float32 on stdin, each quantized by ggml's reference quantizer
 * (quantize_row_<type>_ref, linked from the ggml-quants.c that node-llama-cpp bundles),
 * packed bytes on stdout. Usage: harness TYPE ROW_LENGTH ROW_BYTES ROWS.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ggml-quants.c calls these; the reference quantizers never do on valid input. */
void ggml_abort(const char *file, int line, const char *fmt, ...) { fprintf(stderr, "ggml_abort %s:%d\n", file, line); exit(2); }
size_t ggml_row_size(int type, int64_t n) { (void)type; (void)n; return 0; }
const char *ggml_type_name(int type) { (void)type; return ""; }
size_t ggml_type_size(int type) { (void)type; return 0; }

#define DECLARE(T) void quantize_row_##T##_ref(const float *x, void *y, int64_t k);
DECLARE(q4_0) DECLARE(q4_1) DECLARE(q5_0) DECLARE(q5_1) DECLARE(q8_0)
DECLARE(q2_K) DECLARE(q3_K) DECLARE(q4_K) DECLARE(q5_K) DECLARE(q6_K)

int main(int argc, char **argv) {
  if (argc != 5) return 1;
  const char *type = argv[1];
  long n = atol(argv[2]), rowBytes = atol(argv[3]), rows = atol(argv[4]);
  float *x = malloc(n * sizeof(float));
  uint8_t *y = calloc(rowBytes, 1);
  for (long r = 0; r < rows; r++) {
    if (fread(x, sizeof(float), n, stdin) != (size_t)n) return 3;
#define RUN(T) if (!strcmp(type, #T)) quantize_row_##T##_ref(x, y, n); else
    RUN(q4_0) RUN(q4_1) RUN(q5_0) RUN(q5_1) RUN(q8_0) RUN(q2_K) RUN(q3_K) RUN(q4_K) RUN(q5_K) RUN(q6_K) return 4;
    fwrite(y, 1, rowBytes, stdout);
  }
  return 0;
}
