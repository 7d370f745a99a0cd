// facemask-edge firmware: AI-Thinker ESP32-CAM (ESP32 + OV2640 + 4 MB PSRAM).
//
//   facemask-edge export RUN_DIR --board esp32cam     writes src/ (model, settings, op resolver)
//   facemask-edge flash --board esp32cam --port PORT  builds (Huge APP partitions) and uploads
//
// Camera loop: QVGA 320x240 RGB565 frame (in PSRAM) -> centre crop -> resize -> int8 model
// input, one "PRED ..." line per inference on the UART (921600 baud, PROTOCOL.md), the red LED (and,
// with FE_FLASH_LED_DUTY, a dimmed flash LED) lights for the "without mask" class. When the host sends HELLO
// (`facemask-edge validate`) the camera pauses and the board answers the binary protocol
// (firmware/PROTOCOL.md) until BYE.
//
// Needs the esp32 Arduino core 3.x, which ships TensorFlow Lite Micro with Espressif's esp-nn
// optimized kernels and the esp32-camera driver: no other library.

#include <Arduino.h>

#include "esp32cam_board.h"
#include "esp_timer.h"
#include "src/facemask_edge.h"

#ifndef FE_SERIAL_BAUD
#define FE_SERIAL_BAUD 921600 /* PROTOCOL.md section 1 */
#endif

// Capture JPEG and decode it to RGB888 (the OV2640's most robust mode, slower per frame) instead
// of raw RGB565.
#ifndef FE_CAMERA_JPEG
#define FE_CAMERA_JPEG 0
#endif
#if FE_CAMERA_JPEG
#include "img_converters.h"
#endif

static_assert(FE_ARENA_SIZE >= FE_INPUT_BYTES, "the arena holds the input tensor");
static_assert(FE_FRAME_WIDTH == 320 && FE_FRAME_HEIGHT == 240,
              "the ESP32-CAM sketch captures QVGA; the board table says otherwise");

static uint8_t *g_arena = NULL;
static bool g_arena_in_psram = false;
static bool g_camera_ok = false;
#if FE_CAMERA_JPEG
static uint8_t *g_rgb = NULL; /* decoded frame, BGR888, in PSRAM */
#endif

static uint32_t board_micros(void) { return (uint32_t)esp_timer_get_time(); }

static void serial_write(void *ctx, const uint8_t *data, size_t len) {
  (void)ctx;
  Serial.write(data, len);
}

static void poll_serial() {
  uint8_t buf[128];
  int n;
  while ((n = Serial.available()) > 0) {
    if (n > (int)sizeof(buf)) n = sizeof(buf);
    const size_t got = Serial.readBytes(buf, (size_t)n);
    fe_app_feed(buf, got);
  }
}

void setup() {
  // The protocol lets the host keep FE_RX_WINDOW bytes in flight while the model runs: the UART
  // driver must buffer them (set before begin()).
  Serial.setRxBufferSize(FE_RX_WINDOW + 1024);
  Serial.begin(FE_SERIAL_BAUD);
  fe_led_init();

  if (!psramFound()) Serial.println("no PSRAM found: enable it (AI Thinker ESP32-CAM board)");
#if FE_CAMERA_JPEG
  g_camera_ok = fe_camera_init(PIXFORMAT_JPEG, FRAMESIZE_QVGA) == ESP_OK;
  g_rgb = (uint8_t *)heap_caps_malloc(FE_FRAME_WIDTH * FE_FRAME_HEIGHT * 3, MALLOC_CAP_SPIRAM);
  g_camera_ok = g_camera_ok && g_rgb != NULL;
#else
  g_camera_ok = fe_camera_init(PIXFORMAT_RGB565, FRAMESIZE_QVGA) == ESP_OK;
#endif

  g_arena = fe_arena_alloc(FE_ARENA_SIZE, &g_arena_in_psram);
  // Without a model there is no input tensor; the protocol then answers every image with the
  // error code, and the idle arena (or a PSRAM block) stands in for the tensor.
  int8_t *fallback = g_arena == NULL ? (int8_t *)heap_caps_malloc(FE_INPUT_BYTES, MALLOC_CAP_SPIRAM) : NULL;
  const fe_app_board_t board = {serial_write, board_micros, NULL, FE_COUNTER_NONE, FE_SERIAL_BAUD};
  const int status = fe_app_setup(&board, g_arena, FE_ARENA_SIZE, fallback, NULL);
  fe_device_info_t *info = fe_app_info();
  info->free_ram_bytes = (uint32_t)heap_caps_get_free_size(MALLOC_CAP_INTERNAL);

  Serial.printf("facemask-edge %s board=%s model=%s input=%dx%dx%d arena_used=%lu/%lu in %s "
                "free_internal=%lu free_psram=%lu\r\n",
                FE_FIRMWARE_VERSION, FE_BOARD, FE_MODEL_VERSION, FE_INPUT_WIDTH, FE_INPUT_HEIGHT,
                FE_INPUT_CHANNELS, (unsigned long)info->arena_bytes, (unsigned long)FE_ARENA_SIZE,
                g_arena_in_psram ? "PSRAM" : "internal RAM", (unsigned long)info->free_ram_bytes,
                (unsigned long)heap_caps_get_free_size(MALLOC_CAP_SPIRAM));
  if (status != FE_OK) Serial.printf("model init failed: error %d\r\n", status);
  if (!g_camera_ok) Serial.println("camera init failed: check the OV2640 ribbon and PSRAM");
}

void loop() {
  poll_serial();
  if (fe_app_in_session() || fe_app_status() != FE_OK || !g_camera_ok) {
    delay(1);  // lets the idle task feed the watchdog
    return;
  }

  camera_fb_t *fb = esp_camera_fb_get();
  if (fb == NULL) return;
  int rc;
#if FE_CAMERA_JPEG
  rc = fmt2rgb888(fb->buf, fb->len, fb->format, g_rgb)
           ? fe_app_preprocess(g_rgb, fb->width, fb->height, FE_PIXEL_BGR888)
           : FE_PRE_ERR_ARG;
#else
  rc = fe_app_preprocess(fb->buf, fb->width, fb->height, FE_PIXEL_RGB565);
#endif
  esp_camera_fb_return(fb);
  if (rc != FE_PRE_OK) return;
  poll_serial();
  if (fe_app_in_session()) return;

  const char *line = NULL;
  size_t n = 0;
  uint8_t led = 0;
  const size_t ok = fe_app_classify((uint32_t)millis(), &line, &n, &led);
  if (n) Serial.write((const uint8_t *)line, n);
  if (ok) fe_led_show(led);
}
