/*
 * fe_protocol.c: board side of the facemask-edge serial protocol. See firmware/PROTOCOL.md.
 *
 * Bytes are COBS-decoded as they arrive. The last four decoded bytes of a frame are its CRC, so
 * decoded bytes pass through a 4-byte delay line first; a byte leaving the delay line is part of
 * the header or the body. Chunk data goes straight into the input tensor, but only at or after
 * the position the board expects next, and that position moves only when the CRC is good.
 */
#include "fe_protocol.h"

#include <string.h>

/* C99 has no static_assert: an array of negative size stops the build instead. */
#define FE_STATIC_ASSERT(cond, name) typedef char fe_static_assert_##name[(cond) ? 1 : -1]
FE_STATIC_ASSERT(sizeof(((fe_result_t *)0)->scores) == FE_MAX_CLASSES, scores_hold_max_classes);
FE_STATIC_ASSERT(sizeof(((fe_protocol_t *)0)->raw) >=
                     FE_FRAME_HEADER + 8 + FE_MAX_CLASSES + FE_FRAME_CRC,
                 raw_holds_a_result);
FE_STATIC_ASSERT(sizeof(((fe_protocol_t *)0)->raw) >=
                     FE_FRAME_HEADER + FE_CHUNK_HEADER + FE_FRAME_DATA_MAX + FE_FRAME_CRC,
                 raw_holds_a_camera_frame_piece);
FE_STATIC_ASSERT(sizeof(((fe_protocol_t *)0)->raw) >=
                     FE_FRAME_HEADER + 13 + FE_MAX_CLASSES + FE_FRAME_CRC,
                 raw_holds_a_frame_end);

/* Scores in a RESULT: the model's class count, never more than fe_result_t holds (init refuses
 * a larger count; this keeps memory safe even if a sketch clears that error). */
static uint8_t num_scores(const fe_protocol_t *p) {
  uint8_t k = p->info->num_classes;
  return k > FE_MAX_CLASSES ? (uint8_t)FE_MAX_CLASSES : k;
}

static uint32_t rd16(const uint8_t *b) { return (uint32_t)b[0] | ((uint32_t)b[1] << 8); }
static uint32_t rd32(const uint8_t *b) {
  return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}
static uint8_t *wr16(uint8_t *b, uint32_t v) {
  b[0] = (uint8_t)v;
  b[1] = (uint8_t)(v >> 8);
  return b + 2;
}
static uint8_t *wr32(uint8_t *b, uint32_t v) {
  b[0] = (uint8_t)v;
  b[1] = (uint8_t)(v >> 8);
  b[2] = (uint8_t)(v >> 16);
  b[3] = (uint8_t)(v >> 24);
  return b + 4;
}

/* CRC-32 (zlib), four bits at a time: a 64-byte table instead of 1 KB. */
static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};

static uint32_t crc_byte(uint32_t c, uint8_t b) {
  c ^= b;
  c = (c >> 4) ^ crc_nibble[c & 15];
  c = (c >> 4) ^ crc_nibble[c & 15];
  return c;
}

/* The running CRC inside fe_protocol_t is kept un-inverted (starts at 0xFFFFFFFF). */
uint32_t fe_crc32(uint32_t crc, const uint8_t *data, size_t len) {
  uint32_t c = ~crc;
  size_t i;
  for (i = 0; i < len; i++) c = crc_byte(c, data[i]);
  return ~c;
}

size_t fe_cobs_frame(const uint8_t *data, size_t len, uint8_t *out) {
  size_t o = 0, code_at, i;
  uint8_t code = 1;
  int after_full = 0; /* the open block follows a full 0xFF block */
  out[o++] = 0;
  code_at = o++;
  for (i = 0; i < len; i++) {
    if (data[i] == 0) {
      out[code_at] = code;
      code = 1;
      code_at = o++;
      after_full = 0;
    } else {
      out[o++] = data[i];
      if (++code == 0xFF) {
        out[code_at] = code;
        code = 1;
        code_at = o++;
        after_full = 1;
      }
    }
  }
  if (code == 1 && after_full)
    o = code_at; /* canonical COBS: no empty block after a full one at the end */
  else
    out[code_at] = code;
  out[o++] = 0;
  return o;
}

/* ---- sending ---------------------------------------------------------------------------- */

static void send_frame(fe_protocol_t *p, uint8_t type, uint8_t seq, size_t body_len) {
  /* body is already in p->raw + FE_FRAME_HEADER */
  size_t n = FE_FRAME_HEADER + body_len;
  uint32_t crc;
  p->raw[0] = type;
  p->raw[1] = seq;
  wr16(p->raw + 2, (uint32_t)body_len);
  crc = fe_crc32(0, p->raw, n);
  wr32(p->raw + n, crc);
  n += FE_FRAME_CRC;
  n = fe_cobs_frame(p->raw, n, p->tx);
  if (p->write) p->write(p->ctx, p->tx, n);
}

static uint8_t *body(fe_protocol_t *p) { return p->raw + FE_FRAME_HEADER; }

static size_t put_str(uint8_t *b, const char *s, size_t max) {
  size_t n = s ? strlen(s) : 0;
  if (n > max) n = max;
  b[0] = (uint8_t)n;
  if (n) memcpy(b + 1, s, n);
  return n + 1;
}

static void send_info(fe_protocol_t *p, uint8_t seq) {
  const fe_device_info_t *d = p->info;
  uint8_t *b = body(p), *q = b;
  *q++ = (uint8_t)p->error;
  *q++ = FE_PROTOCOL_VERSION;
  q = wr16(q, FE_MAX_FRAME_BODY);
  q = wr32(q, FE_RX_WINDOW);
  q = wr32(q, p->baud);
  q = wr16(q, d->input_width);
  q = wr16(q, d->input_height);
  *q++ = d->input_channels;
  *q++ = d->num_classes;
  q = wr32(q, d->arena_bytes);
  q = wr32(q, d->free_ram_bytes);
  q += put_str(q, d->board, 31);
  q += put_str(q, d->firmware_version, 31);
  q += put_str(q, d->model_sha256, 64);
  if (p->hello_ext) { /* the host sent a features byte: append ours (PROTOCOL.md 3.1) */
    *q++ = p->features;
    *q++ = p->counter_kind;
    q = wr32(q, p->preprocess_count);
  }
  send_frame(p, FE_MSG_INFO, seq, (size_t)(q - b));
}

static void send_ack(fe_protocol_t *p, uint8_t type, uint8_t seq, uint16_t id, uint32_t next,
                     int reason) {
  uint8_t *b = body(p), *q = b;
  q = wr16(q, id);
  q = wr32(q, next);
  if (type == FE_MSG_NAK) {
    *q++ = (uint8_t)reason;
    p->naks++;
  }
  send_frame(p, type, seq, (size_t)(q - b));
}

static void send_error(fe_protocol_t *p, uint8_t seq, int code, const char *msg) {
  uint8_t *b = body(p);
  size_t n = msg ? strlen(msg) : 0;
  if (n > 60) n = 60;
  b[0] = (uint8_t)code;
  if (n) memcpy(b + 1, msg, n);
  send_frame(p, FE_MSG_ERROR, seq, 1 + n);
}

static void send_result(fe_protocol_t *p, uint8_t seq, const fe_result_t *r) {
  uint8_t *b = body(p), *q = b;
  uint8_t k = num_scores(p);
  q = wr16(q, r->image_id);
  *q++ = r->label;
  *q++ = k;
  q = wr32(q, r->micros);
  memcpy(q, r->scores, k);
  q += k;
  if (p->features & FE_FEATURE_COUNTS) q = wr32(q, r->count);
  send_frame(p, FE_MSG_RESULT, seq, (size_t)(q - b));
}

/* ---- state ------------------------------------------------------------------------------ */

static void reset_decoder(fe_protocol_t *p) {
  p->cobs_code = 0;
  p->cobs_left = 0;
  p->overflow = 0;
  p->frame_pos = 0;
  p->tail_n = 0;
  p->crc = 0xFFFFFFFFu;
  p->chunk_ok = 0;
}

static void forget_images(fe_protocol_t *p) {
  p->image_active = 0;
  p->any_id = 1;
  p->image_id = 0;
  p->expected = 0;
  memset(p->history, 0, sizeof p->history);
  p->history_next = 0;
}

/* fe_result_t keeps FE_MAX_CLASSES scores: a model with more (or none) cannot be served, and
 * the board says so in INFO (status FE_ERR_MODEL_INIT) instead of overrunning the buffer. */
static int info_error(const fe_device_info_t *d) {
  return d->num_classes == 0 || d->num_classes > FE_MAX_CLASSES ? FE_ERR_MODEL_INIT : FE_OK;
}

void fe_protocol_init(fe_protocol_t *p, const fe_device_info_t *info, int8_t *input_buffer,
                      fe_write_fn write, fe_infer_fn infer, void *ctx) {
  memset(p, 0, sizeof *p);
  p->info = info;
  p->input = input_buffer;
  p->input_bytes = (uint32_t)info->input_width * info->input_height * info->input_channels;
  p->write = write;
  p->infer = infer;
  p->ctx = ctx;
  reset_decoder(p);
  forget_images(p);
  p->error = info_error(info);
}

/* FE_OK cannot clear an error of the device description itself. */
void fe_protocol_set_error(fe_protocol_t *p, int code) {
  p->error = code != FE_OK ? code : info_error(p->info);
}
void fe_protocol_set_counter(fe_protocol_t *p, uint8_t kind, uint32_t (*last_count)(void),
                             uint32_t preprocess_count) {
  p->counter_kind = kind;
  p->last_count = last_count;
  p->preprocess_count = preprocess_count;
}

void fe_protocol_set_baud(fe_protocol_t *p, uint32_t baud) { p->baud = baud; }
int fe_protocol_in_session(const fe_protocol_t *p) { return p->in_session; }

static const fe_result_t *find_result(const fe_protocol_t *p, uint16_t id) {
  int i;
  for (i = 0; i < FE_RESULT_HISTORY; i++)
    if (p->history[i].valid && p->history[i].image_id == id) return &p->history[i];
  return 0;
}

/* Position the board stands at, for ACK/NAK: the open image, or the next one at offset 0. */
static void position(const fe_protocol_t *p, uint16_t *id, uint32_t *next) {
  if (p->image_active) {
    *id = p->image_id;
    *next = p->expected;
  } else {
    *id = p->any_id ? 0 : (uint16_t)(p->image_id + 1);
    *next = 0;
  }
}

/* Called when the chunk header (body bytes 0..5) is complete: may its data go to the input? */
static void check_chunk(fe_protocol_t *p) {
  uint32_t len = rd16(p->head + 2);
  uint16_t id = (uint16_t)rd16(p->head + 4);
  uint32_t off = rd32(p->head + 6);
  uint32_t n = len - FE_CHUNK_HEADER;
  p->chunk_ok = 0;
  if (!p->in_session || p->error || len <= FE_CHUNK_HEADER || len > FE_MAX_FRAME_BODY) return;
  if (off != p->expected || off + n > p->input_bytes || off + n < off) return;
  if (p->image_active) {
    if (id == p->image_id) p->chunk_ok = 1;
  } else if (off == 0 && (p->any_id || id == (uint16_t)(p->image_id + 1))) {
    p->chunk_ok = 1;
  }
}

/* A decoded byte that is not part of the CRC. */
static void take_byte(fe_protocol_t *p, uint8_t b) {
  uint32_t pos = p->frame_pos++;
  p->crc = crc_byte(p->crc, b);
  if (pos < sizeof p->head) {
    p->head[pos] = b;
    if (pos == sizeof p->head - 1 && p->head[0] == FE_MSG_CHUNK) check_chunk(p);
  }
  if (pos >= FE_FRAME_HEADER) {
    uint32_t bpos = pos - FE_FRAME_HEADER;
    if (p->head[0] == FE_MSG_CHUNK) {
      if (p->chunk_ok && bpos >= FE_CHUNK_HEADER) {
        uint32_t at = p->expected + (bpos - FE_CHUNK_HEADER);
        if (at < p->input_bytes) p->input[at] = (int8_t)b;
      }
    } else if (bpos < sizeof p->scratch) {
      p->scratch[bpos] = b;
    }
  }
}

static void decoded(fe_protocol_t *p, uint8_t b) {
  if (p->overflow) return;
  if (p->tail_n < FE_FRAME_CRC) {
    p->tail[p->tail_n++] = b;
    return;
  }
  if (p->frame_pos >= FE_FRAME_HEADER + FE_MAX_FRAME_BODY) {
    p->overflow = 1;
    return;
  }
  take_byte(p, p->tail[0]);
  p->tail[0] = p->tail[1];
  p->tail[1] = p->tail[2];
  p->tail[2] = p->tail[3];
  p->tail[3] = b;
}

static void run_image(fe_protocol_t *p, uint8_t seq) {
  fe_result_t *r = &p->history[p->history_next];
  int rc, k, i;
  memset(r, 0, sizeof *r);
  r->image_id = p->image_id;
  rc = p->infer ? p->infer(p->ctx, p->input, r->scores, &r->micros) : FE_ERR_INVOKE;
  p->image_active = 0;
  p->expected = 0;
  if (rc != FE_OK) {
    send_error(p, seq, rc, "invoke failed");
    return;
  }
  if (p->last_count) r->count = p->last_count();
  k = num_scores(p);
  for (i = 1; i < k; i++)
    if (r->scores[i] > r->scores[r->label]) r->label = (uint8_t)i;
  r->valid = 1;
  p->history_next = (uint8_t)((p->history_next + 1) % FE_RESULT_HISTORY);
  p->images++;
  send_result(p, seq, r);
}

/* ---- camera frames (FRAME_REQ) ----------------------------------------------------------- */

static void send_camera_input(fe_protocol_t *p) {
  uint32_t off = 0;
  while (off < p->input_bytes) {
    uint32_t n = p->input_bytes - off;
    uint8_t *b = body(p), *q = b;
    if (n > FE_FRAME_DATA_MAX) n = FE_FRAME_DATA_MAX;
    q = wr16(q, p->frame_no);
    q = wr32(q, off);
    memcpy(q, (const uint8_t *)p->input + off, n);
    q += n;
    send_frame(p, FE_MSG_FRAME, p->frame_seq, (size_t)(q - b));
    off += n;
  }
}

static void send_camera_end(fe_protocol_t *p, const int8_t *scores, uint32_t micros) {
  uint8_t *b = body(p), *q = b;
  uint8_t k = num_scores(p), label = 0, i;
  for (i = 1; i < k; i++)
    if (scores[i] > scores[label]) label = i;
  q = wr16(q, p->frame_no);
  q = wr16(q, p->info->input_width);
  q = wr16(q, p->info->input_height);
  *q++ = p->info->input_channels;
  *q++ = label;
  *q++ = k;
  q = wr32(q, micros);
  memcpy(q, scores, k);
  q += k;
  send_frame(p, FE_MSG_FRAME_END, p->frame_seq, (size_t)(q - b));
}

int fe_protocol_camera(fe_protocol_t *p, int8_t *scores, uint32_t *micros) {
  int8_t local[FE_MAX_CLASSES];
  int rc;
  const int wanted = p->frame_wanted && !p->in_session && !p->error;
  if (wanted) send_camera_input(p); /* before Invoke: the tensor may be reused as scratch */
  memset(local, 0, sizeof local);
  *micros = 0;
  rc = p->infer ? p->infer(p->ctx, p->input, local, micros) : FE_ERR_INVOKE;
  memcpy(scores, local, num_scores(p));
  if (!wanted) return rc;
  p->frame_wanted = 0;
  if (rc != FE_OK) {
    send_error(p, p->frame_seq, rc, "invoke failed");
  } else {
    send_camera_end(p, local, *micros);
  }
  p->frame_no++;
  return rc;
}

static void handle_chunk(fe_protocol_t *p, uint8_t seq, uint32_t len) {
  uint16_t id, pid;
  uint32_t off, n, pnext;
  const fe_result_t *r;
  if (!p->in_session) {
    send_error(p, seq, FE_ERR_SEQUENCE, "no session");
    return;
  }
  if (p->error) {
    send_error(p, seq, p->error, "model not ready");
    return;
  }
  if (len <= FE_CHUNK_HEADER) {
    position(p, &pid, &pnext);
    send_ack(p, FE_MSG_NAK, seq, pid, pnext, FE_ERR_BAD_FRAME);
    return;
  }
  id = (uint16_t)rd16(p->head + 4);
  off = rd32(p->head + 6);
  n = len - FE_CHUNK_HEADER;
  if (off + n > p->input_bytes || off + n < off) {
    send_error(p, seq, FE_ERR_WRONG_SIZE, "chunk past end of input");
    return;
  }
  if (p->chunk_ok) {
    if (!p->image_active) {
      p->image_active = 1;
      p->any_id = 0;
      p->image_id = id;
    }
    p->expected += n;
    send_ack(p, FE_MSG_ACK, seq, id, p->expected, 0);
    if (p->expected == p->input_bytes) run_image(p, seq);
    return;
  }
  if (p->image_active && id == p->image_id && off < p->expected) {
    send_ack(p, FE_MSG_ACK, seq, id, p->expected, 0);
    return;
  }
  r = find_result(p, id);
  if (r && !(p->image_active && id == p->image_id)) {
    if (off + n == p->input_bytes)
      send_result(p, seq, r);
    else
      send_ack(p, FE_MSG_ACK, seq, id, p->input_bytes, 0);
    return;
  }
  position(p, &pid, &pnext);
  send_ack(p, FE_MSG_NAK, seq, pid, pnext, FE_ERR_SEQUENCE);
}

static void handle_frame(fe_protocol_t *p) {
  uint8_t type = p->head[0], seq = p->head[1];
  uint32_t len = rd16(p->head + 2);
  const fe_result_t *r;
  p->last_seq = seq;
  p->frames_ok++;
  switch (type) {
    case FE_MSG_HELLO:
      forget_images(p);
      p->frame_wanted = 0; /* the host now owns the board: no camera frames */
      p->in_session = (len >= 1 && p->scratch[0] == FE_PROTOCOL_VERSION);
      p->hello_ext = (uint8_t)(len >= 2);
      p->features = (uint8_t)(len >= 2 && p->last_count ? p->scratch[1] & FE_FEATURES_SUPPORTED : 0);
      send_info(p, seq);
      break;
    case FE_MSG_CHUNK:
      handle_chunk(p, seq, len);
      break;
    case FE_MSG_RESULT_REQ:
      if (!p->in_session) {
        send_error(p, seq, FE_ERR_SEQUENCE, "no session");
      } else if (len >= 2 && (r = find_result(p, (uint16_t)rd16(p->scratch))) != 0) {
        send_result(p, seq, r);
      } else {
        send_error(p, seq, FE_ERR_NO_RESULT, "result not kept");
      }
      break;
    case FE_MSG_FRAME_REQ:
      if (p->in_session) {
        send_error(p, seq, FE_ERR_BUSY, "in session");
      } else if (p->error) {
        send_error(p, seq, p->error, "model not ready");
      } else {
        /* Answered by the next camera frame (fe_protocol_camera); a repeat only renews the seq. */
        p->frame_wanted = 1;
        p->frame_seq = seq;
      }
      break;
    case FE_MSG_BYE:
      p->in_session = 0;
      forget_images(p);
      send_frame(p, FE_MSG_BYE_ACK, seq, 0);
      break;
    default:
      if (type < 0x80) send_error(p, seq, FE_ERR_UNKNOWN_MSG, "unknown message");
      break;
  }
}

static void end_frame(fe_protocol_t *p, int cobs_ok) {
  uint32_t total = p->frame_pos + p->tail_n;
  int good;
  uint16_t id;
  uint32_t next;
  if (total == 0 && cobs_ok) return; /* empty frame between two delimiters */
  good = cobs_ok && !p->overflow && p->tail_n == FE_FRAME_CRC && p->frame_pos >= FE_FRAME_HEADER &&
         rd16(p->head + 2) == p->frame_pos - FE_FRAME_HEADER &&
         (p->crc ^ 0xFFFFFFFFu) == rd32(p->tail);
  if (good) {
    handle_frame(p);
  } else {
    p->frames_bad++;
    if (p->in_session) {
      position(p, &id, &next);
      send_ack(p, FE_MSG_NAK, (uint8_t)(p->last_seq + 1), id, next, FE_ERR_BAD_FRAME);
    }
  }
}

void fe_protocol_feed(fe_protocol_t *p, const uint8_t *data, size_t len) {
  size_t i;
  for (i = 0; i < len; i++) {
    uint8_t b = data[i];
    if (b == 0) {
      end_frame(p, p->cobs_left == 0);
      reset_decoder(p);
      continue;
    }
    if (p->cobs_left == 0) {
      /* A new code byte: the previous block (if it was not a full 254-byte one) ended in a zero. */
      if (p->cobs_code != 0 && p->cobs_code != 0xFF) decoded(p, 0);
      p->cobs_code = b;
      p->cobs_left = (uint8_t)(b - 1);
    } else {
      decoded(p, b);
      p->cobs_left--;
    }
  }
}
