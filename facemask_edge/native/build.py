"""The host C build: firmware C compiled for this computer, kept where only its user can write.

The simulator, the tests and the preprocessing parity check run the firmware's own C code through
ctypes, and the protocol fuzzer runs it as a program. A shared library is code: one planted
where the toolkit looks runs with the user's rights the moment it is loaded (its constructors
run inside ``dlopen``). So, in one place for every host C build:

- builds go to a private folder (``cache_dir()/native``, mode 0700, owned by the user); a folder
  that another user owns or may write to is refused, never used;
- the output's name carries a hash of the sources, flags and compiler, so a change rebuilds;
- after a successful build a sidecar ``<name>.sha256`` records the sha256 of the output; a library
  is loaded (or a program run) only when its bytes still match that record, else it is rebuilt.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Sequence

from facemask_edge.artifacts.files import sha256_file
from facemask_edge.errors import FacemaskError, ToolMissing

__all__ = ["HOST_CFLAGS", "SANITIZE_CFLAGS", "NativeBuildError", "cache_root", "private_dir",
           "compiler", "build", "verify", "load_library", "build_c_library"]

# Warnings are errors: the same sources must stay clean for gcc, arm-none-eabi-gcc and xtensa gcc.
HOST_CFLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-fPIC")
# Fuzzing: AddressSanitizer + UBSan, stop at the first report (a finding is an exit status).
SANITIZE_CFLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-g",
                   "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                   "-fno-omit-frame-pointer")

_HINT = "use a folder only you can write: FACEMASK_EDGE_CACHE=DIR, or remove the folder"


class NativeBuildError(FacemaskError):
    """A build folder or a built file cannot be trusted."""


def cache_root() -> Path:
    """``cache_dir()/native``: the default home of every host C build."""
    from facemask_edge.paths import cache_dir

    return cache_dir() / "native"


def private_dir(path: str | Path) -> Path:
    """Create ``path`` (mode 0700) or check that it is private: a real directory, owned by this
    user, that no other user can write to. Returns the path.

    An existing folder of this user that others can only read (the 0755 of earlier versions) is
    tightened to 0700; nobody else could have written into it.

    Raises:
        NativeBuildError: a symlink, not a directory, owned by someone else, or writable by
            group or others.
    """
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise NativeBuildError(f"cannot create the build folder {path}: {exc.strerror}", _HINT) from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise NativeBuildError(f"build folder {path} is not a plain directory (a symlink?)", _HINT)
    if st.st_uid != os.getuid():
        raise NativeBuildError(f"build folder {path} belongs to uid {st.st_uid}, not to you "
                               f"(uid {os.getuid()}): its libraries are not loaded", _HINT)
    if st.st_mode & 0o022:
        raise NativeBuildError(f"build folder {path} can be written by other users "
                               f"(mode {stat.S_IMODE(st.st_mode):o}): its libraries are not loaded", _HINT)
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def compiler(name: str | None = None) -> str:
    """The C compiler: ``name``, else ``$CC``, else gcc or cc on the PATH.

    Raises:
        ToolMissing: none found.
    """
    cc = name or os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    path = shutil.which(cc) if cc else None
    if not path:
        raise ToolMissing(f"no C compiler ({cc or 'gcc/cc'}) to build the firmware's C code for this computer",
                          "install gcc (Debian: apt-get install gcc)")
    return path


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _problem(path: Path) -> str | None:
    """Why ``path`` must not be loaded or run, or ``None`` when it matches its build record."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "it does not exist"
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        return "another user owns it or can write to it"
    try:
        recorded = _sidecar(path).read_text().split()[0]
    except (OSError, IndexError):
        return "it has no build record (not built by this toolkit)"
    if sha256_file(path) != recorded:
        return "its sha256 differs from its build record (changed after the build)"
    return None


def verify(path: str | Path) -> Path:
    """Check a built file before it is loaded or run: its folder is private and its bytes match
    the sha256 recorded when it was built.

    Raises:
        NativeBuildError: the folder is not private, or the file does not match its record.
    """
    path = Path(path)
    private_dir(path.parent)
    why = _problem(path)
    if why:
        raise NativeBuildError(f"refusing to load {path}: {why}",
                               "delete it; the toolkit rebuilds it from the firmware sources")
    return path


def build(sources: Sequence[str | Path], name: str, *, flags: Sequence[str] = HOST_CFLAGS,
          include_dirs: Sequence[str | Path] = (), shared: bool = True, out_dir: str | Path | None = None,
          cc: str | None = None) -> Path:
    """Compile C sources into a shared library (or a program) in a private folder, once.

    The output is ``<out_dir>/<name>_<hash>.so`` (no suffix for a program), the hash covering
    the sources, the headers of ``include_dirs``, the flags and the compiler. An existing output
    is reused only when it matches its build record; otherwise it is built again.

    Args:
        sources: ``.c`` files.
        name: stem of the output's name.
        flags: compiler flags (warnings are errors by default).
        include_dirs: ``-I`` folders (their ``.h`` files are part of the hash).
        shared: a ``-shared`` library, or an executable.
        out_dir: the build folder (default :func:`cache_root`); must be private.
        cc: compiler (default :func:`compiler`).

    Raises:
        ToolMissing: no compiler, or a source is missing.
        NativeBuildError: the folder is not private.
        FacemaskError: the compiler failed (its first lines are in the message).
    """
    sources = [Path(s) for s in sources]
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:
        raise ToolMissing(f"C sources not found: {', '.join(missing)}",
                          "run from a source checkout of facemask-edge (firmware/ next to the package)")
    cc = compiler(cc)
    h = hashlib.sha256("\0".join([cc, *flags, "shared" if shared else "program"]).encode())
    for s in sources:
        h.update(s.read_bytes())
    for d in include_dirs:
        for header in sorted(Path(d).glob("*.h")):
            h.update(header.name.encode() + header.read_bytes())
    out_dir = private_dir(out_dir if out_dir is not None else cache_root())
    out = out_dir / (f"{name}_{h.hexdigest()[:16]}" + (".so" if shared else ""))
    if _problem(out) is None:
        return out
    tmp = out_dir / f".{out.name}.{os.getpid()}.tmp"
    extra = (["-shared"] + ([] if "-fPIC" in flags else ["-fPIC"])) if shared else []
    cmd = [cc, *flags, *extra,
           *[f"-I{d}" for d in include_dirs], *map(str, sources), "-o", str(tmp)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()] or ["?"]
            raise FacemaskError(f"{Path(cc).name} failed on {', '.join(s.name for s in sources)}: "
                                + " | ".join(lines[:3])[:1000],
                                "fix the C code: warnings are errors")
        digest = sha256_file(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    # The record comes last: an output without one (a kill in between) is rebuilt next time.
    side = _sidecar(out)
    side_tmp = out_dir / f".{side.name}.{os.getpid()}.tmp"
    side_tmp.write_text(f"{digest}  {out.name}\n")
    os.replace(side_tmp, side)
    return out


def load_library(path: str | Path) -> ctypes.CDLL:
    """``ctypes.CDLL`` of a library built by :func:`build`, after :func:`verify`."""
    return ctypes.CDLL(str(verify(path)))


def build_c_library(out_dir: Path | None = None, compiler: str | None = None) -> Path:
    """The firmware's protocol code (``fe_protocol.c``) and the simulator shim, as a library.

    Raises:
        ToolMissing: no C compiler, or the sources are not there (installed without firmware/).
    """
    from facemask_edge.paths import firmware_dir

    fw = firmware_dir()
    sources = [fw / "common" / "fe_protocol.c", fw / "host" / "sim_shim.c"]
    if not all(p.exists() for p in sources):
        raise ToolMissing(f"protocol C sources not found under {fw}",
                          "run from a source checkout, or use --engine python")
    return build(sources, "fe_protocol", include_dirs=[fw / "common"], out_dir=out_dir, cc=compiler)
