"""Build the board firmware for QEMU's ``mps2-an386`` (a Cortex-M4F) with ``arm-none-eabi-gcc``.

Why this exists: the firmware that goes on the Nano is ``firmware/common`` + the exported
``src/`` + TensorFlow Lite Micro with CMSIS-NN kernels, compiled at ``-Os`` for a Cortex-M4.
Building exactly that for an emulated Cortex-M4 lets every user without a board (and CI) run it,
and count its instructions. Only the board file differs (``firmware/boards/mps2_an386``: UART,
timer, start-up code, linker script; no camera).

The TFLM library is the slow part (about 200 objects): it is built once per (source tree hash,
compiler, flags) into ``FACEMASK_EDGE_CACHE/emulate/`` and reused. The firmware image itself
(the application, the model) is a few files and is rebuilt per run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from facemask_edge.errors import FacemaskError, ToolMissing

__all__ = [
    "CPU_FLAGS",
    "COMMON_FLAGS",
    "TflmLibrary",
    "FirmwareImage",
    "find_tflm",
    "toolchain",
    "build_tflm",
    "build_firmware",
]

GCC = "arm-none-eabi-gcc"
GXX = "arm-none-eabi-g++"

# The Arduino mbed_nano core's code generation flags (variants/ARDUINO_NANO33BLE/cxxflags.txt):
# a Cortex-M4 with the single-precision FPU in the softfp calling convention, -Os. ARDUINO is
# defined because TFLM's headers take Arduino-specific branches (CONV_2D_INT8 kernels, no virtual
# delete), and the sketch is built with them.
CPU_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=softfp", "-mfpu=fpv4-sp-d16")
COMMON_FLAGS = ("-Os", "-fdata-sections", "-ffunction-sections", "-fmessage-length=0", "-fno-exceptions",
                "-fomit-frame-pointer", "-funsigned-char", "-DARDUINO=10607", "-DARM_MATH_CM4",
                "-D__FPU_PRESENT=1")
C_FLAGS = ("-std=gnu11",)
CXX_FLAGS = ("-std=gnu++14", "-fno-rtti", "-fno-threadsafe-statics", "-fno-use-cxa-atexit")

# Arduino glue that needs the Arduino core, and parts of the library no image model uses.
# DebugLog and the profiler's clock (GetCurrentTimeTicks) come from the board file.
_TFLM_SKIP = ("tensorflow/lite/micro/system_setup.cpp", "tensorflow/lite/micro/micro_time.cpp",
              "tensorflow/lite/micro/debug_log.cpp", "peripherals/", "third_party/kissfft/",
              "tensorflow/lite/experimental/microfrontend/", "tensorflow/lite/micro/test_helpers.cpp",
              "tensorflow/lite/micro/test_helper_custom_ops.cpp", "tensorflow/lite/micro/mock_micro_graph.cpp")
_SOURCE_SUFFIXES = (".c", ".cc", ".cpp")
_HEADER_SUFFIXES = (".h", ".hpp", ".inc")
TFLM_LIBRARY_NAME = "Chirale_TensorFlowLite"


@dataclass(frozen=True)
class TflmLibrary:
    """A built TFLM static library."""

    src: Path  # the library's src/ (include root)
    archive: Path  # libtflm.a
    key: str  # hash of sources + compiler + flags
    objects: int
    build_seconds: float  # how long the first build took
    cached: bool  # True when this call reused an earlier build


@dataclass(frozen=True)
class FirmwareImage:
    """A linked firmware ELF for ``qemu-system-arm -M mps2-an386``."""

    elf: Path
    text_bytes: int
    data_bytes: int
    bss_bytes: int
    build_seconds: float
    tflm: TflmLibrary


def toolchain() -> tuple[str, str]:
    """The ARM compilers, or ToolMissing with the Debian package names."""
    gcc, gxx = shutil.which(GCC), shutil.which(GXX)
    if not gcc or not gxx:
        raise ToolMissing(f"{GCC} not found",
                          "install gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib")
    return gcc, gxx


def _arduino_libraries() -> list[Path]:
    """Where arduino-cli and the IDE put libraries (scripts/setup_arduino.sh installs there)."""
    home = Path.home()
    out = []
    env = os.environ.get("ARDUINO_DIRECTORIES_USER")
    if env:
        out.append(Path(env) / "libraries")
    out += [home / "Arduino" / "libraries", home / "Documents" / "Arduino" / "libraries"]
    return out


def _shared_third_party() -> Path:
    """``../shared/third_party`` next to the source checkout (tests and CI)."""
    return Path(__file__).resolve().parents[3] / "shared" / "third_party"


def find_tflm(tflm: str | Path | None = None) -> Path:
    """The ``src/`` folder of a TFLM tree with CMSIS-NN kernels.

    Looks at ``tflm`` (a library folder or its ``src/``), then ``$FACEMASK_EDGE_TFLM``, the
    user's Arduino libraries (``Chirale_TensorFlowLite``), then ``../shared/third_party``.

    Raises:
        ToolMissing: none found.
    """
    candidates: list[Path] = []
    if tflm is not None:
        candidates.append(Path(tflm))
    else:
        env = os.environ.get("FACEMASK_EDGE_TFLM")
        if env:
            candidates.append(Path(env))
        candidates += [d / TFLM_LIBRARY_NAME for d in _arduino_libraries()]
        third = _shared_third_party()
        if third.is_dir():
            candidates += sorted(third.glob(f"{TFLM_LIBRARY_NAME}-*"))
    for c in candidates:
        for src in (c / "src", c):
            if (src / "tensorflow" / "lite" / "micro" / "micro_interpreter.h").is_file():
                if not (src / "tensorflow" / "lite" / "micro" / "kernels" / "cmsis_nn").is_dir():
                    raise FacemaskError(f"{src} has no CMSIS-NN kernels (tensorflow/lite/micro/kernels/cmsis_nn)",
                                        "use the Chirale_TensorFlowLite library (scripts/setup_arduino.sh)")
                return src
    if tflm is not None:
        raise FacemaskError(f"{tflm} is not a TensorFlow Lite Micro tree (no tensorflow/lite/micro/micro_interpreter.h)",
                            "point --tflm at the Chirale_TensorFlowLite library folder")
    raise ToolMissing("no TensorFlow Lite Micro sources found (Chirale_TensorFlowLite in the Arduino libraries folder)",
                      "run scripts/setup_arduino.sh, or pass --tflm DIR / set FACEMASK_EDGE_TFLM")


def _tflm_sources(src: Path) -> list[Path]:
    out = []
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src).as_posix()
        if p.suffix in _SOURCE_SUFFIXES and p.is_file() and not any(rel.startswith(s) for s in _TFLM_SKIP):
            out.append(p)
    return out


def _compiler_version(gcc: str) -> str:
    return subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def _tflm_key(src: Path, gcc: str, flags: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    h.update(_compiler_version(gcc).encode())
    h.update("\0".join(flags).encode())
    for p in sorted(src.rglob("*")):
        if p.is_file() and (p.suffix in _SOURCE_SUFFIXES or p.suffix in _HEADER_SUFFIXES):
            h.update(p.relative_to(src).as_posix().encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()[:20]


def _cache_root() -> Path:
    """``$FACEMASK_EDGE_BUILD_CACHE`` or the user cache's ``emulate/``: builds are keyed by the
    hash of their sources and flags, so any number of checkouts and test sessions can share them."""
    from facemask_edge.paths import cache_dir

    env = os.environ.get("FACEMASK_EDGE_BUILD_CACHE")
    return Path(env) if env else cache_dir() / "emulate"


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if "error" in ln] or proc.stderr.splitlines() or ["?"]
        raise FacemaskError(f"{what} failed: {lines[0][:300]}", "see the compiler output: " + " ".join(cmd[:3]) + " ...")


def _jobs() -> int:
    return max(1, int(os.environ.get("FACEMASK_EDGE_JOBS") or (os.cpu_count() or 1)))


def build_tflm(tflm: str | Path | None = None, *, log=None) -> TflmLibrary:
    """Build (or reuse) ``libtflm.a`` for the emulated Cortex-M4.

    Args:
        tflm: TFLM tree (see :func:`find_tflm`).
        log: called with one line of progress (optional).

    Returns:
        The library; ``build_seconds`` is the first build's time even when reused.
    """
    gcc, gxx = toolchain()
    src = find_tflm(tflm)
    flags = CPU_FLAGS + COMMON_FLAGS
    key = _tflm_key(src, gcc, flags + C_FLAGS + CXX_FLAGS)
    out = _cache_root() / f"tflm-{key}"
    meta = out / "build.json"
    archive = out / "libtflm.a"
    if archive.is_file() and meta.is_file():
        m = json.loads(meta.read_text())
        return TflmLibrary(src, archive, key, m["objects"], m["seconds"], True)
    sources = _tflm_sources(src)
    if log:
        log(f"building TensorFlow Lite Micro from {src} ({len(sources)} files, {_jobs()} jobs; once, cached under {out})")
    objdir = out / "obj"
    objdir.mkdir(parents=True, exist_ok=True)
    inc = ["-I", str(src), "-I", str(src / "third_party" / "cmsis_nn"),
           "-I", str(src / "third_party" / "cmsis_nn" / "Include"),
           "-I", str(src / "third_party" / "flatbuffers" / "include"),
           "-I", str(src / "third_party" / "gemmlowp"), "-I", str(src / "third_party" / "ruy")]
    start = time.monotonic()

    def compile_one(p: Path) -> Path:
        rel = p.relative_to(src).as_posix()
        obj = objdir / (rel.replace("/", "__") + ".o")
        if p.suffix == ".c":
            cmd = [gcc, *flags, *C_FLAGS, "-w", *inc, "-c", str(p), "-o", str(obj)]
        else:
            cmd = [gxx, *flags, *CXX_FLAGS, "-w", *inc, "-c", str(p), "-o", str(obj)]
        _run(cmd, f"compiling {rel}")
        return obj

    with ThreadPoolExecutor(_jobs()) as pool:
        objects = list(pool.map(compile_one, sources))
    tmp = out / f"libtflm.{os.getpid()}.a"
    _run(["arm-none-eabi-ar", "rcs", str(tmp), *map(str, objects)], "archiving libtflm.a")
    tmp.replace(archive)
    seconds = time.monotonic() - start
    meta.write_text(json.dumps({"objects": len(objects), "seconds": round(seconds, 1), "src": str(src),
                                "flags": list(flags + C_FLAGS + CXX_FLAGS), "compiler": _compiler_version(gcc)},
                               indent=1))
    shutil.rmtree(objdir, ignore_errors=True)
    return TflmLibrary(src, archive, key, len(objects), seconds, False)


def _size(elf: Path) -> tuple[int, int, int]:
    proc = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True, check=True)
    text = data = bss = 0
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            continue
        name, size = parts[0], int(parts[1])
        if name in (".text", ".rodata", ".ARM.exidx", ".ARM.extab"):
            text += size
        elif name == ".data":
            data += size
        elif name in (".bss", ".heap", ".stack"):
            bss += size
    return text, data, bss


def build_firmware(sketch_src: Path, out_dir: Path, *, tflm: str | Path | None = None, profile: bool = True,
                   log=None) -> FirmwareImage:
    """Link the emulator firmware for one exported model.

    Args:
        sketch_src: an exported sketch's ``src/`` (model_data.cc, model_settings.h, model_ops.h and
            the copies of ``firmware/common``).
        out_dir: where the objects and ``firmware.elf`` go.
        tflm: TFLM tree (see :func:`find_tflm`).
        profile: print a per-layer instruction profile of one inference at boot (on UART1).
        log: progress callback.
    """
    from facemask_edge.export.host import firmware_dir

    gcc, gxx = toolchain()
    lib = build_tflm(tflm, log=log)
    board = firmware_dir() / "boards" / "mps2_an386"
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    inc = ["-I", str(sketch_src), "-I", str(board)]
    # TFLM's headers are not -Wextra clean: they come in as system headers.
    sys_inc = ["-isystem", str(lib.src), "-isystem", str(lib.src / "third_party" / "flatbuffers" / "include"),
               "-isystem", str(lib.src / "third_party" / "gemmlowp")]
    # The project's own files are held to the core's warning level, as errors.
    warn = ["-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers", "-Wno-unused-parameter"]
    defines = [f"-DFE_EMU_PROFILE={1 if profile else 0}"]
    objects = []
    sources = sorted(p for p in sketch_src.iterdir() if p.suffix in _SOURCE_SUFFIXES)
    sources += sorted(p for p in board.iterdir() if p.suffix in _SOURCE_SUFFIXES + (".S",))
    for p in sources:
        obj = out_dir / (p.parent.name + "__" + p.name + ".o")
        if p.suffix in (".c", ".S"):
            cmd = [gcc, *CPU_FLAGS, *COMMON_FLAGS, *C_FLAGS, *warn, *defines, *inc, "-c", str(p), "-o", str(obj)]
        else:
            cmd = [gxx, *CPU_FLAGS, *COMMON_FLAGS, *CXX_FLAGS, *warn, *defines, *inc, *sys_inc,
                   "-c", str(p), "-o", str(obj)]
        _run(cmd, f"compiling {p.name}")
        objects.append(obj)
    elf = out_dir / "firmware.elf"
    cmd = [gxx, *CPU_FLAGS, "-Os", "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections",
           "-T", str(board / "mps2_an386.ld"), "-Wl,-Map," + str(out_dir / "firmware.map"),
           *map(str, objects), str(lib.archive), "-lm", "-o", str(elf)]
    _run(cmd, "linking firmware.elf")
    text, data, bss = _size(elf)
    return FirmwareImage(elf, text, data, bss, time.monotonic() - start, lib)
