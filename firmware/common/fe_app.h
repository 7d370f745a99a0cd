/*
 * fe_app: the application every board runs, written once.
 *
 * Model start-up (op resolver, interpreter, arena), the device info, the validation protocol and
 * the camera loop's inference + PRED line live here; a board file only supplies its serial port,
 * clocks, arena, camera and LED. The Nano 33 BLE sketch, the ESP32-CAM sketch and the emulator
 * board (firmware/boards/mps2_an386) all call it, so the emulator runs the Nano's application code.
 *
 * C++ (it owns the TFLM op resolver). Needs the exported model headers next to it (src/).
 *
 *     const fe_app_board_t b = {serial_write, board_micros, cycle_counter, FE_COUNTER_CYCLES, 0};
 *     fe_app_setup(&b, arena, sizeof arena, NULL);
 *     loop: fe_app_feed(bytes, n);
 *           if (!fe_app_in_session() && fe_app_status() == FE_OK) {
 *             fe_app_preprocess(frame, w, h, FE_PIXEL_RGB565);
 *             n = fe_app_classify(millis(), &line, &led);   // PRED line, LED mask
 *           }
 */
#ifndef FE_APP_H
#define FE_APP_H

#include <stddef.h>
#include <stdint.h>

#include "fe_preprocess.h"
#include "fe_protocol.h"

namespace tflite {
class MicroProfilerInterface;
}  // namespace tflite

typedef struct {
  fe_write_fn write;          /* the serial port (USB CDC or UART) */
  uint32_t (*clock_us)(void); /* microsecond clock (inference time in RESULT and PRED) */
  uint32_t (*count)(void);    /* free-running cycle or instruction counter, or NULL */
  uint8_t counter_kind;       /* FE_COUNTER_CYCLES / FE_COUNTER_INSTRUCTIONS (NONE without count) */
  uint32_t baud;              /* UART speed reported in INFO, 0 for USB CDC */
} fe_app_board_t;

/*
 * Register the model's ops, build the interpreter in `arena`, fill the device info and start the
 * protocol. `fallback_input` (may be NULL: the arena is used) receives images when the model did
 * not load, so the protocol still answers with the error. `profiler` (may be NULL) sees one
 * event per operator. Returns FE_OK or the model's FE_ERR_* status.
 */
int fe_app_setup(const fe_app_board_t *board, uint8_t *arena, size_t arena_bytes, int8_t *fallback_input,
                 tflite::MicroProfilerInterface *profiler);

/* The device info INFO reports (the board may update free_ram_bytes after setup). */
fe_device_info_t *fe_app_info(void);

/* FE_OK when the model is ready. */
int fe_app_status(void);

/* Bytes from the serial port (the protocol answers from inside). */
void fe_app_feed(const uint8_t *data, size_t len);

/* 1 during a validation session: no camera, no PRED lines. */
int fe_app_in_session(void);

/* A camera frame into the model's input tensor; records its cycle count for INFO. FE_PRE_*. */
int fe_app_preprocess(const uint8_t *frame, uint16_t width, uint16_t height, fe_pixel_format_t format);

/* Run the model on the input tensor and format the PRED line (PROTOCOL.md section 9).
 * Returns the line's length (0 when Invoke failed: *line is then an error line to print too)
 * and sets *led to the class's LED mask. */
size_t fe_app_classify(uint32_t uptime_ms, const char **line, size_t *line_len, uint8_t *led);

#endif /* FE_APP_H */
