/*
 * fe_inference: the one place that talks to TensorFlow Lite Micro's MicroInterpreter.
 *
 * C++ (TFLM is C++), no board headers, no heap: the sketch owns the arena and the op resolver
 * (model_ops.h), this file owns the interpreter. Return codes are the protocol's FE_OK /
 * FE_ERR_* values (fe_protocol.h), so a failure here reaches the host unchanged.
 *
 *     static FeOpResolver resolver;                   // model_ops.h
 *     fe_register_ops(resolver);
 *     fe_inference_config_t cfg = {g_facemask_model_data, &resolver, arena, FE_ARENA_SIZE,
 *                                  FE_INPUT_WIDTH, FE_INPUT_HEIGHT, FE_INPUT_CHANNELS,
 *                                  FE_NUM_CLASSES, board_micros};
 *     int rc = fe_inference_init(&cfg);               // FE_OK, FE_ERR_MODEL_INIT, FE_ERR_ALLOCATE
 *     fe_preprocess(frame, ..., fe_inference_input()); // camera frame straight into the tensor
 *     rc = fe_inference_run(scores, &us);
 */
#ifndef FE_INFERENCE_H
#define FE_INFERENCE_H

#include <stddef.h>
#include <stdint.h>

namespace tflite {
class MicroOpResolver;
class MicroProfilerInterface;
}  // namespace tflite

typedef struct {
  const unsigned char *model_data;         /* g_facemask_model_data (16-byte aligned) */
  const tflite::MicroOpResolver *resolver; /* FeOpResolver with the model's ops registered */
  uint8_t *arena;                          /* FE_ARENA_SIZE bytes, 16-byte aligned */
  size_t arena_bytes;
  uint16_t input_width, input_height; /* what model_settings.h promises: checked against the model */
  uint8_t input_channels;
  uint8_t num_classes;
  uint32_t (*clock_us)(void); /* board microsecond clock for inference timing (may be NULL) */
} fe_inference_config_t;

/*
 * Map the model, build the interpreter and allocate its tensors.
 * Returns FE_OK; FE_ERR_MODEL_INIT when the schema version, an operator or the tensor shapes and
 * types do not match; FE_ERR_ALLOCATE when the arena is too small. Call once.
 */
int fe_inference_init(const fe_inference_config_t *config);

/* Optional: a free-running cycle (or instruction) counter; fe_inference_run then records how many
 * counts each Invoke() took (fe_inference_last_count). Unsigned wrap-around is fine. */
void fe_inference_set_counter(uint32_t (*count)(void));

/* Counts of the last fe_inference_run (0 without a counter). */
uint32_t fe_inference_last_count(void);

/* Optional, before fe_inference_init: a TFLM profiler that sees one event per operator. */
void fe_inference_set_profiler(tflite::MicroProfilerInterface *profiler);

/* The int8 input tensor (input_width * input_height * input_channels bytes), or NULL before a
 * successful init. Preprocessing and the protocol write images here directly. */
int8_t *fe_inference_input(void);

/* Bytes of the input tensor (0 before init). */
size_t fe_inference_input_bytes(void);

/* Arena bytes the interpreter really uses (arena_used_bytes()), 0 before init. */
size_t fe_inference_arena_used(void);

/* Run the model on the input tensor; copy num_classes int8 scores out and, when the config has a
 * clock, the Invoke() time in microseconds. Returns FE_OK, FE_ERR_MODEL_INIT (no model) or
 * FE_ERR_INVOKE. */
int fe_inference_run(int8_t *scores, uint32_t *micros);

/* fe_infer_fn for fe_protocol_init(): the protocol hands back the input tensor it filled. */
int fe_inference_protocol_infer(void *ctx, const int8_t *input, int8_t *scores, uint32_t *micros);

#endif /* FE_INFERENCE_H */
