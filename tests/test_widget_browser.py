"""The heatmap preview widget in a real browser: headless Chromium, the real ComfyUI frontend, a real server.

Two small CPU graphs are loaded into the page with ``app.loadGraphData`` and queued with ``app.queuePrompt``:
1. core LoadImage of tests/data/clips/fingers-lq.gif (a GIF loads as a frame batch) -> ImageFromBatch -> BGFS ROI
   Detect -> PreviewImage: MediaPipe finds the real hand; the widget (web/bgfs_preview.js) must draw each crop
   with its heatmap (the heat pixels it counts on its canvas are checked against the heat sheet the node saved)
   and the scrubber must move it to other frames.
2. 5 of those frames at 160 x 120, encoded by a tiny random-weight Wan 2.1 VAE, ROI Detect, a tiny critic and
   the Latent Anatomy Fixer, and the Image Anatomy Fixer on the same frames: their widgets must switch to the
   "after" sheets with the toggle.
Then every example workflow is loaded as a user opens it: all nodes and links, and the BGFS widgets' saved values.
Screenshots go to test-artifacts/ (git-ignored).

Needs COMFYUI_DIR (see tests/comfy_host.py), Chromium at /usr/bin/chromium (Debian package ``chromium``) and the
``playwright`` Python package; Playwright's own browsers are never downloaded. Skips loudly without them.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import time
import urllib.parse
import warnings
from pathlib import Path

import numpy as np
import pytest
from comfy_host import TINY_VAE, ComfyServer, build_tiny_critic, build_tiny_wan_vae, make_base_dir, require_comfy

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip
CLIP = "fingers-lq.gif"
CRITIC = "bgfs_widget_test_critic.safetensors"
FRAMES = 9  # frames of the clip ROI Detect runs on in the first graph (320 x 240)
FIX_FRAMES, FIX_W, FIX_H = 5, 160, 120  # the Fixer's graph: 1 + 4 * 1 frames (a 2-frame Wan latent); small, as
# the tiny VAE encodes or decodes ~10 frames of 160 x 120 per 10 s on 2 CPU cores
HEAT_MIN = 12  # must match HEAT_MIN in web/bgfs_preview.js (grey levels drawn transparent)
VIEW = 256  # the widget's canvas side (VIEW in web/bgfs_preview.js)
# the frontend's first-run template browser and the minimap would cover the graph
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False}
DETECT, FIXER, IMAGE_FIXER = 3, 8, 11  # node ids in the graphs below


def _skip_loudly(msg: str) -> None:
    print(f"\n!!! {msg}", file=sys.stderr)
    warnings.warn(msg, stacklevel=2)
    pytest.skip(msg)


def _graph(with_fixer: bool) -> dict:
    """A frontend workflow (``nodes`` + ``links``, as the frontend saves it); widgets not given keep defaults."""
    nodes, links = [], []

    def node(nid, type_, pos, inputs=(), outputs=(), values=()):
        ins = [{"name": n, "type": t, "link": None} for n, t in inputs]
        outs = [{"name": n, "type": t, "links": []} for n, t in outputs]
        nodes.append({"id": nid, "type": type_, "pos": pos, "size": [280, 100], "flags": {}, "order": len(nodes),
                      "mode": 0, "inputs": ins, "outputs": outs, "properties": {}, "widgets_values": list(values)})  # fmt: skip

    def link(src, slot, dst, dst_slot):
        lid = len(links) + 1
        by_id = {n["id"]: n for n in nodes}
        out, inp = by_id[src]["outputs"][slot], by_id[dst]["inputs"][dst_slot]
        out["links"].append(lid)
        inp["link"] = lid
        links.append([lid, src, slot, dst, dst_slot, out["type"]])

    node(1, "LoadImage", [0, 0], outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")], values=[CLIP, "image"])
    node(2, "ImageFromBatch", [0, 380], [("image", "IMAGE")], [("IMAGE", "IMAGE")],
         values=[0, FIX_FRAMES if with_fixer else FRAMES])
    node(DETECT, "BGFSROIDetect", [310, 0], [("images", "IMAGE")],
         [("roi", "BGFS_ROI"), ("mask", "MASK"), ("overlay", "IMAGE")])  # region: hands (the default)
    node(4, "PreviewImage", [620, 0], [("images", "IMAGE")])
    link(1, 0, 2, 0)
    if with_fixer:
        node(10, "ImageScale", [0, 520], [("image", "IMAGE")], [("IMAGE", "IMAGE")],
             values=["area", FIX_W, FIX_H, "disabled"])
        link(2, 0, 10, 0)
        link(10, 0, DETECT, 0)
    else:
        link(2, 0, DETECT, 0)
    link(DETECT, 2, 4, 0)
    if with_fixer:
        node(6, "VAELoader", [930, 180], outputs=[("VAE", "VAE")], values=[TINY_VAE])
        node(5, "VAEEncode", [930, 0], [("pixels", "IMAGE"), ("vae", "VAE")], [("LATENT", "LATENT")])
        link(10, 0, 5, 0)
        link(6, 0, 5, 1)
        node(7, "BGFSCriticLoader", [930, 280], outputs=[("critic", "BGFS_CRITIC")], values=[CRITIC])
        node(FIXER, "BGFSLatentAnatomyFixer", [1240, 0],
             [("latent", "LATENT"), ("vae", "VAE"), ("critic", "BGFS_CRITIC"), ("roi", "BGFS_ROI")],
             [("latent", "LATENT"), ("report", "STRING"), ("images", "IMAGE")],
             values=[1, 0.07, 1.0, "latent", 3.0, False])  # guard off: a random VAE's decode shows no hand
        node(9, "PreviewAny", [1550, 0], [("source", "*")])
        for dst_slot, src in enumerate((5, 6, 7, DETECT)):
            link(src, 0, FIXER, dst_slot)
        link(FIXER, 1, 9, 0)
        # the same fix on the frames themselves (pixel space), for a video that is already decoded
        node(IMAGE_FIXER, "BGFSImageAnatomyFixer", [1240, 700],
             [("images", "IMAGE"), ("roi", "BGFS_ROI"), ("critic", "BGFS_CRITIC")],
             [("images", "IMAGE"), ("report", "STRING")], values=[1, 0.07, 1.0, "latent", 3.0, False])
        node(12, "PreviewAny", [1550, 700], [("source", "*")])
        for dst_slot, src in enumerate((10, DETECT, 7)):
            link(src, 0, IMAGE_FIXER, dst_slot)
        link(IMAGE_FIXER, 1, 12, 0)
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    comfy, python = require_comfy()
    base = make_base_dir(tmp_path_factory.mktemp("comfy_widget"))
    (base / "user" / "default").mkdir(parents=True, exist_ok=True)
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(SETTINGS))
    shutil.copy(REPO / "tests" / "data" / "clips" / CLIP, base / "input" / CLIP)
    build_tiny_wan_vae(python, comfy, base / "models" / "vae" / TINY_VAE)
    build_tiny_critic(base / "models" / "bgfs_critics" / CRITIC)
    srv = ComfyServer(comfy, python, base).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        _skip_loudly(f"{CHROMIUM} is missing: the widget's browser test is SKIPPED (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_loudly("the playwright package is missing: the widget's browser test is SKIPPED (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(server: ComfyServer, browser):
    """The ComfyUI page with the BGFS extension registered; page errors are collected in ``page.bgfs_errors``."""
    pg = browser.new_page(viewport={"width": 1400, "height": 1100})
    pg.bgfs_errors = []
    pg.on("pageerror", lambda e: pg.bgfs_errors.append(str(e)))
    pg.on("console", lambda m: pg.bgfs_errors.append(m.text) if m.type == "error" and "bgfs" in m.text.lower() else None)
    pg.goto(server.url, wait_until="domcontentloaded")
    # our module is served from /extensions/bgfs/ and must have registered itself
    pg.wait_for_function("() => window.app?.extensions?.some(e => e.name === 'bgfs.preview')", timeout=60_000)
    yield pg
    pg.close()


class Widget:
    """One node's preview widget in the page, found by node id."""

    def __init__(self, page, node_id: int) -> None:
        self.page, self.id = page, node_id
        self.root = page.locator(f".bgfs-preview[data-bgfs-node='{node_id}']")
        self.slider = self.root.locator("input[type=range]")
        self.toggle = self.root.locator("button")
        self.label = self.root.locator("span")

    def dataset(self) -> dict:
        return self.root.locator("canvas").evaluate("c => ({...c.dataset})")

    def digest(self) -> list[float]:
        """Mean and standard deviation of the canvas' RGB, read back from its ImageData."""
        return self.root.locator("canvas").evaluate(
            """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let s = 0, s2 = 0, n = 0;
            for (let j = 0; j < d.length; j += 4) for (let k = 0; k < 3; k++) { s += d[j + k]; s2 += d[j + k] ** 2; n++; }
            const m = s / n; return [m, Math.sqrt(s2 / n - m * m)]; }"""
        )

    def show(self) -> None:
        """Bring the node into view at 100 % zoom (DOM widgets follow the canvas on its next draw)."""
        self.page.evaluate(
            """(id) => { const c = window.app.canvas, n = window.app.graph.getNodeById(id);
            c.ds.scale = 1; c.ds.offset = [90 - n.pos[0], 150 - n.pos[1]]; c.setDirty(true, true); }""",
            self.id,
        )
        self.page.wait_for_timeout(400)

    def screenshot(self, path: Path) -> None:
        clip = self.page.evaluate(
            """(id) => { const n = window.app.graph.getNodeById(id), c = window.app.canvas;
            const r = c.canvas.getBoundingClientRect(), [x, y] = c.ds.convertOffsetToCanvas([n.pos[0], n.pos[1]]);
            const s = c.ds.scale, title = 30;
            return {x: r.left + x - 12, y: r.top + y - title * s - 12, width: n.size[0] * s + 24,
                    height: (n.size[1] + title) * s + 24}; }""",
            self.id,
        )
        self.page.screenshot(path=path, clip=clip)


def _run(server: ComfyServer, page, graph: dict, node_ids: list[int], timeout: float = 120.0) -> dict:
    """Load ``graph`` into the page, queue it, wait until ComfyUI has finished it and every widget has drawn
    its heat; the prompt's outputs by node id."""
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", graph)
    page.bgfs_saved = _saved_widget_values(page)
    before = set(server.get("/history"))
    page.evaluate("async () => { await window.app.queuePrompt(0); }")
    end = time.perf_counter() + timeout
    while True:  # the widget draws on the "executed" event, before ComfyUI records the prompt as done
        done = {k: h for k, h in server.get("/history").items() if k not in before and h["status"].get("completed") is not None}
        if done:
            (entry,) = done.values()
            assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
            break
        assert time.perf_counter() < end, f"the graph did not finish within {timeout:.0f} s:\n{server.log()[-3000:]}"
        time.sleep(0.25)
    drawn = """(ids) => ids.every(id => document.querySelector(`.bgfs-preview[data-bgfs-node='${id}'] canvas`)
                                        ?.dataset.bgfsHeatDrawn === '1')"""
    try:
        page.wait_for_function(drawn, arg=node_ids, timeout=15_000)
    except Exception as exc:
        page.screenshot(path=ARTIFACTS / "widget_browser_failed.png")
        raise AssertionError(f"the widgets drew no heatmap: {exc}\npage errors: {page.bgfs_errors}") from exc
    return entry["outputs"]


def _saved_widget_values(page) -> dict:
    """widgets_values of every node as the frontend would save the workflow now."""
    return page.evaluate("() => Object.fromEntries(window.app.graph.serialize().nodes.map(n => [n.id, n.widgets_values]))")


def _heat_tile_count(server: ComfyServer, ref: dict, payload: dict, i: int) -> int:
    """Pixels of tile ``i`` of a saved heat sheet that the widget should draw opaque, at canvas resolution."""
    from PIL import Image

    query = urllib.parse.urlencode({"filename": ref["filename"], "subfolder": ref["subfolder"], "type": ref["type"]})
    status, body = server.request(f"/view?{query}")
    assert status == 200, f"/view of {ref['filename']} -> {status}"
    sheet = Image.open(io.BytesIO(body)).convert("L")
    t, cols = payload["tile"], payload["cols"]
    x, y = (i % cols) * t, (i // cols) * t
    tile = sheet.crop((x, y, x + t, y + t)).resize((VIEW, VIEW), Image.Resampling.BILINEAR)
    return int((np.asarray(tile) >= HEAT_MIN).sum())


def _assert_heat_matches(server: ComfyServer, widget: Widget, payload: dict, sheet: str, i: int) -> int:
    ds = widget.dataset()
    drawn = int(ds["bgfsHeatPixels"])
    expected = _heat_tile_count(server, payload[sheet], payload, i)
    assert ds["bgfsHeatDrawn"] == "1" and ds["bgfsFrame"] == str(payload["frames"][i]), ds
    if "labels" in payload:  # the slider names the frame and hand, not the crop's number
        assert widget.label.text_content() == payload["labels"][i], (widget.label.text_content(), payload["labels"][i])
    # browser and PIL resample slightly differently; neighbouring tiles differ by far more than 5 %
    assert abs(drawn - expected) <= 0.05 * max(expected, 20), f"node {widget.id}: drew {drawn} heat pixels, {sheet} tile {i} has {expected}"
    return drawn


def test_roi_detect_widget_draws_heatmaps_and_scrubs(server: ComfyServer, page):
    started = time.perf_counter()
    ARTIFACTS.mkdir(exist_ok=True)
    outputs = _run(server, page, _graph(with_fixer=False), [DETECT])
    payload = outputs[str(DETECT)]["bgfs_preview"][0]
    assert (payload["kind"], payload["region"]) == ("detect", "hands"), payload
    assert payload["n"] >= FRAMES - 1, f"MediaPipe found the hand in only {payload['n']} of {FRAMES} frames"
    assert payload["labels"][0].startswith("1/") and payload["labels"][0].split()[1] in ("left", "right"), payload

    roi = Widget(page, DETECT)
    roi.show()
    assert roi.dataset()["bgfsView"] == "before" and not roi.toggle.is_visible(), "ROI Detect has no toggle"
    drawn0 = _assert_heat_matches(server, roi, payload, "heat", 0)
    assert drawn0 < 0.6 * VIEW * VIEW, "21 Gaussian blobs, not a filled square"
    digest0 = roi.digest()
    assert digest0[1] > 20, f"the canvas looks blank (RGB mean, std: {digest0})"
    # scrub with the keyboard, as a user would
    assert roi.slider.get_attribute("max") == str(payload["n"] - 1)
    roi.slider.focus()
    roi.slider.press("End")
    _assert_heat_matches(server, roi, payload, "heat", payload["n"] - 1)
    assert roi.digest() != digest0, "scrubbing did not change what the canvas shows"
    roi.slider.press("Home")
    for _ in range(payload["n"] // 2):
        roi.slider.press("ArrowRight")
    _assert_heat_matches(server, roi, payload, "heat", payload["n"] // 2)
    # the widget is no value: a workflow saved after the run stores the same widget values as before it
    assert _saved_widget_values(page) == page.bgfs_saved
    roi.screenshot(ARTIFACTS / "widget_roi_detect.png")
    Widget(page, 1).show()  # the whole graph, for the README
    page.screenshot(path=ARTIFACTS / "widget_browser_page.png")
    page.screenshot(path=ARTIFACTS / "widget_browser_graph.png", clip=page.evaluate(
        """() => { const c = window.app.canvas, r = c.canvas.getBoundingClientRect(), s = c.ds.scale;
        let x0 = 1e9, y0 = 1e9, x1 = -1e9, y1 = -1e9;
        for (const n of window.app.graph._nodes) { x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
          x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]); }
        const [x, y] = c.ds.convertOffsetToCanvas([x0, y0]);
        return {x: r.left + x - 16, y: r.top + y - 16, width: (x1 - x0) * s + 32, height: (y1 - y0) * s + 32}; }"""))
    # a run that finds nothing must not leave the last run's hands on show beside "found in 0 frames"
    from PIL import Image

    Image.new("RGB", (320, 240), (128, 128, 128)).save(server.base / "input" / "bgfs_blank.png")
    assert page.locator(f".bgfs-preview[data-bgfs-node='{DETECT}']").is_visible()
    before = set(server.get("/history"))
    page.evaluate("(name) => { window.app.graph.getNodeById(1).widgets[0].value = name; }", "bgfs_blank.png")
    page.evaluate("async () => { await window.app.queuePrompt(0); }")
    end = time.perf_counter() + 120
    while not any(k not in before and h["status"].get("completed") is not None for k, h in server.get("/history").items()):
        assert time.perf_counter() < end, server.log()[-3000:]
        time.sleep(0.25)
    page.wait_for_function(f"() => !document.querySelector(\".bgfs-preview[data-bgfs-node='{DETECT}']\")?.checkVisibility()",
                           timeout=10_000)  # fmt: skip
    assert not page.bgfs_errors, f"errors in the page: {page.bgfs_errors}"
    print(f"\nROI Detect widget: server start {server.startup_seconds:.1f} s, page + run + checks "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip


def test_fixer_widget_toggles_before_and_after(server: ComfyServer, page):
    started = time.perf_counter()
    ARTIFACTS.mkdir(exist_ok=True)
    outputs = _run(server, page, _graph(with_fixer=True), [FIXER, IMAGE_FIXER])
    payload = outputs[str(FIXER)]["bgfs_preview"][0]
    assert payload["kind"] == "fix" and {"heat", "after_crops", "after_heat"} <= set(payload), sorted(payload)

    fix = Widget(page, FIXER)
    fix.show()
    assert fix.toggle.is_visible() and fix.toggle.text_content() == "before"
    assert fix.dataset()["bgfsView"] == "before"
    _assert_heat_matches(server, fix, payload, "heat", 0)
    fix.screenshot(ARTIFACTS / "widget_fixer_before.png")
    fix.toggle.click()
    assert fix.dataset()["bgfsView"] == "after" and fix.toggle.text_content() == "after"
    _assert_heat_matches(server, fix, payload, "after_heat", 0)
    fix.screenshot(ARTIFACTS / "widget_fixer_after.png")
    # scrub to the tile with the most "after" heat (heat is scaled to the hottest pixel of both sheets, so some
    # tile has some): scrubbing keeps the "after" view and draws that tile's heat
    hottest = max(range(payload["n"]), key=lambda i: _heat_tile_count(server, payload["after_heat"], payload, i))
    fix.slider.focus()
    fix.slider.press("Home")
    for _ in range(hottest):
        fix.slider.press("ArrowRight")
    assert fix.dataset()["bgfsView"] == "after"
    assert _assert_heat_matches(server, fix, payload, "after_heat", hottest) > 0
    fix.toggle.click()
    assert fix.dataset()["bgfsView"] == "before"
    _assert_heat_matches(server, fix, payload, "heat", hottest)
    # the Image Anatomy Fixer's widget is the same: before, then after at the toggle
    payload = outputs[str(IMAGE_FIXER)]["bgfs_preview"][0]
    assert payload["kind"] == "fix" and {"heat", "after_crops", "after_heat"} <= set(payload), sorted(payload)
    image_fix = Widget(page, IMAGE_FIXER)
    image_fix.show()
    _assert_heat_matches(server, image_fix, payload, "heat", 0)
    image_fix.toggle.click()
    assert image_fix.dataset()["bgfsView"] == "after"
    _assert_heat_matches(server, image_fix, payload, "after_heat", 0)
    image_fix.screenshot(ARTIFACTS / "widget_image_fixer_after.png")
    assert not page.bgfs_errors, f"errors in the page: {page.bgfs_errors}"
    print(f"\nFixer widgets: page + run + checks {time.perf_counter() - started:.1f} s")


# What the templates set, by widget name (the frontend fills widgets by position: a value saved in the wrong place
# shows up here); steps differ between templates and are left out.
TEMPLATE_WIDGETS = {
    "BGFSROIDetect": {"region": "hands", "margin": 0.25, "min_conf": 0.3, "smooth": 0.6, "backend": "solutions"},
    "BGFSCriticLoader": {"critic_name": "hands_critic.safetensors"},
    "BGFSLatentAnatomyFixer": {"lr": 0.035, "strength": 1, "mode": "warp", "guide": 3, "guard": True, "decode": True},
    "BGFSImageAnatomyFixer": {"lr": 0.035, "strength": 1, "mode": "warp", "guide": 3, "guard": True},
    "BGFSAnatomyScore": {"region": "hands", "threshold": 70, "backend": "solutions"},
    "BGFSCacheBuilder": {"region": "hands", "cache_name": "bgfs_hands", "fps": 16, "clip_len": 4, "clips_per_video": 10,
                         "frame_stride": 1, "crop_size": 256, "clip_seed": 0},
    "BGFSCriticTrainer": {"cache": "bgfs_hands", "critic_name": "hands_critic", "epochs": 300, "lr": 0.002,
                          "batch_size": 8, "val_fraction": 0.2, "resume": True, "articulate": 0.5},
}

FACE_TEMPLATES = {"bgfs_fix_video_face"}  # the templates for a face: the same values, for region face


def template_widgets(template: str, node_type: str) -> dict:
    """What ``template`` sets on a node of ``node_type``."""
    want = dict(TEMPLATE_WIDGETS[node_type])
    if template in FACE_TEMPLATES:
        want = {k: "face" if k == "region" else v for k, v in want.items()}
        if "critic_name" in want:
            want["critic_name"] = "face_critic.safetensors"
    return want


def test_every_example_workflow_loads_in_the_frontend_as_saved(server: ComfyServer, page):
    """The templates users open: each loads in the real frontend with every node and link, and the BGFS nodes'
    widgets, filled by position from the saved values, hold the values meant for them (named in TEMPLATE_WIDGETS);
    the Latent Fixer's images output is linked."""
    for path in sorted((REPO / "example_workflows").glob("*.json")):
        saved = json.loads(path.read_text())
        page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", saved)
        loaded = page.evaluate(
            """() => { const g = window.app.graph;
            return {links: Object.keys(g.links instanceof Map ? Object.fromEntries(g.links) : g.links).length,
                    nodes: Object.fromEntries(g._nodes.map(n => [n.id, {type: n.type,
                      widgets: Object.fromEntries((n.widgets || []).map(w => [w.name, w.value])),
                      outputs: (n.outputs || []).map(o => [o.name, (o.links || []).length])}]))}; }"""
        )
        assert len(loaded["nodes"]) == len(saved["nodes"]) and loaded["links"] == len(saved["links"]), path.name
        for node in saved["nodes"]:
            if not node["type"].startswith("BGFS"):
                continue
            got = loaded["nodes"][str(node["id"])]
            assert got["type"] == node["type"], path.name
            want = template_widgets(path.stem, node["type"])
            assert {k: got["widgets"].get(k) for k in want} == want, (path.name, node["type"], got["widgets"])
            if node["type"] == "BGFSLatentAnatomyFixer":
                assert got["outputs"][2] == ["images", 2], (path.name, got["outputs"])
    assert not page.bgfs_errors, f"errors in the page: {page.bgfs_errors}"


def test_each_node_help_page_opens_in_the_frontend(server: ComfyServer, page):
    """The frontend's own node help (the node library's "?" and the selection toolbox's info button) finds each BGFS
    node's web/docs page, renders it, and shows it in the node library panel."""
    info = server.get("/object_info")
    ours = sorted(k for k, v in info.items() if v["python_module"] == "custom_nodes.bgfs")
    assert len(ours) == 7
    page.evaluate("() => window.app.extensionManager.command.execute('Workspace.ToggleSidebarTab.node-library')")
    for node_id in ours:
        html = page.evaluate(
            """async ([name, heading]) => {
            const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
            const help = pinia._s.get('nodeHelp');
            help.openHelp(pinia._s.get('nodeDef').nodeDefsByName[name]);
            // the previous page stays until this one has loaded (or failed, or fell back to the description)
            for (let i = 0; i < 200 && (help.isLoading || !help.renderedHelpHtml.startsWith(heading)) && !help.error; i++)
              await new Promise(r => setTimeout(r, 50));
            return help.error ? 'ERROR ' + help.error : help.renderedHelpHtml; }""",
            [node_id, f"<h1>{info[node_id]['display_name']}</h1>"],
        )
        assert html.startswith(f"<h1>{info[node_id]['display_name']}</h1>"), (node_id, html[:200])
        for name in [*info[node_id]["input"]["required"], *info[node_id]["input"].get("optional", {})]:
            assert f"<strong>{name}</strong>" in html, (node_id, name)
        shown = page.locator(".node-help-content")
        shown.get_by_role("heading", name=info[node_id]["display_name"], exact=True).wait_for(timeout=10_000)
    page.screenshot(path=ARTIFACTS / "node_help.png")
    assert not page.bgfs_errors, f"errors in the page: {page.bgfs_errors}"
