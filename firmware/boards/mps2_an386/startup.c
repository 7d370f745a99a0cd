/* startup.c: reset handler and vector table of the emulator board (Cortex-M4F on QEMU mps2-an386).
 *
 * Copies .data, clears .bss, turns the FPU on (the code is built with -mfpu=fpv4-sp-d16), runs
 * the C++ constructors and calls main(). Faults print their name on UART1 ("FE-EMU fault ...",
 * which the host reports) and spin. */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);
extern void __libc_init_array(void);
void fe_emu_fault(const char *what);

void Reset_Handler(void) {
  uint32_t *src = &_sidata, *dst = &_sdata;
  while (dst < &_edata) *dst++ = *src++;
  for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
  /* CPACR: full access to CP10 and CP11 (the FPU). */
  *(volatile uint32_t *)0xE000ED88 |= (0xFu << 20);
  __asm volatile("dsb\n isb");
  __libc_init_array();
  main();
  for (;;) {
  }
}

/* newlib's __libc_init_array calls _init/_fini, normally from crti.o (not linked: -nostartfiles). */
void _init(void);
void _fini(void);
void _init(void) {}
void _fini(void) {}

static void hard_fault(void) { fe_emu_fault("HardFault"); }
static void mem_fault(void) { fe_emu_fault("MemManage"); }
static void bus_fault(void) { fe_emu_fault("BusFault"); }
static void usage_fault(void) { fe_emu_fault("UsageFault"); }
static void other(void) { fe_emu_fault("unexpected interrupt"); }

/* Every external interrupt goes to the board's one handler (mps2_an386.cc): only UART0's receive
 * interrupt is enabled, and it only wakes the main loop from WFI. */
void fe_emu_irq(void);

#define FE_EMU_EXTERNAL_IRQS 32
__attribute__((section(".vectors"), used)) static void (*const g_vectors[16 + FE_EMU_EXTERNAL_IRQS])(void) = {
    (void (*)(void))(&_estack), Reset_Handler, other, hard_fault, mem_fault, bus_fault, usage_fault,
    0, 0, 0, 0, other, other, 0, other, other,
    [16 ... 16 + FE_EMU_EXTERNAL_IRQS - 1] = fe_emu_irq,
};
