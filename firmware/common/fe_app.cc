/* fe_app.cc: see fe_app.h. */
#include "fe_app.h"

#include "facemask_edge.h"

namespace {

FeOpResolver g_resolver;
fe_protocol_t g_protocol;
fe_device_info_t g_info;
int g_status = FE_ERR_MODEL_INIT;
uint32_t (*g_count)(void) = nullptr;
uint8_t g_counter_kind = FE_COUNTER_NONE;
char g_line[FE_PRED_LINE_MAX(FE_NUM_CLASSES, FE_LABEL_MAX_LEN)];
const char kInvokeFailed[] = "invoke failed\r\n";

}  // namespace

int fe_app_setup(const fe_app_board_t *board, uint8_t *arena, size_t arena_bytes, int8_t *fallback_input,
                 tflite::MicroProfilerInterface *profiler) {
  g_count = board->count;
  g_counter_kind = board->count != nullptr ? board->counter_kind : (uint8_t)FE_COUNTER_NONE;
  fe_inference_set_counter(board->count);
  fe_inference_set_profiler(profiler);
  g_status = FE_ERR_MODEL_INIT;
  if (arena == nullptr) {
    g_status = FE_ERR_ALLOCATE;
  } else if (fe_register_ops(g_resolver) == kTfLiteOk) {
    const fe_inference_config_t cfg = {g_facemask_model_data, &g_resolver, arena, arena_bytes,
                                       FE_INPUT_WIDTH, FE_INPUT_HEIGHT, FE_INPUT_CHANNELS,
                                       FE_NUM_CLASSES, board->clock_us};
    g_status = fe_inference_init(&cfg);
  }

  g_info.board = FE_BOARD;
  g_info.firmware_version = FE_FIRMWARE_VERSION;
  g_info.model_sha256 = FE_MODEL_SHA256;
  g_info.input_width = FE_INPUT_WIDTH;
  g_info.input_height = FE_INPUT_HEIGHT;
  g_info.input_channels = FE_INPUT_CHANNELS;
  g_info.num_classes = FE_NUM_CLASSES;
  g_info.arena_bytes = (uint32_t)fe_inference_arena_used();
  g_info.free_ram_bytes = 0;

  // Without a model there is no input tensor; the protocol then answers every image with the
  // error code, and the idle arena (or the board's fallback) stands in for the tensor.
  int8_t *input = g_status == FE_OK ? fe_inference_input() : fallback_input;
  if (input == nullptr) input = (int8_t *)arena;
  fe_protocol_init(&g_protocol, &g_info, input, board->write, fe_inference_protocol_infer, nullptr);
  fe_protocol_set_baud(&g_protocol, board->baud);
  if (g_count != nullptr) fe_protocol_set_counter(&g_protocol, g_counter_kind, fe_inference_last_count, 0);
  if (g_status != FE_OK) fe_protocol_set_error(&g_protocol, g_status);
  return g_status;
}

fe_device_info_t *fe_app_info(void) { return &g_info; }

int fe_app_status(void) { return g_status; }

void fe_app_feed(const uint8_t *data, size_t len) { fe_protocol_feed(&g_protocol, data, len); }

int fe_app_in_session(void) { return fe_protocol_in_session(&g_protocol); }

int fe_app_preprocess(const uint8_t *frame, uint16_t width, uint16_t height, fe_pixel_format_t format) {
  int8_t *input = fe_inference_input();
  if (input == nullptr) return FE_PRE_ERR_ARG;
  const uint32_t c0 = g_count != nullptr ? g_count() : 0;
  const int rc = fe_preprocess(frame, width, height, format, FE_INPUT_WIDTH, FE_INPUT_CHANNELS, input);
  if (g_count != nullptr && rc == FE_PRE_OK) {
    fe_protocol_set_counter(&g_protocol, g_counter_kind, fe_inference_last_count, g_count() - c0);
  }
  return rc;
}

size_t fe_app_classify(uint32_t uptime_ms, const char **line, size_t *line_len, uint8_t *led) {
  int8_t scores[FE_NUM_CLASSES];
  uint32_t us = 0;
  // Runs the model through the protocol: a host that asked for a frame (FRAME_REQ) gets this
  // one, sent before Invoke (the input tensor may be reused as scratch).
  if (fe_protocol_camera(&g_protocol, scores, &us) != FE_OK) {
    *line = kInvokeFailed;
    *line_len = sizeof kInvokeFailed - 1;
    return 0;
  }
  const size_t idx = fe_argmax(scores, FE_NUM_CLASSES);
  const uint8_t conf = fe_confidence(scores[idx], FE_OUTPUT_SCALE, FE_OUTPUT_ZERO_POINT);
  const size_t n = fe_format_pred(g_line, sizeof(g_line), uptime_ms, idx, kFeLabels[idx], conf, us, scores,
                                  FE_NUM_CLASSES);
  *line = g_line;
  *line_len = n;
  *led = kFeLabelLed[idx];
  return n;
}
