// facemask-edge firmware: Arduino Nano 33 BLE Sense (Rev1 or Rev2) with the OV7675 camera of
// the Arduino Tiny Machine Learning Kit.
//
//   facemask-edge export RUN_DIR --board nano33ble     writes src/ (model, settings, op resolver)
//   facemask-edge flash --board nano33ble              builds and uploads with arduino-cli
//
// Camera loop: QCIF 176x144 RGB565 frame -> centre crop -> resize -> int8 model input, one
// "PRED ..." line per inference on USB serial, the RGB LED shows the class. When the host sends
// HELLO (`facemask-edge validate`) the camera pauses and the board answers the binary protocol
// (firmware/PROTOCOL.md) until BYE.
//
// Libraries: Chirale_TensorFLowLite 2.0.0 (TensorFlow Lite Micro) and Arduino_OV767X 0.0.2.
// Memory: frame (50,688 B) + tensor arena are static, checked at compile time below against the
// 256 KB RAM less what the Mbed OS core takes.

#include <Chirale_TensorFlowLite.h>  // first: puts the TFLM headers on the include path
#include <Arduino_OV767X.h>

#include "nano33ble_camera.h"
#include "src/facemask_edge.h"

// 1 or 5: the only rates Arduino_OV767X supports on this board. Frames are read with interrupts
// off, so a slower rate also means the serial port waits longer between reads.
#ifndef FE_CAMERA_FPS
#define FE_CAMERA_FPS 1
#endif

// Capture grayscale (the camera's Y channel, half the RAM) instead of RGB565. The model was
// trained on (77 R + 150 G + 29 B) / 256 luma, which the sensor's Y only approximates.
#ifndef FE_CAMERA_GRAYSCALE
#define FE_CAMERA_GRAYSCALE 0
#endif

#if FE_CAMERA_GRAYSCALE
#define FE_CAMERA_FORMAT GRAYSCALE
#define FE_CAMERA_PIXEL FE_PIXEL_GRAY8
#define FE_CAMERA_BPP 1
#else
#define FE_CAMERA_FORMAT RGB565
#define FE_CAMERA_PIXEL FE_PIXEL_RGB565
#define FE_CAMERA_BPP 2
#endif

#define FE_FRAME_BUFFER_BYTES (FE_FRAME_WIDTH * FE_FRAME_HEIGHT * FE_CAMERA_BPP)

static_assert(FE_FRAME_WIDTH == 176 && FE_FRAME_HEIGHT == 144,
              "the Nano sketch captures QCIF; the board table says otherwise");
static_assert(FE_FRAME_BUFFER_BYTES + FE_ARENA_SIZE <= FE_BOARD_RAM_BYTES - FE_BOARD_RESERVED_RAM_BYTES,
              "camera frame + tensor arena do not fit the Nano's 256 KB RAM: export a smaller model");
static_assert(FE_ARENA_SIZE >= FE_INPUT_BYTES, "the arena holds the input tensor");

static uint8_t g_frame[FE_FRAME_BUFFER_BYTES];
alignas(16) static uint8_t g_arena[FE_ARENA_SIZE];
static FeOpResolver g_resolver;
static fe_protocol_t g_protocol;
static fe_device_info_t g_info;
static int g_model_status = FE_ERR_MODEL_INIT;
static bool g_camera_ok = false;
static char g_line[FE_PRED_LINE_MAX(FE_NUM_CLASSES, FE_LABEL_MAX_LEN)];

static uint32_t board_micros(void) { return (uint32_t)micros(); }

static void serial_write(void *ctx, const uint8_t *data, size_t len) {
  (void)ctx;
  Serial.write(data, len);
}

// Hand every byte the host sent to the protocol (it answers from inside fe_protocol_feed).
static void poll_serial() {
  uint8_t buf[64];
  int n;
  while ((n = Serial.available()) > 0) {
    size_t got = 0;
    if (n > (int)sizeof(buf)) n = sizeof(buf);
    while (got < (size_t)n) buf[got++] = (uint8_t)Serial.read();
    fe_protocol_feed(&g_protocol, buf, got);
  }
}

void setup() {
  Serial.begin(115200);  // USB CDC: the rate is ignored
  const unsigned long start = millis();
  while (!Serial && millis() - start < 2000) {
    // Wait briefly for a serial monitor, then run without one.
  }
  fe_led_init();

  g_model_status = FE_ERR_MODEL_INIT;
  if (fe_register_ops(g_resolver) == kTfLiteOk) {
    const fe_inference_config_t cfg = {g_facemask_model_data, &g_resolver, g_arena, sizeof(g_arena),
                                       FE_INPUT_WIDTH, FE_INPUT_HEIGHT, FE_INPUT_CHANNELS,
                                       FE_NUM_CLASSES, board_micros};
    g_model_status = fe_inference_init(&cfg);
  }

  g_camera_ok = fe_camera_begin(QCIF, FE_CAMERA_FORMAT, FE_CAMERA_FPS) != 0;

  g_info.board = FE_BOARD;
  g_info.firmware_version = FE_FIRMWARE_VERSION;
  g_info.model_sha256 = FE_MODEL_SHA256;
  g_info.input_width = FE_INPUT_WIDTH;
  g_info.input_height = FE_INPUT_HEIGHT;
  g_info.input_channels = FE_INPUT_CHANNELS;
  g_info.num_classes = FE_NUM_CLASSES;
  g_info.arena_bytes = (uint32_t)fe_inference_arena_used();
  g_info.free_ram_bytes = fe_free_ram_bytes();

  // Without a model there is no input tensor; the protocol then answers every image with the
  // error code, and the idle arena stands in for the tensor.
  int8_t *input = g_model_status == FE_OK ? fe_inference_input() : (int8_t *)g_arena;
  fe_protocol_init(&g_protocol, &g_info, input, serial_write, fe_inference_protocol_infer, NULL);
  fe_protocol_set_baud(&g_protocol, 0);
  if (g_model_status != FE_OK) fe_protocol_set_error(&g_protocol, g_model_status);

  Serial.print("facemask-edge ");
  Serial.print(FE_FIRMWARE_VERSION);
  Serial.print(" board=" FE_BOARD " model=");
  Serial.print(FE_MODEL_VERSION);
  Serial.print(" input=");
  Serial.print(FE_INPUT_WIDTH);
  Serial.print("x");
  Serial.print(FE_INPUT_HEIGHT);
  Serial.print("x");
  Serial.print(FE_INPUT_CHANNELS);
  Serial.print(" arena_used=");
  Serial.print((unsigned long)g_info.arena_bytes);
  Serial.print("/");
  Serial.print((unsigned long)FE_ARENA_SIZE);
  Serial.print(" free_ram=");
  Serial.println((unsigned long)g_info.free_ram_bytes);
  if (g_model_status != FE_OK) {
    Serial.print("model init failed: error ");
    Serial.println(g_model_status);
    fe_led_show(1);
  }
  if (!g_camera_ok) Serial.println("camera init failed: check the OV7675 on the TinyML shield");
}

void loop() {
  poll_serial();
  // During a validation session the host owns the board: no camera, no PRED lines.
  if (fe_protocol_in_session(&g_protocol) || g_model_status != FE_OK || !g_camera_ok) return;

  Camera.readFrame(g_frame);
  if (fe_preprocess(g_frame, FE_FRAME_WIDTH, FE_FRAME_HEIGHT, FE_CAMERA_PIXEL, FE_INPUT_WIDTH,
                    FE_INPUT_CHANNELS, fe_inference_input()) != FE_PRE_OK) {
    return;
  }
  poll_serial();  // a HELLO that arrived during the frame takes over before we print
  if (fe_protocol_in_session(&g_protocol)) return;

  int8_t scores[FE_NUM_CLASSES];
  uint32_t us = 0;
  // Runs the model; a host that asked for a frame (FRAME_REQ) gets this one, sent before Invoke.
  if (fe_protocol_camera(&g_protocol, scores, &us) != FE_OK) {
    Serial.println("invoke failed");
    return;
  }
  const size_t idx = fe_argmax(scores, FE_NUM_CLASSES);
  const uint8_t conf = fe_confidence(scores[idx], FE_OUTPUT_SCALE, FE_OUTPUT_ZERO_POINT);
  const size_t n = fe_format_pred(g_line, sizeof(g_line), (uint32_t)millis(), idx, kFeLabels[idx],
                                  conf, us, scores, FE_NUM_CLASSES);
  if (n) Serial.write((const uint8_t *)g_line, n);
  fe_led_show(kFeLabelLed[idx]);
}
