/*
 * proto_test.c: check firmware/common/fe_protocol.c against the golden vectors.
 *
 *   make -C firmware/host proto_test && firmware/host/proto_test firmware/common/golden/vectors.txt
 *
 * Every transcript is replayed three times: one fe_protocol_feed call per `in` line, one byte at
 * a time, and in random pieces; the board's output must equal the `out` lines each time.
 * Exit status 0 when every vector passes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fe_protocol.h"

#define MAX_LINE (1 << 17)
#define MAX_STEPS 128

typedef struct {
  uint8_t *data;
  size_t len, cap;
} buf_t;

static void buf_put(buf_t *b, const uint8_t *d, size_t n) {
  if (b->len + n > b->cap) {
    b->cap = (b->len + n) * 2 + 64;
    b->data = realloc(b->data, b->cap);
  }
  memcpy(b->data + b->len, d, n);
  b->len += n;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Parse a hex token ("-" is empty) into a freshly allocated buffer. */
static uint8_t *unhex(const char *s, size_t *n) {
  size_t len = strlen(s), i;
  uint8_t *out;
  if (strcmp(s, "-") == 0) {
    *n = 0;
    return malloc(1);
  }
  out = malloc(len / 2 + 1);
  for (i = 0; i + 1 < len + 1 && i / 2 < len / 2; i += 2)
    out[i / 2] = (uint8_t)(hexval(s[i]) * 16 + hexval(s[i + 1]));
  *n = len / 2;
  return out;
}

static char *next_tok(char **p) {
  char *s = *p, *t;
  while (*s == ' ') s++;
  if (!*s) return NULL;
  t = s;
  while (*s && *s != ' ' && *s != '\n' && *s != '\r') s++;
  if (*s) *s++ = 0;
  *p = s;
  return t;
}

/* ---- transcripts ---- */

typedef struct {
  uint8_t *in, *out;
  size_t in_len, out_len;
  int camera; /* `camera` line: `in` is a camera frame for fe_protocol_camera, not serial bytes */
} step_t;

static char s_board[64], s_fw[64], s_sha[80];
static fe_device_info_t s_info;
static int s_error;
static unsigned long s_baud;
static int s_counter = -1; /* counter=K of the info line, -1: none */
static unsigned long s_pre;
static uint32_t s_last_u;
static step_t s_steps[MAX_STEPS];
static int s_nsteps;
static buf_t s_written;

static void on_write(void *ctx, const uint8_t *d, size_t n) {
  (void)ctx;
  buf_put(&s_written, d, n);
}

/* The stub model described in make_vectors.py. */
static int stub_infer(void *ctx, const int8_t *in, int8_t *scores, uint32_t *micros) {
  uint32_t n = (uint32_t)s_info.input_width * s_info.input_height * s_info.input_channels, i, u = 0;
  int k;
  (void)ctx;
  if (n && (uint8_t)in[0] == 0x7F) return FE_ERR_INVOKE;
  for (i = 0; i < n; i++) u += (uint32_t)(int32_t)in[i];
  for (k = 0; k < s_info.num_classes; k++)
    scores[k] = (int8_t)(uint8_t)((u * (uint32_t)(2 * k + 1) + 7u * (uint32_t)k) & 0xFF);
  *micros = 1000 + (u & 0xFFF);
  s_last_u = u;
  return FE_OK;
}

/* The stub's instruction counter (make_vectors.py). */
static uint32_t stub_count(void) { return 50000u + (s_last_u & 0xFFFFu); }

static unsigned lcg = 12345;
static size_t rnd(size_t n) {
  lcg = lcg * 1103515245u + 12345u;
  return (lcg >> 8) % n;
}

/* mode 0: whole lines, 1: byte by byte, 2: random pieces. */
static int replay(const char *name, int mode) {
  static fe_protocol_t p;
  static int8_t input[1 << 16];
  int i, failures = 0;
  fe_protocol_init(&p, &s_info, input, on_write, stub_infer, NULL);
  if (s_error) fe_protocol_set_error(&p, s_error);
  fe_protocol_set_baud(&p, (uint32_t)s_baud);
  if (s_counter >= 0) fe_protocol_set_counter(&p, (uint8_t)s_counter, stub_count, (uint32_t)s_pre);
  for (i = 0; i < s_nsteps; i++) {
    step_t *st = &s_steps[i];
    s_written.len = 0;
    if (st->camera) {
      int8_t scores[FE_MAX_CLASSES];
      uint32_t us;
      memcpy(input, st->in, st->in_len);
      fe_protocol_camera(&p, scores, &us);
    } else if (mode == 0) {
      fe_protocol_feed(&p, st->in, st->in_len);
    } else {
      size_t at = 0;
      while (at < st->in_len) {
        size_t n = mode == 1 ? 1 : 1 + rnd(40);
        if (n > st->in_len - at) n = st->in_len - at;
        fe_protocol_feed(&p, st->in + at, n);
        at += n;
      }
    }
    if (s_written.len != st->out_len || (st->out_len && memcmp(s_written.data, st->out, st->out_len))) {
      size_t j;
      fprintf(stderr, "FAIL transcript %s step %d (mode %d)\n  want ", name, i, mode);
      for (j = 0; j < st->out_len; j++) fprintf(stderr, "%02x", st->out[j]);
      fprintf(stderr, "\n  got  ");
      for (j = 0; j < s_written.len; j++) fprintf(stderr, "%02x", s_written.data[j]);
      fprintf(stderr, "\n");
      failures++;
      break;
    }
  }
  return failures;
}

static void parse_info(char *rest) {
  char *tok;
  memset(&s_info, 0, sizeof s_info);
  s_error = 0;
  s_baud = 0;
  s_counter = -1;
  s_pre = 0;
  while ((tok = next_tok(&rest)) != NULL) {
    char *eq = strchr(tok, '=');
    const char *v;
    if (!eq) continue;
    *eq = 0;
    v = eq + 1;
    if (!strcmp(tok, "board")) snprintf(s_board, sizeof s_board, "%s", v);
    else if (!strcmp(tok, "firmware")) snprintf(s_fw, sizeof s_fw, "%s", v);
    else if (!strcmp(tok, "sha")) snprintf(s_sha, sizeof s_sha, "%s", v);
    else if (!strcmp(tok, "width")) s_info.input_width = (uint16_t)atoi(v);
    else if (!strcmp(tok, "height")) s_info.input_height = (uint16_t)atoi(v);
    else if (!strcmp(tok, "channels")) s_info.input_channels = (uint8_t)atoi(v);
    else if (!strcmp(tok, "classes")) s_info.num_classes = (uint8_t)atoi(v);
    else if (!strcmp(tok, "arena")) s_info.arena_bytes = (uint32_t)strtoul(v, NULL, 10);
    else if (!strcmp(tok, "free")) s_info.free_ram_bytes = (uint32_t)strtoul(v, NULL, 10);
    else if (!strcmp(tok, "error")) s_error = atoi(v);
    else if (!strcmp(tok, "baud")) s_baud = strtoul(v, NULL, 10);
    else if (!strcmp(tok, "counter")) s_counter = atoi(v);
    else if (!strcmp(tok, "pre")) s_pre = strtoul(v, NULL, 10);
  }
  s_info.board = s_board;
  s_info.firmware_version = s_fw;
  s_info.model_sha256 = s_sha;
}

int main(int argc, char **argv) {
  static char line[MAX_LINE];
  static uint8_t enc[MAX_LINE];
  const char *path = argc > 1 ? argv[1] : "firmware/common/golden/vectors.txt";
  FILE *f = fopen(path, "r");
  char name[128] = "";
  int failures = 0, checked = 0, i;
  if (!f) {
    perror(path);
    return 2;
  }
  while (fgets(line, sizeof line, f)) {
    char *rest = line, *kind = next_tok(&rest);
    if (!kind || kind[0] == '#') continue;
    if (!strcmp(kind, "crc")) {
      size_t n;
      uint8_t *d = unhex(next_tok(&rest), &n);
      unsigned long want = strtoul(next_tok(&rest), NULL, 16);
      uint32_t got = fe_crc32(0, d, n);
      if (got != (uint32_t)want) {
        fprintf(stderr, "FAIL crc of %zu bytes: want %08lx got %08lx\n", n, want, (unsigned long)got);
        failures++;
      }
      checked++;
      free(d);
    } else if (!strcmp(kind, "cobs")) {
      size_t n, m, k;
      uint8_t *d = unhex(next_tok(&rest), &n);
      uint8_t *want = unhex(next_tok(&rest), &m);
      k = fe_cobs_frame(d, n, enc);
      if (k != m + 2 || enc[0] != 0 || enc[k - 1] != 0 || memcmp(enc + 1, want, m)) {
        fprintf(stderr, "FAIL cobs of %zu bytes\n", n);
        failures++;
      }
      checked++;
      free(d);
      free(want);
    } else if (!strcmp(kind, "frame")) {
      int type = atoi(next_tok(&rest)), seq = atoi(next_tok(&rest));
      size_t n, m, k;
      uint8_t *body = unhex(next_tok(&rest), &n);
      uint8_t *want = unhex(next_tok(&rest), &m);
      static uint8_t raw[MAX_LINE];
      uint32_t crc;
      raw[0] = (uint8_t)type;
      raw[1] = (uint8_t)seq;
      raw[2] = (uint8_t)n;
      raw[3] = (uint8_t)(n >> 8);
      memcpy(raw + 4, body, n);
      crc = fe_crc32(0, raw, n + 4);
      raw[n + 4] = (uint8_t)crc;
      raw[n + 5] = (uint8_t)(crc >> 8);
      raw[n + 6] = (uint8_t)(crc >> 16);
      raw[n + 7] = (uint8_t)(crc >> 24);
      k = fe_cobs_frame(raw, n + 8, enc);
      if (k != m || memcmp(enc, want, m)) {
        fprintf(stderr, "FAIL frame type %d seq %d\n", type, seq);
        failures++;
      }
      checked++;
      free(body);
      free(want);
    } else if (!strcmp(kind, "transcript")) {
      snprintf(name, sizeof name, "%s", next_tok(&rest));
      s_nsteps = 0;
    } else if (!strcmp(kind, "info")) {
      parse_info(rest);
    } else if (!strcmp(kind, "in") || !strcmp(kind, "camera")) {
      if (s_nsteps == MAX_STEPS) {
        fprintf(stderr, "too many steps in %s\n", name);
        return 2;
      }
      s_steps[s_nsteps].in = unhex(next_tok(&rest), &s_steps[s_nsteps].in_len);
      s_steps[s_nsteps].camera = !strcmp(kind, "camera");
    } else if (!strcmp(kind, "out")) {
      s_steps[s_nsteps].out = unhex(next_tok(&rest), &s_steps[s_nsteps].out_len);
      s_nsteps++;
    } else if (!strcmp(kind, "end")) {
      int mode;
      for (mode = 0; mode < 3; mode++) failures += replay(name, mode);
      for (i = 0; i < s_nsteps; i++) {
        free(s_steps[i].in);
        free(s_steps[i].out);
      }
      s_nsteps = 0;
      checked++;
    }
  }
  fclose(f);
  printf("proto_test: %d vectors, %d failures (fe_protocol_t is %zu bytes)\n", checked, failures,
         sizeof(fe_protocol_t));
  return failures ? 1 : 0;
}
