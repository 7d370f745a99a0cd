// Camera and LED helpers of the Nano 33 BLE Sense sketch. In a header, not the .ino, to keep the
// .ino to the application and away from Arduino's prototype generator.
#ifndef NANO33BLE_CAMERA_H
#define NANO33BLE_CAMERA_H

#include <Arduino.h>
#include <Arduino_OV767X.h>
#include <Wire.h>
#include <stdio.h>

#include "nano33ble_ov7675.h"

// Values of FE_CAMERA_SENSOR (nano33ble.ino): which sensor the module carries. The two answer the
// same product ID, so this cannot be detected (nano33ble_ov7675.h).
#define FE_SENSOR_OV7670 7670  // loose OV7670 modules
#define FE_SENSOR_OV7675 7675  // the Arduino Tiny Machine Learning Kit's camera

enum { FE_CAMERA_OK = 0, FE_CAMERA_ERR_BEGIN = 1, FE_CAMERA_ERR_REGS = 2 };

// SCCB through Wire, as Arduino_OV767X's own shim does it: the register address in a write that
// ends with a stop, then a one-byte read (the sensors do not take a repeated start).
static inline int fe_sccb_read(void *, uint8_t reg, uint8_t *value) {
  Wire.beginTransmission(FE_OV_SCCB_ADDRESS);
  Wire.write(reg);
  if (Wire.endTransmission() != 0) return -1;
  if (Wire.requestFrom(FE_OV_SCCB_ADDRESS, 1) != 1) return -1;
  *value = (uint8_t)Wire.read();
  return 0;
}

static inline int fe_sccb_write(void *, uint8_t reg, uint8_t value) {
  Wire.beginTransmission(FE_OV_SCCB_ADDRESS);
  Wire.write(reg);
  Wire.write(value);
  return Wire.endTransmission() == 0 ? 0 : -1;
}

static inline void fe_sccb_sleep(void *, unsigned ms) { delay(ms); }

// Start the camera at QCIF (176x144) in `format`. Arduino_OV767X's three-argument begin() sets
// every release up as an OV7670 (0.0.2 knows nothing else; master defaults to it): it checks the
// sensor's ID, starts its clock and Wire, and fixes the frame: 176x144, RGB565 big-endian (or Y of
// YUV422 for GRAYSCALE). Nothing below changes size or format.
static inline int fe_camera_begin(int format, int fps) {
  return Camera.begin(QCIF, format, fps) != 0 ? FE_CAMERA_OK : FE_CAMERA_ERR_BEGIN;
}

// After fe_camera_begin(), for an OV7675: rewrite the output window (nano33ble_ov7675.h). On
// FE_CAMERA_ERR_REGS, *failed_reg names the register that did not take.
static inline int fe_camera_set_ov7675_window(uint8_t *failed_reg) {
  const fe_ov_bus_t bus = {fe_sccb_read, fe_sccb_write, fe_sccb_sleep, NULL};
  return fe_ov_apply(kFeOv7675QcifWindow, &bus, failed_reg) == FE_OV_OK ? FE_CAMERA_OK : FE_CAMERA_ERR_REGS;
}

// The line setup() prints when fe_camera_begin() failed with `status`.
static inline void fe_camera_error_line(int status, const char *sensor_name, uint8_t failed_reg, char *buf,
                                        size_t size) {
  if (status == FE_CAMERA_ERR_REGS) {
    snprintf(buf, size, "camera init failed: %s window register 0x%02X did not take (SCCB/I2C)", sensor_name,
             failed_reg);
  } else {
    snprintf(buf, size, "camera init failed: check the %s on the TinyML shield", sensor_name);
  }
}

// The RGB LED of the Nano 33 BLE Sense is active low. mask: bit 0 red, bit 1 green, bit 2 blue.
static inline void fe_led_init() {
  pinMode(LEDR, OUTPUT);
  pinMode(LEDG, OUTPUT);
  pinMode(LEDB, OUTPUT);
  digitalWrite(LEDR, HIGH);
  digitalWrite(LEDG, HIGH);
  digitalWrite(LEDB, HIGH);
}

static inline void fe_led_show(uint8_t mask) {
  digitalWrite(LEDR, (mask & 1) ? LOW : HIGH);
  digitalWrite(LEDG, (mask & 2) ? LOW : HIGH);
  digitalWrite(LEDB, (mask & 4) ? LOW : HIGH);
}

// Largest block malloc can still hand out: what the board has left for the user, measured.
static inline uint32_t fe_free_ram_bytes() {
  size_t lo = 0, hi = 256u * 1024u;
  while (lo + 256 < hi) {
    size_t mid = (lo + hi) / 2;
    void *p = malloc(mid);
    if (p != NULL) {
      free(p);
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return (uint32_t)lo;
}

#endif  // NANO33BLE_CAMERA_H
