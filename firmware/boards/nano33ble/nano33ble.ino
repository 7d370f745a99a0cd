// facemask-edge firmware: Arduino Nano 33 BLE Sense (Rev1 or Rev2) with the OV7675 camera of
// the Arduino Tiny Machine Learning Kit (default) or an OV7670 module (FE_CAMERA_SENSOR below).
//
//   facemask-edge export RUN_DIR --board nano33ble     writes src/ (model, settings, op resolver)
//   facemask-edge flash --board nano33ble              builds and uploads with arduino-cli
//
// Camera loop: QCIF 176x144 RGB565 frame -> centre crop -> resize -> int8 model input, one
// "PRED ..." line per inference on USB serial, the RGB LED shows the class. When the host sends
// HELLO (`facemask-edge validate`) the camera pauses and the board answers the binary protocol
// (firmware/PROTOCOL.md) until BYE.
//
// Libraries: Chirale_TensorFLowLite 2.0.0 (TensorFlow Lite Micro) and Arduino_OV767X 0.0.2 (which
// configures every sensor as an OV7670: the OV7675's window is set here, nano33ble_ov7675.h).
// Memory: frame (50,688 B) + tensor arena are static, checked at compile time below against the
// 256 KB RAM less what the Mbed OS core takes.

#include <Chirale_TensorFlowLite.h>  // first: puts the TFLM headers on the include path
#include <Arduino_OV767X.h>

#include "nano33ble_camera.h"
#include "src/facemask_edge.h"

// The camera sensor: FE_SENSOR_OV7675 (7675) for the Arduino Tiny Machine Learning Kit's camera,
// FE_SENSOR_OV7670 (7670) for a loose OV7670 module. Both answer the same product ID, so the
// sketch cannot tell them apart: a wrong choice goes unnoticed and sets the other sensor's window.
#ifndef FE_CAMERA_SENSOR
#define FE_CAMERA_SENSOR FE_SENSOR_OV7675
#endif

#if FE_CAMERA_SENSOR == FE_SENSOR_OV7675
#define FE_CAMERA_NAME "OV7675"  // named in the camera error message
#elif FE_CAMERA_SENSOR == FE_SENSOR_OV7670
#define FE_CAMERA_NAME "OV7670"
#else
#error "FE_CAMERA_SENSOR must be FE_SENSOR_OV7675 (7675) or FE_SENSOR_OV7670 (7670)"
#endif

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

// Model start-up, the validation protocol and the PRED line are firmware/common/fe_app.cc, shared
// with the ESP32-CAM sketch and the emulator board (firmware/boards/mps2_an386): this file is the
// Nano's serial port, clocks, camera and LED.

static uint8_t g_frame[FE_FRAME_BUFFER_BYTES];
alignas(16) static uint8_t g_arena[FE_ARENA_SIZE];
static bool g_camera_ok = false;

static uint32_t board_micros(void) { return (uint32_t)micros(); }

// The Cortex-M4's DWT cycle counter: the RESULT messages carry each inference's CPU cycles
// (PROTOCOL.md 3.1), the figure the emulator's instruction counts estimate.
static uint32_t board_cycles(void) { return DWT->CYCCNT; }

static void cycle_counter_init() {
  CoreDebug->DEMCR |= CoreDebug_DEMCR_TRCENA_Msk;
  DWT->CYCCNT = 0;
  DWT->CTRL |= DWT_CTRL_CYCCNTENA_Msk;
}

static void serial_write(void *ctx, const uint8_t *data, size_t len) {
  (void)ctx;
  Serial.write(data, len);
}

// Hand every byte the host sent to the protocol (it answers from inside fe_app_feed).
static void poll_serial() {
  uint8_t buf[64];
  int n;
  while ((n = Serial.available()) > 0) {
    size_t got = 0;
    if (n > (int)sizeof(buf)) n = sizeof(buf);
    while (got < (size_t)n) buf[got++] = (uint8_t)Serial.read();
    fe_app_feed(buf, got);
  }
}

void setup() {
  Serial.begin(115200);  // USB CDC: the rate is ignored
  const unsigned long start = millis();
  while (!Serial && millis() - start < 2000) {
    // Wait briefly for a serial monitor, then run without one.
  }
  fe_led_init();
  cycle_counter_init();

  const fe_app_board_t board = {serial_write, board_micros, board_cycles, FE_COUNTER_CYCLES, 0};
  const int status = fe_app_setup(&board, g_arena, sizeof(g_arena), NULL, NULL);
  uint8_t camera_reg = 0;
  int camera = fe_camera_begin(FE_CAMERA_FORMAT, FE_CAMERA_FPS);
#if FE_CAMERA_SENSOR == FE_SENSOR_OV7675
  if (camera == FE_CAMERA_OK) camera = fe_camera_set_ov7675_window(&camera_reg);
#endif
  g_camera_ok = camera == FE_CAMERA_OK;
  fe_app_info()->free_ram_bytes = fe_free_ram_bytes();

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
  Serial.print((unsigned long)fe_app_info()->arena_bytes);
  Serial.print("/");
  Serial.print((unsigned long)FE_ARENA_SIZE);
  Serial.print(" free_ram=");
  Serial.println((unsigned long)fe_app_info()->free_ram_bytes);
  if (status != FE_OK) {
    Serial.print("model init failed: error ");
    Serial.println(status);
    fe_led_show(1);
  }
  if (!g_camera_ok) {
    char line[96];
    fe_camera_error_line(camera, FE_CAMERA_NAME, camera_reg, line, sizeof(line));
    Serial.println(line);
  }
}

void loop() {
  poll_serial();
  // During a validation session the host owns the board: no camera, no PRED lines.
  if (fe_app_in_session() || fe_app_status() != FE_OK || !g_camera_ok) return;

  Camera.readFrame(g_frame);
  if (fe_app_preprocess(g_frame, FE_FRAME_WIDTH, FE_FRAME_HEIGHT, FE_CAMERA_PIXEL) != FE_PRE_OK) return;
  poll_serial();  // a HELLO that arrived during the frame takes over before we print
  if (fe_app_in_session()) return;

  const char *line = NULL;
  size_t n = 0;
  uint8_t led = 0;
  const size_t ok = fe_app_classify((uint32_t)millis(), &line, &n, &led);
  if (n) Serial.write((const uint8_t *)line, n);
  if (ok) fe_led_show(led);
}
