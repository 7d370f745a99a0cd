"""firmware/common builds warning-free for the host (gcc) and the Nano's Cortex-M4
(arm-none-eabi-gcc), its headers work from C++, and the host tools built from it work."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from facemask_edge.data.preprocess import device_preprocess, rgb565_to_rgb888, rgb888_to_rgb565, to_int8
from facemask_edge.export.host import ARM_CFLAGS, HOST_CFLAGS

ROOT = Path(__file__).resolve().parents[1]
COMMON = ROOT / "firmware" / "common"
C_SOURCES = ("fe_preprocess.c", "fe_result.c", "fe_protocol.c")

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None,
                               reason="arm-none-eabi-gcc not installed (apt-get install gcc-arm-none-eabi)")
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.parametrize("source", C_SOURCES)
def test_host_gcc_warning_free(source, tmp_path):
    proc = run(["gcc", *HOST_CFLAGS, "-Wshadow", "-I", str(COMMON), "-c", str(COMMON / source),
                "-o", str(tmp_path / "x.o")])
    assert proc.stderr == ""


@pytest.mark.parametrize("header,call,symbol", [
    ("fe_preprocess.h", "(int)fe_pixel_bytes(FE_PIXEL_RGB565)", "fe_pixel_bytes"),
    ("fe_result.h", "(int)fe_argmax(0, 0)", "fe_argmax"),
    ("fe_protocol.h", "(int)fe_crc32(0, 0, 0)", "fe_crc32"),
])
def test_c_headers_compile_as_cxx(header, call, symbol, tmp_path):
    """Sketches are C++: the C headers must give their functions C linkage."""
    src = tmp_path / "t.cc"
    src.write_text(f'#include "{header}"\nint main() {{ return {call}; }}\n')
    run(["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-I", str(COMMON), "-c", str(src),
         "-o", str(tmp_path / "t.o")])
    undefined = run(["nm", "-u", str(tmp_path / "t.o")]).stdout.split()
    assert symbol in undefined  # unmangled: links against the C object


@needs_arm
def test_cortex_m4_warning_free_and_sizes(tmp_path):
    """The Nano's flags: -mcpu=cortex-m4 -mthumb -mfloat-abi=hard, warnings are errors."""
    objs = []
    for source in C_SOURCES:
        obj = tmp_path / source.replace(".c", ".o")
        proc = run(["arm-none-eabi-gcc", *ARM_CFLAGS, "-I", str(COMMON), "-c", str(COMMON / source),
                    "-o", str(obj)])
        assert proc.stderr == ""
        objs.append(obj)
    out = run(["arm-none-eabi-size", *map(str, objs)]).stdout
    sizes = {Path(line.split()[-1]).stem: int(line.split()[0]) for line in out.splitlines()[1:]}
    assert set(sizes) == {"fe_preprocess", "fe_result", "fe_protocol"}
    # Code size budget of the portable part: a few KB of the Nano's 1 MB flash.
    assert 0 < sizes["fe_preprocess"] < 2048
    assert 0 < sizes["fe_result"] < 2048
    assert sum(sizes.values()) < 8192
    assert "arm" in run(["arm-none-eabi-objdump", "-f", str(objs[0])]).stdout


@needs_arm
def test_cortex_m4_links_with_newlib(tmp_path):
    """Everything common/ needs from libc and libgcc exists on the target (soft double included)."""
    main = tmp_path / "main.c"
    main.write_text(
        '#include "fe_preprocess.h"\n#include "fe_result.h"\n'
        "static unsigned char frame[176 * 144 * 2];\nstatic signed char input[96 * 96 * 3];\n"
        "static char line[128];\n"
        "int main(void) {\n  int8_t s[2] = {1, 2};\n"
        "  fe_preprocess(frame, 176, 144, FE_PIXEL_RGB565, 96, 3, input);\n"
        "  size_t i = fe_argmax(s, 2);\n"
        '  return (int)fe_format_pred(line, sizeof line, 1, i, "x", '
        "fe_confidence(s[i], 0.00390625f, -128), 5, s, 2);\n}\n")
    elf = tmp_path / "a.elf"
    run(["arm-none-eabi-gcc", *ARM_CFLAGS, "-I", str(COMMON), str(main), str(COMMON / "fe_preprocess.c"),
         str(COMMON / "fe_result.c"), "-specs=nosys.specs", "-Wl,--gc-sections", "-o", str(elf)])
    text = int(run(["arm-none-eabi-size", str(elf)]).stdout.splitlines()[1].split()[0])
    assert text < 16384


@needs_make
def test_makefile_builds_cli_and_library(tmp_path):
    build = tmp_path / "build"
    run(["make", "-s", "-f", str(ROOT / "firmware/host/Makefile.preprocess"), f"BUILD={build}", "all"])
    assert (build / "libfe_common.so").is_file()
    cli = build / "preprocess_cli"
    rng = np.random.default_rng(11)
    rgb = rng.integers(0, 256, (144, 176, 3), dtype=np.uint8)
    frame = rgb888_to_rgb565(rgb)
    proc = subprocess.run([str(cli), "rgb565", "176", "144", "96", "3"], input=frame,
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr
    want = to_int8(device_preprocess(rgb565_to_rgb888(frame, 176, 144), 96, "rgb"))
    assert proc.stdout == want.tobytes()
    # A short frame is an error with a message, not garbage.
    proc = subprocess.run([str(cli), "rgb565", "176", "144", "96", "3"], input=frame[:-2],
                          capture_output=True)
    assert proc.returncode == 1 and b"expected 50688 frame bytes" in proc.stderr
    proc = subprocess.run([str(cli), "yuv", "176", "144", "96", "3"], input=b"", capture_output=True)
    assert proc.returncode == 2 and b"usage" in proc.stderr


@needs_make
@needs_arm
def test_makefile_arm_target(tmp_path):
    out = run(["make", "-s", "-f", str(ROOT / "firmware/host/Makefile.preprocess"),
               f"BUILD={tmp_path}", "arm"]).stdout
    assert re.search(r"^\s*\d+\s+\d+\s+\d+\s+\d+\s+\w+\s+\S+fe_preprocess\.o$", out, re.M)


def test_makefile_flags_match_python():
    text = (ROOT / "firmware/host/Makefile.preprocess").read_text()
    host = re.search(r"^CFLAGS \?= (.+)$", text, re.M).group(1).split()
    assert host == list(HOST_CFLAGS)
    arm = re.search(r"^ARM_CFLAGS \?= (.+?)(?<!\\)$", text, re.M | re.S).group(1)
    assert arm.replace("\\\n", " ").split() == list(ARM_CFLAGS)
