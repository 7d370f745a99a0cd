"""The host C build (issue 12, finding 10): private folder, and only libraries it built are loaded.

The "planted" libraries are real shared objects whose constructor writes a marker file as soon
as ``dlopen`` runs it: a marker means the toolkit ran someone else's code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from facemask_edge.artifacts.files import sha256_file
from facemask_edge.export import host


def _nb():
    # Imported per test, so that the first test reproduces the planted library on the old code.
    from facemask_edge.native import build

    return build

pytestmark = pytest.mark.skipif(not shutil.which("gcc"), reason="no gcc")

EVIL_C = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
  FILE *f = fopen(MARKER, "w");
  if (f) { fputs("ran", f); fclose(f); }
}
int fe_preprocess(void) { return 0; }
"""


def plant(path: Path, marker: Path) -> None:
    src = path.with_name("evil.c")
    src.write_text(f'#define MARKER "{marker}"\n' + EVIL_C)
    subprocess.run(["gcc", "-shared", "-fPIC", str(src), "-o", str(path)], check=True)
    src.unlink()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEMASK_EDGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_default_build_never_uses_the_shared_temp_folder(tmp_path, cache, monkeypatch):
    # The old default: <tmp>/facemask-edge-host-<uid>/libfe_common_<hash>.so, loaded if present.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    marker = tmp_path / "marker"
    old = tmp_path / "tmp" / f"facemask-edge-host-{os.getuid()}"
    old.mkdir(parents=True)
    h = __import__("hashlib").sha256(" ".join(host.HOST_CFLAGS).encode())
    for s in host.HOST_SOURCES:
        h.update((host.firmware_dir() / "common" / s).read_bytes())
    plant(old / f"libfe_common_{h.hexdigest()[:12]}.so", marker)
    try:
        fw = host.load_host_firmware()
    finally:
        assert not marker.exists(), "a planted library was loaded"
    assert fw.argmax([1, 5, 2]) == 1
    assert fw.path.parent == cache / "native"
    assert (cache / "native").stat().st_mode & 0o777 == 0o700
    assert Path(str(fw.path) + ".sha256").read_text().split()[0] == sha256_file(fw.path)


@pytest.mark.parametrize("what", ["host", "protocol"])
def test_a_library_replaced_after_the_build_is_not_loaded(tmp_path, cache, what):
    nb = _nb()
    marker = tmp_path / "marker"
    out = tmp_path / "build"
    out.mkdir(mode=0o700)
    if what == "host":
        lib = host.build_shared_library(out)
    else:
        lib = nb.build_c_library(out)
    plant(lib, marker)  # same name, other bytes
    with pytest.raises(nb.NativeBuildError, match="sha256 differs"):
        nb.load_library(lib)
    assert not marker.exists()
    # Asking for the library again rebuilds it from the sources.
    if what == "host":
        fw = host.load_host_firmware(out)
        assert fw.argmax([0, 0, 9]) == 2
    else:
        from facemask_edge.device.board import CBoardProtocol, DeviceInfo

        assert nb.build_c_library(out) == lib
        CBoardProtocol(DeviceInfo("b", "1", "", 2, 2, 1, 2), lambda b: None, lambda d: (0, [0, 0], 0),
                       library=lib)
    assert not marker.exists()


def test_a_library_without_a_build_record_is_not_loaded(tmp_path):
    nb = _nb()
    out = tmp_path / "build"
    out.mkdir(mode=0o700)
    marker = tmp_path / "marker"
    plant(out / "libfe_common_0123456789ab.so", marker)
    with pytest.raises(nb.NativeBuildError, match="no build record"):
        host.HostFirmware(out / "libfe_common_0123456789ab.so")
    assert not marker.exists()


def test_a_folder_others_can_write_is_refused(tmp_path):
    nb = _nb()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(nb.NativeBuildError, match="can be written by other users"):
        host.build_shared_library(shared)
    assert not list(shared.iterdir())


@pytest.mark.skipif(os.getuid() != 0, reason="chown to another user needs root")
def test_a_folder_of_another_user_is_refused(tmp_path):
    nb = _nb()
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(nb.NativeBuildError, match="belongs to uid 65534"):
        nb.build_c_library(theirs)


def test_a_symlinked_folder_is_refused(tmp_path):
    nb = _nb()
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(nb.NativeBuildError, match="not a plain directory"):
        nb.private_dir(link)


def test_an_own_read_only_folder_is_tightened_to_0700(tmp_path):
    nb = _nb()
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    mine.chmod(0o755)
    nb.private_dir(mine)
    assert mine.stat().st_mode & 0o777 == 0o700
