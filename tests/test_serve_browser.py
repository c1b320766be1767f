"""The web page in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.serve_helpers import post_detect, running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# CI installs the browser (`make browser`); there a missing browser is a failure, not a skip.
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
                                reason="needs Debian's chromium and chromium-driver: `make browser`")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_upload_shows_boxes_slider_and_json(browser, tiny_onnx, tiny_dataset, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = sorted((tiny_dataset / "val").iterdir())[0]
    with running_server(tiny_onnx, tmp_path / "server.log", default_score_threshold=0.07) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: "classes: circle" in d.find_element(By.ID, "model").text)
        # The slider starts at the server's own default (0.07 here, not the page's built-in 0.3).
        wait.until(lambda d: d.find_element(By.ID, "threshold-value").text == "0.07")
        browser.find_element(By.ID, "file").send_keys(str(image))
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error"))
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done", \
            browser.find_element(By.ID, "status").text
        # What is drawn at that threshold is what /detect returns without a score_threshold (2 here).
        expected = len(post_detect(url, image.read_bytes(), image.name).json()["images"][0]["detections"])
        assert 0 < expected < 10
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-boxes") == str(expected)
        assert browser.find_element(By.ID, "status").text.startswith(f"{expected} detections with score ≥ 0.07, ")
        # Slide to 0: every detection (top-K 10) is drawn and listed in the JSON.
        browser.execute_script("const s = document.getElementById('threshold'); s.value = 0;"
                               "s.dispatchEvent(new Event('input'));")
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-boxes") == "10"
        assert browser.find_element(By.ID, "json").text.count('"label_id"') == 10
        browser.execute_script("const s = document.getElementById('threshold'); s.value = 1;"
                               "s.dispatchEvent(new Event('input'));")
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-boxes") == "0"
        browser.execute_script("const s = document.getElementById('threshold'); s.value = 0;"
                               "s.dispatchEvent(new Event('input'));")
        size = browser.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height];")
        assert size == [96, 96]
        shot = Path(tmp_path / "page.png")
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 5000
        # Coloured box outlines are on the canvas: some pixel differs from the original image.
        drawn = browser.execute_script(
            "const c = document.getElementById('canvas').getContext('2d');"
            "return Array.from(c.getImageData(0, 0, 96, 96).data);")
        from PIL import Image
        with Image.open(image) as stored:
            original = stored.convert("RGBA").tobytes()
        changed = sum(1 for i in range(0, len(original), 4) if bytes(drawn[i:i + 4]) != original[i:i + 4])
        assert changed > 50


def test_errors_are_shown_on_the_page(browser, tiny_onnx, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    with running_server(tiny_onnx, tmp_path / "server.log") as url:
        browser.get(url + "/")
        browser.find_element(By.ID, "file").send_keys(str(text_file))
        WebDriverWait(browser, 60).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "error")
        assert browser.find_element(By.ID, "status").text == (
            "error: notes.png: not a supported image (JPEG, PNG, WebP, BMP)")
