/* Host test of the Nano sketch's OV7675 register table (boards/nano33ble/nano33ble_ov7675.h)
 * against a simulated sensor: a 256-byte register file that starts in the state Arduino_OV767X
 * 0.0.2 leaves after begin(QCIF, ...) (an OV7670 window), every other bit random.
 *
 *   cc -std=c99 -Wall -Wextra -Werror -pedantic -I firmware/boards/nano33ble \
 *      firmware/host/ov7675_test.c -o ov7675_test && ./ov7675_test
 *
 * The expected window is written here as the drivers state it (hstart/hstop/vstart/vstop in
 * sensor counts), and decoded from the registers with the datasheet's bit layout, so a wrong hex
 * digit in the table or a lost low bit fails. Exit status 0 when every check passes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nano33ble_ov7675.h"

static int failures = 0;

#define CHECK(cond, ...)                                \
  do {                                                  \
    if (!(cond)) {                                      \
      failures++;                                       \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                     \
      fputc('\n', stderr);                              \
    }                                                   \
  } while (0)

/* The simulated sensor. */
typedef struct {
  uint8_t regs[256];
  int nack_reg;          /* a read or write of this register is not acknowledged (-1: none) */
  int read_only;         /* writes are acknowledged but ignored */
  int agc_moves;         /* the auto gain rewrites VREF[7:6] after every VREF write */
  int writes, sleeps;
} sensor_t;

static int sim_read(void *ctx, uint8_t reg, uint8_t *value) {
  sensor_t *s = (sensor_t *)ctx;
  if (reg == s->nack_reg) return -1;
  *value = s->regs[reg];
  return 0;
}

static int sim_write(void *ctx, uint8_t reg, uint8_t value) {
  sensor_t *s = (sensor_t *)ctx;
  if (reg == s->nack_reg) return -1;
  s->writes++;
  if (!s->read_only) s->regs[reg] = value;
  if (s->agc_moves && reg == FE_OV_REG_VREF) s->regs[reg] = (uint8_t)((s->regs[reg] & 0x3F) | 0xC0);
  return 0;
}

static void sim_sleep(void *ctx, unsigned ms) {
  sensor_t *s = (sensor_t *)ctx;
  if (ms > 0) s->sleeps++;
}

/* Window in sensor counts, decoded with the datasheet's layout (HSTART/HSTOP bits [10:3], HREF
 * [2:0] / [5:3]; VSTART/VSTOP bits [9:2], VREF [1:0] / [3:2]). */
typedef struct { int hstart, hstop, vstart, vstop; } window_t;

static window_t decode(const uint8_t *r) {
  window_t w;
  w.hstart = (r[FE_OV_REG_HSTART] << 3) | (r[FE_OV_REG_HREF] & 0x07);
  w.hstop = (r[FE_OV_REG_HSTOP] << 3) | ((r[FE_OV_REG_HREF] >> 3) & 0x07);
  w.vstart = (r[FE_OV_REG_VSTART] << 2) | (r[FE_OV_REG_VREF] & 0x03);
  w.vstop = (r[FE_OV_REG_VSTOP] << 2) | ((r[FE_OV_REG_VREF] >> 2) & 0x03);
  return w;
}

/* Arduino_OV767X 0.0.2 after begin(QCIF, ...): its reset table writes HREF 0xB6 and VREF 0x0A,
 * then ov7670_set_hw(456, 24, 14, 494) keeps HREF[7:6] and VREF[7:4] and writes the rest. */
static void library_state(sensor_t *s, unsigned seed) {
  int i;
  srand(seed);
  memset(s, 0, sizeof(*s));
  s->nack_reg = -1;
  for (i = 0; i < 256; i++) s->regs[i] = (uint8_t)(rand() & 0xFF);
  s->regs[FE_OV_REG_HSTART] = 0x39;
  s->regs[FE_OV_REG_HSTOP] = 0x03;
  s->regs[FE_OV_REG_HREF] = (uint8_t)((s->regs[FE_OV_REG_HREF] & 0xC0) | 0x00);
  s->regs[FE_OV_REG_VSTART] = 0x03;
  s->regs[FE_OV_REG_VSTOP] = 0x7B;
  s->regs[FE_OV_REG_VREF] = (uint8_t)((s->regs[FE_OV_REG_VREF] & 0xF0) | 0x0A);
}

static int is_window_reg(int reg) {
  return reg == FE_OV_REG_HSTART || reg == FE_OV_REG_HSTOP || reg == FE_OV_REG_HREF ||
         reg == FE_OV_REG_VSTART || reg == FE_OV_REG_VSTOP || reg == FE_OV_REG_VREF;
}

static void test_table_is_well_formed(void) {
  int seen[256] = {0};
  size_t n = 0;
  const fe_ov_reg_t *e;
  for (e = kFeOv7675QcifWindow; !FE_OV_IS_END(e) && n < 64; e++, n++) {
    CHECK(e->mask != 0, "entry %zu (reg 0x%02X) has an empty mask", n, e->reg);
    CHECK((e->value & (uint8_t)~e->mask) == 0, "entry %zu (reg 0x%02X) sets bits outside its mask", n, e->reg);
    CHECK(!seen[e->reg], "reg 0x%02X is written twice", e->reg);
    CHECK(is_window_reg(e->reg), "reg 0x%02X is not a window register", e->reg);
    seen[e->reg] = 1;
  }
  CHECK(n == 6, "the table has %zu writes before its end marker, want the 6 window registers", n);
  CHECK(sizeof(kFeOv7675QcifWindow) / sizeof(kFeOv7675QcifWindow[0]) == n + 1,
        "the end marker is not the last entry");
  /* Masked writes keep what is not ours: HREF[7:6] edge offset, VREF[7:6] AGC and [5:4]. */
  for (e = kFeOv7675QcifWindow; !FE_OV_IS_END(e); e++) {
    if (e->reg == FE_OV_REG_HREF) CHECK(e->mask == 0x3F, "HREF mask 0x%02X, want 0x3F", e->mask);
    if (e->reg == FE_OV_REG_VREF) CHECK(e->mask == 0x0F, "VREF mask 0x%02X, want 0x0F", e->mask);
  }
}

static void test_library_state_decodes_to_the_ov7670_window(void) {
  sensor_t s;
  window_t w;
  library_state(&s, 1);
  w = decode(s.regs);
  CHECK(w.hstart == 456 && w.hstop == 24 && w.vstart == 14 && w.vstop == 494,
        "OV7670 state decodes to %d %d %d %d", w.hstart, w.hstop, w.vstart, w.vstop);
}

static void test_applies_the_ov7675_window_and_nothing_else(void) {
  unsigned seed;
  for (seed = 1; seed <= 200; seed++) {
    sensor_t s;
    uint8_t before[256], failed = 0xEE;
    fe_ov_bus_t bus = {sim_read, sim_write, sim_sleep, NULL};
    window_t w;
    int i, rc;
    library_state(&s, seed);
    bus.ctx = &s;
    memcpy(before, s.regs, sizeof(before));
    rc = fe_ov_apply(kFeOv7675QcifWindow, &bus, &failed);
    CHECK(rc == FE_OV_OK, "seed %u: apply returned %d (reg 0x%02X)", seed, rc, failed);
    w = decode(s.regs);
    /* Arduino_OV767X master / tinyMLx ov7675_win_sizes[QCIF]. */
    CHECK(w.hstart == 250 && w.hstop == 24 && w.vstart == 120 && w.vstop == 180,
          "seed %u: window %d %d %d %d, want 250 24 120 180", seed, w.hstart, w.hstop, w.vstart, w.vstop);
    for (i = 0; i < 256; i++) {
      if (!is_window_reg(i)) CHECK(s.regs[i] == before[i], "seed %u: reg 0x%02X changed", seed, i);
    }
    CHECK((s.regs[FE_OV_REG_HREF] & 0xC0) == (before[FE_OV_REG_HREF] & 0xC0), "seed %u: HREF[7:6] changed", seed);
    CHECK((s.regs[FE_OV_REG_VREF] & 0xF0) == (before[FE_OV_REG_VREF] & 0xF0), "seed %u: VREF[7:4] changed", seed);
    CHECK(s.writes == 6, "seed %u: %d writes, want 6", seed, s.writes);
    CHECK(s.sleeps == 2, "seed %u: %d waits, want one per read-modify-write (2)", seed, s.sleeps);
    /* Twice gives the same registers: setup() may run the camera start again after a reset. */
    memcpy(before, s.regs, sizeof(before));
    CHECK(fe_ov_apply(kFeOv7675QcifWindow, &bus, NULL) == FE_OV_OK && memcmp(before, s.regs, 256) == 0,
          "seed %u: a second apply changed the registers", seed);
  }
}

static void test_failures_name_the_register(void) {
  static const int regs[] = {FE_OV_REG_HSTART, FE_OV_REG_HREF, FE_OV_REG_VREF};
  size_t i;
  for (i = 0; i < sizeof(regs) / sizeof(regs[0]); i++) {
    sensor_t s;
    uint8_t failed = 0;
    fe_ov_bus_t bus = {sim_read, sim_write, NULL, NULL};
    int rc;
    library_state(&s, 7);
    s.nack_reg = regs[i];
    bus.ctx = &s;
    rc = fe_ov_apply(kFeOv7675QcifWindow, &bus, &failed);
    CHECK(rc == FE_OV_ERR_BUS && failed == regs[i], "NACK at 0x%02X: rc %d reg 0x%02X", regs[i], rc, failed);
  }
  {
    /* Something that acknowledges but does not keep what is written (not our sensor). */
    sensor_t s;
    uint8_t failed = 0;
    fe_ov_bus_t bus = {sim_read, sim_write, NULL, NULL};
    int rc;
    library_state(&s, 8);
    s.read_only = 1;
    bus.ctx = &s;
    rc = fe_ov_apply(kFeOv7675QcifWindow, &bus, &failed);
    CHECK(rc == FE_OV_ERR_VERIFY && failed == FE_OV_REG_HSTART, "read-only sensor: rc %d reg 0x%02X", rc, failed);
  }
  {
    /* The auto gain owns VREF[7:6]: its changes are not a failed write. */
    sensor_t s;
    fe_ov_bus_t bus = {sim_read, sim_write, NULL, NULL};
    library_state(&s, 9);
    s.agc_moves = 1;
    bus.ctx = &s;
    CHECK(fe_ov_apply(kFeOv7675QcifWindow, &bus, NULL) == FE_OV_OK, "VREF[7:6] moving fails the verify");
  }
}

int main(void) {
  test_table_is_well_formed();
  test_library_state_decodes_to_the_ov7670_window();
  test_applies_the_ov7675_window_and_nothing_else();
  test_failures_name_the_register();
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("ov7675 register table: all checks passed\n");
  return 0;
}
