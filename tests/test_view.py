"""``facemask-edge view`` in a real headless browser, on a --demo run fed by board-sim.

One Chromium session drives every page: the live page must show at least 5 new predictions with
their frame within 10 s, the report page the run's figures and its disagreement/mistake
thumbnails, the try-it page the same scores as the host int8 model for an uploaded photo (and a
clear message for a file that is not an image), and killing board-sim must show "board
disconnected" within 3 s, then "connected" again when it comes back.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``)
and the ``selenium`` package; skipped with the reason otherwise. Selenium is given the driver and
the browser explicitly, so its manager never downloads anything. Screenshots go to
``$FACEMASK_EDGE_ARTIFACTS`` (default: the test's temporary folder, ``artifacts/``).
``FACEMASK_EDGE_VIEW_RUN`` reuses an existing --demo run instead of building one (development).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "facemask_edge"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# The demo with shorter training (as tests/test_pipeline.py): every other stage is the real --demo.
FAST_DEMO = ["--head-epochs", "1", "--finetune-epochs", "3", "--qat-epochs", "1"]

HAVE_SELENIUM = importlib.util.find_spec("selenium") is not None


def needs_browser(test):
    for mark in (pytest.mark.slow, pytest.mark.browser,
                 pytest.mark.skipif(not HAVE_SELENIUM, reason="selenium is not installed (pip install selenium)"),
                 pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                                    reason="needs Debian's chromium and chromium-driver "
                                           "(apt-get install -y chromium chromium-driver)")):
        test = mark(test)
    return test


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    given = os.environ.get("FACEMASK_EDGE_VIEW_RUN")
    if given:
        return Path(given)
    run = tmp_path_factory.mktemp("view") / "demo"
    proc = subprocess.run(CLI + ["pipeline", "--demo", "--out", str(run), *FAST_DEMO],
                          capture_output=True, text=True, timeout=1200, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    out = Path(os.environ.get("FACEMASK_EDGE_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    return out


class _Proc:
    """A CLI subprocess; stopped with SIGTERM (as a user's kill) and reaped."""

    def __init__(self, args):
        self.p = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=_env())

    def first_line(self, timeout: float = 60) -> str:
        import select

        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        assert ready, f"no output from {self.p.args}"
        return self.p.stdout.readline().strip()

    def stop(self) -> str:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            _, err = self.p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.p.kill()
            _, err = self.p.communicate()
        return err


def _board_sim(run: Path, link: Path) -> _Proc:
    sim = _Proc(["board-sim", str(run), "--frames", str(run / "demo-data"), "--camera-every", "0.1",
                 "--link", str(link)])
    assert sim.first_line() == str(link)
    return sim


def _browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager: never download
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,1000"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def _wait(what: str, cond, timeout: float, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = cond()
        except Exception:  # an element between two renders
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


@needs_browser
def test_view_pages_in_a_headless_browser(demo_run, artifacts, tmp_path):
    from selenium.webdriver.common.by import By

    from facemask_edge.convert.runtimes import TFLMRunner
    from facemask_edge.data.images import decode_image
    from facemask_edge.data.preprocess import device_preprocess, to_int8

    card = json.loads((demo_run / "model_card.json").read_text())
    size = int(card["input"]["shape"][1])
    link = tmp_path / "board"
    sim = _board_sim(demo_run, link)
    server = _Proc(["view", str(demo_run), "--port", "0", "--device", str(link)])
    driver = None
    try:
        url = server.first_line()
        assert url.startswith("facemask-edge view: http://127.0.0.1:"), url
        base = url.split(": ", 1)[1].rstrip("/")
        driver = _browser(tmp_path / "profile")
        find = driver.find_element

        # ---- live: >= 5 new predictions within 10 s, each with the frame the model saw ----
        driver.get(base + "/live")
        _wait("first live frame", lambda: int(find(By.ID, "count").text) >= 1, 20)
        first = int(find(By.ID, "count").text)
        t0 = time.monotonic()
        _wait("5 new predictions", lambda: int(find(By.ID, "count").text) >= first + 5, 10)
        assert time.monotonic() - t0 <= 10
        frame = find(By.ID, "frame")
        assert frame.get_attribute("src").startswith("data:image/png;base64,")
        assert driver.execute_script("return arguments[0].naturalWidth", frame) == size
        assert "board connected" in find(By.ID, "status").text
        assert find(By.ID, "label").text in card["labels"]
        history = driver.find_elements(By.CSS_SELECTOR, "#history li.prediction img")
        assert len(history) >= 5 and all(h.get_attribute("src").startswith("data:image/png") for h in history)
        driver.save_screenshot(str(artifacts / "view-live.png"))

        # ---- report: the summary figures and the thumbnails ----
        driver.get(base + "/report")
        summary = json.loads((demo_run / "summary.json").read_text())
        headline = find(By.ID, "headline").text
        acc = summary["headline"]["int8_device_test_accuracy"]
        assert "int8 device test accuracy" in headline and f"{acc:.4f}" in headline
        assert "nano33ble" in find(By.ID, "budget").text
        want = 0
        for line in (demo_run / "validate-sim" / "results.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec.get("kind") == "image" and (rec["board"]["scores"] != rec["host"]["scores"]
                                               or rec["board"]["label"] != rec["label"]):
                want += 1
        thumbs = driver.find_elements(By.CSS_SELECTOR, "#thumbs figure.thumb img")
        assert want > 0 and len(thumbs) == min(want, 48)
        _wait("thumbnails load", lambda: all(driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", t) for t in thumbs), 10)
        caption = find(By.CSS_SELECTOR, "#thumbs figure.thumb figcaption").text
        assert "board" in caption and "host" in caption and "true" in caption
        plots = driver.find_elements(By.CSS_SELECTOR, ".plots img")
        assert len(plots) >= 3
        driver.save_screenshot(str(artifacts / "view-report.png"))
        find(By.ID, "thumbs").screenshot(str(artifacts / "view-report-thumbs.png"))

        # ---- try it: the same scores as the host int8 model on that file ----
        photo = sorted((demo_run / "demo-data").rglob("*.webp"))[0]
        x = to_int8(device_preprocess(decode_image(photo).rgb, size, card["input"].get("color", "rgb")))
        host = [int(v) for v in TFLMRunner(demo_run / "model_int8.tflite").run(x)]
        driver.get(base + "/try")
        assert find(By.ID, "webcam").is_displayed()  # getUserMedia needs a camera: presence only
        find(By.ID, "photo").send_keys(str(photo))
        find(By.ID, "send").click()
        got = _wait("host scores", lambda: find(By.ID, "host-answer").get_attribute("data-scores"), 20)
        assert [int(v) for v in got.split(",")] == host
        board = _wait("board scores", lambda: find(By.ID, "board-answer").get_attribute("data-scores"), 20)
        assert [int(v) for v in board.split(",")] == host  # board-sim runs the same TFLM kernels
        assert driver.execute_script("return document.getElementById('crop').naturalWidth") == size
        driver.save_screenshot(str(artifacts / "view-try.png"))
        bad = tmp_path / "notes.jpg"
        bad.write_text("this is not a picture")
        find(By.ID, "photo").send_keys(str(bad))
        find(By.ID, "send").click()
        err = _wait("bad-input message", lambda: find(By.ID, "try-error").is_displayed() and
                    find(By.ID, "try-error").text, 10)
        assert "not an image" in err

        # ---- the board goes away, and comes back ----
        driver.get(base + "/live")
        _wait("connected again on the live page", lambda: "board connected" in find(By.ID, "status").text, 10)
        sim.stop()
        t0 = time.monotonic()
        _wait("board disconnected", lambda: "board disconnected" in find(By.ID, "status").text, 3)
        assert time.monotonic() - t0 <= 3
        driver.save_screenshot(str(artifacts / "view-disconnected.png"))
        # The try-it page says so too, and the server keeps serving.
        shown = int(find(By.ID, "count").text)
        sim = _board_sim(demo_run, link)
        _wait("reconnected", lambda: "board connected" in find(By.ID, "status").text, 15)
        _wait("frames again", lambda: int(find(By.ID, "count").text) > shown, 10)
    finally:
        if driver is not None:
            driver.quit()
        err = server.stop()
        sim.stop()
    assert "Traceback" not in err, err[-3000:]


def test_view_refuses_bad_options_in_one_line(tmp_path):
    proc = subprocess.run(CLI + ["view", str(tmp_path / "missing"), "--port", "0"],
                          capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 1 and proc.stderr.startswith("error: run folder")
    assert "Traceback" not in proc.stderr


# ---- the server without a browser: bad input never stops it (fast) -----------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from facemask_edge.device.testing import make_tiny_model, make_tiny_run

    return make_tiny_run(tmp_path_factory.mktemp("view-tiny") / "run", model=make_tiny_model())


def test_try_api_answers_bad_input_with_a_message_and_keeps_serving(tiny_run, tmp_path):
    from PIL import Image

    from facemask_edge.view.app import MAX_UPLOAD_BYTES, create_app
    from facemask_edge.view.board_link import BoardLink

    link = BoardLink(str(tmp_path / "no-board"), frame_timeout=0.5).start()
    try:
        client = create_app(tiny_run, link=link).test_client()
        r = client.post("/api/try", data={"image": (io.BytesIO(b"hello"), "notes.jpg")})
        assert r.status_code == 400 and r.json["error"].startswith("not an image")
        r = client.post("/api/try", data={"image": (io.BytesIO(b"\0" * (MAX_UPLOAD_BYTES + 1)), "big.png")})
        assert r.status_code == 413 and "too large" in r.json["error"]
        r = client.post("/api/try", data={})
        assert r.status_code == 400 and "choose a photo" in r.json["error"]
        buf = io.BytesIO()
        Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(buf, format="PNG")
        r = client.post("/api/try", data={"image": (io.BytesIO(buf.getvalue()), "grey.png"), "board": "1"})
        assert r.status_code == 200 and len(r.json["host"]["scores"]) == 2
        assert r.json["board_error"].startswith("board disconnected")
        live = client.get("/api/live").json
        assert live["status"] == "disconnected" and "does not exist" in live["message"]
        assert client.get("/run/../../../etc/passwd").status_code == 404
        assert client.get("/run/model_card.json").status_code == 404  # pictures only
        for page in ("/", "/live", "/report", "/try"):
            assert client.get(page).status_code == 200
    finally:
        link.stop()
