"""The Gradio web demo: its model is found next to the checkout, it will not serve a random model unasked, and in
headless Chromium an upload gets a critique and the saliency picture, or the reason it cannot be used."""

import importlib.util
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

gradio = pytest.importorskip("gradio", reason="the web demo needs the [demo] extra")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium ([dev] extra)")

from conftest import PROMPT, free_port, random_image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def load_app_module():
    spec = importlib.util.spec_from_file_location("ase_mllm_app", ROOT / "examples" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_model_is_found_in_the_project_not_the_working_folder(tmp_path, monkeypatch, processor):
    app = load_app_module()
    project, elsewhere = tmp_path / "checkout", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert app.find_demo_model(project) is None
    model = project / "outputs" / "demo" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    assert app.find_demo_model(project) == model
    assert app.PROJECT == ROOT  # the real app looks next to its own checkout


def test_without_a_model_it_says_how_to_make_one_and_serves_nothing(tmp_path):
    """A copy of the app in a checkout without outputs/, started from another folder: status 2 and the way out."""
    project = tmp_path / "checkout"
    (project / "examples").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "app.py", project / "examples" / "app.py")
    (tmp_path / "elsewhere").mkdir()
    result = subprocess.run([sys.executable, str(project / "examples" / "app.py")], cwd=tmp_path / "elsewhere",
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"[app] no model to serve: {project / 'outputs' / 'demo' / 'model'} does not exist. Make it with `ase-mllm "
        f"demo` in {project} (a few minutes on a CPU), or pass --model PATH_OR_HUB_ID; --random-model serves an "
        "untrained random model (development only)."
    )
    assert not (project / "outputs").exists()


def test_random_model_flag_serves_a_saved_random_model_it_names(tmp_path, capsys):
    """`--random-model` (development only) saves a random tiny model in the project and says its critiques are
    noise; the folder loads on its own and critiques."""
    from modeling_ase_mllm.inference.captioning import load_model_and_processor

    app = load_app_module()
    folder = app.random_model(tmp_path)
    assert folder == str(tmp_path / "outputs" / "app" / "random-tiny")
    # (the last line: an installed DeepSpeed, imported by transformers on the way, logs its accelerator to stdout)
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"[app] serving an untrained random model ({folder}): its critiques are noise")
    model, processor = load_model_and_processor(folder)
    batch = processor(images=[random_image(300, 500)], text=["<image>\n" + PROMPT], return_tensors="pt")
    tokens = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert tokens.shape[1] == batch["input_ids"].shape[1] + 4


def test_the_page_names_a_local_model_by_its_folder_name_not_its_path(saved_model):
    """The page is public: it shows the model folder's name, never where the server keeps it."""
    import json

    app = load_app_module().build_app(str(saved_model))
    page = json.dumps(app.config)
    assert f"Model: `{saved_model.name}`" in page and str(saved_model) not in page
    assert load_app_module().model_label("OpenGVLab/InternVL2-2B") == "OpenGVLab/InternVL2-2B"


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
    """A photo over the megapixel bound shows the reason on the page; a good one gets the critique and picture."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Debian chromium and chromium-driver are required (`bash .ci/system-packages test` installs them)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    from modeling_ase_mllm.testing.tiny import build_tiny_model

    model = build_tiny_model(gate=0.5, seed=2)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    photo = random_image(300, 500, seed=8)
    photo_path = tmp_path / "photo.png"
    photo.save(photo_path)
    large_path = tmp_path / "large.png"
    random_image(1000, 1200, seed=9).save(large_path)  # 1.2 megapixels, over the server's bound of 1
    from modeling_ase_mllm.inference.chat import chat

    expected = chat(model, processor, photo, PROMPT, {"max_new_tokens": 12}).strip()
    expected_score = f"{float(model.score(images=[photo], processor=processor).scores[0]):.2f}"
    assert expected  # the page must show something we can recognise

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "app.py"), "--model", str(folder), "--port", str(port),
         "--max-new-tokens", "12", "--max-megapixels", "1"],
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
        wait = WebDriverWait(driver, 120)

        def upload_and_click(path):
            driver.get(f"http://127.0.0.1:{port}/")
            upload = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#photo input[type=file]")))
            upload.send_keys(str(path))
            wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#photo img")))
            driver.find_element(By.CSS_SELECTOR, "#critique-button").click()

        upload_and_click(large_path)
        reason = "image 'large.png' has 1.2 megapixels (1200x1000), over the limit of 1 (--max-megapixels raises it)"
        wait.until(lambda d: reason in d.find_element(By.TAG_NAME, "body").text)
        assert driver.find_element(By.CSS_SELECTOR, "#critique textarea").get_attribute("value") == ""

        upload_and_click(photo_path)
        critique = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#critique textarea").get_attribute("value"))
        overlay = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#saliency img")))
        assert critique.strip() == expected
        assert overlay.get_attribute("src")
        assert driver.execute_script("return arguments[0].naturalWidth", overlay) > 400
        # The aesthetic score, read off the page, with its distribution chart; the random model's is labelled.
        assert driver.find_element(By.CSS_SELECTOR, "#score textarea").get_attribute("value") == expected_score
        chart = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#score-chart img")))
        assert driver.execute_script("return arguments[0].naturalWidth", chart) > 100
        assert "Aesthetic score: EAT carries no trained weights" in driver.find_element(By.TAG_NAME, "body").text
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
