"""The generator in nerfstudio's viewer: controls as plain values, planes reused between renders, viewers that
listen on 127.0.0.1 unless told otherwise, ``ns-viewer`` on a trained tiny run driven through its web page in
headless Chromium, and both viewers on a copy of that run whose data folder is gone.

The browser test needs ``/usr/bin/chromium`` (Debian package ``chromium``) and ``playwright`` (the ``test``
extra); without them it is skipped, or fails when ``TRIPLANE_GAN_NS_REQUIRE_BROWSER=1`` (CI).  Its screenshots
are kept in ``tests/.cache/viewer-screenshots/``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

NS_VIEWER = str(Path(sys.executable).with_name("ns-viewer"))
TRIPLANE_GAN = str(Path(sys.executable).with_name("triplane-gan"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).parent / ".cache" / "viewer-screenshots"


# ---- without a viewer --------------------------------------------------------------------------------------
def test_controls_are_plain_values_without_a_viewer(tiny_model):
    controls = tiny_model.controls
    assert controls.current().class_index == 0 and controls.current().seed == 0
    assert controls.current().truncation == pytest.approx(0.7)
    assert controls.select_class("c") == 2
    assert controls.class_index.value == 2 and controls.class_name.value == "c"
    controls.select_class(3)
    assert controls.class_name.value == "d"
    controls.seed.value = 11
    controls.truncation.value = 1.5  # clamped when read
    assert (controls.current().class_index, controls.current().seed, controls.current().truncation) == (3, 11, 1.0)
    seeds = {controls.resample() for _ in range(4)}
    assert len(seeds) > 1 and controls.current().seed in seeds
    with pytest.raises(ValueError, match="unknown class 'zebra'"):
        controls.select_class("zebra")
    with pytest.raises(ValueError, match="out of range"):
        controls.select_class(4)


def test_duplicate_class_names_get_distinct_labels():
    from triplane_gan_ns.viewer_controls import GeneratorControls

    controls = GeneratorControls(["crane", "tench", "crane"])
    assert controls.class_labels == ["crane (0)", "tench", "crane (2)"]
    assert controls.select_class("crane (2)") == 2 and controls.lookup("crane") == 0
    single = GeneratorControls([])
    assert single.class_labels == ["class 0"] and single.class_index.disabled


def test_nerfstudio_finds_the_controls(tiny_model):
    from nerfstudio.viewer.utils import parse_object
    from nerfstudio.viewer.viewer_elements import ViewerControl, ViewerElement

    found = {path: element.name for path, element in parse_object(tiny_model, ViewerElement, "Custom Elements")}
    assert found == {
        "Custom Elements/controls/class_index": "class index",
        "Custom Elements/controls/class_name": "class",
        "Custom Elements/controls/new_sample": "new sample",
        "Custom Elements/controls/seed": "seed",
        "Custom Elements/controls/truncation": "truncation psi",
    }
    assert [path for path, _ in parse_object(tiny_model, ViewerControl, "Custom Elements")] == [
        "Custom Elements/controls/initial_view"
    ]
    assert not any("controls" in key for key in tiny_model.state_dict())  # checkpoints are unchanged


def test_planes_are_reused_until_the_latent_or_the_weights_change(tiny_model, monkeypatch):
    ema = tiny_model.generator_ema
    calls = []
    planes = ema.planes
    monkeypatch.setattr(ema, "planes", lambda *a, **k: calls.append(1) or planes(*a, **k))
    camera = tiny_model.orbit_cameras(1)[0:1]
    monkeypatch.setattr(tiny_model.config, "eval_num_rays_per_chunk", 300)  # several chunks per image

    first = tiny_model.get_outputs_for_camera(camera)
    assert first["rgb"].shape == (32, 32, 3) and first["depth"].shape == (32, 32, 1)
    assert first["accumulation"].shape == (32, 32, 1)
    tiny_model.get_outputs_for_camera(camera)
    tiny_model.get_outputs_for_camera(tiny_model.orbit_cameras(3)[1:2])
    assert len(calls) == 1  # one backbone pass for three renders of ~4 chunks each

    tiny_model.controls.select_class(2)
    other = tiny_model.get_outputs_for_camera(camera)
    assert len(calls) == 2 and not torch.equal(other["rgb"], first["rgb"])
    tiny_model.controls.select_class(0)
    again = tiny_model.get_outputs_for_camera(camera)
    assert len(calls) == 3 and torch.equal(again["rgb"], first["rgb"])

    with torch.no_grad():  # what an EMA step does to the weights
        next(ema.parameters()).mul_(1.01)
    tiny_model.get_outputs_for_camera(camera)
    assert len(calls) == 4
    tiny_model.load_state_dict(tiny_model.state_dict())  # what loading a checkpoint does
    tiny_model.get_outputs_for_camera(camera)
    assert len(calls) == 5


# ---- presets: where the training viewer listens -----------------------------------------------------------
def test_every_preset_binds_its_viewer_to_loopback():
    from nerfstudio.plugins.registry import discover_methods

    methods, _ = discover_methods()
    hosts = {name: config.viewer.websocket_host for name, config in methods.items() if name.startswith("triplane-gan")}
    presets = ("triplane-gan", "triplane-gan-shapenet", "triplane-gan-tiny", "triplane-gan-tiny-long")
    assert hosts == {name: "127.0.0.1" for name in presets}


# ---- triplane-gan viewer: where it listens -----------------------------------------------------------------
def _listening(pid: int) -> set:
    """(address, port) of every TCP socket of process ``pid`` in the LISTEN state, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = cols[1].split(":")
            raw = bytes.fromhex(address)
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # host-order 32-bit words
            found.add((socket.inet_ntop(socket.AF_INET if table == "tcp" else socket.AF_INET6, words), int(port, 16)))
    return found


@pytest.mark.parametrize("host", [None, "0.0.0.0"], ids=["default", "exposed-on-purpose"])
def test_triplane_gan_viewer_listens_on_loopback_unless_told(host, trained_tiny_run, tmp_path):
    port = _free_port()
    log = tmp_path / "viewer.log"
    args = [TRIPLANE_GAN, "viewer", "--load-config", str(trained_tiny_run / "config.yml")]
    args += ["--viewer.websocket-port", str(port)] + (["--viewer.websocket-host", host] if host else [])
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 180
        while "Viewer listening on" not in log.read_text():
            assert proc.poll() is None, f"triplane-gan viewer exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no address printed within 180 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        expected = host or "127.0.0.1"
        assert _listening(proc.pid) == {(expected, port)}
        assert f"Viewer listening on {expected}:{port} " in log.read_text()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:  # it answers on loopback either way
            conn.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            assert conn.recv(12).startswith(b"HTTP/1.")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- ns-viewer in a browser --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chromium() -> Path:
    """The browser, checked before the (session) training run is made; skips or fails without it."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"no browser: {CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (pip install -e '.[test]')"
    if reason is None:
        return CHROMIUM
    if os.environ.get("TRIPLANE_GAN_NS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser required (TRIPLANE_GAN_NS_REQUIRE_BROWSER=1): {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serving(args: list, log: Path, port: int, cwd: Path | None = None, timeout: float = 180.0):
    """The viewer process started with ``args`` (output in ``log``), once it accepts connections on 127.0.0.1
    ``port``; stopped afterwards."""
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=dict(os.environ))
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"{args[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{args[0]} did not listen on {port}:\n{log.read_text()[-3000:]}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def viewer_url(chromium, trained_tiny_run, tmp_path):
    """``ns-viewer`` on the tiny run, bound to 127.0.0.1 on a free port; stopped afterwards."""
    port = _free_port()
    args = [
        NS_VIEWER,
        "--load-config", str(trained_tiny_run / "config.yml"),
        "--viewer.websocket-host", "127.0.0.1",
        "--viewer.websocket-port", str(port),
    ]
    with _serving(args, tmp_path / "ns-viewer.log", port, timeout=120):
        yield f"http://127.0.0.1:{port}"


def _row(page, label: str):
    """The row of the viewer's control panel that holds the control labelled ``label``."""
    return page.locator(
        f'xpath=//label[normalize-space(text())="{label}"]/ancestor::div[contains(@class, "mantine-Flex-root")][1]'
    )


def _render(page, name: str) -> np.ndarray:
    """Screenshot of the 3D view (the rendered image) without its borders and the axes gizmo at the bottom,
    saved as ``name``.png."""
    box = page.locator('canvas:not([style*="pointer-events: none"])').first.bounding_box()
    clip = {
        "x": box["x"] + 0.05 * box["width"],
        "y": box["y"] + 0.05 * box["height"],
        "width": 0.9 * box["width"],
        "height": 0.8 * box["height"],
    }
    png = page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), clip=clip)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


def _settled_render(page, name: str, differs_from: np.ndarray | None = None, timeout: float = 90.0) -> np.ndarray:
    """The rendered image once the viewer shows a full-resolution render (64 px, see "Max res") and two
    screenshots a second apart agree (and it differs from ``differs_from``)."""
    stats = page.get_by_text(re.compile(r"Resolution: \d+x\d+px"))
    deadline = time.monotonic() + timeout
    previous = _render(page, name)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        current = _render(page, name)
        full_resolution = re.search(r"\b(64x\d+|\d+x64)px", stats.inner_text()) is not None
        settled = np.abs(current - previous).mean() < 0.5
        changed = differs_from is None or np.abs(current - differs_from).mean() > 2.0
        if full_resolution and settled and changed:
            return current
        previous = current
    return current


def _assert_not_blank(image: np.ndarray, name: str) -> None:
    pixels = image.reshape(-1, 3)
    _, counts = np.unique(pixels, axis=0, return_counts=True)
    where = SCREENSHOTS / f"{name}.png"
    assert pixels.std(axis=0).mean() > 2.0, f"blank render in {where}"
    assert counts.max() < 0.5 * len(pixels), f"render is mostly one colour in {where}"


@contextlib.contextmanager
def _browser_page(chromium: Path, url: str, tmp_path: Path, failed: str):
    """A page of headless Chromium on the viewer at ``url`` once its controls are there, with renders of at most
    64 px (quick on a CPU) and the training cameras hidden; a screenshot ``failed``.png is kept on failure."""
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1000, "height": 900},
        )
        page = browser.pages[0] if browser.pages else browser.new_page()
        try:
            page.goto(url)
            page.get_by_text("Custom Elements").wait_for(timeout=60_000)
            page.get_by_role("button", name="Hide Train Cams").click()
            expect(page.get_by_role("button", name="Show Train Cams")).to_be_visible()
            max_res = _row(page, "Max res").get_by_role("slider")
            max_res.press("Home")  # renders of at most 64 px keep a CPU quick
            expect(max_res).to_have_attribute("aria-valuenow", "64")
            expect(page.get_by_text(re.compile(r"Resolution: [1-9]\d*x\d+px"))).to_be_visible(timeout=60_000)
            yield page
        except Exception:
            page.screenshot(path=str(SCREENSHOTS / f"{failed}.png"))
            raise
        finally:
            browser.close()


def _renders_of_two_classes(page, first: str, other: str, other_index: int, prefix: str):
    """The settled renders of class ``first`` (selected at start) and of ``other``, chosen by name in the
    dropdown of the Custom Elements panel (the index slider follows); both not blank, and different."""
    from playwright.sync_api import expect

    class_slider = _row(page, "class index").get_by_role("slider")
    class_dropdown = page.get_by_label("class", exact=True)
    expect(class_dropdown).to_have_value(first)

    name = f"{prefix}-class-0-{first}"
    first_render = _settled_render(page, name)
    page.screenshot(path=str(SCREENSHOTS / f"{prefix}-page.png"))
    _assert_not_blank(first_render, name)

    class_dropdown.click()
    page.get_by_role("option", name=other, exact=True).click()
    expect(class_slider).to_have_attribute("aria-valuenow", str(other_index), timeout=10_000)
    name = f"{prefix}-class-{other_index}-{other}"
    other_render = _settled_render(page, name, differs_from=first_render)
    _assert_not_blank(other_render, name)
    assert np.abs(other_render - first_render).mean() > 2.0, f"class change did not change {SCREENSHOTS}"
    return first_render, other_render


def test_ns_viewer_renders_the_generator_and_its_class_controls(chromium, viewer_url, tmp_path):
    from playwright.sync_api import expect

    with _browser_page(chromium, viewer_url, tmp_path, "viewer-page-failed") as page:
        cube, torus = _renders_of_two_classes(page, "cube", "torus", 3, "viewer")

        # by index: the slider, from the keyboard; the dropdown follows and the first render comes back
        class_slider = _row(page, "class index").get_by_role("slider")
        class_slider.press("Home")
        expect(page.get_by_label("class", exact=True)).to_have_value("cube", timeout=10_000)
        back = _settled_render(page, "viewer-class-0-again", differs_from=torus)
        assert np.abs(back - cube).mean() < 2.0, f"same latent, different render in {SCREENSHOTS}"

        seed = _row(page, "seed").locator("input")
        expect(seed).to_have_value("0")
        page.get_by_role("button", name="new sample").click()
        expect(seed).not_to_have_value("0", timeout=10_000)


# ---- a run without its data ----------------------------------------------------------------------------------
MOVED_NAMES = {"cube": "box", "cylinder": "tube", "sphere": "ball", "torus": "ring"}
"""Class names of the moved run's class_index.json (the data's are the keys): the viewer can only have them from
that file."""
NOT_FOUND = "not found: showing the generator without it"


@pytest.fixture(scope="session")
def run_without_data(trained_tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run as another machine would have it: in ``ROOT/outputs/tiny/triplane-gan-tiny/run``,
    its config.yml recording the default relative output folder and a data folder that does not exist there, its
    class_index.json with other class names; returns ROOT (``ns-viewer`` finds the checkpoints from there)."""
    import yaml

    from triplane_gan_ns.runs import CHECKPOINTS, CLASS_INDEX, load_config

    root = tmp_path_factory.mktemp("moved")
    relative = Path("outputs") / "tiny" / "triplane-gan-tiny" / "run"
    run = root / relative
    run.mkdir(parents=True)
    shutil.copytree(trained_tiny_run / CHECKPOINTS, run / CHECKPOINTS)
    config = load_config(trained_tiny_run / "config.yml")
    config.output_dir = Path("outputs")
    config.pipeline.datamanager.dataparser.data = root / "data-left-behind"
    config.pipeline.datamanager.run_class_index = relative / CLASS_INDEX  # what training in ROOT records
    (run / "config.yml").write_text(yaml.dump(config), "utf8")
    index = json.loads((trained_tiny_run / CLASS_INDEX).read_text())
    for entry in index["classes"]:
        entry["name"] = MOVED_NAMES[entry["name"]]
    (run / CLASS_INDEX).write_text(json.dumps(index))
    return root


def test_a_run_records_its_class_index_and_needs_its_data_only_for_training(trained_tiny_run, run_without_data):
    from triplane_gan_ns.data.class_index import ClassIndexDataset
    from triplane_gan_ns.errors import DataNotFound, UserError
    from triplane_gan_ns.runs import read_run_config

    recorded = read_run_config(trained_tiny_run / "config.yml").pipeline.datamanager.run_class_index
    assert recorded == trained_tiny_run / "class_index.json"

    run = run_without_data / "outputs" / "tiny" / "triplane-gan-tiny" / "run"
    config = read_run_config(run / "config.yml").pipeline
    config.datamanager.run_class_index = run / "class_index.json"
    with pytest.raises(DataNotFound, match="data-left-behind does not exist"):
        config.setup(device="cpu", test_mode="val")  # training: the dataparser's one-line error

    pipeline = config.setup(device="cpu", test_mode="inference")
    dataset = pipeline.datamanager.train_dataset
    assert isinstance(dataset, ClassIndexDataset) and pipeline.datamanager.without_data
    assert pipeline.model.class_names == ["box", "tube", "ball", "ring"] and pipeline.model.resolution == 32
    assert len(dataset) == 8 and dataset[0]["image"].shape == (32, 32, 3)
    assert torch.allclose(dataset.cameras.camera_to_worlds[:, :, 3].norm(dim=-1), torch.tensor(2.5))
    assert pipeline.datamanager.get_datapath() == run

    config.datamanager.run_class_index = run / "elsewhere" / "class_index.json"
    with pytest.raises(UserError, match="neither does .*elsewhere/class_index.json"):
        config.setup(device="cpu", test_mode="inference")


def test_triplane_gan_viewer_renders_the_generator_without_the_data(chromium, run_without_data, tmp_path):
    config = run_without_data / "outputs" / "tiny" / "triplane-gan-tiny" / "run" / "config.yml"
    port = _free_port()
    log = tmp_path / "viewer.log"
    args = [TRIPLANE_GAN, "viewer", "--load-config", str(config), "--viewer.websocket-port", str(port)]
    with _serving(args, log, port, cwd=tmp_path):  # started elsewhere: the recorded relative paths lead nowhere
        assert NOT_FOUND in log.read_text()
        with _browser_page(chromium, f"http://127.0.0.1:{port}", tmp_path, "viewer-without-data-failed") as page:
            _renders_of_two_classes(page, "box", "ring", 3, "viewer-without-data")


def test_ns_viewer_starts_without_the_data(run_without_data, tmp_path):
    port = _free_port()
    log = tmp_path / "ns-viewer.log"
    args = [
        NS_VIEWER,
        "--load-config", "outputs/tiny/triplane-gan-tiny/run/config.yml",
        "--viewer.websocket-host", "127.0.0.1",
        "--viewer.websocket-port", str(port),
    ]
    with _serving(args, log, port, cwd=run_without_data):
        assert NOT_FOUND in log.read_text()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            assert conn.recv(12).startswith(b"HTTP/1.")
