// facemask-edge firmware: the emulator board, QEMU `-M mps2-an386` (ARM's MPS2 FPGA image
// AN386: a Cortex-M4F with CMSDK UARTs and timers).
//
//   facemask-edge emulate RUN_DIR        builds this with the run's model and starts QEMU
//
// The application is the Nano's (firmware/common/fe_app.cc, fe_inference.cc, fe_protocol.c);
// this file is only the board: UART driver, clock, start-up. There is no camera: at boot the
// board preprocesses one synthetic camera frame of the exported board's size (QCIF for the
// Nano) and runs the model once on it, to measure both and print one PRED line.
//
// Counting: QEMU runs with `-icount shift=0`, one guest instruction per virtual nanosecond, so
// the 25 MHz CMSDK timer ticks once per 40 instructions. Counts are instructions, reported
// with FE_COUNTER_INSTRUCTIONS (PROTOCOL.md 3.1); micros() is virtual time (1000 instructions).
//
// UART0 (QEMU serial0, a pty): the protocol and the text lines, as on the Nano's USB serial.
// UART1 (serial1, a file): the measurement log ("FE-EMU ..." lines: preprocessing, per-operator
// profile of the boot inference), kept off the protocol's port.

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "facemask_edge.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"

namespace {

// CMSDK APB UART (ARM DDI 0479): DATA, STATE (bit 0 TX full, bit 1 RX full), CTRL (bit 0 TX
// enable, bit 1 RX enable), INTSTATUS, BAUDDIV (>= 16).
struct CmsdkUart {
  volatile uint32_t data, state, ctrl, intstatus, bauddiv;
};
// CMSDK APB timer: CTRL (bit 0 enable), VALUE (counts down at PCLK, 25 MHz), RELOAD.
struct CmsdkTimer {
  volatile uint32_t ctrl, value, reload, intstatus;
};

CmsdkUart *const kUart0 = reinterpret_cast<CmsdkUart *>(0x40004000u);
CmsdkUart *const kUart1 = reinterpret_cast<CmsdkUart *>(0x40005000u);
CmsdkTimer *const kTimer0 = reinterpret_cast<CmsdkTimer *>(0x40000000u);
constexpr uint32_t kInstructionsPerTick = 40;  // 1 GHz virtual instruction rate / 25 MHz PCLK
constexpr uint32_t kTicksPerMicro = 25;

void uart_init(CmsdkUart *u) {
  u->bauddiv = 16;
  u->ctrl = 0x3;
}

void uart_write(CmsdkUart *u, const uint8_t *data, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    while (u->state & 0x1u) {
    }
    u->data = data[i];
  }
}

void uart_print(CmsdkUart *u, const char *s) { uart_write(u, reinterpret_cast<const uint8_t *>(s), strlen(s)); }

uint32_t timer_ticks(void) { return 0xFFFFFFFFu - kTimer0->value; }

uint32_t board_instructions(void) { return timer_ticks() * kInstructionsPerTick; }

uint32_t board_micros(void) { return timer_ticks() / kTicksPerMicro; }

void serial_write(void *ctx, const uint8_t *data, size_t len) {
  (void)ctx;
  uart_write(kUart0, data, len);
}

// One event per operator of an Invoke(): instructions between BeginEvent and EndEvent.
class OpProfiler : public tflite::MicroProfilerInterface {
 public:
  static constexpr int kMaxEvents = 256;
  bool recording = false;

  uint32_t BeginEvent(const char *tag) override {
    if (!recording || count_ >= kMaxEvents) return kMaxEvents;
    tags_[count_] = tag;
    start_[count_] = board_instructions();
    return static_cast<uint32_t>(count_++);
  }

  void EndEvent(uint32_t handle) override {
    if (handle < static_cast<uint32_t>(count_)) end_[handle] = board_instructions();
  }

  void Print(CmsdkUart *u) const {
    char line[96];
    for (int i = 0; i < count_; ++i) {
      snprintf(line, sizeof line, "FE-EMU op %d %s %lu\n", i, tags_[i] != nullptr ? tags_[i] : "?",
               static_cast<unsigned long>(end_[i] - start_[i]));
      uart_print(u, line);
    }
  }

 private:
  int count_ = 0;
  const char *tags_[kMaxEvents] = {};
  uint32_t start_[kMaxEvents] = {};
  uint32_t end_[kMaxEvents] = {};
};

uint8_t g_frame[FE_FRAME_WIDTH * FE_FRAME_HEIGHT * 2];  // one RGB565 camera frame, as on the Nano
alignas(16) uint8_t g_arena[FE_ARENA_SIZE];
#if FE_EMU_PROFILE
OpProfiler g_profiler;
#endif

// A deterministic stand-in for a camera frame: a smooth colour gradient (RGB565, big-endian as
// Arduino_OV767X delivers it).
void synthetic_frame(void) {
  size_t k = 0;
  for (int y = 0; y < FE_FRAME_HEIGHT; ++y) {
    for (int x = 0; x < FE_FRAME_WIDTH; ++x) {
      const uint16_t r = static_cast<uint16_t>((x * 31) / FE_FRAME_WIDTH);
      const uint16_t g = static_cast<uint16_t>((y * 63) / FE_FRAME_HEIGHT);
      const uint16_t b = static_cast<uint16_t>(((x + y) * 31) / (FE_FRAME_WIDTH + FE_FRAME_HEIGHT));
      const uint16_t px = static_cast<uint16_t>((r << 11) | (g << 5) | b);
      g_frame[k++] = static_cast<uint8_t>(px >> 8);
      g_frame[k++] = static_cast<uint8_t>(px & 0xFF);
    }
  }
}

extern "C" char end;  // linker script: first byte after .bss
extern "C" char _heap_limit;

}  // namespace

// TFLM's logging and profiler clock (the Arduino versions need the Arduino core).
extern "C" void DebugLog(const char *s) { uart_print(kUart1, s); }
namespace tflite {
uint32_t ticks_per_second() { return 25000000u; }
uint32_t GetCurrentTimeTicks() { return timer_ticks(); }
}  // namespace tflite

// UART0's receive interrupt: it only ends the main loop's WFI; the loop reads the data.
extern "C" void fe_emu_irq(void) { kUart0->intstatus = 0x2u; }

extern "C" void fe_emu_fault(const char *what) {
  uart_print(kUart1, "FE-EMU fault ");
  uart_print(kUart1, what);
  uart_print(kUart1, "\n");
  for (;;) {
  }
}

int main(void) {
  kTimer0->ctrl = 0;
  kTimer0->reload = 0xFFFFFFFFu;
  kTimer0->value = 0xFFFFFFFFu;
  kTimer0->ctrl = 0x1;
  uart_init(kUart0);
  uart_init(kUart1);

  const fe_app_board_t board = {serial_write, board_micros, board_instructions, FE_COUNTER_INSTRUCTIONS, 0};
#if FE_EMU_PROFILE
  tflite::MicroProfilerInterface *profiler = &g_profiler;
#else
  tflite::MicroProfilerInterface *profiler = nullptr;
#endif
  const int status = fe_app_setup(&board, g_arena, sizeof g_arena, nullptr, profiler);
  fe_app_info()->free_ram_bytes = static_cast<uint32_t>(&_heap_limit - &end);

  // The model's name is as long as its run folder's: printed as it is, not through a fixed buffer.
  char line[160];
  uart_print(kUart0, "facemask-edge " FE_FIRMWARE_VERSION " board=" FE_BOARD " (emulated on qemu mps2-an386) model=");
  uart_print(kUart0, FE_MODEL_VERSION);
  snprintf(line, sizeof line, " input=%dx%dx%d arena_used=%lu/%lu free_ram=%lu\r\n", FE_INPUT_WIDTH,
           FE_INPUT_HEIGHT, FE_INPUT_CHANNELS, static_cast<unsigned long>(fe_app_info()->arena_bytes),
           static_cast<unsigned long>(FE_ARENA_SIZE), static_cast<unsigned long>(fe_app_info()->free_ram_bytes));
  uart_print(kUart0, line);
  snprintf(line, sizeof line, "FE-EMU boot status=%d arena_used=%lu free_ram=%lu\n", status,
           static_cast<unsigned long>(fe_app_info()->arena_bytes),
           static_cast<unsigned long>(fe_app_info()->free_ram_bytes));
  uart_print(kUart1, line);

  if (status == FE_OK) {
    // The camera loop's work, once: preprocess a frame, run the model, print its PRED line.
    synthetic_frame();
    const uint32_t c0 = board_instructions();
    const int rc = fe_app_preprocess(g_frame, FE_FRAME_WIDTH, FE_FRAME_HEIGHT, FE_PIXEL_RGB565);
    const uint32_t pre = board_instructions() - c0;
#if FE_EMU_PROFILE
    g_profiler.recording = true;
#endif
    const char *pred = nullptr;
    size_t n = 0;
    uint8_t led = 0;
    const size_t ok = rc == FE_PRE_OK ? fe_app_classify(board_micros() / 1000u, &pred, &n, &led) : 0;
#if FE_EMU_PROFILE
    g_profiler.recording = false;
#endif
    if (pred != nullptr) uart_write(kUart0, reinterpret_cast<const uint8_t *>(pred), n);
    snprintf(line, sizeof line, "FE-EMU preprocess %dx%d rgb565 %lu\nFE-EMU invoke %lu %s\n", FE_FRAME_WIDTH,
             FE_FRAME_HEIGHT, static_cast<unsigned long>(pre), static_cast<unsigned long>(fe_inference_last_count()),
             ok ? "ok" : "failed");
    uart_print(kUart1, line);
#if FE_EMU_PROFILE
    g_profiler.Print(kUart1);
#endif
  }
  uart_print(kUart1, "FE-EMU ready\n");

  // Poll while bytes keep coming; after kIdleInstructions without one, sleep (WFI) until UART0
  // receives (CTRL bit 3: RX interrupt; NVIC ISER0: every external interrupt, only this one is
  // enabled at its source). Polling alone kept a host core busy while nobody talked to the board;
  // sleeping alone halved the streaming rate (each byte then waits for QEMU to wake the CPU).
  constexpr uint32_t kIdleInstructions = 2000000u;  // 2 ms of virtual time
  kUart0->ctrl = 0x3u | 0x8u;
  *reinterpret_cast<volatile uint32_t *>(0xE000E100u) = 0xFFFFFFFFu;
  uint8_t buf[64];
  uint32_t last_rx = board_instructions();
  for (;;) {
    size_t got = 0;
    while (got < sizeof buf && (kUart0->state & 0x2u)) buf[got++] = static_cast<uint8_t>(kUart0->data);
    if (got) {
      fe_app_feed(buf, got);
      last_rx = board_instructions();
      continue;
    }
    if (board_instructions() - last_rx < kIdleInstructions) continue;
    // Interrupts masked between the check and WFI: a byte arriving in between still wakes it.
    __asm volatile("cpsid i" ::: "memory");
    if (!(kUart0->state & 0x2u)) __asm volatile("wfi" ::: "memory");
    __asm volatile("cpsie i" ::: "memory");
  }
}
