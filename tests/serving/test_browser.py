"""The page in a real headless Chromium (Debian's chromium + chromium-driver): drawing digits
for a network trained on MNIST digits, uploading and dropping image files for a colour
network trained on a folder.

Selenium is pointed at /usr/bin/chromedriver explicitly, so Selenium Manager never
downloads a browser or driver. Skipped, with the reason shown, where they are absent.
With ``CNNLAB_SCREENSHOTS=DIR`` the pages are saved there as PNGs to look at.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from image_runs import CLASSES, encoded, make_folder, picture, train_run
from PIL import Image, ImageDraw

from cnnlab.data import Splits
from cnnlab.models import parse_compact
from cnnlab.serving.predict import Predictor
from cnnlab.serving.serve import background_server, create_app

from .browser import screenshot

SEVEN = [(70, 60), (140, 60), (210, 60), (180, 130), (150, 200), (130, 250)]  # pad pixels
CASE1_MAPS = ("conv1", "conv2")
# A user's own network with three conv layers (as in test_serve.py).
OWN = (
    "Input(28,28,1) Conv2D(6,3,relu,name=c1) Conv2D(8,3,2,same,tanh,name=c2) "
    "MaxPooling2D(2,name=pool) Conv2D(12,3,name=c3) GlobalMaxPooling2D(name=gmp) "
    "Dense(10,softmax,name=out)"
)

# The network: 28x28 maps in the first layer, 12x12 in the second (untrained).
WIDE = (
    "Input(28,28,1) Conv2D(32,3,same,relu,name=conv1) MaxPooling2D(2,name=pool1) "
    "Conv2D(64,3,relu,name=conv2) Flatten(name=flat) Dense(10,softmax,name=out)"
)


@pytest.fixture(scope="module")
def site(tiny_run: dict[str, Path]) -> Iterator[str]:
    with background_server(create_app(Predictor.from_run(tiny_run["case1"]))) as url:
        yield url


@pytest.fixture(scope="module")
def own_site(tmp_path_factory: pytest.TempPathFactory, tiny_splits: Splits) -> Iterator[str]:
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.loop import fit

    out = tmp_path_factory.mktemp("own")
    desc = parse_compact(OWN, "mine")
    fit(
        TrainConfig(model=OWN, epochs=1),
        tiny_splits,
        out,
        description=desc,
        progress=False,
        log=lambda _m: None,
    )
    with background_server(create_app(Predictor.from_run(out))) as url:
        yield url


@pytest.fixture(scope="module")
def wide_site() -> Iterator[str]:
    import torch

    from cnnlab.models import Network

    torch.manual_seed(0)
    with background_server(create_app(Predictor(Network(parse_compact(WIDE, "wide"))))) as url:
        yield url


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rgb")
    return train_run("rgb", make_folder(root / "photos", "RGB"), root / "run", root / "cache")


@pytest.fixture(scope="module")
def rgb_site(rgb_run: Path) -> Iterator[str]:
    with background_server(create_app(Predictor.from_run(rgb_run))) as url:
        yield url


def open_page(driver: Any, url: str, model: str = "case1") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    WebDriverWait(driver, 30).until(
        lambda d: f"model {model} " in d.find_element(By.ID, "model").text
    )


def draw(driver: Any, points: list[tuple[int, int]], pointer: str = "mouse") -> None:
    """One stroke through ``points`` (pad pixels), with a mouse or a finger."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By

    pad = driver.find_element(By.ID, "pad")
    kind = interaction.POINTER_TOUCH if pointer == "touch" else interaction.POINTER_MOUSE
    actions = ActionBuilder(driver, mouse=PointerInput(kind, pointer), duration=20)
    # Offsets are from the element's centre (the pad is 280x280 CSS pixels).
    x0, y0 = points[0]
    actions.pointer_action.move_to(pad, x0 - 140, y0 - 140).pointer_down()
    for x, y in points[1:]:
        actions.pointer_action.move_to(pad, x - 140, y - 140)
    actions.pointer_action.pointer_up()
    actions.perform()


def wait_for_prediction(
    driver: Any, layers: tuple[str, ...] = CASE1_MAPS, labels: tuple[str, ...] = tuple("0123456789")
) -> dict[str, Any]:
    """Wait until the page shows one of ``labels``, the input and the feature-map grid of
    each of ``layers``, and has no answer still coming (aria-busy while one is)."""
    from selenium.webdriver.support.ui import WebDriverWait

    script = """
      const ids = arguments[0].map((name) => 'map-' + name);
      const img = (id) => document.getElementById(id);
      const ready = (id) => img(id) !== null && img(id).complete && img(id).naturalWidth > 0
        && img(id).src.startsWith('data:image/png');
      return {
        digit: img('digit').textContent,
        ready: ready('input') && ids.every(ready),
        maps: ids.map((id) => img(id) ? [img(id).naturalWidth, img(id).width] : null),
        figures: document.querySelectorAll('#maps figure').length,
        captions: [...document.querySelectorAll('#maps figcaption')].map((e) => e.textContent),
        top: [...document.querySelectorAll('.bar.top')].length,
        values: [...document.querySelectorAll('.bar .val')].map((e) => e.textContent),
        labels: [...document.querySelectorAll('.bar .label')].map((e) => e.textContent),
        status: document.getElementById('status').textContent,
        busy: document.querySelector('.result').getAttribute('aria-busy'),
      };
    """
    state: dict[str, Any] = {}

    def shown(d: Any) -> bool:
        state.update(d.execute_script(script, list(layers)))
        found = state["digit"] in labels
        return found and state["ready"] and state["busy"] == "false"

    WebDriverWait(driver, 30).until(shown, message=f"no prediction shown: {state}")
    return state


def test_drawing_shows_prediction_and_feature_maps(driver: Any, site: str) -> None:
    open_page(driver, site)
    draw(driver, SEVEN)
    state = wait_for_prediction(driver)
    assert state["top"] == 1
    assert abs(sum(float(v) for v in state["values"]) - 1.0) < 0.01
    # conv1: 8 columns of 26-pixel maps (215 px), conv2: 8 of 11 (95 px), both enlarged 3x
    assert [m[0] for m in state["maps"]] == [215, 95]
    assert [shown for _, shown in state["maps"]] == [645, 285]
    # What the page shows is the server's answer for what is on the pad.
    png = base64.b64decode(
        driver.execute_script("return document.getElementById('pad').toDataURL('image/png')")[22:]
    )
    answer = httpx.post(f"{site}/api/predict", content=png, params={"maps": "false"}).json()
    assert state["digit"] == str(answer["digit"]) == answer["label"]
    assert state["values"] == [f"{p:.3f}" for p in answer["probabilities"]]
    assert state["labels"] == [str(d) for d in range(10)]
    screenshot(driver, "digit-drawn")

    driver.find_element("id", "clear").click()
    assert driver.find_element("id", "digit").text == "–"


def test_own_network_shows_all_its_conv_layers(driver: Any, own_site: str) -> None:
    """A 28x28x1 network of the user's own, three conv layers: three grids, as described."""
    open_page(driver, own_site, model="mine")
    assert "3 conv layers" in driver.find_element("id", "model").text
    draw(driver, SEVEN)
    state = wait_for_prediction(driver, ("c1", "c2", "c3"))
    assert state["figures"] == 3 and state["top"] == 1 and len(state["values"]) == 10
    # c1: 6 maps of 26 (161 px), c2: 8 of 13 (111 px), c3: 8 columns of 4 (39 px)
    assert [m[0] for m in state["maps"]] == [161, 111, 39]
    assert state["captions"] == [
        "c1: 6 feature maps of 26×26 (after relu)",
        "c2: 8 feature maps of 13×13 (after tanh)",
        "c3: 12 feature maps of 4×4 (no activation)",
    ]
    png = base64.b64decode(
        driver.execute_script("return document.getElementById('pad').toDataURL('image/png')")[22:]
    )
    answer = httpx.post(f"{own_site}/api/predict", content=png, params={"maps": "false"}).json()
    assert state["values"] == [f"{p:.3f}" for p in answer["probabilities"]]


def map_cells(driver: Any) -> dict[str, Any]:
    """Per layer: screen pixels per map cell, one map's width, the grid's right edge."""
    return driver.execute_script(
        """
        const out = {page: document.documentElement.clientWidth,
                     note: document.getElementById('maps-scale')?.textContent};
        for (const [layer, side] of [['conv1', 28], ['conv2', 12]]) {
          const img = document.getElementById('map-' + layer), r = img.getBoundingClientRect();
          const cell = r.width / img.naturalWidth;
          out[layer] = {cell, map: cell * side, right: r.right,
                        tall: r.height / img.naturalHeight};
        }
        return out;
        """
    )


def test_maps_share_one_scale(driver: Any, wide_site: str) -> None:
    """28x28 maps are drawn larger than 12x12 ones: every layer at the same, stated, pixels
    per map cell, within the page's width, wide or narrow."""
    open_page(driver, wide_site, model="wide")
    draw(driver, SEVEN)
    state = wait_for_prediction(driver, ("conv1", "conv2"))
    assert [m[0] for m in state["maps"]] == [231, 103]  # 8 columns of 28 and of 12, 1-px gaps
    seen = map_cells(driver)
    one, two = seen["conv1"], seen["conv2"]
    assert one["cell"] == two["cell"] == one["tall"] == two["tall"] >= 2  # whole pixels
    assert one["map"] >= two["map"] and one["map"] == 28 * one["cell"]
    assert f"a map cell is {one['cell']:g}×{one['cell']:g} screen pixels" in seen["note"]
    assert max(one["right"], two["right"]) <= seen["page"]
    screenshot(driver, "maps-one-scale")
    from selenium.webdriver.support.ui import WebDriverWait

    try:  # a narrow page: the widest grid fits, every layer shrunk by the same factor
        driver.set_window_size(480, 1000)
        WebDriverWait(driver, 10).until(lambda d: map_cells(d)["conv1"]["cell"] < one["cell"])
        seen = map_cells(driver)
        one, two = seen["conv1"], seen["conv2"]
        assert one["cell"] == pytest.approx(two["cell"], abs=0.01) and one["map"] > two["map"]
        assert max(one["right"], two["right"]) <= seen["page"]
    finally:
        driver.set_window_size(1280, 1000)


def test_touch_drawing(driver: Any, site: str) -> None:
    open_page(driver, site)
    draw(driver, [(140, 40), (140, 140), (140, 250)], pointer="touch")  # a '1'
    assert wait_for_prediction(driver)["top"] == 1


def test_upload(driver: Any, site: str, tmp_path: Path) -> None:
    img = Image.new("L", (300, 200), 230)
    ImageDraw.Draw(img).ellipse([110, 30, 190, 170], outline=20, width=14)  # a pencil '0'
    path = tmp_path / "zero.jpg"
    img.save(path, format="JPEG")
    open_page(driver, site)
    driver.find_element("id", "file").send_keys(str(path))
    state = wait_for_prediction(driver)
    assert "inverted" in state["status"]


def test_blank_upload_shows_the_servers_message(driver: Any, site: str, tmp_path: Path) -> None:
    path = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(path)
    open_page(driver, site)
    driver.find_element("id", "file").send_keys(str(path))
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(
        lambda d: "no digit found" in d.find_element("id", "status").text
    )
    assert "error" in driver.find_element("id", "status").get_attribute("class")


def test_canvas_only_for_digit_networks(driver: Any, site: str, rgb_site: str) -> None:
    open_page(driver, site)
    assert driver.find_elements("id", "pad") and driver.find_elements("id", "clear")
    assert not driver.find_element("id", "drop").is_displayed()  # drop on the pad instead
    open_page(driver, rgb_site, model="rgbnet")
    assert not driver.find_elements("id", "pad") and not driver.find_elements("id", "clear")
    assert driver.find_element("id", "drop").is_displayed()
    assert "classify an image" in driver.title
    text = driver.find_element("id", "model").text
    assert "3 classes (bar 2, bar 10, ring)" in text and "input 20×24×3" in text


def test_upload_on_a_colour_network(driver: Any, rgb_site: str, tmp_path: Path) -> None:
    """A JPEG photo of a ring: the page names the class, shows the 20x24 colour input, the
    maps of c1 and c2, and (clicking a unit of c1) the weighted sum over red, green, blue."""
    path = tmp_path / "ring.jpg"
    picture("ring", (90, 70), 77).save(path, format="JPEG")
    open_page(driver, rgb_site, model="rgbnet")
    driver.find_element("id", "file").send_keys(str(path))
    state = wait_for_prediction(driver, ("c1", "c2"), tuple(CLASSES))
    answer = httpx.post(f"{rgb_site}/api/predict", content=path.read_bytes()).json()
    assert state["digit"] == answer["label"] and state["labels"] == CLASSES
    assert state["values"] == [f"{p:.3f}" for p in answer["probabilities"]]
    assert answer["label"] in state["status"]
    seen = driver.execute_script(
        "const i = document.getElementById('input'); return [i.naturalWidth, i.naturalHeight,"
        " i.width, i.height, document.getElementById('original').naturalWidth];"
    )
    assert seen == [24, 20, 168, 140, 90]  # the input, enlarged keeping its aspect; the photo
    click_first_unit(driver, "c1")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(
        lambda d: (
            "red" in d.find_element("id", "detail-channels").text
            and d.find_element("id", "detail").get_attribute("aria-busy") == "false"
        )
    )
    chips = driver.find_element("id", "detail-channels").text
    assert "3 input channels" in chips and "green" in chips and "blue" in chips
    assert not driver.find_element("id", "rf").get_attribute("hidden")
    screenshot(driver, "rgb-upload")


def click_first_unit(driver: Any, layer: str) -> None:
    """Click unit (1, 1) of map 0 in ``layer``'s grid image."""
    from selenium.webdriver.common.action_chains import ActionChains

    img = driver.find_element("id", f"map-{layer}")
    scale = driver.execute_script(
        "return arguments[0].clientWidth / arguments[0].naturalWidth", img
    )
    w, h = img.size["width"], img.size["height"]
    ActionChains(driver).move_to_element_with_offset(
        img, int(1.5 * scale - w / 2), int(1.5 * scale - h / 2)
    ).click().perform()


def test_drop_an_image_on_the_page(driver: Any, rgb_site: str) -> None:
    """A file dropped anywhere on the page is predicted (a DataTransfer made in the page)."""
    body = base64.b64encode(encoded(picture("bar 10", (40, 60), 3))).decode("ascii")
    open_page(driver, rgb_site, model="rgbnet")
    driver.execute_script(
        """
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
        const target = document.getElementById("maps");
        target.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true }));
        target.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true }));
        """,
        body,
    )
    state = wait_for_prediction(driver, ("c1", "c2"), tuple(CLASSES))
    answer = httpx.post(f"{rgb_site}/api/predict", content=base64.b64decode(body)).json()
    assert state["digit"] == answer["label"]
    assert driver.execute_script("return document.getElementById('original').naturalWidth") == 40
