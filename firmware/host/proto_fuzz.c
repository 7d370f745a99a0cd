/*
 * proto_fuzz.c: a deterministic fuzzer for fe_protocol_feed, built with ASan + UBSan.
 *
 *   gcc -std=c99 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
 *       -Ifirmware/common firmware/host/proto_fuzz.c firmware/common/fe_protocol.c -o proto_fuzz
 *   ./proto_fuzz firmware/common/golden/vectors.txt [seconds [seed [iteration]]]
 *
 * No libFuzzer needed: a seeded xorshift mutator. The seeds are the golden transcripts (device
 * description + the host's bytes). Each case mutates the device description (class count, input
 * size, model error, baud) and the host's byte stream (bit flips, inserts, deletes, splices, and
 * whole frames built with a good CRC so that mutations reach the message handlers, not only the
 * decoder), then feeds it in random pieces. Besides the sanitizers, every frame the board writes
 * is checked: delimited, COBS-valid, CRC good, a board-to-host type, at most 200 body bytes, and a
 * RESULT carries exactly num_classes (1..FE_MAX_CLASSES) scores with its label among them.
 *
 * PROTO_FUZZ_SANITIZERS_ONLY=1 turns the output checks off (to see what ASan/UBSan alone catch).
 *
 * Iteration i of seed s is a pure function of (s, i): a finding prints the line that replays it.
 * Exit status: 0 nothing found, 1 a finding (sanitizers exit 1 too), 2 usage or seed file error.
 */
#define _POSIX_C_SOURCE 199309L
#include <sanitizer/common_interface_defs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fe_protocol.h"

#define MAX_SEEDS 64
#define MAX_CASE (1 << 15)

/* ---- random numbers: xorshift64*, seeded per iteration ---- */

static uint64_t s_rng;
static uint32_t rnd32(void) {
  s_rng ^= s_rng >> 12;
  s_rng ^= s_rng << 25;
  s_rng ^= s_rng >> 27;
  return (uint32_t)((s_rng * 2685821657736338717ull) >> 32);
}
static uint32_t below(uint32_t n) { return n ? rnd32() % n : 0; }
static int chance(uint32_t percent) { return below(100) < percent; }

/* ---- seeds from vectors.txt ---- */

typedef struct {
  fe_device_info_t info;
  int error;
  uint32_t baud;
  uint8_t *data; /* the host's bytes of the whole transcript */
  size_t len;
} seed_t;

static seed_t s_seeds[MAX_SEEDS];
static int s_nseeds;
static char s_strings[MAX_SEEDS][3][80];

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static void append_hex(seed_t *s, const char *hex) {
  size_t n = strcspn(hex, " \r\n"), i;
  if (n == 1 && hex[0] == '-') return;
  s->data = realloc(s->data, s->len + n / 2 + 1);
  for (i = 0; i + 1 < n; i += 2) s->data[s->len++] = (uint8_t)(hexval(hex[i]) * 16 + hexval(hex[i + 1]));
}

static void parse_info(seed_t *s, char *line, int index) {
  char *tok = strtok(line, " \r\n");
  while ((tok = strtok(NULL, " \r\n")) != NULL) {
    char *eq = strchr(tok, '=');
    const char *v;
    if (!eq) continue;
    *eq = 0;
    v = eq + 1;
    if (!strcmp(tok, "board")) snprintf(s_strings[index][0], 80, "%s", v);
    else if (!strcmp(tok, "firmware")) snprintf(s_strings[index][1], 80, "%s", v);
    else if (!strcmp(tok, "sha")) snprintf(s_strings[index][2], 80, "%s", v);
    else if (!strcmp(tok, "width")) s->info.input_width = (uint16_t)atoi(v);
    else if (!strcmp(tok, "height")) s->info.input_height = (uint16_t)atoi(v);
    else if (!strcmp(tok, "channels")) s->info.input_channels = (uint8_t)atoi(v);
    else if (!strcmp(tok, "classes")) s->info.num_classes = (uint8_t)atoi(v);
    else if (!strcmp(tok, "arena")) s->info.arena_bytes = (uint32_t)strtoul(v, NULL, 10);
    else if (!strcmp(tok, "free")) s->info.free_ram_bytes = (uint32_t)strtoul(v, NULL, 10);
    else if (!strcmp(tok, "error")) s->error = atoi(v);
    else if (!strcmp(tok, "baud")) s->baud = (uint32_t)strtoul(v, NULL, 10);
  }
  s->info.board = s_strings[index][0];
  s->info.firmware_version = s_strings[index][1];
  s->info.model_sha256 = s_strings[index][2];
}

static int load_seeds(const char *path) {
  static char line[1 << 17];
  FILE *f = fopen(path, "r");
  seed_t *cur = NULL;
  if (!f) {
    perror(path);
    return -1;
  }
  while (fgets(line, sizeof line, f)) {
    if (!strncmp(line, "transcript ", 11) && s_nseeds < MAX_SEEDS) {
      cur = &s_seeds[s_nseeds++];
      memset(cur, 0, sizeof *cur);
    } else if (cur && !strncmp(line, "info ", 5)) {
      parse_info(cur, line, (int)(cur - s_seeds));
    } else if (cur && !strncmp(line, "in ", 3)) {
      append_hex(cur, line + 3);
    } else if (!strncmp(line, "end", 3)) {
      cur = NULL;
    }
  }
  fclose(f);
  return s_nseeds;
}

/* ---- building a case ---- */

typedef struct {
  uint8_t *b;
  size_t n;
} buf_t;

static void put(buf_t *c, const uint8_t *d, size_t n) {
  if (c->n + n > MAX_CASE) n = MAX_CASE - c->n;
  memcpy(c->b + c->n, d, n);
  c->n += n;
}

/* One host frame with a good CRC (the board's own encoder, as in the golden vectors). */
static void put_frame(buf_t *c, uint8_t type, uint8_t seq, const uint8_t *body, size_t len) {
  static uint8_t raw[FE_FRAME_HEADER + 8192 + FE_FRAME_CRC], enc[sizeof raw + sizeof raw / 254 + 3];
  uint32_t crc;
  if (len > 8192) len = 8192;
  raw[0] = type;
  raw[1] = seq;
  raw[2] = (uint8_t)len;
  raw[3] = (uint8_t)(len >> 8);
  if (len) memcpy(raw + FE_FRAME_HEADER, body, len);
  crc = fe_crc32(0, raw, FE_FRAME_HEADER + len);
  raw[FE_FRAME_HEADER + len] = (uint8_t)crc;
  raw[FE_FRAME_HEADER + len + 1] = (uint8_t)(crc >> 8);
  raw[FE_FRAME_HEADER + len + 2] = (uint8_t)(crc >> 16);
  raw[FE_FRAME_HEADER + len + 3] = (uint8_t)(crc >> 24);
  put(c, enc, fe_cobs_frame(raw, FE_FRAME_HEADER + len + FE_FRAME_CRC, enc));
}

/* A plausible session for any input size: HELLO, images in chunks (mostly in order, ids mostly
 * right), result requests, a few odd frames, BYE. */
static void gen_session(buf_t *c, uint32_t input_bytes) {
  uint8_t body[8192];
  uint8_t seq = (uint8_t)below(256);
  uint16_t id = (uint16_t)below(65536);
  int frames = 3 + (int)below(40), i;
  body[0] = chance(90) ? FE_PROTOCOL_VERSION : (uint8_t)below(256);
  put_frame(c, FE_MSG_HELLO, seq++, body, 1);
  for (i = 0; i < frames && c->n < MAX_CASE - 9000; i++) {
    uint32_t r = below(100);
    if (r < 70) { /* one image, in chunks */
      uint32_t off = 0;
      while (off < input_bytes) {
        uint32_t n = 1 + below(chance(50) ? 64 : 4090);
        uint32_t at = chance(90) ? off : below(input_bytes + 8);
        uint16_t cid = chance(90) ? id : (uint16_t)(id + below(5) - 2);
        if (n > input_bytes - off && chance(80)) n = input_bytes - off;
        body[0] = (uint8_t)cid;
        body[1] = (uint8_t)(cid >> 8);
        body[2] = (uint8_t)at;
        body[3] = (uint8_t)(at >> 8);
        body[4] = (uint8_t)(at >> 16);
        body[5] = (uint8_t)(at >> 24);
        {
          uint32_t k;
          for (k = 0; k < n && 6 + k < sizeof body; k++) body[6 + k] = (uint8_t)rnd32();
        }
        put_frame(c, FE_MSG_CHUNK, seq++, body, 6 + (n < sizeof body - 6 ? n : sizeof body - 6));
        off += n;
        if (c->n >= MAX_CASE - 9000) break;
      }
      id++;
    } else if (r < 80) {
      uint16_t rid = (uint16_t)(id - below(6));
      body[0] = (uint8_t)rid;
      body[1] = (uint8_t)(rid >> 8);
      put_frame(c, FE_MSG_RESULT_REQ, seq++, body, below(4));
    } else if (r < 85) {
      body[0] = FE_PROTOCOL_VERSION;
      put_frame(c, FE_MSG_HELLO, seq++, body, 1);
    } else if (r < 88) {
      put_frame(c, FE_MSG_BYE, seq++, body, 0);
    } else {
      uint32_t n = below(80), k;
      for (k = 0; k < n; k++) body[k] = (uint8_t)rnd32();
      put_frame(c, (uint8_t)below(256), seq++, body, n);
    }
  }
}

static void mutate_bytes(buf_t *c, int ops) {
  while (ops-- > 0 && c->n) {
    uint32_t at = below((uint32_t)c->n);
    switch (below(7)) {
      case 0: c->b[at] ^= (uint8_t)(1u << below(8)); break;
      case 1: c->b[at] = (uint8_t)rnd32(); break;
      case 2: c->b[at] = chance(50) ? 0 : 0xFF; break;
      case 3: { /* delete a run */
        uint32_t n = 1 + below(32);
        if (at + n > c->n) n = (uint32_t)c->n - at;
        memmove(c->b + at, c->b + at + n, c->n - at - n);
        c->n -= n;
        break;
      }
      case 4: { /* insert random bytes */
        uint32_t n = 1 + below(32), k;
        if (c->n + n > MAX_CASE) break;
        memmove(c->b + at + n, c->b + at, c->n - at);
        for (k = 0; k < n; k++) c->b[at + k] = (uint8_t)rnd32();
        c->n += n;
        break;
      }
      case 5: { /* duplicate a run */
        uint32_t n = 1 + below(200);
        if (at + n > c->n) n = (uint32_t)c->n - at;
        if (c->n + n > MAX_CASE) break;
        memmove(c->b + at + n, c->b + at, c->n - at);
        c->n += n;
        break;
      }
      default: { /* splice from another seed */
        const seed_t *o = &s_seeds[below((uint32_t)s_nseeds)];
        uint32_t from, n;
        if (!o->len) break;
        from = below((uint32_t)o->len);
        n = 1 + below(300);
        if (from + n > o->len) n = (uint32_t)o->len - from;
        if (at + n > MAX_CASE) break;
        memcpy(c->b + at, o->data + from, n);
        if (at + n > c->n) c->n = at + n;
        break;
      }
    }
  }
}

/* ---- the board under test ---- */

static fe_device_info_t s_info;
static const uint8_t *s_case;
static size_t s_case_len;
static unsigned long long s_seed, s_iter;
static const char *s_vectors;
static unsigned long long s_frames_out, s_results;
static int s_check_output = 1;

static void report(const char *what) {
  size_t i, n = s_case_len < 4096 ? s_case_len : 4096;
  fprintf(stderr, "proto_fuzz: FINDING at seed %llu iteration %llu: %s\n", s_seed, s_iter, what);
  fprintf(stderr, "proto_fuzz: device classes=%u width=%u height=%u channels=%u\n",
          s_info.num_classes, s_info.input_width, s_info.input_height, s_info.input_channels);
  fprintf(stderr, "proto_fuzz: replay: proto_fuzz %s 0 %llu %llu\nproto_fuzz: input ", s_vectors, s_seed,
          s_iter);
  for (i = 0; i < n; i++) fprintf(stderr, "%02x", s_case[i]);
  fprintf(stderr, "%s\n", n < s_case_len ? "..." : "");
}

static void on_death(void) { report("sanitizer report above"); }

static void fail(const char *what) {
  report(what);
  exit(1);
}

/* Every frame the board writes must be one a host can trust. */
static void on_write(void *ctx, const uint8_t *d, size_t n) {
  static uint8_t raw[1024];
  size_t i = 1, o = 0, len;
  uint32_t crc;
  (void)ctx;
  s_frames_out++;
  if (!s_check_output) return;
  if (n < 2 || d[0] != 0 || d[n - 1] != 0) fail("output frame not delimited");
  while (i < n - 1) { /* COBS decode */
    uint8_t code = d[i++];
    size_t k;
    if (code == 0) fail("zero byte inside an output frame");
    for (k = 1; k < code; k++) {
      if (i >= n - 1 || o >= sizeof raw) fail("output frame: COBS block runs past the end");
      raw[o++] = d[i++];
    }
    if (code != 0xFF && i < n - 1) {
      if (o >= sizeof raw) fail("output frame too long");
      raw[o++] = 0;
    }
  }
  if (o < FE_FRAME_HEADER + FE_FRAME_CRC) fail("output frame too short");
  len = (size_t)raw[2] | ((size_t)raw[3] << 8);
  if (len != o - FE_FRAME_HEADER - FE_FRAME_CRC) fail("output frame: length field wrong");
  if (len > 200) fail("output body longer than 200 bytes (PROTOCOL.md)");
  crc = fe_crc32(0, raw, o - FE_FRAME_CRC);
  if (memcmp(&raw[o - 4], (uint8_t[4]){(uint8_t)crc, (uint8_t)(crc >> 8), (uint8_t)(crc >> 16),
                                        (uint8_t)(crc >> 24)}, 4))
    fail("output frame: bad CRC");
  if (raw[0] < FE_MSG_INFO || raw[0] > FE_MSG_BYE_ACK) fail("output frame: not a board-to-host type");
  if (raw[0] == FE_MSG_RESULT) {
    const uint8_t *b = raw + FE_FRAME_HEADER;
    s_results++;
    if (len < 8 || b[3] == 0 || b[3] > FE_MAX_CLASSES || len != 8u + b[3])
      fail("RESULT class count outside 1..FE_MAX_CLASSES or length mismatch");
    if (b[3] != s_info.num_classes) fail("RESULT class count differs from the device's");
    if (b[2] >= b[3]) fail("RESULT label is not one of its classes");
  }
}

/* The firmware's contract (fe_infer_fn): write num_classes scores and the time. */
static int infer(void *ctx, const int8_t *input, int8_t *scores, uint32_t *micros) {
  uint32_t n = (uint32_t)s_info.input_width * s_info.input_height * s_info.input_channels, i, u = 0;
  int k;
  (void)ctx;
  for (i = 0; i < n; i++) u = u * 31u + (uint8_t)input[i];
  if ((u & 63) == 7) return FE_ERR_INVOKE;
  for (k = 0; k < s_info.num_classes; k++) scores[k] = (int8_t)(uint8_t)(u >> (k & 15));
  *micros = u;
  return FE_OK;
}

static void run_case(uint64_t seed, uint64_t iter, buf_t *c) {
  static const uint8_t class_choices[] = {0, 1, 2, 3, 15, 16, 17, 20, 64, 100, 200, 255};
  const seed_t *sd;
  fe_protocol_t *p;
  int8_t *input;
  uint32_t input_bytes;
  int error;
  size_t at = 0;
  s_rng = (seed + 1) * 0x9E3779B97F4A7C15ull ^ (iter + 1) * 0xD1B54A32D192ED03ull;
  if (!s_rng) s_rng = 1;
  (void)rnd32();
  sd = &s_seeds[below((uint32_t)s_nseeds)];
  s_info = sd->info;
  error = sd->error;
  if (chance(50)) { /* another device: the board's side of the contract is fuzzed too */
    s_info.num_classes = chance(70) ? class_choices[below(sizeof class_choices)] : (uint8_t)below(256);
    if (chance(50)) {
      s_info.input_width = (uint16_t)(1 + below(8));
      s_info.input_height = (uint16_t)(1 + below(8));
      s_info.input_channels = (uint8_t)(1 + below(3));
    }
    error = chance(85) ? 0 : (int)below(12);
  }
  input_bytes = (uint32_t)s_info.input_width * s_info.input_height * s_info.input_channels;
  c->n = 0;
  if (chance(50))
    put(c, sd->data, sd->len);
  else
    gen_session(c, input_bytes);
  if (chance(80)) mutate_bytes(c, 1 + (int)below(chance(70) ? 4 : 40));
  s_case = c->b;
  s_case_len = c->n;

  /* Exactly sized allocations: a write past either is an ASan report, not a silent overwrite. */
  p = malloc(sizeof *p);
  input = malloc(input_bytes ? input_bytes : 1);
  if (!p || !input) exit(2);
  fe_protocol_init(p, &s_info, input, on_write, infer, NULL);
  if (error) fe_protocol_set_error(p, error);
  fe_protocol_set_baud(p, rnd32());
  while (at < c->n) {
    size_t n = chance(30) ? 1 : 1 + below(chance(50) ? 16 : 2000);
    if (n > c->n - at) n = c->n - at;
    fe_protocol_feed(p, c->b + at, n);
    at += n;
  }
  free(input);
  free(p);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  static uint8_t case_bytes[MAX_CASE];
  buf_t c = {case_bytes, 0};
  double seconds, start;
  unsigned long long bytes = 0;
  if (argc < 2) {
    fprintf(stderr, "usage: proto_fuzz VECTORS [seconds [seed [iteration]]]\n");
    return 2;
  }
  s_vectors = argv[1];
  seconds = argc > 2 ? atof(argv[2]) : 20.0;
  s_seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 1;
  if (load_seeds(s_vectors) <= 0) {
    fprintf(stderr, "proto_fuzz: no transcripts in %s\n", s_vectors);
    return 2;
  }
  __sanitizer_set_death_callback(on_death);
  s_check_output = !getenv("PROTO_FUZZ_SANITIZERS_ONLY");
  if (argc > 4) { /* replay one iteration */
    s_iter = strtoull(argv[4], NULL, 10);
    run_case(s_seed, s_iter, &c);
    printf("proto_fuzz: iteration %llu of seed %llu: nothing found\n", s_iter, s_seed);
    return 0;
  }
  start = now_s();
  for (s_iter = 0;; s_iter++) {
    if ((s_iter & 63) == 0 && now_s() - start >= seconds) break;
    run_case(s_seed, s_iter, &c);
    bytes += c.n;
  }
  printf("proto_fuzz: %llu cases, %llu bytes fed, %llu frames out (%llu RESULTs) in %.1f s, "
         "seed %llu, %d seed transcripts: 0 findings\n",
         s_iter, bytes, s_frames_out, s_results, now_s() - start, s_seed, s_nseeds);
  return 0;
}
