/* Stand-in for FreeRTOS.h (see README.md): the sketch calls no FreeRTOS API itself. */
#ifndef FE_SHIM_FREERTOS_H
#define FE_SHIM_FREERTOS_H
#include <stdint.h>
typedef uint32_t TickType_t;
typedef void *TaskHandle_t;
#endif
