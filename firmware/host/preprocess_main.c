/*
 * preprocess_cli: run the firmware's camera preprocessing on a raw frame, on the host.
 *
 *   preprocess_cli FORMAT WIDTH HEIGHT SIZE CHANNELS < frame.raw > input.bin
 *
 * FORMAT is rgb565 (high byte first, as the cameras send it), rgb565_le, gray8, rgb888 or
 * bgr888. The output is SIZE*SIZE*CHANNELS int8 bytes: exactly what the board writes into the
 * model's input tensor for that frame. Handy for checking a frame captured on a board against
 * facemask_edge.data.preprocess.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fe_preprocess.h"

static const char *const kFormats[] = {"rgb565", "rgb565_le", "gray8", "rgb888", "bgr888"};

static int usage(void) {
  fprintf(stderr, "usage: preprocess_cli rgb565|rgb565_le|gray8|rgb888|bgr888 WIDTH HEIGHT SIZE CHANNELS"
                  " < frame > tensor\n");
  return 2;
}

static long number(const char *s, long lo, long hi) {
  char *end;
  long v = strtol(s, &end, 10);
  return (*s && !*end && v >= lo && v <= hi) ? v : -1;
}

int main(int argc, char **argv) {
  int format = -1;
  long width, height, size, channels;
  size_t need, got, out_bytes;
  unsigned char *frame;
  signed char *out;
  int rc, i;
  if (argc != 6) return usage();
  for (i = 0; i < 5; ++i) {
    if (strcmp(argv[1], kFormats[i]) == 0) format = i;
  }
  width = number(argv[2], 1, 65535);
  height = number(argv[3], 1, 65535);
  size = number(argv[4], 1, 4096);
  channels = number(argv[5], 1, 3);
  if (format < 0 || width < 0 || height < 0 || size < 0 || (channels != 1 && channels != 3)) return usage();
  need = fe_frame_bytes((fe_pixel_format_t)format, (uint16_t)width, (uint16_t)height);
  frame = malloc(need + 1);
  out_bytes = (size_t)(size * size * channels);
  out = malloc(out_bytes);
  if (frame == NULL || out == NULL) {
    fprintf(stderr, "out of memory\n");
    return 1;
  }
  got = fread(frame, 1, need + 1, stdin);
  if (got != need) {
    fprintf(stderr, "expected %lu frame bytes on stdin, got %lu%s\n", (unsigned long)need,
            (unsigned long)(got > need ? need : got), got > need ? " and more" : "");
    return 1;
  }
  rc = fe_preprocess(frame, (uint16_t)width, (uint16_t)height, (fe_pixel_format_t)format,
                     (uint16_t)size, (uint8_t)channels, (int8_t *)out);
  if (rc != FE_PRE_OK) {
    fprintf(stderr, "fe_preprocess failed: %d\n", rc);
    return 1;
  }
  if (fwrite(out, 1, out_bytes, stdout) != out_bytes) return 1;
  free(frame);
  free(out);
  return 0;
}
