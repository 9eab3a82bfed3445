"""The heatmap preview's sprite sheets (bgfs_core.preview) and its ComfyUI glue (nodes/preview_ui.py).

The crops are real frames of tests/data/clips/fingers-lq.gif; the glue test uses ComfyUI's own folder_paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bgfs_core.errors import BGFSError
from bgfs_core.heatmaps import render_heatmaps
from bgfs_core.preview import build_preview, heat_sheet, sheet_layout, tile_keypoints, unpack_tile

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def crops(hand_video_frames: np.ndarray) -> np.ndarray:
    """43 real 96 px crops: the hand's part of each frame (rows 40..232 of 240, columns 64..256 of 320), halved."""
    return np.ascontiguousarray(hand_video_frames[:, 40:232:2, 64:256:2])


@pytest.mark.parametrize("n", [1, 2, 5, 43, 81, 500])
def test_layout_is_near_square_bounded_and_keeps_first_and_last_frame(n: int):
    lay = sheet_layout(n, 256, max_side=2048)
    h, w = lay.size
    assert h <= 2048 and w <= 2048 and lay.tile <= 256
    assert lay.cols * lay.rows >= lay.n > (lay.rows - 1) * lay.cols  # no empty row
    assert lay.cols - lay.rows in (0, 1)
    assert lay.frames[0] == 0 and lay.frames[-1] == n - 1
    assert list(lay.frames) == sorted(set(lay.frames))
    if n == 500:  # subsampled evenly to the cap
        assert lay.n == 144 and max(np.diff(lay.frames)) - min(np.diff(lay.frames)) <= 1
    else:
        assert lay.frames == tuple(range(n))


def test_tiles_lie_row_major():
    lay = sheet_layout(7, 10)  # 3 columns, 3 rows, 10 px tiles
    assert (lay.cols, lay.rows, lay.tile) == (3, 3, 10)
    assert [lay.origin(i) for i in (0, 1, 2, 3, 6)] == [(0, 0), (0, 10), (0, 20), (10, 0), (20, 0)]


def test_round_trip_tile_i_is_crop_i(crops: np.ndarray):
    prev = build_preview("detect", "hands", crops)
    lay = prev.layout
    sheet = prev.sheets["crops"]
    assert lay.tile == 96 and sheet.dtype == np.uint8 and sheet.shape == (lay.rows * 96, lay.cols * 96, 3)
    for i in range(lay.n):
        np.testing.assert_array_equal(unpack_tile(sheet, lay, i), crops[i])
    # cells past the last tile stay black
    y, x = lay.origin(lay.n - 1)
    assert not sheet[y : y + 96, x + 96 :].any()


def test_downscaled_tiles_still_show_their_own_frame(crops: np.ndarray):
    from PIL import Image

    prev = build_preview("detect", "hands", crops, max_side=7 * 40)  # 7 columns -> 40 px tiles
    lay = prev.layout
    assert lay.tile == 40 and max(prev.sheets["crops"].shape[:2]) <= 280
    small = np.stack([np.asarray(Image.fromarray(c).resize((40, 40), Image.Resampling.BOX), np.float32) for c in crops])
    for i in range(lay.n):
        err = np.abs(small - unpack_tile(prev.sheets["crops"], lay, i).astype(np.float32)).mean(axis=(1, 2, 3))
        assert err.argmin() == i and err[i] < 3.0  # closest to its own frame, and close in absolute terms


def _gauss(points: np.ndarray, size: int = 32, sigma: float = 1.5) -> np.ndarray:
    return render_heatmaps(points, np.ones(points.shape[:-1], bool), (size, size), sigma)


def test_heat_is_max_over_keypoints_normalised_to_the_peak():
    # frame 0: two keypoints, peak 2; frame 1: one keypoint, peak 1; frame 2: nothing (NaN and negative noise)
    hm = np.zeros((3, 2, 32, 32), np.float32)
    hm[0] = 2 * _gauss(np.array([[8.0, 8.0], [24.0, 20.0]]))
    hm[1, 0] = _gauss(np.array([[[16.0, 4.0]]]))[0, 0]
    hm[2] = -0.5
    hm[2, 1, :4] = np.nan
    lay = sheet_layout(3, 64)  # 2 x 2 grid of 64 px tiles: heatmaps are upsampled 2x
    grey = heat_sheet(hm, lay)
    t0, t1, t2 = (unpack_tile(grey, lay, i) for i in range(3))
    assert grey.dtype == np.uint8 and t0.max() == 255
    assert abs(int(t1.max()) - 128) <= 6  # half the global peak
    assert not t2.any()  # negative and NaN heat is no heat
    # both keypoints of frame 0 are bright (max over K, not mean or first), at their own places (x2 for upsampling)
    for x, y in ((8.0, 8.0), (24.0, 20.0)):
        patch = t0[int(2 * y) - 3 : int(2 * y) + 3, int(2 * x) - 3 : int(2 * x) + 3]
        assert patch.max() >= 240
    yx = np.unravel_index(t1.argmax(), t1.shape)
    assert abs(yx[0] - 8) <= 2 and abs(yx[1] - 32) <= 2


def test_before_and_after_heat_share_one_scale(crops: np.ndarray):
    pts = np.tile(np.array([[[10.0, 12.0]]], np.float32), (4, 1, 1))
    before = _gauss(pts)
    prev = build_preview("fix", "hands", crops[:4], before, after_crops=crops[4:8], after_heatmaps=0.25 * before)
    lay = prev.layout
    assert unpack_tile(prev.sheets["heat"], lay, 0).max() == 255
    assert abs(int(unpack_tile(prev.sheets["after_heat"], lay, 0).max()) - 64) <= 2
    np.testing.assert_array_equal(unpack_tile(prev.sheets["after_crops"], lay, 3), crops[7])


def test_all_zero_heat_gives_a_black_sheet_not_nan():
    grey = heat_sheet(np.zeros((2, 21, 16, 16), np.float32), sheet_layout(2, 16))
    assert grey.dtype == np.uint8 and not grey.any()


def test_keypoints_scale_to_tile_pixels_and_missing_ones_are_none():
    kp = np.array([[[10.0, 20.0], [np.nan, np.nan], [95.9, 0.0]]], np.float32)  # crop px of a 96 px crop
    lay = sheet_layout(1, 96, max_tile=48)
    assert lay.tile == 48
    assert tile_keypoints(kp, lay, 96) == [[[5.0, 10.0, 1.0], None, [48.0, 0.0, 1.0]]]
    with_conf = np.concatenate([kp, np.array([[[0.8], [0.9], [0.0]]], np.float32)], axis=2)
    assert tile_keypoints(with_conf, lay, 96) == [[[5.0, 10.0, 0.8], None, None]]  # conf 0 = not seen


def test_payload_is_strict_json_and_describes_the_layout(crops: np.ndarray):
    kp = np.full((43, 21, 2), np.nan, np.float32)
    kp[:, 0] = [48.0, 60.0]
    prev = build_preview("detect", "hands", crops, _gauss(kp[:, :2] / 3), kp)
    p = json.loads(json.dumps(prev.payload, allow_nan=False))
    assert p["kind"] == "detect" and p["region"] == "hands"
    assert (p["n"], p["total"], p["tile"], p["cols"], p["rows"]) == (43, 43, 96, 7, 7)
    assert p["frames"] == list(range(43)) and len(p["keypoints"]) == 43
    assert p["keypoints"][5][0] == [48.0, 60.0, 1.0] and p["keypoints"][5][1] is None
    assert set(prev.sheets) == {"crops", "heat"} and prev.sheets["heat"].shape == prev.sheets["crops"].shape[:2]
    assert "labels" not in p


def test_labels_follow_the_sampled_crops():
    from bgfs_core.preview import MAX_TILES

    n = MAX_TILES + 7  # more crops than the sheet holds: the payload samples them, the labels must follow
    many = np.zeros((n, 8, 8, 3), np.uint8)
    labels = [f"{t // 2 + 1}/{n // 2} {('left', 'right')[t % 2]}" for t in range(n)]
    p = build_preview("detect", "hands", many, labels=labels).payload
    assert p["n"] < n and p["labels"] == [labels[f] for f in p["frames"]] and p["labels"][-1] == labels[-1]
    with pytest.raises(BGFSError, match=f"2 labels for {n} crops"):
        build_preview("detect", "hands", many, labels=labels[:2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "paint"}, "kind must be one of"),
        ({"crops": np.zeros((0, 8, 8, 3), np.uint8)}, "no frames to show"),
        ({"crops": np.zeros((2, 8, 8, 3), np.float32)}, r"uint8 \[N, S, S, 3\]"),
        ({"crops": np.zeros((2, 8, 9, 3), np.uint8)}, "must be square"),
        ({"heatmaps": np.zeros((3, 21, 8, 8), np.float32)}, "heatmaps has .3,. frames, the crops have 2"),
        ({"heatmaps": np.zeros((2, 8, 8), np.float32)}, r"heatmaps must be \[N, K, h, w\]"),
        ({"keypoints": np.zeros((2, 21, 4), np.float32)}, r"keypoints must be \[N, K, 2\]"),
        ({"after_crops": np.zeros((3, 8, 8, 3), np.uint8)}, "after_crops has 3 frames"),
        ({"after_crops": np.zeros((2, 16, 16, 3), np.uint8)}, "use one size"),
    ],
)
def test_bad_input_says_what_is_wrong(kwargs: dict, message: str):
    args = {"kind": "detect", "region": "hands", "crops": np.zeros((2, 8, 8, 3), np.uint8)} | kwargs
    with pytest.raises(BGFSError, match=message):
        build_preview(**args)


_GLUE = """
import importlib.util, json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])  # ComfyUI checkout: its real folder_paths
import folder_paths
folder_paths.set_temp_directory(sys.argv[3])
# load the pack the way ComfyUI does: a package under another name, relative imports inside
spec = importlib.util.spec_from_file_location("bgfs_pack", sys.argv[2] + "/__init__.py",
                                              submodule_search_locations=[sys.argv[2]])
sys.modules["bgfs_pack"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sys.modules["bgfs_pack"])
from bgfs_pack.nodes.preview_ui import preview_ui
d = np.load(sys.argv[4])
ui = preview_ui("fix", "hands", d["crops"], d["hm"], d["kp"], after_crops=d["crops"][::-1].copy(),
                after_heatmaps=d["hm"] * 0.5)
print(json.dumps(ui, allow_nan=False))
"""


def test_preview_ui_saves_sheets_into_comfyui_temp(crops: np.ndarray, tmp_path: Path):
    comfy = os.environ.get("COMFYUI_DIR")
    if not comfy or not (Path(comfy) / "folder_paths.py").is_file():
        pytest.skip("!!! COMFYUI_DIR is not set to a ComfyUI checkout: the preview glue test is SKIPPED !!!")
    from PIL import Image

    kp = np.tile(np.array([[[30.0, 40.0], [60.0, 70.0]]], np.float32), (6, 1, 1))
    hm = _gauss(kp / 3)
    np.savez(tmp_path / "in.npz", crops=crops[:6], hm=hm, kp=kp)
    temp = tmp_path / "temp"
    out = subprocess.run([sys.executable, "-c", _GLUE, comfy, str(ROOT), str(temp), str(tmp_path / "in.npz")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    ui = json.loads(out.stdout.strip().splitlines()[-1])
    assert list(ui) == ["bgfs_preview"] and len(ui["bgfs_preview"]) == 1
    p = ui["bgfs_preview"][0]
    assert (p["kind"], p["n"], p["cols"], p["tile"]) == ("fix", 6, 3, 96)
    expected = build_preview("fix", "hands", crops[:6], hm, kp, crops[:6][::-1].copy(), hm * 0.5)
    for name in ("crops", "heat", "after_crops", "after_heat"):
        ref = p[name]
        assert ref["type"] == "temp" and ref["subfolder"] == "bgfs" and ref["filename"].endswith(f"_{name}.png")
        saved = np.asarray(Image.open(temp / ref["subfolder"] / ref["filename"]))
        np.testing.assert_array_equal(saved, expected.sheets[name])
    assert len({p[n]["filename"] for n in ("crops", "heat", "after_crops", "after_heat")}) == 4
    assert p["keypoints"][0] == [[30.0, 40.0, 1.0], [60.0, 70.0, 1.0]] and "after_keypoints" not in p
    assert sorted(os.listdir(temp / "bgfs")) == sorted(p[n]["filename"] for n in ("crops", "heat", "after_crops", "after_heat"))
