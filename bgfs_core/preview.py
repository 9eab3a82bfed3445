"""Sprite sheets for the heatmap preview widget: ROI crops, heatmaps and keypoints of many frames in a few images.

The ComfyUI glue (``nodes/preview_ui.py``) saves the sheets as PNG and sends :attr:`Preview.payload`; the widget
(``web/bgfs_preview.js``) cuts tile ``i`` out of each sheet. Tiles lie row-major: tile ``i`` is at column
``i % cols``, row ``i // cols``. Long videos are subsampled (``frames`` lists the original frame of each tile) and
tiles shrink so the sheet stays within ``max_side`` pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import BGFSError

KINDS = ("detect", "fix", "score")
MAX_SIDE = 2048  # sheet width and height bound, px
MAX_TILE = 192  # tile size bound, px: enough to judge a hand, small enough to load instantly
MAX_TILES = 144  # frames shown at most (12 x 12); longer videos are subsampled evenly


@dataclass(frozen=True)
class SheetLayout:
    """Where each shown frame sits in the sheets."""

    frames: tuple[int, ...]  # original frame index of each tile
    tile: int  # tile side, px
    cols: int
    rows: int

    @property
    def n(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of a sheet in px."""
        return self.rows * self.tile, self.cols * self.tile

    def origin(self, i: int) -> tuple[int, int]:
        """(y, x) of tile ``i``'s top-left corner."""
        return (i // self.cols) * self.tile, (i % self.cols) * self.tile


@dataclass
class Preview:
    """Sheets to save as PNG (``crops`` RGB, ``heat`` greyscale, optional ``after_*``) and the JSON payload."""

    layout: SheetLayout
    sheets: dict[str, np.ndarray] = field(default_factory=dict)
    payload: dict = field(default_factory=dict)


def sheet_layout(
    num_frames: int, crop_size: int, max_side: int = MAX_SIDE, max_tile: int = MAX_TILE, max_tiles: int = MAX_TILES
) -> SheetLayout:
    """A near-square grid for ``num_frames`` crops of ``crop_size`` px, within ``max_side`` px both ways."""
    if num_frames < 1:
        raise BGFSError("preview: no frames to show; run the node on at least one frame")
    if crop_size < 1:
        raise BGFSError(f"preview: crop size must be at least 1 px, got {crop_size}")
    n = min(num_frames, max_tiles)
    frames = np.unique(np.round(np.linspace(0, num_frames - 1, n)).astype(int)) if n < num_frames else range(n)
    frames = tuple(int(f) for f in frames)
    cols = math.ceil(math.sqrt(len(frames)))
    rows = math.ceil(len(frames) / cols)
    tile = max(1, min(crop_size, max_tile, max_side // cols))
    return SheetLayout(frames=frames, tile=tile, cols=cols, rows=rows)


def _resize(img: np.ndarray, size: int, resample: str) -> np.ndarray:
    """Square resize with PIL: uint8 RGB (antialiased) or float32 2-D (bilinear)."""
    from PIL import Image

    if img.shape[0] == size and img.shape[1] == size:
        return img
    if img.dtype == np.uint8:
        return np.asarray(Image.fromarray(img).resize((size, size), getattr(Image.Resampling, resample)))
    out = Image.fromarray(np.ascontiguousarray(img, np.float32)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(out, np.float32)


def pack_sheet(tiles: np.ndarray, layout: SheetLayout) -> np.ndarray:
    """Place ``tiles[layout.frames[i]]`` (uint8 ``[N, S, S, C]`` or float ``[N, h, w]``) at tile ``i``."""
    h, w = layout.size
    sheet = np.zeros((h, w, *tiles.shape[3:]), tiles.dtype)
    for i, f in enumerate(layout.frames):
        y, x = layout.origin(i)
        sheet[y : y + layout.tile, x : x + layout.tile] = _resize(tiles[f], layout.tile, "LANCZOS")
    return sheet


def unpack_tile(sheet: np.ndarray, layout: SheetLayout, i: int) -> np.ndarray:
    """Tile ``i`` of a sheet (what the widget draws for that tile)."""
    if not 0 <= i < layout.n:
        raise BGFSError(f"preview: tile {i} out of range 0..{layout.n - 1}")
    y, x = layout.origin(i)
    return sheet[y : y + layout.tile, x : x + layout.tile]


def heat_scale(*heatmaps: np.ndarray | None) -> float:
    """The common maximum that maps heat to 255, so before and after sheets are comparable (1.0 if all is 0)."""
    peaks = [float(np.nanmax(np.clip(h, 0, None))) for h in heatmaps if h is not None and h.size and not np.isnan(h).all()]
    peak = max(peaks, default=0.0)
    return peak if peak > 0 else 1.0


def heat_sheet(heatmaps: np.ndarray, layout: SheetLayout, scale: float | None = None) -> np.ndarray:
    """Greyscale uint8 sheet: per frame the max over keypoints, clipped at 0, divided by ``scale`` (default: max)."""
    if heatmaps.ndim != 4 or heatmaps.shape[1] < 1:
        raise BGFSError(f"preview: heatmaps must be [N, K, h, w], got shape {tuple(heatmaps.shape)}")
    hm = np.nan_to_num(np.asarray(heatmaps, np.float32), nan=0.0).clip(0, None).max(axis=1)  # [N, h, w]
    scale = heat_scale(hm) if scale is None else float(scale)
    grey = pack_sheet(hm, layout) / scale
    return np.round(np.clip(grey, 0.0, 1.0) * 255).astype(np.uint8)


def tile_keypoints(keypoints: np.ndarray, layout: SheetLayout, crop_size: int) -> list[list[list[float] | None]]:
    """Per tile, per keypoint ``[x, y, conf]`` in tile px (rounded to 0.1), or ``None`` where it is missing.

    ``keypoints`` is ``[N, K, 2]`` crop px (confidence 1 where finite) or ``[N, K, 3]`` with confidence.
    NaN becomes ``None`` because the payload is JSON.
    """
    kp = np.asarray(keypoints, np.float32)
    if kp.ndim != 3 or kp.shape[2] not in (2, 3):
        raise BGFSError(f"preview: keypoints must be [N, K, 2] or [N, K, 3], got shape {tuple(kp.shape)}")
    if kp.shape[2] == 2:
        kp = np.concatenate([kp, np.ones_like(kp[..., :1])], axis=2)
    s = layout.tile / crop_size
    out = []
    for f in layout.frames:
        row: list[list[float] | None] = []
        for x, y, c in kp[f]:
            missing = not (np.isfinite(x) and np.isfinite(y)) or not np.isfinite(c) or c <= 0
            row.append(None if missing else [round(float(x) * s, 1), round(float(y) * s, 1), round(float(c), 3)])
        out.append(row)
    return out


def _check_crops(name: str, crops: np.ndarray, n: int | None = None) -> None:
    if not isinstance(crops, np.ndarray) or crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[3] != 3:
        got = getattr(crops, "dtype", type(crops).__name__), tuple(getattr(crops, "shape", ()))
        raise BGFSError(f"preview: {name} must be uint8 [N, S, S, 3] RGB crops, got {got[0]} {got[1]}")
    if crops.shape[1] != crops.shape[2]:
        raise BGFSError(f"preview: {name} must be square, got {crops.shape[1]}x{crops.shape[2]} px")
    if n is not None and crops.shape[0] != n:
        raise BGFSError(f"preview: {name} has {crops.shape[0]} frames, the crops have {n}")


def _check_frames(name: str, arr: np.ndarray | None, n: int) -> None:
    if arr is not None and (np.ndim(arr) < 1 or np.shape(arr)[0] != n):
        raise BGFSError(f"preview: {name} has {np.shape(arr)[:1]} frames, the crops have {n}; pass one per crop")


def build_preview(
    kind: str,
    region: str,
    crops: np.ndarray,
    heatmaps: np.ndarray | None = None,
    keypoints: np.ndarray | None = None,
    after_crops: np.ndarray | None = None,
    after_heatmaps: np.ndarray | None = None,
    after_keypoints: np.ndarray | None = None,
    max_side: int = MAX_SIDE,
    labels: list[str] | None = None,
) -> Preview:
    """Sheets and payload for one node run; the glue adds each sheet's file reference to the payload.

    ``labels`` name each crop for the slider (e.g. ``"12/43 left"``: frame 12 of 43, the left hand), since a
    video with two hands has more crops than frames; without them the slider shows the crop's number."""
    if kind not in KINDS:
        raise BGFSError(f"preview: kind must be one of {KINDS}, got {kind!r}")
    _check_crops("crops", crops)
    n, size = crops.shape[0], crops.shape[1]
    if after_crops is not None:
        _check_crops("after_crops", after_crops, n)
        if after_crops.shape[1] != size:
            raise BGFSError(f"preview: after_crops are {after_crops.shape[1]} px, the crops {size} px; use one size")
    for name, arr in (("heatmaps", heatmaps), ("keypoints", keypoints), ("after_heatmaps", after_heatmaps),
                      ("after_keypoints", after_keypoints)):  # fmt: skip
        _check_frames(name, arr, n)
    if labels is not None and len(labels) != n:
        raise BGFSError(f"preview: {len(labels)} labels for {n} crops; give one label per crop")

    layout = sheet_layout(n, size, max_side=max_side)
    prev = Preview(layout=layout)
    prev.payload = {"kind": kind, "region": region, "n": layout.n, "total": int(n), "frames": list(layout.frames),
                    "tile": layout.tile, "cols": layout.cols, "rows": layout.rows}  # fmt: skip
    scale = heat_scale(heatmaps, after_heatmaps)  # one scale, so the toggle compares like with like
    prev.sheets["crops"] = pack_sheet(crops, layout)
    if heatmaps is not None:
        prev.sheets["heat"] = heat_sheet(heatmaps, layout, scale)
    if labels is not None:
        prev.payload["labels"] = [str(labels[f]) for f in layout.frames]
    if keypoints is not None:
        prev.payload["keypoints"] = tile_keypoints(keypoints, layout, size)
    if after_crops is not None:
        prev.sheets["after_crops"] = pack_sheet(after_crops, layout)
    if after_heatmaps is not None:
        prev.sheets["after_heat"] = heat_sheet(after_heatmaps, layout, scale)
    if after_keypoints is not None:
        prev.payload["after_keypoints"] = tile_keypoints(after_keypoints, layout, size)
    return prev
