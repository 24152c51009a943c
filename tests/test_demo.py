"""The demo page: its /read API gives predict's per-step answers, it refuses what predict
refuses and keeps serving, and a real browser draws on it, uploads, and reads the answer form
row by row."""

import contextlib
import importlib.util
import json
import shutil
import socket
import struct
import urllib.error
import urllib.request
import zlib

import numpy as np
import pytest

from helpers import run_module, start_python

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@contextlib.contextmanager
def demo(*models):
    """`python -m mnist_rnn.demo` on a free port, serving `models`: yields its address."""
    process = start_python("-m", "mnist_rnn.demo", *[f"--model={m}" for m in models], "--port=0")
    try:
        line = process.stdout.readline()
        assert line.startswith("Reading digits at http://127.0.0.1:"), (
            line + process.stderr.read()[-2000:])
        yield line.split(" at ")[1].split()[0].rstrip("/")
    finally:
        process.terminate()
        process.communicate(timeout=60)


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def _raw_post(url: str, header: str) -> str:
    """The whole reply to a POST /read whose headers a client wrote by hand, its connection
    kept open: the server must answer and close it without waiting for a body."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        connection.sendall(f"POST /read HTTP/1.1\r\nHost: {host}\r\n{header}\r\n\r\n"
                           .encode())
        reply = b"".join(iter(lambda: connection.recv(65536), b""))
    return reply.decode(errors="replace")


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG whose header says width x height pixels, with one row of data: decoded, it would
    take gigabytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b""))


@pytest.mark.keras2
@pytest.mark.jax
def test_read_answers_as_predict_does_and_refuses_what_predict_refuses(trained, digit_files):
    config, _, _ = trained
    paths, labels = digit_files
    model = f"{config.model_dir}/model.keras"
    predicted = run_module("mnist_rnn.predict", f"--model={model}", "--per_step", "--json",
                           f"--output_dir={config.model_dir}/../charts-{config.rnn}", *paths)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    expected = json.loads(predicted.stdout)
    with demo(model, f"{config.model_dir}/saved_model") as url:
        for path, label, want in zip(paths, labels, expected):
            with open(path, "rb") as f:
                status, got = post(f"{url}/read", f.read())
            assert status == 200, got
            assert got["answer"] == want["class"] == label
            assert got["settled_step"] == want["settled_step"]
            assert np.allclose(got["step_probabilities"], want["step_probabilities"], atol=1e-4)
            assert got["probabilities"][label] == pytest.approx(want["probability"], abs=1e-4)
            assert np.array(got["digit"]).shape == (28, 28)
        with open(paths[0], "rb") as f:  # The second model: the SavedModel of the same run.
            status, second = post(f"{url}/read?model=1", f.read())
        assert status == 200 and second["answer"] == labels[0]
        for body, why in [(bomb_png(), "30000x30000 pixels, over the limit"),
                          (b"not an image", "not a readable image"),
                          (b"", "no image")]:
            status, got = post(f"{url}/read", body)
            assert status == 400 and why in got["error"], got
            assert "/tmp" not in got["error"]  # The private file's name is not shown.
        status, got = post(f"{url}/read?model=2", b"x")
        assert status == 400 and "there are 2 models" in got["error"]
        assert "not a number of bytes" in _raw_post(url, "Content-Length: -1")
        with open(paths[1], "rb") as f:  # Still serving.
            assert post(f"{url}/read", f.read())[0] == 200
        with urllib.request.urlopen(f"{url}/models", timeout=60) as response:
            assert [m["per_step"] for m in json.load(response)] == [True, True]


def test_a_bad_model_is_one_line_at_start(tmp_path):
    (tmp_path / "model.keras").write_text("not a model")
    result = run_module("mnist_rnn.demo", f"--model={tmp_path / 'model.keras'}", "--port=0",
                        timeout=120)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot load model {tmp_path / 'model.keras'}: "), line


@pytest.fixture
def browser():
    """Headless Debian Chromium, driven by selenium through Debian's chromedriver."""
    if importlib.util.find_spec("selenium") is None:
        pytest.skip("needs selenium: pip install '.[browser]'")
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Chromium and its driver: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--window-size=1300,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_a_learner_draws_a_one_and_watches_it_read_row_by_row(trained, digit_files, browser,
                                                              tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    config, _, _ = trained
    paths, labels = digit_files
    with demo(f"{config.model_dir}/model.keras", f"{config.model_dir}/saved_model") as url:
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        pad = browser.find_element(By.ID, "digit")
        # A vertical stroke down the middle of the 280x280 pad: a 1.
        ActionChains(browser).move_to_element_with_offset(pad, 0, -90).click_and_hold() \
            .move_by_offset(0, 60).move_by_offset(0, 60).move_by_offset(0, 60).release() \
            .perform()
        wait.until(lambda d: d.find_element(By.ID, "answer").text != "?")
        assert browser.find_element(By.ID, "answer").text == "1"
        assert browser.find_element(By.ID, "answer-2").text == "1"  # Side by side.
        rows = browser.find_elements(By.CSS_SELECTOR, "#rows tr[data-row]")
        assert len(rows) == 28  # An answer after each row read.
        assert "Settles at row" in browser.find_element(By.ID, "settled").text
        assert len(browser.find_elements(By.CSS_SELECTOR, "#rows polyline")) == 10

        browser.execute_script("const s = document.getElementById('row'); s.value = 10;"
                               "s.dispatchEvent(new Event('input'));")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#rows tr[data-row]")) == 10
        assert browser.find_element(By.CSS_SELECTOR, "#rows tr.current").get_attribute(
            "data-row") == "10"

        browser.find_element(By.ID, "upload").send_keys(paths[0])
        wait.until(lambda d: d.find_element(By.ID, "answer").text == str(labels[0]))
        assert browser.find_element(By.ID, "message").text == ""

        bomb = tmp_path / "bomb.png"
        bomb.write_bytes(bomb_png())
        browser.find_element(By.ID, "upload").send_keys(str(bomb))
        wait.until(lambda d: d.find_element(By.ID, "message").text)
        assert "over the limit" in browser.find_element(By.ID, "message").text
        browser.find_element(By.ID, "upload").send_keys(paths[1])  # Still serving.
        wait.until(lambda d: d.find_element(By.ID, "message").text == "" and
                   d.find_element(By.ID, "answer").text == str(labels[1]))
        browser.save_screenshot(str(tmp_path / "page.png"))
