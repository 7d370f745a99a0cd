// Camera and LED helpers of the Nano 33 BLE Sense sketch. In a header, not the .ino, because
// Arduino's prototype generator does not handle templates in .ino files.
#ifndef NANO33BLE_CAMERA_H
#define NANO33BLE_CAMERA_H

#include <Arduino.h>
#include <Arduino_OV767X.h>

// Arduino_OV767X releases differ: some take the sensor type as a fourth argument (1 = OV7675, the
// sensor of the Tiny Machine Learning Kit), older ones know only the OV7670 and take three.
// Overload resolution picks the four-argument call when the installed library has it.
template <typename Cam>
static auto fe_camera_begin_impl(Cam &cam, int resolution, int format, int fps, int)
    -> decltype(cam.begin(resolution, format, fps, 1)) {
  return cam.begin(resolution, format, fps, 1 /* OV7675 */);
}

template <typename Cam>
static int fe_camera_begin_impl(Cam &cam, int resolution, int format, int fps, long) {
  return cam.begin(resolution, format, fps);
}

static inline int fe_camera_begin(int resolution, int format, int fps) {
  return fe_camera_begin_impl(Camera, resolution, format, fps, 0);
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
