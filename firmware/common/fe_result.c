/* fe_result.c: see fe_result.h. */
#include "fe_result.h"

size_t fe_argmax(const int8_t *scores, size_t n) {
  size_t i, best = 0;
  for (i = 1; i < n; ++i) {
    if (scores[i] > scores[best]) best = i;
  }
  return best;
}

uint8_t fe_confidence(int8_t score, float scale, int32_t zero_point) {
  /* Same operation order as Python's 100 * (s - zp) * scale: exact integer, then one product. */
  double x = (double)(100 * ((int32_t)score - zero_point)) * (double)scale;
  double whole, frac;
  long r;
  if (!(x > 0.0)) return 0; /* also catches NaN */
  if (x >= 100.0) return 100;
  r = (long)x; /* 0 <= x < 100: truncation is floor */
  whole = (double)r;
  frac = x - whole;
  if (frac > 0.5 || (frac == 0.5 && (r & 1L))) ++r; /* half to even, like Python's round() */
  return (uint8_t)(r > 100 ? 100 : r);
}

/* Append a NUL-free string; returns the new position, or cap when it did not fit. */
static size_t put_str(char *buf, size_t pos, size_t cap, const char *s) {
  while (*s) {
    if (pos + 1 >= cap) return cap;
    buf[pos++] = *s++;
  }
  return pos;
}

static size_t put_u32(char *buf, size_t pos, size_t cap, uint32_t v) {
  char tmp[10];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + (v % 10u));
    v /= 10u;
  } while (v);
  while (n) {
    if (pos + 1 >= cap) return cap;
    buf[pos++] = tmp[--n];
  }
  return pos;
}

static size_t put_i32(char *buf, size_t pos, size_t cap, int32_t v) {
  if (v < 0) {
    if (pos + 1 >= cap) return cap;
    buf[pos++] = '-';
    return put_u32(buf, pos, cap, (uint32_t)(-(v + 1)) + 1u);
  }
  return put_u32(buf, pos, cap, (uint32_t)v);
}

static size_t put_label(char *buf, size_t pos, size_t cap, const char *label) {
  if (label == NULL || *label == '\0') label = "?";
  for (; *label; ++label) {
    unsigned char c = (unsigned char)*label;
    if (pos + 1 >= cap) return cap;
    buf[pos++] = (c <= 0x20 || c == 0x7F || c == '=' || c == ',') ? '_' : (char)c;
  }
  return pos;
}

size_t fe_format_pred(char *buf, size_t cap, uint32_t uptime_ms, size_t label_index,
                      const char *label, uint8_t confidence, uint32_t inference_us,
                      const int8_t *scores, size_t num_classes) {
  size_t pos = 0, i;
  if (buf == NULL || cap == 0) return 0;
  pos = put_str(buf, pos, cap, "PRED ms=");
  pos = put_u32(buf, pos, cap, uptime_ms);
  pos = put_str(buf, pos, cap, " idx=");
  pos = put_u32(buf, pos, cap, (uint32_t)label_index);
  pos = put_str(buf, pos, cap, " label=");
  pos = put_label(buf, pos, cap, label);
  pos = put_str(buf, pos, cap, " conf=");
  pos = put_u32(buf, pos, cap, confidence);
  pos = put_str(buf, pos, cap, " us=");
  pos = put_u32(buf, pos, cap, inference_us);
  pos = put_str(buf, pos, cap, " scores=");
  for (i = 0; i < num_classes && pos < cap; ++i) {
    if (i) pos = put_str(buf, pos, cap, ",");
    pos = put_i32(buf, pos, cap, scores[i]);
  }
  pos = put_str(buf, pos, cap, "\r\n");
  if (pos >= cap) {
    buf[0] = '\0';
    return 0;
  }
  buf[pos] = '\0';
  return pos;
}
