"""The C board handler and its Python twin answer every byte stream identically."""

from __future__ import annotations

import random
import shutil

import pytest

from facemask_edge.device import framing as fr
from facemask_edge.device.board import CBoardProtocol, DeviceInfo, PyBoardProtocol

pytestmark = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")

INFO = DeviceInfo("fuzzboard", "9.9", "ab" * 32, 4, 4, 3, 3, 777, 888)


def infer(data: bytes):
    s = sum(data)
    if data[0] == 0x55:
        return 5, [0, 0, 0], 0
    return 0, [(s % 256) - 128, ((s * 7) % 256) - 128, -((s * 3) % 128)], s


def run(cls, pieces):
    out: list[bytes] = []
    board = cls(INFO, out.append, infer)
    answers = []
    for p in pieces:
        board.feed(p)
        answers.append(b"".join(out))
        out.clear()
    return answers, board.in_session()


def protocol_like_stream(rng: random.Random) -> bytes:
    """Mostly plausible traffic (sequential images, resends, requests) with damage on top."""
    frames, seq, image_id = [fr.hello(0)], 1, rng.randrange(3)
    for _ in range(rng.randrange(5, 40)):
        r = rng.random()
        if r < 0.65:
            off = rng.choice([0, 0, 16, 32, 40]) if rng.random() < 0.3 else rng.choice([0, 16, 32])
            n = min(rng.choice([16, 8, 48, 12]), 48 - off) or 1
            frames.append(fr.chunk(seq, image_id + rng.choice([0, 0, 0, 1, -1]), off,
                                   bytes(rng.randrange(256) for _ in range(n))))
            if off + n >= 48 and rng.random() < 0.7:
                image_id += 1
        elif r < 0.72:
            frames.append(fr.result_req(seq, image_id - rng.randrange(6)))
        elif r < 0.75:
            frames.append(fr.hello(seq))
        elif r < 0.77:
            frames.append(fr.bye(seq))
        elif r < 0.82:
            frames.append(fr.encode_frame(rng.randrange(256), seq,
                                          bytes(rng.randrange(256) for _ in range(rng.randrange(12)))))
        elif r < 0.9:
            frames.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 50))))
        else:
            frames.append(b"PRED ms=1 idx=0 label=x conf=1 us=2 scores=1,2,3\r\n")
        seq += 1
    data = bytearray(b"".join(frames))
    for _ in range(rng.randrange(4)):
        data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
    if rng.random() < 0.2:  # drop a run of bytes
        i = rng.randrange(len(data))
        del data[i:i + rng.randrange(1, 30)]
    return bytes(data)


def test_c_and_python_engines_agree_on_random_streams():
    rng = random.Random(12345)
    checked_bytes = 0
    for trial in range(400):
        data = protocol_like_stream(rng)
        pieces, i = [], 0
        while i < len(data):
            j = i + rng.choice([1, 3, 64, 1000])
            pieces.append(data[i:j])
            i = j
        a = run(PyBoardProtocol, pieces)
        b = run(CBoardProtocol, pieces)
        assert a == b, f"trial {trial}"
        checked_bytes += sum(len(x) for x in a[0])
    assert checked_bytes > 10_000  # the streams made the boards say plenty


def test_oversized_frame_and_long_noise_do_not_break_the_c_handler():
    out: list[bytes] = []
    board = CBoardProtocol(INFO, out.append, infer)
    board.feed(fr.hello(0))
    out.clear()
    board.feed(b"\x00" + bytes(random.Random(0).randrange(1, 256) for _ in range(20000)) + b"\x00")
    naks = [fr.parse_board_message(e) for e in fr.FrameReader().feed(b"".join(out)) if isinstance(e, fr.Frame)]
    assert naks == [fr.Nak(0, 0, fr.Err.BAD_FRAME)]
    out.clear()
    board.feed(fr.chunk(1, 0, 0, bytes(48)))
    msgs = [fr.parse_board_message(e) for e in fr.FrameReader().feed(b"".join(out)) if isinstance(e, fr.Frame)]
    assert isinstance(msgs[0], fr.Ack) and isinstance(msgs[1], fr.Result)


# ---- time-boxed fuzzing (issue 12): the C handler under ASan/UBSan, the host's parsers ---------
# FACEMASK_EDGE_FUZZ_SECONDS=N runs the C fuzzer N seconds and each Python fuzz N/4 (defaults:
# 20 s and 5 s + 5 s, so about 30 s of the suite).

import os  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from facemask_edge.device.session import BoardSession  # noqa: E402
from facemask_edge.errors import DeviceError, ProtocolError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMMON = ROOT / "firmware" / "common"
VECTORS = COMMON / "golden" / "vectors.txt"


def fuzz_seconds(share: float) -> float:
    return float(os.environ.get("FACEMASK_EDGE_FUZZ_SECONDS", 20)) * share


@pytest.fixture(scope="module")
def sanitizers(tmp_path_factory):
    """gcc with AddressSanitizer and UBSan runtimes, or skip."""
    d = tmp_path_factory.mktemp("asan")
    (d / "t.c").write_text("int main(void) { return 0; }\n")
    proc = subprocess.run(["gcc", "-fsanitize=address,undefined", str(d / "t.c"), "-o", str(d / "t")],
                          capture_output=True, text=True) if shutil.which("gcc") else None
    if proc is None or proc.returncode != 0:
        pytest.skip("gcc with -fsanitize=address,undefined is not available (apt-get install gcc)")


def build_fuzzer(protocol_c: Path, out_dir: Path | None = None, werror: bool = True) -> Path:
    from facemask_edge.native import build as nb

    flags = nb.SANITIZE_CFLAGS if werror else tuple(f for f in nb.SANITIZE_CFLAGS if f != "-Werror")
    exe = nb.build([ROOT / "firmware" / "host" / "proto_fuzz.c", protocol_c], "proto_fuzz", flags=flags,
                   include_dirs=[COMMON], shared=False, out_dir=out_dir)
    return nb.verify(exe)


def test_c_protocol_survives_sanitized_fuzzing(sanitizers):
    seconds = fuzz_seconds(1.0)
    exe = build_fuzzer(COMMON / "fe_protocol.c")
    proc = subprocess.run([str(exe), str(VECTORS), f"{seconds:g}", "1"], capture_output=True, text=True,
                          timeout=seconds + 120)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "0 findings" in proc.stdout
    cases = int(proc.stdout.split("proto_fuzz: ")[1].split()[0])
    assert cases > 100 * seconds, proc.stdout  # it really ran (thousands of cases a second)
    print(proc.stdout.strip())


def _old_overflow(tmp_path: Path) -> Path:
    """fe_protocol.c without its class-count checks: the code before issue 12's fix."""
    src = (COMMON / "fe_protocol.c").read_text()
    cuts = [("  p->error = info_error(info);\n", "  p->error = FE_OK;\n"),
            ("return k > FE_MAX_CLASSES ? (uint8_t)FE_MAX_CLASSES : k;", "return k;"),
            ("p->error = code != FE_OK ? code : info_error(p->info);", "p->error = code;")]
    for old, new in cuts:
        assert src.count(old) == 1, f"the fix changed shape; update this mutant: {old!r}"
        src = src.replace(old, new)
    path = tmp_path / "fe_protocol.c"
    path.write_text(src)
    return path


@pytest.mark.parametrize("mode", ["output checks", "sanitizers only"])
def test_the_fuzzer_finds_the_old_class_count_overflow(sanitizers, tmp_path, mode):
    """The harness is not blind: on the pre-fix code it finds the >16-classes overflow."""
    build_dir = tmp_path / "build"
    build_dir.mkdir(mode=0o700)
    exe = build_fuzzer(_old_overflow(tmp_path), build_dir, werror=False)
    env = dict(os.environ)
    if mode == "sanitizers only":
        env["PROTO_FUZZ_SANITIZERS_ONLY"] = "1"
    t = time.monotonic()
    proc = subprocess.run([str(exe), str(VECTORS), "30", "1"], capture_output=True, text=True, timeout=150,
                          env=env)
    assert proc.returncode != 0 and "proto_fuzz: FINDING" in proc.stderr, proc.stdout + proc.stderr[-3000:]
    assert time.monotonic() - t < 30
    if mode == "sanitizers only":
        assert "AddressSanitizer" in proc.stderr or "runtime error" in proc.stderr
    else:
        assert "RESULT class count" in proc.stderr


# -- the host's parsers: only ProtocolError may come out, and what comes out is in range --------


def _golden_board_bytes() -> list[bytes]:
    out = []
    for line in VECTORS.read_text().splitlines():
        if line.startswith("out ") and line[4:] != "-":
            out.append(bytes.fromhex(line[4:]))
    return out


def _mutate_body(rng: random.Random, body: bytes) -> bytes:
    """A damaged message body: bytes set to extremes, cut, extended, or whole fields overwritten."""
    body = bytearray(body)
    for _ in range(rng.randrange(1, 6)):
        r = rng.random()
        if r < 0.3 and body:
            body[rng.randrange(len(body))] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif r < 0.5 and body:
            del body[rng.randrange(len(body)):]
        elif r < 0.7:
            body[rng.randrange(len(body) + 1):0] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif r < 0.85 and len(body) >= 4:
            i = rng.randrange(len(body) - 3)
            body[i:i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x01\x00\x00\x00"])
        else:
            body = bytearray(body[: rng.randrange(len(body) + 1)])
    return bytes(body)


def _mutate_frame(rng: random.Random, frame: fr.Frame) -> bytes:
    """Re-encode a board frame with a damaged body but a good CRC: it reaches the parsers."""
    kind = frame.type if rng.random() < 0.9 else rng.choice([0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x99])
    return fr.encode_frame(kind, frame.seq, _mutate_body(rng, frame.body))


def _check_parsed(msg) -> None:
    if isinstance(msg, fr.Result):
        assert 1 <= len(msg.scores) <= fr.MAX_CLASSES and 0 <= msg.label < len(msg.scores)
        assert 0 <= msg.micros <= fr.LIMITS["micros"][1]
    elif isinstance(msg, fr.Info) and msg.status == 0 and msg.version == fr.PROTOCOL_VERSION:
        for name in ("max_body", "rx_window", "width", "height", "channels", "classes"):
            lo, hi = fr.LIMITS[name]
            assert lo <= getattr(msg, name) <= hi, name
        assert msg.baud == 0 or fr.LIMITS["baud"][0] <= msg.baud <= fr.LIMITS["baud"][1]


def test_framing_parsers_raise_only_protocol_errors():
    seeds = _golden_board_bytes()
    frames = [e for s in seeds for e in fr.FrameReader().feed(s) if isinstance(e, fr.Frame)]
    rng = random.Random(2024)
    deadline = time.monotonic() + fuzz_seconds(0.25)
    cases = parsed = refused = 0
    while time.monotonic() < deadline:
        cases += 1
        data = bytearray(b"".join(_mutate_frame(rng, rng.choice(frames)) if rng.random() < 0.8
                                  else rng.choice(seeds) for _ in range(rng.randrange(1, 6))))
        for _ in range(rng.randrange(3)):  # damage on the wire too
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        reader = fr.FrameReader()
        pos = 0
        try:
            while pos < len(data):
                n = rng.choice([1, 7, 64, 4096])
                for ev in reader.feed(bytes(data[pos:pos + n])):
                    if isinstance(ev, fr.Frame):
                        try:
                            msg = fr.parse_board_message(ev)
                        except ProtocolError:
                            refused += 1
                            continue
                        parsed += 1
                        _check_parsed(msg)
                pos += n
        except Exception as exc:
            raise AssertionError(f"case {cases}: {type(exc).__name__}: {exc}; input {bytes(data).hex()}") from exc
    assert cases > 200 and parsed > 100 and refused > 100, (cases, parsed, refused)


class _GreetingPort:
    """A port whose "board" answers every HELLO with an INFO of the given body (good CRC, the
    HELLO's seq), sometimes after a line of text; the session reads it like a serial port."""

    def __init__(self, body: bytes, text: bool):
        self.body, self.text, self.pending = body, text, bytearray()

    def write(self, data: bytes) -> None:
        for ev in fr.FrameReader().feed(bytes(data)):
            if isinstance(ev, fr.Frame) and ev.type == fr.Msg.HELLO:
                self.pending += (b"booting\r\n" if self.text else b"") + fr.encode_frame(fr.Msg.INFO, ev.seq, self.body)

    @property
    def in_waiting(self) -> int:
        return len(self.pending)

    def read(self, n: int) -> bytes:
        out = bytes(self.pending[:n])
        del self.pending[:n]
        return out


def test_handshake_raises_only_device_errors():
    bodies = [e.body for s in _golden_board_bytes() for e in fr.FrameReader().feed(s)
              if isinstance(e, fr.Frame) and e.type == fr.Msg.INFO]
    rng = random.Random(99)
    deadline = time.monotonic() + fuzz_seconds(0.25)
    outcomes: dict[str, int] = {}
    cases = 0
    while time.monotonic() < deadline:
        cases += 1
        body = _mutate_body(rng, rng.choice(bodies)) if rng.random() < 0.9 else rng.choice(bodies)
        tick = [0.0]

        def clock():  # simulated time: a timeout costs nothing
            tick[0] += 0.01
            return tick[0]

        session = BoardSession(_GreetingPort(body, rng.random() < 0.2), name="fuzz", timeout=1.0, clock=clock)
        try:
            _check_parsed(session.handshake())
            outcome = "accepted"
        except DeviceError as exc:  # ProtocolError, DeviceTimeout, or the board's model failed
            assert "\n" not in exc.message
            outcome = type(exc).__name__
        except Exception as exc:
            raise AssertionError(f"case {cases}: {type(exc).__name__}: {exc}; INFO body {body.hex()}") from exc
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert cases > 100 and outcomes.get("accepted", 0) > 10 and outcomes.get("ProtocolError", 0) > 10, outcomes
