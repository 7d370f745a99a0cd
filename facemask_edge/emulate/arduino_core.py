"""Compile the Nano 33 BLE sketch with the real Arduino mbed_nano core, without the Arduino tools.

Why: ``arduino-cli`` cannot install cores or libraries without internet, yet the sketch must be
shown to build with the core and libraries it names (Chirale_TensorFlowLite 2.0.0, Arduino_OV767X
0.0.2, ArduinoCore-mbed 4.6.0). This module replays the core's ``platform.txt`` recipe (the
``recipe.{c,cpp,S}.o.pattern`` and ``recipe.c.combine.pattern`` lines with the variant's flag
files) on a pinned copy of those trees: every file of the sketch, its ``src/``, the libraries and
the core is compiled with ``-Wall -Wextra`` ("all" warnings), and the ELF is linked with Mbed OS
symbols left unresolved when ``libmbed.a`` is absent (the trimmed core does not carry it), which
leaves flash and RAM within a few KB of a real build.

The libraries and the core are compiled once per (tree hash, flags) and cached like TFLM.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from facemask_edge.errors import FacemaskError, ToolMissing

__all__ = ["CoreTrees", "NanoBuild", "find_trees", "compile_nano_sketch", "FLASH_BYTES", "RAM_BYTES"]

FLASH_BYTES = 983_040  # boards.txt: nano33ble.upload.maximum_size
RAM_BYTES = 262_144  # nano33ble.upload.maximum_data_size
IDE_VERSION = "10607"
_SOURCES = (".c", ".cpp", ".cc", ".S")
_WARNING = re.compile(r"^(?P<file>[^:\s][^:]*):\d+:\d+: warning: (?P<text>.*)$")


@dataclass(frozen=True)
class CoreTrees:
    core: Path  # ArduinoCore-mbed folder (platform.txt, cores/, variants/, libraries/)
    libraries: tuple[Path, ...]  # library folders (each with src/ or sources at the top)


@dataclass
class NanoBuild:
    elf: Path
    flash_bytes: int
    ram_bytes: int
    objects: int
    project_warnings: list[str] = field(default_factory=list)
    other_warnings: int = 0
    unresolved_symbols: int = 0
    seconds: float = 0.0
    cached_libraries: bool = False

    def summary(self) -> str:
        return (f"flash {self.flash_bytes:,} / {FLASH_BYTES:,} bytes ({self.flash_bytes / FLASH_BYTES:.1%}), "
                f"RAM {self.ram_bytes:,} / {RAM_BYTES:,} bytes ({self.ram_bytes / RAM_BYTES:.1%}) static; "
                f"{self.objects} objects, {len(self.project_warnings)} warnings in the project's files, "
                f"{self.other_warnings} in the core and libraries, {self.unresolved_symbols} unresolved Mbed OS "
                f"symbols (no libmbed.a), {self.seconds:.0f} s")


def find_trees(third_party: str | Path) -> CoreTrees:
    """The pinned core and libraries under ``third_party`` (../shared/third_party)."""
    tp = Path(third_party)
    cores = sorted(tp.glob("ArduinoCore-mbed-*"))
    libs = tuple(sorted(tp.glob("Chirale_TensorFlowLite-*")) + sorted(tp.glob("Arduino_OV767X-*")))
    if not cores or len(libs) < 2:
        raise ToolMissing(f"ArduinoCore-mbed, Chirale_TensorFlowLite and Arduino_OV767X not all found in {tp}",
                          "pass the folder that holds the pinned core and libraries")
    core = cores[0]
    return CoreTrees(core, libs + ((core / "libraries" / "Wire"),))


def _lib_src(lib: Path) -> Path:
    return lib / "src" if (lib / "src").is_dir() else lib


def _flags(trees: CoreTrees, tmp: Path) -> dict[str, list[str]]:
    core = trees.core / "cores" / "arduino"
    variant = trees.core / "variants" / "ARDUINO_NANO33BLE"
    # arduino-cli fills the core version into defines.txt's placeholders.
    defines = (variant / "defines.txt").read_text().replace("-DCORE_MAJOR=", "-DCORE_MAJOR=4") \
        .replace("-DCORE_MINOR=", "-DCORE_MINOR=6").replace("-DCORE_PATCH=", "-DCORE_PATCH=0")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "defines.txt").write_text(defines)
    arch = ["-mcpu=cortex-m4", "-mfloat-abi=softfp", "-mfpu=fpv4-sp-d16"]
    ids = [f"-DARDUINO={IDE_VERSION}", "-DARDUINO_ARDUINO_NANO33BLE", "-DARDUINO_ARCH_MBED_NANO",
           "-DARDUINO_ARCH_MBED"]
    includes = ["-I" + str(core), "-I" + str(variant)] + ["-I" + str(_lib_src(lib)) for lib in trees.libraries]
    tail = ["-I" + str(core / "api" / "deprecated"), "-I" + str(core / "api" / "deprecated-avr-comp"),
            "-iprefix" + str(core) + "/", "@" + str(variant / "includes.txt")]
    warn = ["-Wall", "-Wextra"]  # compiler.warning_flags.all
    c = ["-c", *warn, "-g3", "-nostdlib", "@" + str(tmp / "defines.txt"), "@" + str(variant / "cflags.txt"),
         "-DARDUINO_ARCH_NRF52840", "-MMD", *arch, *ids, *includes, *tail]
    cpp = ["-c", *warn, "-g3", "-nostdlib", "@" + str(tmp / "defines.txt"), "@" + str(variant / "cxxflags.txt"),
           "-DARDUINO_ARCH_NRF52840", "-MMD", *arch, *ids, *includes, *tail]
    s = ["-c", "-x", "assembler-with-cpp", "-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", *ids, *includes, *tail]
    return {"c": c, "cpp": cpp, "S": s}


def _compile(src: Path, obj: Path, flags: dict[str, list[str]]) -> tuple[Path, str]:
    kind = "c" if src.suffix == ".c" else "S" if src.suffix == ".S" else "cpp"
    cmd = ["arm-none-eabi-gcc" if kind != "cpp" else "arm-none-eabi-g++", *flags[kind], str(src), "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr[:300])
        raise FacemaskError(f"compiling {src.name} with the core's recipe failed: {first}",
                            "see the compiler output: " + " ".join(cmd[:2]))
    return obj, proc.stderr


def _warnings(stderr: str) -> list[tuple[str, str]]:
    out = []
    for line in stderr.splitlines():
        m = _WARNING.match(line)
        if m:
            out.append((m.group("file"), line))
    return out


def _tree_sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in _SOURCES and p.is_file()
                  and "examples" not in p.relative_to(root).parts and "extras" not in p.relative_to(root).parts)


def _tree_key(paths: list[Path], flags: dict[str, list[str]]) -> str:
    h = hashlib.sha256(json.dumps(flags, sort_keys=True).encode())
    h.update(subprocess.run(["arm-none-eabi-gcc", "--version"], capture_output=True, text=True).stdout.encode())
    for root in paths:
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix in _SOURCES + (".h", ".hpp", ".txt", ".inc"):
                h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:20]


def compile_nano_sketch(sketch: str | Path, third_party: str | Path, out: str | Path, *, cache: str | Path | None = None,
                        jobs: int | None = None, log=None) -> NanoBuild:
    """Compile and link an exported Nano sketch folder (``nano33ble.ino`` + ``src/``).

    Args:
        sketch: the sketch folder (``facemask-edge export RUN --board nano33ble --out DIR`` -> ``DIR/nano33ble``).
        third_party: folder with the pinned core and libraries.
        out: build folder.
        cache: where the compiled core and libraries are kept (default: the emulator build cache).
        jobs: parallel compiles (default: CPU count).
    """
    from facemask_edge.emulate.build import _cache_root

    if shutil.which("arm-none-eabi-g++") is None:
        raise ToolMissing("arm-none-eabi-g++ not found", "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi")
    t0 = time.monotonic()
    sketch, out = Path(sketch), Path(out)
    trees = find_trees(third_party)
    flags = _flags(trees, out / "flags")
    jobs = jobs or int(os.environ.get("FACEMASK_EDGE_JOBS") or os.cpu_count() or 1)

    # The libraries and the core: cached by content and flags.
    lib_roots = [_lib_src(lib) for lib in trees.libraries] + [trees.core / "cores" / "arduino"]
    # The key holds what the flags say, not where this build or the third-party tree happen to
    # be: a per-build flags folder or another checkout must find the same cached core.
    here = {str(out / "flags"): "<flags>", str(Path(third_party).resolve()): "<third_party>",
            str(Path(third_party)): "<third_party>"}

    def portable_arg(a: str) -> str:
        for path, name in here.items():
            a = a.replace(path, name)
        return a

    portable = {k: [portable_arg(a) for a in v] for k, v in flags.items()}
    portable["<flags> files"] = sorted(f"{f.name}:{portable_arg(f.read_text())}"
                                       for f in (out / "flags").glob("*") if f.is_file())
    key = _tree_key(lib_roots + [trees.core / "variants" / "ARDUINO_NANO33BLE"], portable)
    lib_dir = Path(cache) if cache else _cache_root() / f"nano-core-{key}"
    meta = lib_dir / "build.json"
    cached = meta.is_file()
    if not cached:
        sources = [(root, p) for root in lib_roots for p in _tree_sources(root)]
        if log:
            log(f"compiling the core and libraries with the platform.txt recipe ({len(sources)} files, once; "
                f"cached in {lib_dir})")
        (lib_dir / "obj").mkdir(parents=True, exist_ok=True)

        def one(item):
            root, p = item
            name = f"{root.parent.name}__{p.relative_to(root).as_posix().replace('/', '__')}.o"
            return _compile(p, lib_dir / "obj" / name, flags)

        with ThreadPoolExecutor(jobs) as pool:
            results = list(pool.map(one, sources))
        warn = sum(len(_warnings(err)) for _, err in results)
        meta.write_text(json.dumps({"objects": [str(o) for o, _ in results], "warnings": warn,
                                    "seconds": round(time.monotonic() - t0, 1)}, indent=1))
    m = json.loads(meta.read_text())
    lib_objects = [Path(o) for o in m["objects"]]

    # The project: the sketch (.ino as arduino-cli turns it into C++) and its src/.
    build = out / "sketch"
    build.mkdir(parents=True, exist_ok=True)
    ino = next(sketch.glob("*.ino"))
    unit = build / (ino.name + ".cpp")
    unit.write_text("#include <Arduino.h>\n" f'#line 1 "{ino}"\n' + ino.read_text())
    project_flags = {k: v + ["-I" + str(sketch), "-I" + str(sketch / "src")] for k, v in flags.items()}
    project = [unit] + sorted(p for p in (sketch / "src").iterdir() if p.suffix in _SOURCES) \
        + sorted(p for p in sketch.iterdir() if p.suffix in _SOURCES)
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(lambda p: _compile(p, build / (p.name + ".o"), project_flags), project))
    project_warnings = []
    roots = (str(sketch.resolve()), str(build.resolve()))
    for _, err in results:
        for file, line in _warnings(err):
            if str(Path(file).resolve()).startswith(roots):
                project_warnings.append(line)
    objects = [o for o, _ in results] + lib_objects

    variant = trees.core / "variants" / "ARDUINO_NANO33BLE"
    elf = out / "nano33ble.ino.elf"
    libs = [str(p) for p in sorted((variant / "libs").glob("*.a"))]
    cmd = ["arm-none-eabi-g++", "-L" + str(out), "-Wl,--gc-sections", "-Wall", "-Wextra", "-Wl,--as-needed",
           "@" + str(variant / "ldflags.txt"), "-T" + str(variant / "linker_script.ld"),
           "-Wl,-Map," + str(out / "nano33ble.ino.map"), "--specs=nosys.specs",
           # No libmbed.a in the pinned copy: keep going past Mbed OS symbols (README of third_party).
           "-Wl,--warn-unresolved-symbols", "-Wl,-e,main", "-Wl,--undefined=main",
           "-o", str(elf), *map(str, objects), *libs,
           "-Wl,--start-group", "-lstdc++", "-lsupc++", "-lm", "-lc", "-lgcc", "-lnosys", "-Wl,--end-group"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
    if proc.returncode != 0 or not elf.is_file():
        first = next((ln for ln in proc.stderr.splitlines() if "error" in ln and "undefined reference" not in ln),
                     proc.stderr[-300:])
        raise FacemaskError(f"linking the Nano sketch failed: {first}", "see " + str(out / "nano33ble.ino.map"))
    unresolved = {m.group(1) for m in re.finditer(r"undefined reference to `([^']+)'", proc.stderr)}
    size = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    # platform.txt: recipe.size.regex (flash) and recipe.size.regex.data (RAM), as arduino-cli sums them.
    flash = sum(int(m.group(1)) for m in re.finditer(r"^(?:\.data|\.text|\.rodata)\S*?\s+([0-9]+)", size, re.M))
    ram = sum(int(m.group(1)) for m in re.finditer(r"^(?:\.data|\.bss)\s+([0-9]+)", size, re.M))
    return NanoBuild(elf, flash, ram, len(objects), project_warnings, int(m["warnings"]), len(unresolved),
                     time.monotonic() - t0, cached)
