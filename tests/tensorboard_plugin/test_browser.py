"""The Gradient Health tab in a real TensorBoard, in headless Chromium."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from gh_logs import train_run, write_plain_run, write_run

from keras_actloss.logs import tags

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The README's screenshot: regenerate it with
# KERAS_ACTLOSS_SCREENSHOT=docs/gradient_health.png pytest tests/tensorboard_plugin
SCREENSHOT = Path(
    os.environ.get("KERAS_ACTLOSS_SCREENSHOT")
    or Path(tempfile.gettempdir()) / "keras-actloss-gradient-health.png"
)
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
def trained(tmp_path_factory):
    """(log dir, GradientDiagnostics callback): three runs, one trained."""
    logdir = tmp_path_factory.mktemp("browser_logs")
    write_run(str(logdir / "exp"))
    write_plain_run(str(logdir / "plain"))
    return logdir, train_run(str(logdir / "fit"))


@pytest.fixture(scope="module")
def tensorboard_url(trained):
    logdir, _ = trained
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
        "--window-size=1400,1200",
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


NORM = "section[data-section='grad_norm']"


def _open_run(driver, base: str, run: str):
    """Opens the Gradient Health tab, selects `run`, returns a waiter."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 60)
    driver.switch_to.default_content()
    driver.get(f"{base}/#gradient_health")
    # TensorBoard loads the plugin's ES module in an iframe.
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.TAG_NAME, "iframe")))
    _select(driver, wait, run)
    return wait


def _select(driver, wait, run: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gh-run option"))
    Select(driver.find_element(By.ID, "gh-run")).select_by_value(run)
    shown = "return document.body.dataset.run"
    wait.until(
        lambda d: (
            d.execute_script(shown) == run
            and d.find_elements(By.CSS_SELECTOR, "#gh-view > *")
        )
    )


def _findings_cells(driver) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#gh-findings tr.gh-finding")
    return [_texts(r.find_elements(By.TAG_NAME, "td")) for r in rows]


def test_tab_renders_heatmaps_findings_and_hover_values(tensorboard_url, driver):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    wait = _open_run(driver, tensorboard_url, RUN)
    labels = driver.find_elements(By.CSS_SELECTOR, f"{NORM} .gh-row-label")
    assert _texts(labels) == ["stem_conv", "block_dense", "head"]  # model order
    canvas = driver.find_element(By.CSS_SELECTOR, f"{NORM} canvas.gh-canvas")
    assert canvas.get_attribute("data-rows") == "3"
    assert canvas.get_attribute("data-columns") == "10"
    dead = driver.find_elements(
        By.CSS_SELECTOR, "section[data-section='dead_fraction'] .gh-row-label"
    )
    assert _texts(dead) == ["stem_conv"]
    markers = driver.find_elements(By.CSS_SELECTOR, f"{NORM} .gh-marker")
    assert sorted(m.get_attribute("data-layer") for m in markers) == [
        "head",
        "stem_conv",
    ]
    cells = _findings_cells(driver)
    assert [c[:3] for c in cells] == [
        ["softmax_with_binary_crossentropy", "head", "before training"],
        ["vanishing_gradients", "stem_conv", "3"],
        ["non_finite", "head", "7"],
    ]
    assert cells[1][3] == "0.001"

    # Hover the cell of stem_conv at step 3 (row 0 of 3, column 3 of 10).
    width = int(canvas.get_attribute("width"))
    height = int(canvas.get_attribute("height"))
    x = int(3.5 * width / 10 - width / 2)  # offsets are from the centre
    y = int(0.5 * height / 3 - height / 2)
    ActionChains(driver).move_to_element_with_offset(canvas, x, y).perform()
    tip = driver.find_element(By.ID, "gh-tooltip")
    wait.until(lambda d: tip.is_displayed())
    expected = "stem_conv · step 3 · gradient norm: 0.001 · vanishing_gradients begins"
    assert tip.text == expected

    # A cell without a finding: head at step 8 (row 2, column 8), 0.5 + 8.
    x, y = int(8.5 * width / 10 - width / 2), int(2.5 * height / 3 - height / 2)
    ActionChains(driver).move_to_element_with_offset(canvas, x, y).perform()
    wait.until(lambda d: tip.text == "head · step 8 · gradient norm: 8.5")

    # Switching the run switches the view; a run without our data says so.
    _select(driver, wait, "plain")
    empty = (By.CSS_SELECTOR, "#gh-view .gh-empty")
    # The same message as `keras-actloss report` prints for such a run.
    wait.until(ec.text_to_be_present_in_element(empty, tags.NO_DATA_MESSAGE))
    assert driver.find_elements(By.CSS_SELECTOR, "#gh-view canvas") == []


def test_trained_run_shows_its_layers_and_findings(tensorboard_url, driver, trained):
    from selenium.webdriver.common.by import By

    _, diag = trained
    _open_run(driver, tensorboard_url, "fit/train")
    labels = driver.find_elements(By.CSS_SELECTOR, f"{NORM} .gh-row-label")
    trainable = [info.name for info in diag.layers if info.has_trainable_weights]
    assert _texts(labels) == trainable
    assert trainable[:2] == ["stem", "sigmoid_0"]
    # Findings made while training (those with a step) are all in the table.
    shown = {(c[0], c[1], c[2]) for c in _findings_cells(driver)}
    during = {
        (f.mode, f.layer or "(model)", str(f.step))
        for f in diag.findings
        if f.step is not None
    }
    assert {"dead_relu"} <= {mode for mode, _, _ in during}
    assert during <= shown
    # Markers where gradient-norm findings begin ("" marks a model-wide one).
    norm_modes = {"vanishing_gradients", "exploding_gradients", "non_finite"}
    markers = driver.find_elements(By.CSS_SELECTOR, f"{NORM} .gh-marker")
    assert sorted(m.get_attribute("data-layer") for m in markers) == sorted(
        f.layer or "" for f in diag.findings if f.mode in norm_modes
    )
    driver.switch_to.default_content()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_trained_run_shows_every_finding(tensorboard_url, driver, trained):
    _, diag = trained
    _open_run(driver, tensorboard_url, "fit/train")
    shown = sorted((c[0], c[1]) for c in _findings_cells(driver))
    assert shown == sorted((f.mode, f.layer or "(model)") for f in diag.findings)
