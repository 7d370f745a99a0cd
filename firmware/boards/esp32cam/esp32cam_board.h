// AI-Thinker ESP32-CAM: camera pins, LEDs and memory helpers of the esp32cam sketch.
#ifndef ESP32CAM_BOARD_H
#define ESP32CAM_BOARD_H

#include <Arduino.h>

#include "esp_camera.h"
#include "esp_heap_caps.h"

// OV2640 wiring of the AI-Thinker module (the esp32-camera CAMERA_MODEL_AI_THINKER pin map).
#define CAM_PIN_PWDN 32
#define CAM_PIN_RESET -1
#define CAM_PIN_XCLK 0
#define CAM_PIN_SIOD 26
#define CAM_PIN_SIOC 27
#define CAM_PIN_D7 35
#define CAM_PIN_D6 34
#define CAM_PIN_D5 39
#define CAM_PIN_D4 36
#define CAM_PIN_D3 21
#define CAM_PIN_D2 19
#define CAM_PIN_D1 18
#define CAM_PIN_D0 5
#define CAM_PIN_VSYNC 25
#define CAM_PIN_HREF 23
#define CAM_PIN_PCLK 22

#define FE_FLASH_LED_PIN 4 /* the white flash LED: very bright */
#define FE_RED_LED_PIN 33  /* small red LED on the back, active low */

static inline esp_err_t fe_camera_init(pixformat_t format, framesize_t size) {
  camera_config_t c = {};
  c.pin_pwdn = CAM_PIN_PWDN;
  c.pin_reset = CAM_PIN_RESET;
  c.pin_xclk = CAM_PIN_XCLK;
  c.pin_sccb_sda = CAM_PIN_SIOD;
  c.pin_sccb_scl = CAM_PIN_SIOC;
  c.pin_d7 = CAM_PIN_D7;
  c.pin_d6 = CAM_PIN_D6;
  c.pin_d5 = CAM_PIN_D5;
  c.pin_d4 = CAM_PIN_D4;
  c.pin_d3 = CAM_PIN_D3;
  c.pin_d2 = CAM_PIN_D2;
  c.pin_d1 = CAM_PIN_D1;
  c.pin_d0 = CAM_PIN_D0;
  c.pin_vsync = CAM_PIN_VSYNC;
  c.pin_href = CAM_PIN_HREF;
  c.pin_pclk = CAM_PIN_PCLK;
  c.xclk_freq_hz = 20000000;
  c.ledc_timer = LEDC_TIMER_0;
  c.ledc_channel = LEDC_CHANNEL_0;
  c.pixel_format = format;
  c.frame_size = size;
  c.jpeg_quality = 12;
  c.fb_count = 1;
  c.fb_location = CAMERA_FB_IN_PSRAM;   // 153,600 B for QVGA RGB565: PSRAM, not internal RAM
  c.grab_mode = CAMERA_GRAB_WHEN_EMPTY; // one buffer, refilled when we return it
  return esp_camera_init(&c);
}

// The module has no RGB LED: the "alert" colour (bit 0, red: e.g. without mask) lights the red LED
// and, when FE_FLASH_LED_DUTY > 0, the flash LED dimmed by PWM. The camera's XCLK already uses
// LEDC timer 0 / channel 0 (set up by esp32-camera behind the Arduino core's back), so the flash
// LED takes channel 7 (and with it another timer) explicitly instead of letting analogWrite() pick.
#ifndef FE_FLASH_LED_DUTY
#define FE_FLASH_LED_DUTY 0 /* of 255; 0 leaves the (blinding) flash LED off, 6 is visible */
#endif
#define FE_FLASH_LED_CHANNEL 7

static inline void fe_led_init() {
  pinMode(FE_RED_LED_PIN, OUTPUT);
  digitalWrite(FE_RED_LED_PIN, HIGH);
#if FE_FLASH_LED_DUTY > 0
  ledcAttachChannel(FE_FLASH_LED_PIN, 5000, 8, FE_FLASH_LED_CHANNEL);
  ledcWrite(FE_FLASH_LED_PIN, 0);
#else
  pinMode(FE_FLASH_LED_PIN, OUTPUT);
  digitalWrite(FE_FLASH_LED_PIN, LOW);
#endif
}

static inline void fe_led_show(uint8_t mask) {
  const bool alert = (mask & 1) != 0;
  digitalWrite(FE_RED_LED_PIN, alert ? LOW : HIGH);
#if FE_FLASH_LED_DUTY > 0
  ledcWrite(FE_FLASH_LED_PIN, alert ? FE_FLASH_LED_DUTY : 0);
#endif
}

// The tensor arena goes to internal SRAM when it fits and to PSRAM otherwise (or when
// FE_ARENA_IN_PSRAM is 1). Internal SRAM is several times faster for TFLM: every layer reads and
// writes its activations, and PSRAM is reached over a 40/80 MHz quad-SPI bus through a 32 KB
// cache. The largest free internal block, not the total, decides, so the camera is initialised
// first (its DMA buffers are internal) and the arena is allocated after it.
#ifndef FE_ARENA_IN_PSRAM
#define FE_ARENA_IN_PSRAM 0
#endif

static inline uint8_t *fe_arena_alloc(size_t bytes, bool *in_psram) {
  uint8_t *p = NULL;
  if (!FE_ARENA_IN_PSRAM) {
    p = (uint8_t *)heap_caps_aligned_alloc(16, bytes, MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT);
  }
  *in_psram = false;
  if (p == NULL) {
    p = (uint8_t *)heap_caps_aligned_alloc(16, bytes, MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT);
    *in_psram = p != NULL;
  }
  return p;
}

#endif  // ESP32CAM_BOARD_H
