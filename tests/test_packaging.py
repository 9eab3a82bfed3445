"""Packaging: requirements.txt and pyproject.toml agree, the Registry metadata is there, imports stay light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_requirements_match_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _requirements() == project["dependencies"]


def test_no_torch_pin_and_one_opencv_variant():
    names = [r.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower() for r in _requirements()]
    assert "torch" not in names and "torchvision" not in names
    # mediapipe brings opencv-contrib-python; a second variant beside it breaks cv2
    assert not [n for n in names if n.startswith("opencv")]


def test_registry_metadata():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    comfy = data["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert comfy["requires-comfyui"].startswith(">=")
    assert data["project"]["name"] and data["project"]["version"]
    assert data["project"]["urls"]["Repository"]
    assert data["project"]["scripts"]["bgfs"] == "bgfs_core.cli:main"


def test_importing_core_is_light():
    code = (
        "import sys, bgfs_core, bgfs_core.cli, bgfs_core.config, bgfs_core.regions;"
        "bgfs_core.cli.build_parser();"
        "heavy = [m for m in ('torch', 'mediapipe', 'cv2', 'av', 'diffusers', 'matplotlib', 'comfy') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, f"importing bgfs_core pulled in heavy modules: {out.stdout} {out.stderr}"


def test_example_workflow_thumbnails_show_their_workflows():
    """Each template's thumbnail is what tests/workflow_thumbnails.py draws from its JSON (JPEG's rounding aside):
    a workflow edited without regenerating its picture fails here. Toggling the bypass of the small Critic Loader
    box alone changes 0.36% of the pixels by more than 48 grey levels; JPEG leaves at most 0.08%."""
    import numpy as np
    from PIL import Image
    from workflow_thumbnails import EXAMPLES, SIZE, TITLES, thumbnail

    names = sorted(p.stem for p in EXAMPLES.glob("*.json"))
    assert names == sorted(TITLES), "a workflow without a thumbnail title: add it to workflow_thumbnails.TITLES"
    for name in names:
        with Image.open(EXAMPLES / f"{name}.jpg") as im:
            assert im.format == "JPEG" and im.size == SIZE
            committed = np.asarray(im.convert("RGB"), np.int16)
        drawn = np.asarray(thumbnail(name), np.int16)
        stale = (np.abs(drawn - committed).max(-1) > 48).mean()
        assert stale < 0.002, (f"{name}.jpg is not its workflow's picture ({stale:.2%} of pixels differ): "
                               "run python tests/workflow_thumbnails.py")
