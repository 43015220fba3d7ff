"""The Gradient Health tab in a real TensorBoard, in headless Chromium."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from gh_logs import write_plain_run, write_run

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "gradient_health.png"
RUN = "exp/train"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
        reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian: chromium "
        "chromium-driver)",
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _wait_for_run(base: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    """Waits until TensorBoard answers and our plugin lists the run with data."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tensorboard exited with {proc.returncode}")
        try:
            runs = _get_json(f"{base}/data/plugin/gradient_health/runs")["runs"]
            if {"run": RUN, "has_data": True} in runs:
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"TensorBoard at {base} did not list {RUN} in {timeout}s")


@pytest.fixture(scope="module")
def tensorboard_url(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("browser_logs")
    write_run(str(logdir / "exp"))
    write_plain_run(str(logdir / "plain"))
    port = _free_port()
    log = open(logdir.parent / "tensorboard.log", "wb")  # noqa: SIM115
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_run(base, proc)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def _texts(elements) -> list[str]:
    return [e.get_attribute("textContent") for e in elements]


def test_dashboard_tab_renders_heatmaps_and_findings(tensorboard_url, driver):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(driver, 60)
    driver.get(f"{tensorboard_url}/#gradient_health")
    # TensorBoard loads the plugin's ES module in an iframe.
    frame = (By.CSS_SELECTOR, "iframe")
    wait.until(ec.frame_to_be_available_and_switch_to_it(frame))
    norm = "section[data-section='grad_norm']"
    heatmap = (By.CSS_SELECTOR, f"{norm} canvas.gh-canvas")
    wait.until(ec.presence_of_element_located(heatmap))

    labels = driver.find_elements(By.CSS_SELECTOR, f"{norm} .gh-row-label")
    assert _texts(labels) == ["stem_conv", "block_dense", "head"]  # model order
    canvas = driver.find_element(*heatmap)
    assert canvas.get_attribute("data-rows") == "3"
    assert canvas.get_attribute("data-columns") == "10"
    dead = driver.find_elements(
        By.CSS_SELECTOR, "section[data-section='dead_fraction'] .gh-row-label"
    )
    assert _texts(dead) == ["stem_conv"]
    markers = driver.find_elements(By.CSS_SELECTOR, f"{norm} .gh-marker")
    assert sorted(m.get_attribute("data-layer") for m in markers) == [
        "head",
        "stem_conv",
    ]

    rows = driver.find_elements(By.CSS_SELECTOR, "#gh-findings tr.gh-finding")
    cells = [_texts(r.find_elements(By.TAG_NAME, "td")) for r in rows]
    assert [c[:3] for c in cells] == [
        ["softmax_with_binary_crossentropy", "head", "before training"],
        ["vanishing_gradients", "stem_conv", "3"],
        ["non_finite", "head", "7"],
    ]
    assert cells[1][3] == "0.001"

    # Hover the cell of stem_conv at step 3 (row 0, column 3).
    width, height = (
        int(canvas.get_attribute("width")),
        int(canvas.get_attribute("height")),
    )
    cell_w, row_h = width / 10, height / 3
    x = int(3.5 * cell_w - width / 2)
    y = int(0.5 * row_h - height / 2)
    ActionChains(driver).move_to_element_with_offset(canvas, x, y).perform()
    tip = driver.find_element(By.ID, "gh-tooltip")
    wait.until(lambda d: tip.is_displayed())
    assert tip.text == "stem_conv · step 3 · gradient norm: 0.001"

    driver.switch_to.default_content()
    SCREENSHOT.parent.mkdir(exist_ok=True)
    driver.save_screenshot(str(SCREENSHOT))

    # Switching the run switches the view; a run without our data says so.
    driver.switch_to.frame(driver.find_element(*frame))
    Select(driver.find_element(By.ID, "gh-run")).select_by_value("plain")
    empty = (By.CSS_SELECTOR, "#gh-view .gh-empty")
    wait.until(ec.text_to_be_present_in_element(empty, "no Gradient Health data"))
    assert driver.find_elements(By.CSS_SELECTOR, "#gh-view canvas.gh-canvas") == []
    Select(driver.find_element(By.ID, "gh-run")).select_by_value(RUN)
    wait.until(ec.presence_of_element_located(heatmap))
