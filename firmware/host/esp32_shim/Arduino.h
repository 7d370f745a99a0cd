/* Stand-in for arduino-esp32 3.x Arduino.h (see README.md): declarations, written for the host
 * syntax check, of the Arduino API the ESP32-CAM sketch calls, with the 3.x signatures
 * (HardwareSerial.h, Print.h, Stream.h, esp32-hal.h, esp32-hal-gpio.h, esp32-hal-ledc.h,
 * esp32-hal-psram.h), plus the macros Arduino.h defines that could collide with TFLM's headers. */
#ifndef FE_SHIM_ARDUINO_H
#define FE_SHIM_ARDUINO_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "freertos/FreeRTOS.h"
#include "esp_err.h"

/* Arduino.h macros (names that a library header could also use). */
#define PI 3.1415926535897932384626433832795
#define HALF_PI 1.5707963267948966192313216916398
#define TWO_PI 6.283185307179586476925286766559
#define DEG_TO_RAD 0.017453292519943295769236907684886
#define RAD_TO_DEG 57.295779513082320876798154814105
#define EULER 2.718281828459045235360287471352
#define SERIAL 0x0
#define DISPLAY 0x1
#define LSBFIRST 0
#define MSBFIRST 1
#define RISING 0x01
#define FALLING 0x02
#define CHANGE 0x03
#define DEFAULT 1
#define EXTERNAL 0
#define _min(a, b) ((a) < (b) ? (a) : (b))
#define _max(a, b) ((a) > (b) ? (a) : (b))
#define constrain(amt, low, high) ((amt) < (low) ? (low) : ((amt) > (high) ? (high) : (amt)))
#define radians(deg) ((deg) * DEG_TO_RAD)
#define degrees(rad) ((rad) * RAD_TO_DEG)
#define sq(x) ((x) * (x))
#define lowByte(w) ((uint8_t)((w) & 0xff))
#define highByte(w) ((uint8_t)((w) >> 8))
#define bit(b) (1UL << (b))
#define _BV(b) (1UL << (b))

/* esp32-hal-gpio.h */
#define LOW 0x0
#define HIGH 0x1
#define INPUT 0x01
#define OUTPUT 0x03
#define INPUT_PULLUP 0x05

typedef bool boolean;
typedef uint8_t byte;
typedef unsigned int word;

#ifdef __cplusplus
extern "C" {
#endif
/* esp32-hal.h */
unsigned long micros(void);
unsigned long millis(void);
void delay(uint32_t ms);
void delayMicroseconds(uint32_t us);
/* esp32-hal-gpio.h */
void pinMode(uint8_t pin, uint8_t mode);
void digitalWrite(uint8_t pin, uint8_t val);
int digitalRead(uint8_t pin);
/* esp32-hal-ledc.h (3.x: pins, not channels, are the handle) */
bool ledcAttach(uint8_t pin, uint32_t freq, uint8_t resolution);
bool ledcAttachChannel(uint8_t pin, uint32_t freq, uint8_t resolution, uint8_t channel);
bool ledcWrite(uint8_t pin, uint32_t duty);
bool ledcDetach(uint8_t pin);
/* esp32-hal-psram.h */
bool psramInit(void);
bool psramFound(void);
void *ps_malloc(size_t size);
#ifdef __cplusplus
}

#include <algorithm>
#include <cmath>

using std::abs;
using std::max;
using std::min;
using std::round;

void setup(void);
void loop(void);

/* Print.h / Stream.h */
#define DEC 10
#define HEX 16

class Print {
 public:
  virtual ~Print() {}
  virtual size_t write(uint8_t) = 0;
  virtual size_t write(const uint8_t *buffer, size_t size);
  size_t write(const char *str) { return str == NULL ? 0 : write((const uint8_t *)str, strlen(str)); }
  size_t write(const char *buffer, size_t size) { return write((const uint8_t *)buffer, size); }
  size_t printf(const char *format, ...) __attribute__((format(printf, 2, 3)));
  size_t print(const char[]);
  size_t print(char);
  size_t print(unsigned char, int = DEC);
  size_t print(int, int = DEC);
  size_t print(unsigned int, int = DEC);
  size_t print(long, int = DEC);
  size_t print(unsigned long, int = DEC);
  size_t print(double, int = 2);
  size_t println(const char[]);
  size_t println(char);
  size_t println(unsigned char, int = DEC);
  size_t println(int, int = DEC);
  size_t println(unsigned int, int = DEC);
  size_t println(long, int = DEC);
  size_t println(unsigned long, int = DEC);
  size_t println(double, int = 2);
  size_t println(void);
};

class Stream : public Print {
 public:
  virtual int available() = 0;
  virtual int read() = 0;
  virtual int peek() = 0;
  void setTimeout(unsigned long timeout);
  size_t readBytes(char *buffer, size_t length);
  size_t readBytes(uint8_t *buffer, size_t length) { return readBytes((char *)buffer, length); }
};

/* HardwareSerial.h */
#define SERIAL_8N1 0x800001c

class HardwareSerial : public Stream {
 public:
  explicit HardwareSerial(uint8_t uart_nr);
  void begin(unsigned long baud, uint32_t config = SERIAL_8N1, int8_t rxPin = -1, int8_t txPin = -1,
             bool invert = false, unsigned long timeout_ms = 20000UL, uint8_t rxfifo_full_thrhd = 120);
  void end(void);
  int available(void) override;
  int availableForWrite(void);
  int peek(void) override;
  int read(void) override;
  size_t read(uint8_t *buffer, size_t size);
  size_t readBytes(uint8_t *buffer, size_t length);
  size_t readBytes(char *buffer, size_t length) { return readBytes((uint8_t *)buffer, length); }
  void flush(void);
  size_t write(uint8_t) override;
  size_t write(const uint8_t *buffer, size_t size) override;
  size_t write(const char *buffer, size_t size) { return write((const uint8_t *)buffer, size); }
  size_t write(const char *s) { return write((const uint8_t *)s, strlen(s)); }
  size_t write(unsigned long n) { return write((uint8_t)n); }
  size_t write(long n) { return write((uint8_t)n); }
  size_t write(unsigned int n) { return write((uint8_t)n); }
  size_t write(int n) { return write((uint8_t)n); }
  uint32_t baudRate();
  operator bool() const;
  size_t setRxBufferSize(size_t new_size);
  size_t setTxBufferSize(size_t new_size);
};

/* Without USB CDC on boot (the ESP32 has none), Serial is UART0. */
extern HardwareSerial Serial0;
#define Serial Serial0
#endif /* __cplusplus */

#endif /* FE_SHIM_ARDUINO_H */
