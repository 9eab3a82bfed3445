"""Thumbnails of the example workflows: ComfyUI's template browser shows ``<name>.jpg`` beside ``<name>.json``.

Each is drawn from its workflow (node boxes, links, BGFS nodes in the pack's colour, bypassed nodes dashed and
marked), so a change to a workflow is a change to its picture. ``tests/test_packaging.py`` checks that the
committed JPEGs are what this draws; after editing a workflow, regenerate them:

    python tests/workflow_thumbnails.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[1] / "example_workflows"
SIZE = (640, 400)
HEADER = 58  # px above the graph for the title

TITLES = {
    "bgfs_cpu_tiny_vae": "BGFS on CPU: tiny VAE, real frames",
    "bgfs_fix_video_face": "BGFS: fix the face of a finished video",
    "bgfs_fix_video_hands": "BGFS: fix the hands of a finished video",
    "bgfs_train_critic": "BGFS: train a heatmap critic",
    "bgfs_wan2_2_14B_i2v_fix_hands": "Wan 2.2 14B I2V + BGFS hand fix",
    "bgfs_wan2_2_14B_t2v_fix_hands": "Wan 2.2 14B T2V + BGFS hand fix",
    "bgfs_wan2_2_5B_ti2v_fix_hands": "Wan 2.2 5B TI2V + BGFS hand fix",
}
SHORT = {"BGFSROIDetect": "BGFS ROI Detect", "BGFSLatentAnatomyFixer": "BGFS Fixer", "BGFSImageAnatomyFixer": "BGFS Image Fixer", "BGFSCriticLoader": "BGFS Critic",
         "BGFSAnatomyScore": "BGFS Score", "BGFSCriticTrainer": "BGFS Critic Trainer",
         "BGFSCacheBuilder": "BGFS Cache Builder"}
NOTES = {"Note", "MarkdownNote"}
BYPASSED, MUTED = 4, 2  # LiteGraph node modes
BACKGROUND = (32, 33, 36)
NODE, NODE_EDGE, TEXT = (55, 58, 64), (86, 90, 98), (228, 228, 228)
PACK, PACK_EDGE = (122, 40, 122), (232, 120, 232)
LINK, PACK_LINK = (112, 142, 172), (214, 110, 214)
OFF_TEXT = (150, 150, 150)


def _font(size: int, bold: bool = False) -> Any:
    """DejaVu Sans from matplotlib's own data (the pack depends on matplotlib), so the picture is the same
    wherever it is drawn."""
    from matplotlib import font_manager
    from PIL import ImageFont

    path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans",
                                                             weight="bold" if bold else "normal"),
                                 fallback_to_default=False)  # fmt: skip
    return ImageFont.truetype(path, size)


def _label(node: dict) -> str:
    title = node.get("title")
    if title:
        return title
    return SHORT.get(node["type"], node["type"])


def _bounds(nodes: list[dict]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the boxes of ``nodes`` in graph coordinates."""
    return (min(n["pos"][0] for n in nodes), min(n["pos"][1] for n in nodes),
            max(n["pos"][0] + n["size"][0] for n in nodes), max(n["pos"][1] + n["size"][1] for n in nodes))


def _shown(nodes: list[dict]) -> list[dict]:
    """The graph a user runs: the active nodes, and every other node placed among them (a bypassed loader inside
    the BGFS group); notes and alternative subgraphs laid out elsewhere are left out."""
    graph = [n for n in nodes if n["type"] not in NOTES]
    x0, y0, x1, y1 = _bounds([n for n in graph if n.get("mode", 0) == 0])

    def inside(n: dict) -> bool:
        cx, cy = n["pos"][0] + n["size"][0] / 2, n["pos"][1] + n["size"][1] / 2
        return x0 <= cx <= x1 and y0 <= cy <= y1

    return [n for n in graph if inside(n)]


def _dashed_rectangle(draw: Any, box: tuple[float, float, float, float], colour: tuple, dash: int = 5) -> None:
    x0, y0, x1, y1 = box
    for a, b, horizontal, at in ((x0, x1, True, y0), (x0, x1, True, y1), (y0, y1, False, x0), (y0, y1, False, x1)):
        p = a
        while p < b:
            q = min(p + dash, b)
            draw.line((p, at, q, at) if horizontal else (at, p, at, q), fill=colour, width=2)
            p += 2 * dash


def render(workflow: dict, title: str) -> Any:
    """The thumbnail of ``workflow`` as a PIL image of `SIZE`."""
    from PIL import Image, ImageDraw

    nodes = _shown(workflow["nodes"])
    by_id = {n["id"]: n for n in nodes}
    gx0, gy0, gx1, gy1 = _bounds(nodes)
    pad = 8
    scale = min((SIZE[0] - 2 * pad) / (gx1 - gx0), (SIZE[1] - HEADER - pad) / (gy1 - gy0))
    ox = (SIZE[0] - (gx1 - gx0) * scale) / 2

    def at(x: float, y: float) -> tuple[float, float]:
        return ox + (x - gx0) * scale, HEADER + (y - gy0) * scale

    image = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((16, 14), title, font=_font(22, bold=True), fill=TEXT)
    for _, src, out_slot, dst, in_slot, _kind in workflow["links"]:
        a, b = by_id.get(src), by_id.get(dst)
        if a is None or b is None:
            continue
        start = at(a["pos"][0] + a["size"][0], a["pos"][1] + 10 + 20 * out_slot)
        end = at(b["pos"][0], b["pos"][1] + 10 + 20 * in_slot)
        pack = a["type"].startswith("BGFS") or b["type"].startswith("BGFS")
        draw.line((*start, *end), fill=PACK_LINK if pack else LINK, width=1)
    font = _font(11)
    for n in nodes:
        x0, y0 = at(n["pos"][0], n["pos"][1])
        x1, y1 = at(n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
        box = (x0, y0, max(x1, x0 + 20), max(y1, y0 + 16))
        off = n.get("mode", 0) in (BYPASSED, MUTED)
        pack = n["type"].startswith("BGFS")
        if off:
            draw.rectangle(box, fill=BACKGROUND)
            _dashed_rectangle(draw, box, PACK_EDGE if pack else NODE_EDGE)
        else:
            draw.rectangle(box, fill=PACK if pack else NODE, outline=PACK_EDGE if pack else NODE_EDGE,
                           width=2 if pack else 1)  # fmt: skip
        text = _label(n) + (" (bypassed)" if n.get("mode") == BYPASSED else " (muted)" if off else "")
        while text and draw.textlength(text, font=font) > box[2] - box[0] - 6:
            text = text[:-1]
        draw.text((box[0] + 4, box[1] + 2), text, font=font, fill=OFF_TEXT if off else TEXT)
        if off and len(text) < len(_label(n)) + 2 and box[3] - box[1] >= 30:  # the mark did not fit: below
            draw.text((box[0] + 4, box[1] + 15), "bypassed" if n.get("mode") == BYPASSED else "muted", font=font,
                      fill=OFF_TEXT)  # fmt: skip
    return image


def thumbnail(name: str) -> Any:
    """The thumbnail of ``example_workflows/<name>.json``."""
    workflow = json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    return render(workflow, TITLES[name])


def main() -> int:
    for path in sorted(EXAMPLES.glob("*.json")):
        thumbnail(path.stem).save(path.with_suffix(".jpg"), quality=90)
        print(f"wrote {path.with_suffix('.jpg')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
