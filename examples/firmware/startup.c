/* Minimal Cortex-M4F start-up code: the vector table and a reset handler that enables the
 * FPU, copies .data's initial values from flash, zeroes .bss and calls main. A real part adds
 * its clock set-up and the rest of its interrupt vectors. */
#include <stdint.h>

/* From cortex_m4.ld. */
extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _estack[];

int main(void);
void Reset_Handler(void);
void fw_done(void);

/* Where the firmware ends up after main returns (run.py stops the emulator here). */
__attribute__((noinline)) void fw_done(void)
{
    for (;;) {
    }
}

static void Default_Handler(void)
{
    for (;;) {
    }
}

/* Initial stack pointer, then the exception handlers (reset, NMI, HardFault, MemManage,
 * BusFault, UsageFault); the system handlers and IRQs a real part needs follow these. */
__attribute__((section(".isr_vector"), used))
void (*const vectors[7])(void) = {
    (void (*)(void))_estack, Reset_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler,
};

void Reset_Handler(void)
{
    /* CPACR (0xE000ED88): full access to CP10 and CP11, the FPU. Before any float code. */
    *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    /* volatile: keeps the compiler from turning these loops into memcpy/memset calls */
    volatile uint32_t *dst = _sdata;
    const uint32_t *src = _sidata;
    while (dst < _edata)
        *dst++ = *src++;
    for (dst = _sbss; dst < _ebss;)
        *dst++ = 0;
    main();
    fw_done();
}
