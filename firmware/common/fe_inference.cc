/* fe_inference.cc: see fe_inference.h. */
#include "fe_inference.h"

#include <new>

#include "fe_protocol.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "tensorflow/lite/schema/schema_utils.h"

namespace {

// Storage for the one interpreter, constructed in place by fe_inference_init (no heap).
alignas(tflite::MicroInterpreter) unsigned char g_interpreter_storage[sizeof(tflite::MicroInterpreter)];
tflite::MicroInterpreter *g_interpreter = nullptr;
TfLiteTensor *g_input = nullptr;
TfLiteTensor *g_output = nullptr;
uint32_t (*g_clock_us)(void) = nullptr;
uint8_t g_num_classes = 0;

uint32_t (*g_count)(void) = nullptr;
uint32_t g_last_count = 0;
tflite::MicroProfilerInterface *g_profiler = nullptr;

// Every operator the graph runs has a kernel in the resolver (model_ops.h registers exactly
// those). Only codes that operators use count: a flatbuffer may list codes no operator uses (the
// MLPerf Tiny VWW reference lists QUANTIZE and DEQUANTIZE), and TFLM never looks those up.
bool ops_resolved(const tflite::Model *model, const tflite::MicroOpResolver &resolver) {
  const auto *codes = model->operator_codes();
  const auto *subgraphs = model->subgraphs();
  if (codes == nullptr || subgraphs == nullptr) return false;
  for (flatbuffers::uoffset_t s = 0; s < subgraphs->size(); ++s) {
    const auto *ops = subgraphs->Get(s)->operators();
    if (ops == nullptr) continue;
    for (flatbuffers::uoffset_t i = 0; i < ops->size(); ++i) {
      const uint32_t index = ops->Get(i)->opcode_index();
      if (index >= codes->size()) return false;
      const tflite::BuiltinOperator op = tflite::GetBuiltinCode(codes->Get(index));
      if (op == tflite::BuiltinOperator_CUSTOM || resolver.FindOp(op) == nullptr) return false;
    }
  }
  return true;
}

bool dims_are(const TfLiteTensor *t, int n, const int *want) {
  if (t == nullptr || t->dims == nullptr || t->dims->size != n) return false;
  for (int i = 0; i < n; ++i) {
    if (t->dims->data[i] != want[i]) return false;
  }
  return true;
}

}  // namespace

// fe_inference_run copies num_classes scores into the protocol's fe_result_t.scores.
static_assert(sizeof(fe_result_t::scores) == FE_MAX_CLASSES, "scores buffer is FE_MAX_CLASSES long");

int fe_inference_init(const fe_inference_config_t *config) {
  if (g_interpreter != nullptr) return FE_OK;
  if (config == nullptr || config->model_data == nullptr || config->resolver == nullptr ||
      config->arena == nullptr) {
    return FE_ERR_MODEL_INIT;
  }
  // More classes than a RESULT carries would overrun the scores buffer in fe_inference_run.
  if (config->num_classes == 0 || config->num_classes > FE_MAX_CLASSES) return FE_ERR_MODEL_INIT;
  const tflite::Model *model = tflite::GetModel(config->model_data);
  if (model->version() != TFLITE_SCHEMA_VERSION) return FE_ERR_MODEL_INIT;
  if (!ops_resolved(model, *config->resolver)) return FE_ERR_MODEL_INIT;

  tflite::MicroInterpreter *interpreter = new (g_interpreter_storage)
      tflite::MicroInterpreter(model, *config->resolver, config->arena, config->arena_bytes, nullptr, g_profiler);
  // Operators are known to resolve, so a failure here is the arena being too small.
  if (interpreter->AllocateTensors() != kTfLiteOk) return FE_ERR_ALLOCATE;
  TfLiteTensor *input = interpreter->input(0);
  TfLiteTensor *output = interpreter->output(0);
  const int in_dims[4] = {1, config->input_height, config->input_width, config->input_channels};
  const int out_dims[2] = {1, config->num_classes};
  if (input == nullptr || output == nullptr || input->type != kTfLiteInt8 ||
      output->type != kTfLiteInt8 || !dims_are(input, 4, in_dims) || !dims_are(output, 2, out_dims)) {
    return FE_ERR_MODEL_INIT;
  }
  g_interpreter = interpreter;
  g_input = input;
  g_output = output;
  g_clock_us = config->clock_us;
  g_num_classes = config->num_classes;
  return FE_OK;
}

void fe_inference_set_counter(uint32_t (*count)(void)) { g_count = count; }

uint32_t fe_inference_last_count(void) { return g_last_count; }

void fe_inference_set_profiler(tflite::MicroProfilerInterface *profiler) { g_profiler = profiler; }

int8_t *fe_inference_input(void) { return g_input != nullptr ? g_input->data.int8 : nullptr; }

size_t fe_inference_input_bytes(void) { return g_input != nullptr ? g_input->bytes : 0; }

size_t fe_inference_arena_used(void) {
  return g_interpreter != nullptr ? g_interpreter->arena_used_bytes() : 0;
}

int fe_inference_run(int8_t *scores, uint32_t *micros) {
  if (g_interpreter == nullptr) return FE_ERR_MODEL_INIT;
  const uint32_t start = g_clock_us != nullptr ? g_clock_us() : 0;
  const uint32_t count0 = g_count != nullptr ? g_count() : 0;
  const TfLiteStatus status = g_interpreter->Invoke();
  g_last_count = g_count != nullptr ? g_count() - count0 : 0;
  const uint32_t elapsed = g_clock_us != nullptr ? g_clock_us() - start : 0;
  if (status != kTfLiteOk) return FE_ERR_INVOKE;
  if (micros != nullptr) *micros = elapsed;
  if (scores != nullptr) {
    for (uint8_t i = 0; i < g_num_classes; ++i) scores[i] = g_output->data.int8[i];
  }
  return FE_OK;
}

int fe_inference_protocol_infer(void *ctx, const int8_t *input, int8_t *scores, uint32_t *micros) {
  (void)ctx;
  if (g_interpreter == nullptr) return FE_ERR_MODEL_INIT;
  // The protocol was given fe_inference_input() as its buffer, so the image is already in place.
  if (input != fe_inference_input()) return FE_ERR_WRONG_SIZE;
  return fe_inference_run(scores, micros);
}
