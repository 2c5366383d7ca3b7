/* Runs the exported fp32 digits CNN on the float images baked in input.h and leaves the
 * float logits in fw_output (RAM), fw_status = 0 when every call returned 0. The same
 * start-up code and linker script as the int8 firmware (main.c): the reset handler enables
 * the FPU before any float instruction. */
#include <stdint.h>

#include "digits_cnn.h"
#include "input.h" /* FW_INPUTS, FW_IN_SIZE, FW_OUT_SIZE, fw_input[FW_INPUTS][FW_IN_SIZE] */

float fw_output[FW_INPUTS][FW_OUT_SIZE];
volatile int32_t fw_status = -1;

int main(void)
{
    int32_t status = 0;
    for (int i = 0; i < FW_INPUTS; i++)
        status |= digits_cnn_run(fw_input[i], fw_output[i]);
    fw_status = status;
    return 0;
}
