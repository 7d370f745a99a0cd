/*
 * fe_preprocess: camera frame -> int8 model input, bit-exact with the toolkit's Python
 * facemask_edge.data.preprocess.device_preprocess() followed by to_int8().
 *
 * Portable C99, integer arithmetic only, no heap, no board headers. The steps (the Python module's
 * docstring is the specification):
 *
 *   1. RGB565 pixels are expanded to RGB888 by bit replication
 *      (r8 = r5 << 3 | r5 >> 2, g8 = g6 << 2 | g6 >> 4, b8 likewise);
 *   2. centre crop to a square of side min(W, H), offsets rounded down;
 *   3. box-average resize to size x size: output pixel o averages source pixels
 *      [o*S/D, (o+1)*S/D) on each axis (at least one pixel), rounded half up;
 *   4. a grayscale model takes (77 R + 150 G + 29 B + 128) >> 8 of the resized pixel; a grayscale
 *      frame fed to an RGB model is replicated to three channels;
 *   5. the int8 input is pixel - 128 (scale 1/255, zero point -128).
 *
 * The frame is read in place and converted pixel by pixel, so the only memory needed is the
 * frame the camera already filled and the model's input tensor.
 */
#ifndef FE_PREPROCESS_H
#define FE_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Pixel layouts a camera driver hands over. */
typedef enum {
  FE_PIXEL_RGB565 = 0,    /* 2 bytes, high byte first: OV7675 (Arduino_OV767X), OV2640 (esp32-camera) */
  FE_PIXEL_RGB565_LE = 1, /* 2 bytes, low byte first (drivers that store native uint16_t) */
  FE_PIXEL_GRAY8 = 2,     /* 1 byte luma */
  FE_PIXEL_RGB888 = 3,    /* 3 bytes R, G, B */
  FE_PIXEL_BGR888 = 4     /* 3 bytes B, G, R: esp32-camera fmt2rgb888() output (decoded JPEG) */
} fe_pixel_format_t;

/* Return codes. */
#define FE_PRE_OK 0
#define FE_PRE_ERR_ARG (-1)    /* NULL pointer, zero size, or channels not 1 or 3 */
#define FE_PRE_ERR_FORMAT (-2) /* unknown fe_pixel_format_t */
#define FE_PRE_ERR_SIZE (-3)   /* crop side above FE_PRE_MAX_SIDE (sums would overflow 32 bits) */

/* Largest centre-crop side: 4096^2 * 255 + rounding still fits a uint32_t box sum. */
#define FE_PRE_MAX_SIDE 4096u

/* Bytes per pixel of a format (0 for an unknown one). */
size_t fe_pixel_bytes(fe_pixel_format_t format);

/* Bytes of a tightly packed width x height frame (0 for an unknown format). */
size_t fe_frame_bytes(fe_pixel_format_t format, uint16_t width, uint16_t height);

/*
 * Preprocess one frame into the model input.
 *
 *   frame     width x height pixels in `format`, rows packed without padding
 *   size      model input side (the model is size x size)
 *   channels  3 for an RGB model, 1 for a grayscale model
 *   out       size * size * channels int8 values, HWC order (the TFLM input tensor)
 *
 * Returns FE_PRE_OK or a negative FE_PRE_ERR_* code (then `out` is untouched).
 */
int fe_preprocess(const uint8_t *frame, uint16_t width, uint16_t height, fe_pixel_format_t format,
                  uint16_t size, uint8_t channels, int8_t *out);

/* The same, writing uint8 pixels (0..255) instead of int8 (used by host tests and tools). */
int fe_preprocess_u8(const uint8_t *frame, uint16_t width, uint16_t height,
                     fe_pixel_format_t format, uint16_t size, uint8_t channels, uint8_t *out);

#ifdef __cplusplus
}
#endif

#endif /* FE_PREPROCESS_H */
