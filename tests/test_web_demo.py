"""The Gradio web demo, driven in headless Chromium: upload a photo, get a critique and the saliency picture."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

gradio = pytest.importorskip("gradio", reason="the web demo needs the [demo] extra")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium ([dev] extra)")

from conftest import PROMPT, random_image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


@pytest.mark.slow
def test_upload_photo_and_get_critique_and_overlay(tmp_path, processor):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Debian chromium and chromium-driver are required (.ci/run installs them)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    from modeling_ase_mllm.tiny import build_tiny_model

    model = build_tiny_model(gate=0.5, seed=2)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    photo = random_image(300, 500, seed=8)
    photo_path = tmp_path / "photo.png"
    photo.save(photo_path)
    expected = model.chat(processor, photo, PROMPT, {"max_new_tokens": 12}).strip()
    assert expected  # the page must show something we can recognise

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "app.py"), "--model", str(folder), "--port", str(port),
         "--max-new-tokens", "12"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = None
    try:
        wait_for(f"http://127.0.0.1:{port}/")
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 120)
        upload = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#photo input[type=file]")))
        upload.send_keys(str(photo_path))
        wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#photo img")))
        driver.find_element(By.CSS_SELECTOR, "#critique-button").click()
        critique = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#critique textarea").get_attribute("value"))
        overlay = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#saliency img")))
        assert critique.strip() == expected
        assert overlay.get_attribute("src")
        assert driver.execute_script("return arguments[0].naturalWidth", overlay) > 400
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
