/*
 * fe_preprocess.c: see fe_preprocess.h. Every operation here mirrors one line of
 * facemask_edge/data/preprocess.py; tests/test_firmware_preprocess.py compares the two byte for
 * byte on generated frames and on real photos.
 */
#include "fe_preprocess.h"

size_t fe_pixel_bytes(fe_pixel_format_t format) {
  switch (format) {
    case FE_PIXEL_RGB565:
    case FE_PIXEL_RGB565_LE:
      return 2;
    case FE_PIXEL_GRAY8:
      return 1;
    case FE_PIXEL_RGB888:
    case FE_PIXEL_BGR888:
      return 3;
  }
  return 0;
}

size_t fe_frame_bytes(fe_pixel_format_t format, uint16_t width, uint16_t height) {
  return fe_pixel_bytes(format) * (size_t)width * (size_t)height;
}

/* Bit replication, as rgb565_to_rgb888() does it. */
static void add_rgb565(uint16_t v, uint32_t sum[3]) {
  uint32_t r5 = (v >> 11) & 0x1Fu, g6 = (v >> 5) & 0x3Fu, b5 = v & 0x1Fu;
  sum[0] += (r5 << 3) | (r5 >> 2);
  sum[1] += (g6 << 2) | (g6 >> 4);
  sum[2] += (b5 << 3) | (b5 >> 2);
}

/* Sum the pixels of rows [y0, y1) and columns [x0, x1) of the frame, per source channel. */
static void box_sum(const uint8_t *frame, uint32_t width, fe_pixel_format_t format, uint32_t x0,
                    uint32_t x1, uint32_t y0, uint32_t y1, uint32_t sum[3]) {
  uint32_t x, y;
  const size_t bpp = fe_pixel_bytes(format);
  sum[0] = sum[1] = sum[2] = 0;
  for (y = y0; y < y1; ++y) {
    const uint8_t *p = frame + ((size_t)y * width + x0) * bpp;
    switch (format) {
      case FE_PIXEL_RGB565:
        for (x = x0; x < x1; ++x, p += 2) add_rgb565((uint16_t)((p[0] << 8) | p[1]), sum);
        break;
      case FE_PIXEL_RGB565_LE:
        for (x = x0; x < x1; ++x, p += 2) add_rgb565((uint16_t)((p[1] << 8) | p[0]), sum);
        break;
      case FE_PIXEL_GRAY8:
        for (x = x0; x < x1; ++x, ++p) sum[0] += p[0];
        break;
      case FE_PIXEL_RGB888:
        for (x = x0; x < x1; ++x, p += 3) {
          sum[0] += p[0];
          sum[1] += p[1];
          sum[2] += p[2];
        }
        break;
      case FE_PIXEL_BGR888:
        for (x = x0; x < x1; ++x, p += 3) {
          sum[0] += p[2];
          sum[1] += p[1];
          sum[2] += p[0];
        }
        break;
    }
  }
}

/* Source range of output index o: [o*S/D, (o+1)*S/D), at least one pixel (preprocess._bounds). */
static void bounds(uint32_t o, uint32_t src, uint32_t dst, uint32_t *start, uint32_t *end) {
  *start = (o * src) / dst;
  *end = ((o + 1u) * src) / dst;
  if (*end < *start + 1u) *end = *start + 1u;
}

/*
 * The camera path (RGB565 frame, RGB model) without expanding each pixel. A replicated channel is
 * 8 f + (f >> 2) for the 5-bit fields and 4 f + (f >> 4) for the 6-bit one, so a box's sum is 8
 * (or 4) times the sum of its fields plus the sum of their top bits, and both are summed in place
 * with one AND and one ADD per pixel each: R and B share a word (B's sum stays below bit 11 for
 * boxes of at most RGB565_PACKED_MAX pixels), G and the top bits have their own. The same integers
 * as add_rgb565() and box_sum(), in fewer instructions on a Cortex-M4 (-Os): a QCIF frame to 48x48
 * took 0.958 M through box_sum() and takes 0.580 M here (`facemask-edge emulate --measure-only`).
 * noinline keeps the loops' registers their own instead of spilling inside run().
 */
#define RGB565_PACKED_MAX 64u
__attribute__((noinline)) static void resize_rgb565(const uint8_t *frame, uint32_t width, uint32_t little_endian,
                          uint32_t crop_x, uint32_t crop_y, uint32_t side, uint32_t size,
                          uint8_t *out, uint8_t xor_mask) {
  const size_t stride = (size_t)width * 2u;
  /* Box edges o * side / size, stepped; side >= size, so every box has at least one pixel. */
  uint32_t oy, ox, ys = 0, ye, y_num = side;
  for (oy = 0; oy < size; ++oy, ys = ye, y_num += side) {
    const uint8_t *band = frame + (size_t)(crop_y + ys) * stride + (size_t)crop_x * 2u;
    uint32_t xs = 0, xe, x_num = side;
    ye = y_num / size;
    for (ox = 0; ox < size; ++ox, xs = xe, x_num += side) {
      uint32_t y, count, half, rb = 0, g = 0, rb_top = 0, g_top = 0;
      const uint8_t *row;
      xe = x_num / size;
      for (y = ys, row = band + xs * 2u; y < ye; ++y, row += stride) {
        const uint8_t *p = row, *end = row + (xe - xs) * 2u;
        /* One loop per byte order, so the byte offsets are constants. */
#define FE_SUM_RGB565(HI, LO)                                  \
  for (; p < end; p += 2) {                                    \
    const uint32_t v = ((uint32_t)p[HI] << 8) | p[LO];         \
    rb += v & 0xF81Fu;                                         \
    g += v & 0x07E0u;                                          \
    rb_top += v & 0xE01Cu;                                     \
    g_top += v & 0x0600u;                                      \
  }
        if (little_endian) {
          FE_SUM_RGB565(1, 0)
        } else {
          FE_SUM_RGB565(0, 1)
        }
#undef FE_SUM_RGB565
      }
      count = (ye - ys) * (xe - xs);
      half = count / 2u; /* round half up, as box_resize() */
      *out++ = (uint8_t)(((((rb >> 11) << 3) + (rb_top >> 13) + half) / count) ^ xor_mask);
      *out++ = (uint8_t)(((((g >> 5) << 2) + (g_top >> 9) + half) / count) ^ xor_mask);
      *out++ = (uint8_t)(((((rb & 0x7FFu) << 3) + ((rb_top & 0x1FFFu) >> 2) + half) / count) ^ xor_mask);
    }
  }
}

/* Shared body: xor_mask 0x80 turns the uint8 pixel p into the bytes of the int8 p - 128. */
static int run(const uint8_t *frame, uint16_t width, uint16_t height, fe_pixel_format_t format,
               uint16_t size, uint8_t channels, uint8_t *out, uint8_t xor_mask) {
  uint32_t side, crop_x, crop_y, oy, ox;
  int gray_source;
  if (frame == NULL || out == NULL || width == 0 || height == 0 || size == 0) return FE_PRE_ERR_ARG;
  if (channels != 1 && channels != 3) return FE_PRE_ERR_ARG;
  if (fe_pixel_bytes(format) == 0) return FE_PRE_ERR_FORMAT;
  side = width < height ? width : height;
  if (side > FE_PRE_MAX_SIDE) return FE_PRE_ERR_SIZE;
  crop_y = (height - side) / 2u; /* center_crop_box(): offsets rounded down */
  crop_x = (width - side) / 2u;
  gray_source = (format == FE_PIXEL_GRAY8);
  if ((format == FE_PIXEL_RGB565 || format == FE_PIXEL_RGB565_LE) && channels == 3) {
    const uint32_t box = (side + size - 1u) / size; /* widest box side */
    if (side >= size && box * box <= RGB565_PACKED_MAX) {
      resize_rgb565(frame, width, format == FE_PIXEL_RGB565_LE, crop_x, crop_y, side, size, out, xor_mask);
      return FE_PRE_OK;
    }
  }

  for (oy = 0; oy < size; ++oy) {
    uint32_t ys, ye;
    bounds(oy, side, size, &ys, &ye);
    for (ox = 0; ox < size; ++ox) {
      uint32_t xs, xe, count, c, sum[3];
      uint8_t px[3];
      bounds(ox, side, size, &xs, &xe);
      box_sum(frame, width, format, crop_x + xs, crop_x + xe, crop_y + ys, crop_y + ye, sum);
      count = (ye - ys) * (xe - xs);
      /* Round half up: (total + count // 2) // count in box_resize(). */
      for (c = 0; c < (gray_source ? 1u : 3u); ++c) px[c] = (uint8_t)((sum[c] + count / 2u) / count);

      if (channels == 1) {
        uint8_t y = gray_source ? px[0]
                                : (uint8_t)((77u * px[0] + 150u * px[1] + 29u * px[2] + 128u) >> 8);
        *out++ = (uint8_t)(y ^ xor_mask);
      } else if (gray_source) {
        *out++ = (uint8_t)(px[0] ^ xor_mask);
        *out++ = (uint8_t)(px[0] ^ xor_mask);
        *out++ = (uint8_t)(px[0] ^ xor_mask);
      } else {
        *out++ = (uint8_t)(px[0] ^ xor_mask);
        *out++ = (uint8_t)(px[1] ^ xor_mask);
        *out++ = (uint8_t)(px[2] ^ xor_mask);
      }
    }
  }
  return FE_PRE_OK;
}

int fe_preprocess(const uint8_t *frame, uint16_t width, uint16_t height, fe_pixel_format_t format,
                  uint16_t size, uint8_t channels, int8_t *out) {
  /* int8 p - 128 and uint8 p ^ 0x80 are the same byte for every p in 0..255. */
  return run(frame, width, height, format, size, channels, (uint8_t *)out, 0x80u);
}

int fe_preprocess_u8(const uint8_t *frame, uint16_t width, uint16_t height,
                     fe_pixel_format_t format, uint16_t size, uint8_t channels, uint8_t *out) {
  return run(frame, width, height, format, size, channels, out, 0x00u);
}
