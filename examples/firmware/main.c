/* Runs the exported int8 digits CNN on the inputs baked in input.h and leaves the int8
 * outputs in fw_output (RAM), fw_status = 0 when every call returned 0. */
#include <stdint.h>

#include "digits_cnn.h"
#include "input.h" /* FW_INPUTS, fw_input[FW_INPUTS][DIGITS_CNN_IN0_SIZE] */

int8_t fw_output[FW_INPUTS][DIGITS_CNN_OUT0_SIZE];
volatile int32_t fw_status = -1;

int main(void)
{
    int32_t status = 0;
    for (int i = 0; i < FW_INPUTS; i++)
        status |= digits_cnn_run_int8(fw_input[i], fw_output[i]);
    fw_status = status;
    return 0;
}
