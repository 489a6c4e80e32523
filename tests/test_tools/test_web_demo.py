"""The web page of demo/web_demo.py in a real browser: the demo is served as a user starts it
(a subprocess on 127.0.0.1) with the trained quick-start Mask R-CNN, and headless Chromium
(Debian's ``chromium`` and ``chromedriver``, driven by Selenium) uploads one of the page's
examples, reads the drawn result and the table, and tries a file that is not an image and a
model that does not load. The command-line errors (port in use, unknown model) need no browser.

``RAVLT_WEB_DEMO_SCREENSHOT=docs/figures/web_demo.png pytest tests/test_tools/test_web_demo.py``
also writes the screenshot of docs/web_demo.md.
"""
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import REPO, load_script, run_tool, tool_env

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
CHROMEDRIVER = shutil.which('chromedriver') or '/usr/bin/chromedriver'
SCREENSHOT_ENV = 'RAVLT_WEB_DEMO_SCREENSHOT'
SCORE_THR = 0.3  # the page's initial threshold (--pred-score-thr)
START_TIMEOUT = 180  # s: imports and Gradio's start on two loaded cores
RESULT_TIMEOUT = 120  # s: the first request also builds the model
QUICK_NAME = 'mask-rcnn_ravlt-t_fpn_1xb4-8e_coco-shapes'  # the quick-start detector's config

pytestmark = pytest.mark.usefixtures('one_thread')  # the test's own inferencer

needs_browser = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason=f'needs Chromium and its driver ({CHROMIUM}, {CHROMEDRIVER}): apt-get install '
    'chromium chromium-driver (the set-up of the README installs them)')


@pytest.fixture(scope='module')
def web_demo():
    """demo/web_demo.py as a module (for its example images)."""
    return load_script('demo/web_demo.py')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture(scope='module')
def server(quickstart_detector, module_tmp):
    """The demo serving the quick-start detector and the same config with a damaged checkpoint
    (listed as ``mask-rcnn_ravlt-t_fpn_1xb4-8e_coco-shapes (broken)``), on 127.0.0.1 at a free
    port."""
    tmp = module_tmp('web_demo')
    broken = tmp / 'broken.pth'
    broken.write_bytes(b'not a checkpoint')
    port = free_port()
    log = tmp / 'server.log'
    cmd = [sys.executable, 'demo/web_demo.py',
           f'{quickstart_detector.config}:{quickstart_detector.checkpoint}',
           f'{quickstart_detector.config}:{broken}', '--port', str(port), '--device', 'cpu',
           '--pred-score-thr', str(SCORE_THR)]
    with open(log, 'w') as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=tool_env(), stdout=out,
                                stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}/'
    try:
        # served once the page's fixture has waited for it (see ``page``): the test's own
        # work goes on meanwhile
        yield SimpleNamespace(url=url, proc=proc, log=log, port=port,
                              models=[QUICK_NAME, f'{QUICK_NAME} (broken)'])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_served(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f'web_demo.py exited ({proc.returncode}):\n{log.read_text()[-4000:]}')
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f'web_demo.py did not serve {url} in {START_TIMEOUT} s:\n'
                f'{log.read_text()[-4000:]}')


@pytest.fixture(scope='module')
def browser():
    """Headless Chromium, its network requests logged (to check that none leaves the machine)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
                '--window-size=1280,1000', '--lang=en-US'):
        options.add_argument(arg)
    options.set_capability('goog:loggingPrefs', {'performance': 'ALL'})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, server):
    """The demo's page, freshly loaded, ready for an upload."""
    wait_until_served(server.url, server.proc, server.log)
    browser.get(server.url)
    wait_for(browser, lambda: find(browser, '#image input[type=file]'), 60, 'the upload field')
    return browser


# --------------------------------------------------------------------------------------------
# Reading and driving the page (Gradio's ids are those web_demo.py gives its components; the
# table is read through its ARIA roles)
# --------------------------------------------------------------------------------------------
def find(driver, css):
    return driver.find_elements(By.CSS_SELECTOR, css)


def wait_for(driver, condition, timeout, what):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda _: condition())
    except TimeoutException:
        pytest.fail(f'the page did not show {what} within {timeout} s; it shows:\n'
                    f'{find(driver, "body")[0].text[-2000:]}')


def summary(driver) -> str:
    return find(driver, '#summary')[0].text


def upload(driver, path):
    """Upload ``path``, after removing the image shown (if any)."""
    remove_image(driver)
    find(driver, '#image input[type=file]')[0].send_keys(str(path))


def remove_image(driver):
    """Remove the image shown, if any, and wait for the emptied result."""
    removes = find(driver, '#image button[aria-label="Remove Image"]')
    if removes:
        removes[0].click()
        wait_for(driver, lambda: 'Upload an image' in summary(driver), 30, 'an empty result')


def wait_for_result(driver) -> str:
    return wait_for(driver, lambda: 'Time per image' in summary(driver) and summary(driver),
                    RESULT_TIMEOUT, 'a result')


def wait_for_error(driver, text) -> str:
    def error():
        messages = [e.text for e in find(driver, '.toast-body')]
        return next((m for m in messages if text in m), None)
    return wait_for(driver, error, RESULT_TIMEOUT, f'an error saying "{text}"')


def close_errors(driver):
    for button in find(driver, '.toast-close'):
        button.click()


def table(driver):
    """The table's headers, its number of rows (ARIA's count: the table draws only the rows in
    view) and the rows drawn, as text."""
    headers = [cell.get_attribute('title') for cell in find(driver, '#table [role=columnheader]')]
    grid = find(driver, '#table [role=grid]')[0]
    count = int(grid.get_attribute('aria-rowcount')) - 1  # the header row counts
    rows = [[cell.text for cell in row.find_elements(By.CSS_SELECTOR, '[role=gridcell]')]
            for row in find(driver, '#table .virtual-body [role=row]')]
    return headers, count, rows


def choose_model(driver, label):
    find(driver, '#model input')[0].click()
    option = wait_for(driver, lambda: next((o for o in find(driver, '[role=option]')
                                            if o.get_attribute('aria-label') == label), None),
                      10, f'the model {label} in the list')
    option.click()


def result_image(driver, server) -> np.ndarray:
    """The drawn result the page shows, fetched as the browser fetched it."""
    img = wait_for(driver, lambda: next((i for i in find(driver, '#result img')
                                         if int(i.get_attribute('naturalWidth') or 0) > 0), None),
                   30, 'the result image')
    src = img.get_attribute('src')
    assert src.startswith(server.url), src
    with urllib.request.urlopen(src, timeout=10) as response:
        return cv2.imdecode(np.frombuffer(response.read(), np.uint8), cv2.IMREAD_COLOR)


def requested_urls(driver):
    """Every URL the browser asked for since the last call (Chrome's performance log)."""
    urls = []
    for entry in driver.get_log('performance'):
        message = json.loads(entry['message'])['message']
        if message['method'] == 'Network.requestWillBeSent':
            urls.append(message['params']['request']['url'])
    return urls


def save_screenshot(driver, path: Path) -> None:
    """A PNG of the page at ``path``: palette colours (a docs figure of tens of KB), written
    whole (a temporary name, then renamed)."""
    shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert('RGB')
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + '.partial.png')
    shot.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(partial, optimize=True)
    os.replace(partial, path)


# --------------------------------------------------------------------------------------------
# What the page should show
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def examples(web_demo, module_tmp):
    """The page's example images, as the demo writes them."""
    return web_demo.write_examples(str(module_tmp('web_demo_examples')))


@pytest.fixture(scope='module')
def expected(quickstart_detector, examples):
    """What mmdet's inferencer (the project's, as the demo loads it) finds in the first example:
    (class, score, box) per instance, best first."""
    from ravlt_dense.apis import RAVLTDetInferencer
    from ravlt_dense.tools.images import read_image
    inferencer = RAVLTDetInferencer(model=str(quickstart_detector.config),
                                    weights=str(quickstart_detector.checkpoint), device='cpu',
                                    show_progress=False)
    sample = inferencer(read_image(examples[0]), return_datasamples=True)['predictions'][0]
    classes = inferencer.model.dataset_meta['classes']
    found = sample.pred_instances.cpu()
    order = found.scores.argsort(descending=True).tolist()
    return [(classes[found.labels[i]], float(found.scores[i]), found.bboxes[i].tolist())
            for i in order]


def assert_rows_match(rows, count, expected, score_thr):
    """The table lists exactly the instances above ``score_thr``, in order, with their class,
    score (3 decimals) and box (0.1 px)."""
    above = [e for e in expected if e[1] > score_thr]
    assert count == len(above), (count, above)
    assert rows and len(rows) <= count, rows  # the rows in view
    for row, (name, score, box) in zip(rows, above):
        assert row[0] == name, (rows, above)
        assert abs(float(row[1]) - score) < 2e-3, (rows, above)
        assert np.allclose([float(v) for v in row[2:]], box, atol=0.15), (rows, above)


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------
@needs_browser
def test_page_detects_the_shapes_of_an_uploaded_example(server, examples, expected, page,
                                                        tmp_path):
    assert any(score > SCORE_THR for _, score, _ in expected), \
        f'the quick-start detector finds nothing above {SCORE_THR} in {examples[0]}: {expected}'
    upload(page, examples[0])
    text = wait_for_result(page)
    assert text.startswith(f'{QUICK_NAME} (instance segmentation)'), text
    headers, count, rows = table(page)
    assert headers == ['class', 'score', 'x1', 'y1', 'x2', 'y2']
    assert_rows_match(rows, count, expected, SCORE_THR)
    assert f'{count} instance(s) with score > {SCORE_THR:.2f}' in text

    # the drawn result: the example's size, with the predictions painted over it
    drawn, original = result_image(page, server), cv2.imread(examples[0])
    assert drawn.shape == original.shape
    assert np.abs(drawn.astype(int) - original).max() > 50

    save_screenshot(page, tmp_path / 'web_demo.png')
    if os.environ.get(SCREENSHOT_ENV):
        save_screenshot(page, REPO / os.environ[SCREENSHOT_ENV])

    # a lower threshold, typed into the slider's box, then Run: more rows, the same model
    low = 0.1
    box = find(page, '#score-thr input[type=number]')[0]
    box.clear()
    box.send_keys(f'{low}\n')
    find(page, '#run')[0].click()
    wait_for(page, lambda: f'score > {low:.2f}' in summary(page), RESULT_TIMEOUT,
             f'the result at threshold {low}')
    _, count_low, rows = table(page)
    assert count_low > count
    assert_rows_match(rows, count_low, expected, low)

    # everything the page loaded came from the demo's server (no fonts, scripts or analytics
    # from elsewhere)
    outside = [url for url in requested_urls(page)
               if not url.startswith((server.url, 'data:', 'blob:'))]
    assert not outside, outside


@needs_browser
def test_non_image_is_refused_and_the_page_keeps_serving(server, examples, expected, page,
                                                         tmp_path):
    notes = tmp_path / 'notes.png'
    notes.write_text('a text file named like an image\n')
    upload(page, notes)
    message = wait_for_error(page, 'notes.png is not an image')
    assert 'upload an image file' in message
    close_errors(page)
    # the next request is served: an example clicked in the page's list
    remove_image(page)
    next(button for button in find(page, '#examples button')
         if button.find_elements(By.CSS_SELECTOR, f'img[src$="{Path(examples[0]).name}"]')).click()
    wait_for_result(page)
    _, count, rows = table(page)
    assert_rows_match(rows, count, expected, SCORE_THR)
    assert server.proc.poll() is None


@needs_browser
def test_model_that_fails_to_load_is_reported_on_the_page(server, examples, expected, page):
    upload(page, examples[0])
    wait_for_result(page)
    choose_model(page, server.models[1])
    message = wait_for_error(page, 'could not be loaded')
    assert f'{server.models[1]} could not be loaded' in message and 'broken.pth' in message
    close_errors(page)
    # the working model still serves: a new request (the page keeps the failed one's result)
    remove_image(page)
    choose_model(page, server.models[0])
    upload(page, examples[0])
    assert wait_for_result(page).startswith(server.models[0] + ' (')
    _, count, rows = table(page)
    assert_rows_match(rows, count, expected, SCORE_THR)


def test_port_in_use_is_refused_at_start():
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_tool(['demo/web_demo.py', 'mask-rcnn_ravlt-t_fpn_amp-1x_coco', '--port', port],
                        check=False, timeout=120)
    assert proc.returncode == 2
    assert f'cannot serve on 127.0.0.1:{port}' in proc.stderr and '--port' in proc.stderr


@pytest.mark.parametrize('model, message', [
    ('mask-rcnn_ravlt-x_fpn_amp-1x_coco', "Unknown model 'mask-rcnn_ravlt-x_fpn_amp-1x_coco'"),
    (f'configs/quickstart/{QUICK_NAME}.py', 'give the checkpoint of a config as '
     'CONFIG:CHECKPOINT'),
    (f'configs/quickstart/{QUICK_NAME}.py:missing.pth', 'checkpoint not found: missing.pth'),
])
def test_bad_model_is_refused_at_start(web_demo, model, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        web_demo.parse_args([model, '--port', str(free_port())])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert message in error, error
    if 'Unknown' in message:
        assert 'mask-rcnn_ravlt-t_fpn_amp-1x_coco' in error  # the zoo's names are listed
