/*
 * fe_result: turn the model's int8 scores into a prediction and the camera-loop line that
 * `facemask-edge monitor` parses (format fixed in the project notes):
 *
 *   PRED ms=<uptime_ms> idx=<label_index> label=<label> conf=<0..100> us=<inference_us> scores=<s0>,<s1>,...\r\n
 *
 * Portable C99, no printf, no heap, no float library calls.
 */
#ifndef FE_RESULT_H
#define FE_RESULT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Room for a PRED line with `num_classes` scores and a label of `label_len` characters. */
#define FE_PRED_LINE_MAX(num_classes, label_len) (73u + (label_len) + 5u * (num_classes))

/* Index of the largest score; the lowest index wins a tie (numpy.argmax). 0 when n == 0. */
size_t fe_argmax(const int8_t *scores, size_t n);

/*
 * Confidence in percent of one int8 score: round(100 * (score - zero_point) * scale), clipped to
 * 0..100. The product is formed in double, in that order, and rounded half to even, so it equals
 * Python's round(100 * (s - zp) * scale) for every input (the host checks lines against it).
 */
uint8_t fe_confidence(int8_t score, float scale, int32_t zero_point);

/*
 * Write one PRED line (with its "\r\n", NUL-terminated) into buf. Characters of `label` that
 * would break the line's key=value fields (space, control characters, '=' and ',') are written
 * as '_'. Returns the line length without the NUL, or 0 when `cap` is too small.
 */
size_t fe_format_pred(char *buf, size_t cap, uint32_t uptime_ms, size_t label_index,
                      const char *label, uint8_t confidence, uint32_t inference_us,
                      const int8_t *scores, size_t num_classes);

#ifdef __cplusplus
}
#endif

#endif /* FE_RESULT_H */
