"""`hypernoise demo` as a user meets it: the command serving on a free local port, its API (one
call), and the page in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven
by selenium; nothing downloaded at run time). The images served equal `hypernoise generate
--compare`'s for the same prompt and seed; times, rewards and the judge are shown; an empty
prompt is a message on the page and the server serves on. No request leaves 127.0.0.1.

The page's screenshot is kept in build/test-artifacts/ (HYPERNOISE_TEST_ARTIFACTS overrides);
docs/img/demo.png is a copy of it.
"""

import base64
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason='the demo needs its extra: pip install "hypernoise[demo]"')

from hypernoise.cli.main import main  # noqa: E402
from hypernoise.demo import SHIPPED_ADAPTER  # noqa: E402

PROMPT, SEED = "a photo of two squares", 1
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("HYPERNOISE_TEST_ARTIFACTS") or ROOT / "build" / "test-artifacts")
#: no proxy, whatever the environment says: every request of these tests goes to 127.0.0.1
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _benchmark():
    """benchmarks/demo_first_image.py, whose free_port and wait_page start the demo here too."""
    spec = importlib.util.spec_from_file_location("demo_first_image", ROOT / "benchmarks" / "demo_first_image.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _benchmark()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`hypernoise demo` on a free port (the built-in world, the shipped adapter); stopped by SIGTERM."""
    port, log = BENCH.free_port(), tmp_path_factory.mktemp("demo") / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1", "NO_PROXY": "127.0.0.1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hypernoise.cli.main", "demo", "--port", str(port),
                                 "--threads", "1"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}/"
        try:
            BENCH.wait_page(url, proc, timeout=90)
        except RuntimeError as e:
            pytest.fail(f"{e}:\n{log.read_text()[-2000:]}")
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0 and "stopped" in log.read_text(), log.read_text()[-2000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """`hypernoise generate --compare` for PROMPT and SEED: {"base": pixels, "hypernoise": pixels}."""
    out = tmp_path_factory.mktemp("generate") / "out"
    assert main(["generate", "--prompt", PROMPT, "--seed", str(SEED), "--adapter", str(SHIPPED_ADAPTER), "--compare",
                 "--threads", "1", "--out", str(out)]) == 0
    return {m: _pixels(next((out / m).glob(f"000-*-seed{SEED}.png")).read_bytes()) for m in ("base", "hypernoise")}


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_one_api_call_returns_the_generate_compare_images_and_their_numbers(server, reference):
    from gradio_client import Client

    result = Client(server[0], verbose=False).predict(PROMPT, SEED, api_name="/compare")
    columns = {c["method"]: c for c in result["columns"]}
    assert list(columns) == ["base", "hypernoise"] and result["reward_spec"] == "shapes:1"
    for method, column in columns.items():
        assert np.array_equal(_pixels(base64.b64decode(column["png_base64"])), reference[method])
        assert column["seconds_per_image"] > 0 and isinstance(column["reward"], float)
        assert column["judge"]["prompt"] == PROMPT


# ----------------------------------------------------------------------------- the browser
def _browser():
    """Headless Chromium through Debian's chromedriver (given by path: Selenium Manager never runs),
    every host name but 127.0.0.1 unresolvable, the network log on."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("the browser test needs Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver; .ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the test extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1500",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    os.environ.setdefault("SE_AVOID_STATS", "true")
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def _served_images(browser, ids) -> dict:
    """{element id: the src of its image} once every one of them shows an image served by the app."""
    from selenium.webdriver.common.by import By

    found = {}
    for elem_id in ids:
        srcs = [img.get_attribute("src") or "" for img in browser.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")]
        found[elem_id] = next((s for s in srcs if "/file=" in s), None)
    return found if all(found.values()) else {}


def _requested_hosts(browser) -> set:
    import json

    hosts = set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            match = re.match(r"^(?:https?|wss?)://([^/]+)", message["params"]["request"]["url"])
            if match:
                hosts.add(match.group(1))
    return hosts


def test_the_page_in_a_headless_chromium(server, reference, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, proc = server
    browser = _browser()
    try:
        browser.set_page_load_timeout(60)
        browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        prompt = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#prompt textarea"))
        prompt.send_keys(PROMPT)
        seed = browser.find_element(By.CSS_SELECTOR, "#seed input")
        seed.send_keys(Keys.CONTROL, "a")
        seed.send_keys(str(SEED))
        for box in ("#reno input", "#best-of-n input"):
            browser.find_element(By.CSS_SELECTOR, box).click()
        browser.find_element(By.CSS_SELECTOR, "#generate").click()
        ids = ("base-image", "hypernoise-image", "reno-image", "best-of-n-image")
        images = wait.until(lambda b: _served_images(b, ids))
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#plot canvas, #plot svg"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "demo-page.png"))

        for method in ("base", "hypernoise"):  # the very images `generate --compare` writes
            with LOCAL.open(images[f"{method}-image"], timeout=10) as response:
                assert np.array_equal(_pixels(response.read()), reference[method])
        for method in ("base", "hypernoise", "reno", "best-of-n"):
            stats = browser.find_element(By.CSS_SELECTOR, f"#{method}-stats").text
            assert re.search(r"[\d.]+ m?s per image", stats) and re.search(r"reward -?\d+\.\d{4} \(shapes:1\)", stats)
            assert re.search(r"judge: (correct|wrong)", stats), stats
        browser.find_element(By.CSS_SELECTOR, "#download").click()  # the grid, as a PNG that says what it shows
        grid = Image.open(WebDriverWait(browser, 30).until(lambda b: next(tmp_path.glob("*.png"), None)))
        assert grid.text["prompt"] == PROMPT and grid.text["seed"] == str(SEED) and grid.size[1] > 4 * 256

        prompt.send_keys(Keys.CONTROL, "a")
        prompt.send_keys(Keys.DELETE)
        browser.find_element(By.CSS_SELECTOR, "#generate").click()
        wait.until(lambda b: "enter a prompt" in b.find_element(By.TAG_NAME, "body").text)
        assert proc.poll() is None
        with LOCAL.open(url, timeout=10) as response:  # the server serves on
            assert response.status == 200
        assert _requested_hosts(browser) <= {url.split("/")[2]}  # nothing left the machine
    finally:
        browser.quit()


@pytest.mark.slow
def test_the_time_to_first_image_benchmark_writes_its_table_and_json(tmp_path, capsys):
    import json

    assert BENCH.main(["--runs", "1", "--out", str(tmp_path / "first.json")]) == 0
    report = json.loads((tmp_path / "first.json").read_text())
    run = report["runs"][0]
    assert 0 < run["page_s"] <= run["first_image_s"] and report["machine"]["cores"] >= 1
    assert "median time to first image" in capsys.readouterr().out
