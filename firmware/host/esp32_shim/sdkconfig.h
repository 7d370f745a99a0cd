/* Stand-in for the sdkconfig.h an ESP-IDF build generates (see README.md): the values the
 * headers included by the ESP32-CAM sketch read, as the esp32 Arduino core 3.x builds an
 * AI-Thinker ESP32-CAM (PSRAM on, Xtensa LX6 dual core). */
#ifndef FE_SHIM_SDKCONFIG_H
#define FE_SHIM_SDKCONFIG_H
#define CONFIG_IDF_TARGET "esp32"
#define CONFIG_IDF_TARGET_ESP32 1
#define CONFIG_IDF_FIRMWARE_CHIP_ID 0x0000
#define CONFIG_SPIRAM 1
#define CONFIG_FREERTOS_HZ 1000
#define CONFIG_FREERTOS_NUMBER_OF_CORES 2
#define CONFIG_LOG_DEFAULT_LEVEL 0
#define CONFIG_LOG_MAXIMUM_LEVEL 0
#endif
