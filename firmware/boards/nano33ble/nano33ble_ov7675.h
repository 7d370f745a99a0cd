/* OV7675 register set-up of the Nano 33 BLE sketch: plain C, no Arduino headers, so that the
 * host tests can build it with gcc and run the table against a simulated sensor
 * (firmware/host/ov7675_test.c, tests/test_ov7675_regs.py).
 *
 * Why this exists: Arduino_OV767X 0.0.2, the release the Library Manager installs, always
 * configures the sensor as an OV7670, and the Arduino Tiny Machine Learning Kit ships an OV7675.
 * The two sensors answer the same product ID (PID 0x0A = 0x76, VER 0x0B = 0x73: OV7675 datasheet
 * 10.13.2009 table 7-1; Arducam's OV7675 software guide; the Linux ov7670 driver's
 * ov7670_detect() accepts both with the same check), so the sensor cannot be detected: the sketch
 * has a build option (FE_CAMERA_SENSOR in nano33ble.ino).
 *
 * What differs at QCIF: the drivers that configure both sensors (Arduino_OV767X master,
 * 2023-01-08 "Added support for the OV7675", and the same code in tinyMLx/arduino-library) run
 * the same reset table, the same RGB565/YUV format table, the same QCIF scaler table and the same
 * clock set-up for both; for the OV7675 they choose another output window only:
 *
 *                 hstart  hstop  vstart  vstop   (sensor pixel / row counters)
 *     OV7670        456     24      14     494    (what 0.0.2 writes: ov7670_win_sizes[QCIF])
 *     OV7675        250     24     120     180    (ov7675_win_sizes[QCIF], "empirically
 *                                                  determined and different from ov7670")
 *
 * So the sketch lets Arduino_OV767X set the sensor up as it does (an OV7670 at QCIF), then
 * rewrites the six window registers below. The result is the register state of the library's
 * own OV7675 path, with either library version.
 *
 * Bit layout: VREF from the OV7675 datasheet (10.13.2009, table 7-1); HSTART/HSTOP/VSTART/VSTOP/
 * HREF at the same addresses as on the OV7670 (Zephyr drivers/video/ov7675.c register list) and
 * packed as Linux ov7670_set_hw() and both Arduino drivers pack them for either sensor:
 *   horizontal positions have 11 bits: HSTART/HSTOP hold bits [10:3], HREF[2:0] holds hstart's
 *   bits [2:0] and HREF[5:3] hstop's; HREF[7:6] is the HREF edge offset, left as it is.
 *   vertical positions have 10 bits: VSTART/VSTOP hold bits [9:2], VREF[1:0] holds vstart's bits
 *   [1:0] and VREF[3:2] vstop's; VREF[7:6] is AGC[9:8] (the auto gain writes it), VREF[5:4] is
 *   "debug mode": both left as they are.
 */
#ifndef NANO33BLE_OV7675_H
#define NANO33BLE_OV7675_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 7-bit SCCB address: the datasheet's 0x42 (write) / 0x43 (read), as Wire wants it. */
#define FE_OV_SCCB_ADDRESS 0x21

/* Register addresses (OV7675 datasheet table 7-1; Zephyr drivers/video/ov7675.c). */
#define FE_OV_REG_VREF 0x03
#define FE_OV_REG_PID 0x0A
#define FE_OV_REG_VER 0x0B
#define FE_OV_REG_HSTART 0x17
#define FE_OV_REG_HSTOP 0x18
#define FE_OV_REG_VSTART 0x19
#define FE_OV_REG_VSTOP 0x1A
#define FE_OV_REG_HREF 0x32

/* One register write: reg = (reg & ~mask) | value. mask 0xFF is a plain write; any other mask
 * reads the register first and keeps the bits outside it. value has no bits outside mask. */
typedef struct {
  uint8_t reg;
  uint8_t mask;
  uint8_t value;
} fe_ov_reg_t;

/* End of a table: mask 0 writes nothing, so the marker can never be taken for a write. */
#define FE_OV_END {0xFF, 0x00, 0x00}
#define FE_OV_IS_END(e) ((e)->reg == 0xFF && (e)->mask == 0x00)

/* The OV7675 QCIF window, written after Arduino_OV767X's begin(QCIF, ...). Order as in the
 * drivers' ov7670_set_hw(): horizontal first, then vertical, the shared low-bit register last. */
static const fe_ov_reg_t kFeOv7675QcifWindow[] = {
    {FE_OV_REG_HSTART, 0xFF, 0x1F}, /* hstart 250 = 0x0FA: bits [10:3] = 0x1F                 */
    {FE_OV_REG_HSTOP, 0xFF, 0x03},  /* hstop   24 = 0x018: bits [10:3] = 0x03                 */
    {FE_OV_REG_HREF, 0x3F, 0x02},   /* [5:3] hstop & 7 = 0, [2:0] hstart & 7 = 2              */
    {FE_OV_REG_VSTART, 0xFF, 0x1E}, /* vstart 120 = 0x078: bits [9:2] = 0x1E                  */
    {FE_OV_REG_VSTOP, 0xFF, 0x2D},  /* vstop  180 = 0x0B4: bits [9:2] = 0x2D                  */
    {FE_OV_REG_VREF, 0x0F, 0x00},   /* [3:2] vstop & 3 = 0, [1:0] vstart & 3 = 0              */
    FE_OV_END,
};

/* How the table reaches the sensor: Wire on the board, a simulated register file in the tests.
 * read/write return 0 on success. sleep_ms may be NULL. */
typedef struct {
  int (*read)(void *ctx, uint8_t reg, uint8_t *value);
  int (*write)(void *ctx, uint8_t reg, uint8_t value);
  void (*sleep_ms)(void *ctx, unsigned ms);
  void *ctx;
} fe_ov_bus_t;

enum {
  FE_OV_OK = 0,
  FE_OV_ERR_BUS = 1,    /* the sensor did not acknowledge a read or write */
  FE_OV_ERR_VERIFY = 2, /* a register read back other bits than were written */
};

/* Write a table, reading every register back: a sensor that is absent, another chip at 0x21 or a
 * write that did not take fails here instead of giving wrong frames. Only the bits under mask are
 * compared (VREF[7:6] belong to the auto gain and change by themselves). On failure *failed_reg
 * (if not NULL) names the register. */
static inline int fe_ov_apply(const fe_ov_reg_t *table, const fe_ov_bus_t *bus, uint8_t *failed_reg) {
  const fe_ov_reg_t *e;
  for (e = table; !FE_OV_IS_END(e); e++) {
    uint8_t v = e->value, back = 0;
    if (e->mask != 0xFF) {
      uint8_t old = 0;
      if (bus->read(bus->ctx, e->reg, &old) != 0) goto bus_error;
      v = (uint8_t)((old & (uint8_t)~e->mask) | (e->value & e->mask));
      /* The drivers wait 10 ms between reading and writing back HREF/VREF (Linux
       * ov7670_set_hw()); the datasheet gives no figure, so keep theirs. */
      if (bus->sleep_ms) bus->sleep_ms(bus->ctx, 10);
    }
    if (bus->write(bus->ctx, e->reg, v) != 0) goto bus_error;
    if (bus->read(bus->ctx, e->reg, &back) != 0) goto bus_error;
    if ((back ^ e->value) & e->mask) {
      if (failed_reg) *failed_reg = e->reg;
      return FE_OV_ERR_VERIFY;
    }
  }
  return FE_OV_OK;
bus_error:
  if (failed_reg) *failed_reg = e->reg;
  return FE_OV_ERR_BUS;
}

#ifdef __cplusplus
}
#endif

#endif /* NANO33BLE_OV7675_H */
