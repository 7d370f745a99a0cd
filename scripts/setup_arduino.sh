#!/usr/bin/env bash
# Install the Arduino cores and libraries the facemask-edge sketches need. Needs internet.
#
#   scripts/setup_arduino.sh              both boards
#   scripts/setup_arduino.sh nano33ble    Arduino Nano 33 BLE Sense (Mbed OS core, OV767X, TFLM)
#   scripts/setup_arduino.sh esp32cam     AI-Thinker ESP32-CAM (esp32 core 3.x: TFLM + esp-nn, camera)
#
# Environment: ARDUINO_CLI (default: arduino-cli on PATH), MBED_NANO_VERSION and ESP32_VERSION to
# pin core versions (default: latest). Library versions are pinned to the ones the sketches are
# written for; their entries in facemask_edge/boards.py (core, libraries) list the same.
set -euo pipefail

CLI="${ARDUINO_CLI:-arduino-cli}"
ESP32_URL="https://espressif.github.io/arduino-esp32/package_esp32_index.json"
NANO_LIBS=("Arduino_OV767X@0.0.2" "Chirale_TensorFLowLite@2.0.0")

if ! command -v "$CLI" >/dev/null 2>&1; then
  cat >&2 <<MSG
arduino-cli not found ($CLI).
Install it, for example into ~/.local/bin:
  curl -fsSL https://raw.githubusercontent.com/arduino/arduino-cli/master/install.sh | BINDIR=~/.local/bin sh
(see https://arduino.github.io/arduino-cli/latest/installation/), or set ARDUINO_CLI to its path.
MSG
  exit 1
fi

boards=("$@")
[ ${#boards[@]} -eq 0 ] && boards=(nano33ble esp32cam)

pin() { if [ -n "${2:-}" ]; then echo "$1@$2"; else echo "$1"; fi; }

echo "== arduino-cli $("$CLI" version)"
"$CLI" core update-index --additional-urls "$ESP32_URL"

for board in "${boards[@]}"; do
  case "$board" in
    nano33ble)
      echo "== Nano 33 BLE Sense: core arduino:mbed_nano, libraries ${NANO_LIBS[*]}"
      "$CLI" core install "$(pin arduino:mbed_nano "${MBED_NANO_VERSION:-}")"
      for lib in "${NANO_LIBS[@]}"; do "$CLI" lib install "$lib"; done
      if [ "$(uname -s)" = Linux ]; then
        echo "   Linux: the Mbed core's udev rules let you upload without root:"
        echo "   sudo ~/.arduino15/packages/arduino/hardware/mbed_nano/*/post_install.sh"
      fi
      ;;
    esp32cam)
      echo "== ESP32-CAM: core esp32:esp32 (3.x bundles TFLite Micro with esp-nn and esp32-camera)"
      "$CLI" core install "$(pin esp32:esp32 "${ESP32_VERSION:-}")" --additional-urls "$ESP32_URL"
      if [ "$(uname -s)" = Linux ]; then
        echo "   Linux: add yourself to the dialout group for the USB-serial adapter: sudo usermod -aG dialout \$USER"
      fi
      ;;
    *)
      echo "unknown board '$board' (use nano33ble or esp32cam)" >&2
      exit 2
      ;;
  esac
done

echo "== installed"
"$CLI" core list
"$CLI" lib list
