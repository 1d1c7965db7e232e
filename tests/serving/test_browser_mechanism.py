"""The mechanism page and the digit page's detail view in a real headless Chromium.

As tests/serving/test_browser.py: Debian's chromium + chromium-driver, Selenium pointed at
/usr/bin/chromedriver; skipped, with the reason shown, where they are absent. The servers
run behind the same guards as ``cnnlab serve`` (its Content-Security-Policy included), and
each test fails on any console error (a CSP violation shows up as one). Set
``CNNLAB_SCREENSHOTS=DIR`` to keep screenshots of the pages.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.models import Network, parse_compact
from cnnlab.serving import mechanism
from cnnlab.serving.predict import Predictor
from cnnlab.serving.serve import background_server, create_app

from .browser import screenshot

SEVEN = [(70, 60), (140, 60), (210, 60), (180, 130), (150, 200), (130, 250)]  # pad pixels
OWN = (
    "Input(28,28,1) Conv2D(4,4,2,same,relu,name=c1) Conv2D(6,3,dilation_rate=2,name=c2) "
    "MaxPooling2D(2,name=pool) Conv2D(5,2,same,name=c3) Flatten(name=flat) Dense(10,softmax)"
)


def no_console_errors(driver: Any, allow: tuple[str, ...] = ()) -> None:
    """No console errors (CSP violations and script errors are), but those ``allow`` names."""
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert [e for e in errors if not any(a in e for a in ("favicon.ico", *allow))] == []


def wait(driver: Any, what: Any, message: str = "") -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 30).until(what, message=message)


# ------------------------------------------------------------ the mechanism page


@pytest.fixture(scope="module")
def mech_site() -> Iterator[str]:
    with background_server(mechanism.create_app()) as url:
        yield url


def set_field(driver: Any, name: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    el = driver.find_element("id", name)
    if el.tag_name == "select":
        Select(el).select_by_value(value)
    else:
        el.clear()
        el.send_keys(value)


def settled(driver: Any, size: str) -> dict[str, Any]:
    """Wait until the page shows an output of ``size`` with no answer still coming."""
    state: dict[str, Any] = {}

    def ready(d: Any) -> bool:
        state.update(d.execute_script(
            "return {size: document.getElementById('out-size').textContent,"
            " busy: document.querySelector('.stage').getAttribute('aria-busy')};"
        ))  # fmt: skip
        return state["size"] == size and state["busy"] == "false"

    wait(driver, ready, f"the page never showed an output of {size}: {state}")
    return state


def grid(driver: Any, name: str) -> np.ndarray:
    """The numbers a grid shows, as the page lays them out (rows of cells)."""
    rows = driver.execute_script(
        "const g = document.getElementById(arguments[0]);"
        "const n = Number(getComputedStyle(g).getPropertyValue('--cols'));"
        "const v = [...g.children].map((c) => Number(c.textContent.replace('−', '-')));"
        "return Array.from({length: v.length / n}, (_, r) => v.slice(r * n, (r + 1) * n));",
        f"grid-{name}",
    )
    return np.array(rows, dtype=np.float64)


def torch_same(x: np.ndarray, k: np.ndarray, s: int) -> np.ndarray:
    """TensorFlow's same padding written out, then torch's conv2d in float64."""
    pads = []
    for n, kk in zip(x.shape, k.shape, strict=True):
        total = max((math.ceil(n / s) - 1) * s + kk - n, 0)
        pads.append((total // 2, total - total // 2))
    xt = F.pad(torch.from_numpy(x)[None, None], [*pads[1], *pads[0]])
    return F.conv2d(xt, torch.from_numpy(k)[None, None], stride=s)[0, 0].numpy()


def test_mechanism_page_follows_stride_and_padding(driver: Any, mech_site: str) -> None:
    driver.get(mech_site + "/mechanism")
    settled(driver, "5×5")  # 7x7 input, 3x3 kernel, valid, stride 1
    captions = [e.text for e in driver.find_elements("css selector", ".panel figcaption .tag")]
    assert captions[:3] == ["INPUT", "KERNEL", "OUTPUT"]  # labelled, as CSS capitalises them
    set_field(driver, "kernel_size", "4")
    set_field(driver, "stride", "2")
    set_field(driver, "padding", "same")
    settled(driver, "4×4")  # ceil(7 / 2)
    formula = driver.find_element("id", "formula").text
    assert "⌈7 / 2⌉ = 4" in formula and "1 before, 2 after" in formula  # the odd zero after
    padded, k, out = grid(driver, "input"), grid(driver, "kernel"), grid(driver, "output")
    assert padded.shape == (10, 10) and k.shape == (4, 4)
    x = padded[1:8, 1:8]  # the input inside its padding, as the page draws it
    assert not padded[0].any() and not padded[8:].any() and not padded[:, 8:].any()
    ref = torch_same(x, k, 2)
    np.testing.assert_array_equal(out, ref)
    driver.find_element("css selector", '#grid-output .cell[data-cell="1,2"]').click()
    text = driver.find_element("id", "cell-sum").text
    assert text.startswith("output (1, 2) = ") and text.endswith(
        f"= {ref[1, 2]:g}".replace("-", "−")
    )
    window = driver.find_elements("css selector", "#grid-input .cell.tap")
    assert len(window) == 16  # the 4x4 window is highlighted on the padded input
    screenshot(driver, "mechanism-same-stride2")

    set_field(driver, "padding", "valid")
    settled(driver, "2×2")  # floor((7 - 4) / 2) + 1
    assert "⌊(7 + 0 + 0 − 1·(4 − 1) − 1) / 2⌋ + 1" in driver.find_element("id", "formula").text
    set_field(driver, "pool", "max")
    set_field(driver, "pool_size", "2")
    settled(driver, "2×2 → 1×1")
    driver.find_element("css selector", '#grid-pooled .cell[data-cell="0,0"]').click()
    out = grid(driver, "output")
    assert driver.find_element("id", "cell-sum").text.endswith(f"= {out.max():g}".replace("-", "−"))
    no_console_errors(driver)


def test_mechanism_page_1d_dilation_and_play(driver: Any, mech_site: str) -> None:
    driver.get(mech_site + "/mechanism")
    settled(driver, "5×5")
    set_field(driver, "dims", "1")
    set_field(driver, "input_size", "12")
    set_field(driver, "dilation", "2")
    settled(driver, "8")  # 12 - 2 * (3 - 1)
    x, k, out = grid(driver, "input")[0], grid(driver, "kernel")[0], grid(driver, "output")[0]
    ref = F.conv1d(torch.from_numpy(x)[None, None], torch.from_numpy(k)[None, None], dilation=2)
    np.testing.assert_array_equal(out, ref[0, 0].numpy())
    taps = driver.find_elements("css selector", "#grid-input .cell.tap")
    assert [t.get_attribute("data-cell") for t in taps] == ["0", "2", "4"]  # the holes show
    where = driver.find_element("id", "where").text
    driver.find_element("id", "play").click()
    wait(driver, lambda d: d.find_element("id", "where").text != where, "play did not step")
    driver.find_element("id", "play").click()  # pause
    set_field(driver, "kernel_size", "7")
    set_field(driver, "dilation", "3")  # spans 19 > 12: a message, not a crash
    wait(driver, lambda d: "kernel spans 19" in d.find_element("id", "status").text)
    screenshot(driver, "mechanism-1d-error")
    no_console_errors(driver, allow=("status of 422",))  # the answer it shows


def test_mechanism_page_symbol_switch_and_padding_look(driver: Any, mech_site: str) -> None:
    """⋆ by default; switching to ∗ shows the server's convolution and the flipped weights;
    padding under the window keeps its dashed border and white fill."""
    driver.get(mech_site + "/mechanism")
    set_field(driver, "padding", "same")
    settled(driver, "7×7")
    symbol = driver.find_element("id", "op-symbol")
    assert symbol.text == "⋆" and "cross-correlation" in symbol.get_attribute("title")
    params = dict(input_size=7, kernel_size=3, padding="same", seed=0)
    api = f"{mech_site}/api/mechanism"
    corr = httpx.get(api, params=params).json()
    conv = httpx.get(api, params=params | {"operation": "convolution"}).json()
    assert corr["output"] != conv["output"]  # the default kernel is not symmetric
    np.testing.assert_array_equal(grid(driver, "output"), corr["output"])
    driver.find_element("css selector", '#grid-output .cell[data-cell="0,0"]').click()
    style = """
      return [...document.querySelectorAll(arguments[0])].map((c) => {
        const s = getComputedStyle(c);
        return [s.borderTopStyle, s.borderLeftStyle, s.backgroundColor];
      });
    """
    pads = driver.execute_script(style, "#grid-input .cell.pad.tap")
    inside = driver.execute_script(style, "#grid-input .cell.tap:not(.pad)")
    assert len(pads) == 5 and len(inside) == 4  # the 3x3 window at (0, 0): row 0, column 0
    assert {tuple(p) for p in pads} == {("dashed", "dashed", "rgb(255, 255, 255)")}
    assert {tuple(p) for p in inside} == {("solid", "solid", "rgb(47, 111, 222)")}
    screenshot(driver, "mechanism-correlation")

    set_field(driver, "operation", "convolution")
    wait(
        driver,
        lambda d: (
            d.find_element("id", "op-symbol").text == "∗"
            and d.find_element("css selector", ".stage").get_attribute("aria-busy") == "false"
        ),
        "the symbol never turned to ∗",
    )
    out = grid(driver, "output")
    np.testing.assert_array_equal(out, conv["output"])
    np.testing.assert_array_equal(grid(driver, "kernel"), conv["kernel"])  # shown as given
    driver.find_element("css selector", '#grid-output .cell[data-cell="2,3"]').click()
    mini = driver.execute_script(
        "return [...document.getElementById('mini-kernel').children]"
        ".map((c) => Number(c.textContent.replace('−', '-')));"
    )
    np.testing.assert_array_equal(np.reshape(mini, (3, 3)), np.flip(conv["kernel"]))
    assert driver.find_element("id", "cap-mini-kernel").text == "kernel weights, flipped"
    text = driver.find_element("id", "cell-sum").text
    assert text.endswith(f"= {out[2, 3]:g}".replace("-", "−"))
    assert driver.execute_script(style, "#grid-input .cell.pad.tap") == []  # inside: no pad
    screenshot(driver, "mechanism-convolution")
    set_field(driver, "operation", "correlation")
    wait(driver, lambda d: d.find_element("id", "op-symbol").text == "⋆")
    no_console_errors(driver)


# ------------------------------------------------------------ the digit page's detail view


@pytest.fixture(scope="module")
def site(tiny_run: dict[str, Path]) -> Iterator[str]:
    with background_server(create_app(Predictor.from_run(tiny_run["case1"]))) as url:
        yield url


@pytest.fixture(scope="module")
def own_site() -> Iterator[str]:
    torch.manual_seed(0)
    predictor = Predictor(Network(parse_compact(OWN, "mine")))
    with background_server(create_app(predictor)) as url:
        yield url


def draw_seven(driver: Any, site: str, model: str) -> None:
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    driver.get(site + "/")
    wait(driver, lambda d: f"model {model} " in d.find_element("id", "model").text)
    pad = driver.find_element("id", "pad")
    actions = ActionBuilder(driver, duration=20)
    actions.pointer_action.move_to(pad, SEVEN[0][0] - 140, SEVEN[0][1] - 140).pointer_down()
    for x, y in SEVEN[1:]:
        actions.pointer_action.move_to(pad, x - 140, y - 140)
    actions.pointer_action.pointer_up()
    actions.perform()
    wait(
        driver,
        lambda d: (
            d.find_element("id", "digit").text in "0123456789"
            and d.find_element("css selector", ".result").get_attribute("aria-busy") == "false"
        ),
    )


def click_unit(driver: Any, layer: str, channel: int, y: int, x: int, size: int) -> None:
    """Click unit (y, x) of map ``channel`` in the layer's grid image (8 maps a row)."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    img = driver.find_element("id", f"map-{layer}")
    scale = img.size["width"] / driver.execute_script("return arguments[0].naturalWidth", img)
    col, row = channel % 8, channel // 8
    px, py = (col * (size + 1) + x + 0.5) * scale, (row * (size + 1) + y + 0.5) * scale
    actions = ActionBuilder(driver, duration=20)
    w, h = img.size["width"], img.size["height"]
    actions.pointer_action.move_to(img, int(px - w / 2), int(py - h / 2)).click()
    actions.perform()


def shown_detail(driver: Any, title: str) -> dict[str, Any]:
    script = """
      const card = document.getElementById('detail'), rf = document.getElementById('rf');
      const sum = document.getElementById('detail-sum');
      return {title: document.getElementById('detail-title').textContent, hidden: card.hidden,
              busy: card.getAttribute('aria-busy'), sum: sum.textContent,
              value: sum.dataset.value, rfHidden: rf.hidden,
              rf: [rf.offsetTop, rf.offsetLeft, rf.offsetHeight, rf.offsetWidth],
              scale: document.getElementById('input').clientWidth / 28,
              field: document.getElementById('detail-field').textContent,
              markers: document.querySelectorAll('.map-wrap .marker').length};
    """
    state: dict[str, Any] = {}

    def ready(d: Any) -> bool:
        state.update(d.execute_script(script))
        return state["title"] == title and state["busy"] == "false" and not state["hidden"]

    wait(driver, ready, f"no detail for {title}: {state}")
    return state


def pad_png(driver: Any) -> bytes:
    url = driver.execute_script("return document.getElementById('pad').toDataURL('image/png')")
    return base64.b64decode(url.split(",", 1)[1])


def test_clicking_a_feature_map_pixel_shows_its_field_and_sum(driver: Any, site: str) -> None:
    draw_seven(driver, site, "case1")
    click_unit(driver, "conv1", 3, 8, 12, 26)
    state = shown_detail(driver, "conv1 · map 3 · unit (y 8, x 12)")
    s = state["scale"]
    assert not state["rfHidden"] and state["markers"] == 1
    assert state["rf"] == [round(8 * s), round(12 * s), round(3 * s), round(3 * s)]  # 3x3
    assert "Σ products = " in state["sum"] and "the map's value" in state["sum"]
    # the page shows the server's numbers for what is on the pad
    answer = httpx.post(f"{site}/api/detail", content=pad_png(driver),
                        params=dict(layer="conv1", channel=3, y=8, x=12)).json()  # fmt: skip
    assert float(state["value"]) == answer["value"]
    assert len(driver.find_elements("css selector", "#detail-window .cell")) == 9

    click_unit(driver, "conv2", 10, 4, 5, 11)
    state = shown_detail(driver, "conv2 · map 10 · unit (y 4, x 5)")
    assert state["rf"] == [round(8 * s), round(10 * s), round(8 * s), round(8 * s)]  # 8x8 at 2x
    assert "16 input channels" in driver.find_element("id", "detail-channels").text
    assert "over 16 channels" in state["sum"]
    screenshot(driver, "digit-detail-conv2")
    driver.find_element("id", "clear").click()
    wait(driver, lambda d: d.find_element("id", "detail").get_attribute("hidden") is not None)
    assert driver.find_element("id", "rf").get_attribute("hidden") is not None
    no_console_errors(driver)


def test_own_network_field_reaches_into_the_padding(driver: Any, own_site: str) -> None:
    draw_seven(driver, own_site, "mine")
    click_unit(driver, "c1", 0, 0, 0, 14)  # 4x4 stride 2 same: 1 zero before
    state = shown_detail(driver, "c1 · map 0 · unit (y 0, x 0)")
    s = state["scale"]
    assert state["rf"] == [0, 0, round(3 * s), round(3 * s)]  # rows -1..2, clipped to 0..2
    assert "rows -1–2" in state["field"] and "past the border" in state["field"]
    click_unit(driver, "c3", 1, 4, 4, 5)
    state = shown_detail(driver, "c3 · map 1 · unit (y 4, x 4)")
    assert not state["rfHidden"] and "the map's value" in state["sum"]
    screenshot(driver, "digit-detail-own")
    no_console_errors(driver)
