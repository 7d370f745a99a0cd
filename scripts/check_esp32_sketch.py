#!/usr/bin/env python3
"""Host-compiler syntax check of the ESP32-CAM sketch against the real SDK headers.

    python scripts/check_esp32_sketch.py [RUN_DIR] [--headers DIR]
    python scripts/check_esp32_sketch.py --prepare DIR --esp-tflite-micro-git G --esp32-camera-git G \\
        --idf-extra-components-git G --esp-idf-git G

Why: no machine here (nor CI) has the esp32 Arduino core or the Xtensa toolchain, so the
ESP32-CAM sketch cannot be built for real. What can be shown is that it and the exported ``src/``
are valid C/C++ against the headers the core compiles them with: a wrong TFLM method, a renamed
esp32-camera field or a wrong ESP-IDF signature is a compile error here too. The check exports
RUN_DIR (or a tiny generated run) for ``esp32cam`` and runs ``g++ -std=gnu++17 -fsyntax-only
-Wall -Wextra`` (``gcc -std=gnu17`` for the C files) on:

- ``esp32cam.ino`` in its preprocessor variants (RGB565 capture; JPEG capture with the flash LED
  and the arena forced to PSRAM), so that every ``#if`` branch is compiled;
- every ``src/*.cc`` and ``src/*.c`` (``firmware/common`` + the model, settings and resolver);
- one generated unit that calls every ``MicroMutableOpResolver`` method of the exporter's table
  (``RESOLVER_METHODS``), so that the whole table, not only the ops of one model, is checked
  against esp-tflite-micro.

The headers: esp-tflite-micro (TFLM with esp-nn), esp32-camera, esp_jpeg (from
idf-extra-components) and ESP-IDF, all real, in one folder that ``--prepare`` fills from git
clones (``git archive`` of the include paths below, no build). What cannot exist on the host is
stood in for by ``firmware/host/esp32_shim`` (the build-generated ``sdkconfig.h``, FreeRTOS's port
layer, and the Arduino-ESP32 API; see its README). The SDK folders are ``-isystem``: their own
warnings are not ours; every warning in a project file fails the check (exit 1).

Not proven: that it links, that it fits, code generation for Xtensa (the host is 64-bit x86:
``long``/pointer sizes differ, and ESP-IDF >= 5 makes ``uint32_t`` an ``unsigned long``), the
Arduino layer beyond the stand-in declarations.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The environment variable that names the prepared headers folder.
HEADERS_ENV = "FACEMASK_EDGE_ESP32_HEADERS"
SHIM = ROOT / "firmware" / "host" / "esp32_shim"

#: What ``--prepare`` takes from each repository: folder name -> repository paths.
SOURCES: dict[str, tuple[str, ...]] = {
    "esp-tflite-micro": ("tensorflow", "third_party/flatbuffers/include", "third_party/gemmlowp",
                         "third_party/ruy", "third_party/kissfft", "signal"),
    "esp32-camera": ("driver/include", "conversions/include"),
    "idf-extra-components": ("esp_jpeg/include",),
    # ESP-IDF: only the components whose headers the sketch reaches (esp_camera.h -> driver/ledc.h
    # -> hal/soc types; esp_heap_caps.h; esp_timer.h), with the esp32 target's folders.
    "esp-idf": tuple(f"components/{c}" for c in (
        "esp_common/include", "esp_timer/include", "heap/include", "esp_driver_ledc/include",
        "esp_hal_ledc/include", "esp_hal_ledc/esp32/include", "esp_hw_support/include",
        "esp_hw_support/etm/include", "hal/include", "hal/esp32/include", "soc/include",
        "soc/esp32/include", "soc/esp32/register", "log/include", "esp_rom/include",
        "esp_rom/esp32/include", "esp_system/include", "esp_hal_gpio/include",
        "esp_hal_gpio/esp32/include", "esp_hal_timg/include", "esp_hal_timg/esp32/include")),
}

#: Include folders, relative to the headers folder, in the order the compiler searches them.
INCLUDES: tuple[str, ...] = (
    "esp-tflite-micro", "esp-tflite-micro/third_party/flatbuffers/include",
    "esp-tflite-micro/third_party/gemmlowp", "esp-tflite-micro/third_party/ruy",
    "esp-tflite-micro/third_party/kissfft",
    "esp32-camera/driver/include", "esp32-camera/conversions/include",
    "idf-extra-components/esp_jpeg/include",
)

#: Defines of an esp32 Arduino core 3.x build of the ESP32-CAM board (platform.txt/boards.txt,
#: plus esp-tflite-micro's public TF_LITE_STATIC_MEMORY), and the Xtensa predefines.
DEFINES: tuple[str, ...] = (
    "ESP32", "ESP_PLATFORM", "ARDUINO=10607", "ARDUINO_ESP32_DEV", "ARDUINO_ARCH_ESP32",
    'ARDUINO_BOARD="ESP32_CAM"', 'ARDUINO_VARIANT="esp32"', "ARDUINO_USB_CDC_ON_BOOT=0",
    "CORE_DEBUG_LEVEL=0", "TF_LITE_STATIC_MEMORY", "__XTENSA__=1", "__xtensa__=1",
)
WARN_FLAGS = ("-Wall", "-Wextra")

#: Preprocessor variants of the .ino: name -> extra defines.
INO_VARIANTS: dict[str, tuple[str, ...]] = {
    "rgb565": (),
    "jpeg+flash-led+psram-arena": ("FE_CAMERA_JPEG=1", "FE_FLASH_LED_DUTY=6", "FE_ARENA_IN_PSRAM=1"),
}

_DIAG = re.compile(r"^(?P<file>[^:\s][^:]*):\d+:\d+: (?P<kind>warning|error|fatal error): ")


@dataclass
class CheckResult:
    """What the check compiled and what the compiler said about the project's files (the SDK's
    folders are ``-isystem``, so the compiler keeps their own warnings to itself)."""

    units: list[str] = field(default_factory=list)
    project_warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors and not self.project_warnings

    def summary(self) -> str:
        return (f"esp32cam syntax check: {len(self.units)} translation units, "
                f"{len(self.errors)} errors, {len(self.project_warnings)} warnings from project files, "
                f"{self.seconds:.1f} s")


def headers_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The prepared headers folder (``--headers``, else ``$FACEMASK_EDGE_ESP32_HEADERS``), or None."""
    value = explicit or os.environ.get(HEADERS_ENV)
    return Path(value) if value else None


def missing_headers(headers: Path | None) -> str | None:
    """Why ``headers`` cannot be used (None when it can): for skips and error messages."""
    if headers is None:
        return f"no ESP32 headers: set {HEADERS_ENV} or --headers (see firmware/README.md)"
    for name in SOURCES:
        if not (headers / name).is_dir():
            return f"{headers / name} is missing: run this script with --prepare (see firmware/README.md)"
    return None


def prepare_headers(out: Path, gits: dict[str, Path]) -> None:
    """Fill ``out`` with the SDK paths of :data:`SOURCES` from git repositories (``git archive``).

    Args:
        out: the headers folder to write.
        gits: folder name of :data:`SOURCES` -> a git directory (a clone or a bare mirror).
    """
    out.mkdir(parents=True, exist_ok=True)
    notes = []
    for name, paths in SOURCES.items():
        git = gits[name]
        dest = out / name
        dest.mkdir(exist_ok=True)
        commit = subprocess.run(["git", f"--git-dir={git}", "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        for p in paths:
            # One archive per path: a snapshot may lack the blobs of files outside these paths,
            # and git archive of several paths at once stops at the first missing one.
            arc = subprocess.run(["git", f"--git-dir={git}", "archive", "HEAD", p], capture_output=True)
            if arc.returncode != 0:
                raise SystemExit(f"error: git archive {p} from {git} failed: {arc.stderr.decode()[:200]}")
            subprocess.run(["tar", "-x", "-C", str(dest)], input=arc.stdout, check=True)
        notes.append(f"{name}\t{commit}\n")
    (out / "SOURCES.txt").write_text("".join(notes))


def _flags(headers: Path, sketch: Path) -> list[str]:
    idf = sorted(p for p in (headers / "esp-idf" / "components").glob("**/include") if p.is_dir())
    idf += [p for p in (headers / "esp-idf" / "components" / "soc" / "esp32").glob("register") if p.is_dir()]
    flags = [*WARN_FLAGS, "-fsyntax-only", *(f"-D{d}" for d in DEFINES),
             f"-I{SHIM}", f"-I{sketch}", f"-I{sketch / 'src'}"]
    flags += [f"-isystem{headers / i}" for i in INCLUDES]
    flags += [f"-isystem{p}" for p in idf]
    return flags


def _resolver_unit(path: Path) -> Path:
    from facemask_edge.artifacts.tflite import RESOLVER_METHODS

    methods = sorted(set(RESOLVER_METHODS.values()))
    body = "".join(f"  if (r.{m}() != kTfLiteOk) return 1;\n" for m in methods)
    path.write_text(
        "// Generated by scripts/check_esp32_sketch.py: every resolver method the exporter can write.\n"
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n\n'
        f"int fe_check_all_resolver_methods(tflite::MicroMutableOpResolver<{len(methods)}> &r) {{\n"
        + body + "  return 0;\n}\n")
    return path


def _compile(cmd: list[str], project: tuple[Path, ...], result: CheckResult) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stderr.splitlines():
        m = _DIAG.match(line)
        if not m:
            continue
        mine = any(Path(m.group("file")).resolve().is_relative_to(p) for p in project)
        # A header seen by several units reports the same line each time: keep it once.
        if m.group("kind") != "warning":
            if line not in result.errors:
                result.errors.append(line)
        elif mine and line not in result.project_warnings:
            result.project_warnings.append(line)
    if proc.returncode != 0 and not result.errors:
        result.errors.append(f"{' '.join(cmd[:2])} failed: {proc.stderr.strip()[:300]}")


def check_sketch(sketch: Path, headers: Path, work: Path, *,
                 variants: dict[str, tuple[str, ...]] | None = None, sources: bool = True) -> CheckResult:
    """Syntax-check an exported esp32cam sketch folder against the prepared headers.

    Args:
        sketch: ``RUN/export/esp32cam`` (the .ino, the board header, ``src/``).
        headers: the folder :func:`prepare_headers` wrote.
        work: a scratch folder (the .ino's translation unit and the resolver unit go there).
        variants: the .ino's preprocessor variants (default :data:`INO_VARIANTS`).
        sources: also compile ``src/`` and the resolver-table unit (tests turn it off to be quick).

    Returns:
        The units compiled and the diagnostics, split into the project's and the SDK's.
    """
    start = time.monotonic()
    result = CheckResult()
    sketch, work = sketch.resolve(), work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    flags = _flags(headers, sketch)
    project = (sketch, work, SHIM)
    cxx = ["g++", "-std=gnu++17", "-x", "c++", *flags]
    # As the Arduino builder does: Arduino.h first, then the .ino under a #line that keeps the
    # diagnostics pointing at the sketch's own file.
    ino = sketch / "esp32cam.ino"
    unit = work / "esp32cam.ino.cpp"
    unit.write_text(f'#include <Arduino.h>\n#line 1 "{ino}"\n' + ino.read_text())
    for name, extra in (INO_VARIANTS if variants is None else variants).items():
        _compile([*cxx, *(f"-D{d}" for d in extra), str(unit)], project, result)
        result.units.append(f"esp32cam.ino [{name}]")
    for src in sorted((sketch / "src").iterdir()) if sources else ():
        if src.suffix in (".cc", ".cpp"):
            _compile([*cxx, str(src)], project, result)
        elif src.suffix == ".c":
            _compile(["gcc", "-std=gnu17", *flags, str(src)], project, result)
        else:
            continue
        result.units.append(f"src/{src.name}")
    if sources:
        _compile([*cxx, str(_resolver_unit(work / "all_resolver_methods.cc"))], project, result)
        result.units.append("all_resolver_methods.cc (exporter's RESOLVER_METHODS)")
    result.seconds = time.monotonic() - start
    return result


def _tiny_run(root: Path) -> Path:
    from facemask_edge.device.testing import make_tiny_run

    fixture = ROOT / "tests" / "fixtures" / "sketch_rgb32.tflite"
    if fixture.is_file():
        return make_tiny_run(root / "run", size=32, per_class=1, model=fixture.read_bytes())
    return make_tiny_run(root / "run", per_class=1)


def main(argv=None) -> int:
    from facemask_edge.errors import FacemaskError
    from facemask_edge.export import export_run

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, nargs="?", help="a converted run (default: a tiny generated one)")
    ap.add_argument("--headers", type=Path, help=f"prepared headers folder (default: ${HEADERS_ENV})")
    ap.add_argument("--prepare", type=Path, metavar="DIR", help="write the headers folder from git clones and stop")
    for name in SOURCES:
        ap.add_argument(f"--{name}-git", dest=name,
                        type=Path, metavar="GIT_DIR", help=f"git directory of espressif/{name} (with --prepare)")
    args = ap.parse_args(argv)
    if args.prepare:
        gits = {n: getattr(args, n) for n in SOURCES}
        absent = [n for n, g in gits.items() if g is None]
        if absent:
            print(f"error: --prepare needs the git directories of {', '.join(absent)}", file=sys.stderr)
            return 2
        prepare_headers(args.prepare, gits)
        print(f"headers written to {args.prepare}; export {HEADERS_ENV}={args.prepare}")
        return 0
    headers = headers_dir(args.headers)
    why = missing_headers(headers)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = args.run_dir or _tiny_run(Path(tmp))
            sketch = export_run(run, "esp32cam", out=Path(tmp) / "export").path
            r = check_sketch(sketch, headers, Path(tmp) / "check")
            for line in r.errors + r.project_warnings:
                print(line)
            print(r.summary())
            return 0 if r.ok else 1
    except FacemaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
