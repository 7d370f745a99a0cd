"""The board sketches, exported for a real model, compile with -Wall -Wextra -Werror against
stand-ins of the Arduino, camera and TFLM headers.

No Arduino core, camera library or TFLM source is installable here, so this cannot prove the
sketches build with the real libraries (the CI workflow firmware/ci/compile-sketches.yml does
that with arduino-cli). What it does check: the sketches, firmware/common and the generated headers
agree with each other (macro names, types, function signatures, both camera-library variants,
every build option), and they use only the library calls written down here, with the signatures
the libraries document.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from facemask_edge.export import export_run
from facemask_edge.artifacts.tflite import RESOLVER_METHODS


# Declarations only, with the signatures of the real headers (Arduino core and its Wire, Arduino_OV767X 0.0.2,
# esp32-camera, ESP-IDF heap_caps, TFLM micro_interpreter.h / micro_op_resolver.h).
STUBS = {
    "Arduino.h": """\
#pragma once
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#define HIGH 1
#define LOW 0
#define OUTPUT 1
#define LEDR 22
#define LEDG 23
#define LEDB 24
class HardwareSerial {
 public:
  void begin(unsigned long) {}
  explicit operator bool() const { return true; }
  int available() { return 0; }
  int read() { return -1; }
  size_t readBytes(uint8_t *, size_t n) { return n; }
  size_t write(const uint8_t *, size_t n) { return n; }
  size_t print(const char *) { return 0; }
  size_t print(int) { return 0; }
  size_t print(unsigned long) { return 0; }
  size_t println(const char *) { return 0; }
  size_t println(int) { return 0; }
  size_t println(unsigned long) { return 0; }
  size_t printf(const char *, ...) __attribute__((format(printf, 2, 3))) { return 0; }
  size_t setRxBufferSize(size_t n) { return n; }
};
extern HardwareSerial Serial;
unsigned long millis(void);
unsigned long micros(void);
void delay(unsigned long);
void pinMode(uint8_t, uint8_t);
void digitalWrite(uint8_t, uint8_t);
void analogWrite(uint8_t, int);
bool ledcAttachChannel(uint8_t pin, uint32_t freq, uint8_t resolution, uint8_t channel);
bool ledcWrite(uint8_t pin, uint32_t duty);
bool psramFound(void);
// The Cortex-M cycle counter the Nano sketch reads (CMSIS core_cm4.h, through mbed.h).
struct StubDWT { volatile uint32_t CTRL; volatile uint32_t CYCCNT; };
struct StubCoreDebug { volatile uint32_t DEMCR; };
#define DWT ((StubDWT *)0xE0001000UL)
#define CoreDebug ((StubCoreDebug *)0xE000EDF0UL)
#define DWT_CTRL_CYCCNTENA_Msk (1UL)
#define CoreDebug_DEMCR_TRCENA_Msk (1UL << 24)
""",
    "Arduino_OV767X.h": """\
#pragma once
enum { YUV422 = 0, RGB444 = 1, RGB565 = 2, GRAYSCALE = 4 };
enum { VGA = 0, CIF = 1, QVGA = 2, QCIF = 3, QQVGA = 4 };
class OV767X {
 public:
#ifdef STUB_OV_4ARG
  int begin(int resolution, int format, int fps, int camera_name = 0);  // master: 0 = OV7670
#else
  int begin(int resolution, int format, int fps);
#endif
  void readFrame(void *buffer);
};
extern OV767X Camera;
""",
    "Wire.h": """\
#pragma once
#include <stdint.h>
#include <stddef.h>
class MbedI2C {
 public:
  void begin();
  void end();
  void beginTransmission(uint8_t address);
  uint8_t endTransmission(bool stopBit);
  uint8_t endTransmission(void);
  size_t requestFrom(uint8_t address, size_t len, bool stopBit);
  size_t requestFrom(uint8_t address, size_t len);
  size_t write(uint8_t data);
  size_t write(int data);
  size_t write(const uint8_t *data, int len);
  int read();
  int available();
};
extern MbedI2C Wire;
""",
    "Chirale_TensorFlowLite.h": """\
#pragma once
""",
    "esp_camera.h": """\
#pragma once
#include <stdint.h>
#include <stddef.h>
typedef int esp_err_t;
#define ESP_OK 0
typedef enum { PIXFORMAT_RGB565, PIXFORMAT_JPEG, PIXFORMAT_GRAYSCALE } pixformat_t;
typedef enum { FRAMESIZE_QVGA } framesize_t;
typedef enum { LEDC_TIMER_0 } ledc_timer_t;
typedef enum { LEDC_CHANNEL_0 } ledc_channel_t;
typedef enum { CAMERA_FB_IN_PSRAM, CAMERA_FB_IN_DRAM } camera_fb_location_t;
typedef enum { CAMERA_GRAB_WHEN_EMPTY, CAMERA_GRAB_LATEST } camera_grab_mode_t;
typedef struct {
  int pin_pwdn, pin_reset, pin_xclk;
  union { int pin_sccb_sda; int pin_sscb_sda; };
  union { int pin_sccb_scl; int pin_sscb_scl; };
  int pin_d7, pin_d6, pin_d5, pin_d4, pin_d3, pin_d2, pin_d1, pin_d0, pin_vsync, pin_href, pin_pclk;
  int xclk_freq_hz; ledc_timer_t ledc_timer; ledc_channel_t ledc_channel; pixformat_t pixel_format;
  framesize_t frame_size; int jpeg_quality; size_t fb_count; camera_fb_location_t fb_location;
  camera_grab_mode_t grab_mode;
} camera_config_t;
typedef struct { uint8_t *buf; size_t len; size_t width; size_t height; pixformat_t format; } camera_fb_t;
esp_err_t esp_camera_init(const camera_config_t *config);
camera_fb_t *esp_camera_fb_get(void);
void esp_camera_fb_return(camera_fb_t *fb);
""",
    "esp_heap_caps.h": """\
#pragma once
#include <stddef.h>
#define MALLOC_CAP_INTERNAL (1 << 11)
#define MALLOC_CAP_8BIT (1 << 2)
#define MALLOC_CAP_SPIRAM (1 << 10)
void *heap_caps_malloc(size_t size, unsigned caps);
void *heap_caps_aligned_alloc(size_t alignment, size_t size, unsigned caps);
size_t heap_caps_get_free_size(unsigned caps);
""",
    "esp_timer.h": """\
#pragma once
#include <stdint.h>
int64_t esp_timer_get_time(void);
""",
    "img_converters.h": """\
#pragma once
#include "esp_camera.h"
bool fmt2rgb888(const uint8_t *src_buf, size_t src_len, pixformat_t format, uint8_t *rgb_buf);
""",
    "tensorflow/lite/schema/schema_generated.h": """\
#pragma once
#include <stdint.h>
#define TFLITE_SCHEMA_VERSION (3)
namespace flatbuffers { typedef uint32_t uoffset_t; template <typename T> struct Vector { uoffset_t size() const; T Get(uoffset_t) const; }; }
namespace tflite {
enum BuiltinOperator { BuiltinOperator_ADD = 0, BuiltinOperator_CUSTOM = 32 };
struct OperatorCode {};
struct Operator { uint32_t opcode_index() const; };
struct SubGraph { const flatbuffers::Vector<const Operator *> *operators() const; };
struct Model { uint32_t version() const; const flatbuffers::Vector<const OperatorCode *> *operator_codes() const;
               const flatbuffers::Vector<const SubGraph *> *subgraphs() const; };
const Model *GetModel(const void *buf);
}
""",
    "tensorflow/lite/schema/schema_utils.h": """\
#pragma once
#include "tensorflow/lite/schema/schema_generated.h"
namespace tflite { BuiltinOperator GetBuiltinCode(const OperatorCode *op_code); }
""",
    "tensorflow/lite/micro/micro_op_resolver.h": """\
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "tensorflow/lite/schema/schema_generated.h"
typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef enum { kTfLiteNoType = 0, kTfLiteFloat32 = 1, kTfLiteInt8 = 9 } TfLiteType;
typedef struct { int size; int data[4]; } TfLiteIntArray;
typedef union { int8_t *int8; float *f; } TfLitePtrUnion;
typedef struct { TfLiteType type; TfLitePtrUnion data; TfLiteIntArray *dims; size_t bytes; } TfLiteTensor;
struct TFLMRegistration {};
namespace tflite {
class MicroOpResolver {
 public:
  virtual const TFLMRegistration *FindOp(BuiltinOperator op) const = 0;
  virtual ~MicroOpResolver() {}
};
}
""",
    "tensorflow/lite/micro/micro_interpreter.h": """\
#pragma once
#include "tensorflow/lite/micro/micro_op_resolver.h"
namespace tflite {
class MicroResourceVariables;
class MicroProfilerInterface;
class MicroInterpreter {
 public:
  MicroInterpreter(const Model *model, const MicroOpResolver &op_resolver, uint8_t *tensor_arena,
                   size_t tensor_arena_size, MicroResourceVariables *resource_variables = nullptr,
                   MicroProfilerInterface *profiler = nullptr);
  TfLiteStatus AllocateTensors();
  TfLiteTensor *input(size_t index);
  TfLiteTensor *output(size_t index);
  TfLiteStatus Invoke();
  size_t arena_used_bytes() const;
 private:
  void *p_[8];
};
}
""",
}



pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")


def _resolver_stub() -> str:
    adds = "".join(f"  TfLiteStatus {m}() {{ return kTfLiteOk; }}\n" for m in sorted(set(RESOLVER_METHODS.values())))
    return ('#pragma once\n#include "tensorflow/lite/micro/micro_op_resolver.h"\nnamespace tflite {\n'
            "template <unsigned int N>\nclass MicroMutableOpResolver : public MicroOpResolver {\n public:\n"
            "  const TFLMRegistration *FindOp(BuiltinOperator) const override { return nullptr; }\n"
            + adds + "};\n}\n")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Both sketches exported for a real int8 model, plus the stub include folder."""
    from _fixtures import fixture_model
    from test_export import make_run

    root = tmp_path_factory.mktemp("sketches")
    run = make_run(root, fixture_model("sketch_rgb32"), ["with_mask", "without_mask"], "rgb")
    for board in ("nano33ble", "esp32cam"):
        export_run(run, board, out=root / "out")
    stubs = root / "stubs"
    for name, text in {**STUBS, "tensorflow/lite/micro/micro_mutable_op_resolver.h": _resolver_stub()}.items():
        (stubs / name).parent.mkdir(parents=True, exist_ok=True)
        (stubs / name).write_text(text)
    return root / "out", stubs


def _compile_sketch(cxx, sketch: Path, stubs: Path, out: Path, flags=()):
    """Compile the .ino the way the Arduino builder does (Arduino.h first) and every src/ file."""
    board = sketch.name
    unit = out / f"{board}.ino.cpp"
    unit.write_text("#include <Arduino.h>\n" f'#line 1 "{board}.ino"\n' + (sketch / f"{board}.ino").read_text())
    base = ["-Wall", "-Wextra", "-Werror", *flags, "-I", str(stubs), "-I", str(sketch), "-I", str(sketch / "src")]
    jobs = [(cxx, ["-std=gnu++14", "-fno-exceptions", "-fno-rtti"], unit)]
    for src in sorted((sketch / "src").iterdir()):
        if src.suffix == ".c":
            jobs.append((cxx.replace("g++", "gcc"), ["-std=gnu11"], src))
        elif src.suffix in (".cc", ".cpp"):
            jobs.append((cxx, ["-std=gnu++14", "-fno-exceptions", "-fno-rtti"], src))
    objects = []
    for compiler, std, src in jobs:
        obj = out / (src.name + ".o")
        proc = subprocess.run([compiler, *std, *base, "-c", str(src), "-o", str(obj)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"{src.name}:\n{proc.stderr}"
        objects.append(obj)
    return objects


@pytest.mark.parametrize("board,flags", [
    ("nano33ble", ()),
    ("nano33ble", ("-DSTUB_OV_4ARG",)),  # Arduino_OV767X master, with the sensor-type argument
    ("nano33ble", ("-DFE_CAMERA_GRAYSCALE=1", "-DFE_CAMERA_FPS=5")),
    ("nano33ble", ("-DFE_CAMERA_SENSOR=7670",)),
    ("nano33ble", ("-DFE_CAMERA_SENSOR=7670", "-DSTUB_OV_4ARG")),
    ("esp32cam", ()),
    ("esp32cam", ("-DFE_CAMERA_JPEG=1", "-DFE_ARENA_IN_PSRAM=1", "-DFE_SERIAL_BAUD=115200",
                  "-DFE_FLASH_LED_DUTY=6")),
])
def test_sketch_compiles_against_stubs(exported, board, flags, tmp_path):
    out_dir, stubs = exported
    objects = _compile_sketch("g++", out_dir / board, stubs, tmp_path, flags)
    assert len(objects) == 7  # sketch, fe_app, model_data, fe_inference, fe_preprocess, fe_protocol, fe_result


def _undefined(obj: Path) -> str:
    return subprocess.run(["nm", "-C", "-u", str(obj)], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("library", [(), ("-DSTUB_OV_4ARG",)], ids=["0.0.2", "master"])
def test_nano_sketch_configures_the_chosen_sensor(exported, library, tmp_path):
    """Both library versions are started the same way (three arguments: their OV7670 set-up); only
    an OV7675 build then writes registers over Wire (the window, nano33ble_ov7675.h). Before the
    sketch had its own OV7675 table, the default build wrote no register with 0.0.2."""
    out_dir, stubs = exported
    opt = ("-Os",)  # the sensor is a compile-time constant: -Os drops the other branch, as on the board
    ov7675 = _undefined(_compile_sketch("g++", out_dir / "nano33ble", stubs, tmp_path, (*library, *opt))[0])
    ov7670 = _undefined(_compile_sketch("g++", out_dir / "nano33ble", stubs, tmp_path,
                                        (*library, *opt, "-DFE_CAMERA_SENSOR=7670"))[0])
    begin = "OV767X::begin(int, int, int, int)" if library else "OV767X::begin(int, int, int)"
    for undefined in (ov7675, ov7670):
        assert begin in undefined
    assert "MbedI2C::beginTransmission(unsigned char)" in ov7675
    assert "MbedI2C::requestFrom(unsigned char, unsigned long)" in ov7675
    assert "MbedI2C" not in ov7670


def test_nano_sketch_refuses_an_unknown_sensor(exported, tmp_path):
    out_dir, stubs = exported
    with pytest.raises(AssertionError, match="FE_CAMERA_SENSOR must be"):
        _compile_sketch("g++", out_dir / "nano33ble", stubs, tmp_path, ("-DFE_CAMERA_SENSOR=OV7675",))


@pytest.mark.skipif(shutil.which("arm-none-eabi-g++") is None, reason="arm-none-eabi-g++ not installed")
def test_nano_sketch_static_ram_on_cortex_m4(exported, tmp_path):
    """Frame buffer + arena are static on the Nano: their sum must leave the core its share."""
    out_dir, stubs = exported
    flags = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-Os")
    objects = _compile_sketch("arm-none-eabi-g++", out_dir / "nano33ble", stubs, tmp_path, flags)
    out = subprocess.run(["arm-none-eabi-size", str(objects[0])], capture_output=True, text=True).stdout
    bss = int(out.splitlines()[1].split()[2])
    settings = (out_dir / "nano33ble/src/model_settings.h").read_text()
    arena = int(settings.split("#define FE_ARENA_SIZE ")[1].split("u")[0])
    assert bss >= 176 * 144 * 2 + arena
    assert bss < 256 * 1024 - 64 * 1024
