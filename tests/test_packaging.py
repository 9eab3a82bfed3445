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
    # the icon is a committed file, served raw from the Repository's main branch; the Registry asks for a square
    # image of at most 400x400
    from PIL import Image

    repo = data["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    raw = f"https://raw.githubusercontent.com/{repo}/main/"
    assert comfy["Icon"].startswith(raw), comfy["Icon"]
    with Image.open(ROOT / comfy["Icon"].removeprefix(raw)) as icon:
        assert icon.width == icon.height <= 400, icon.size


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


def test_the_sdist_carries_every_tracked_file_but_the_media_the_registry_archive_leaves_out(tmp_path):
    """MANIFEST.in: the sdist holds the nodes, widget, workflows, tests, benchmarks and CI as well as bgfs_core,
    and leaves out what .comfyignore keeps out of the Registry archive (media whose rights rest with others)."""
    import shutil
    import tarfile

    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0 or not listed.stdout:
        import pytest

        pytest.skip("not a git checkout: the sdist is checked against the files git tracks")
    tracked = [f for f in listed.stdout.decode().split("\0") if f and (ROOT / f).is_file()]
    src = tmp_path / "src"
    for f in tracked:  # a copy of the tracked files, so that the build writes nothing into the checkout
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    build = f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp_path)!r}))"
    done = subprocess.run([sys.executable, "-c", build], cwd=src, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    with tarfile.open(tmp_path / done.stdout.strip().splitlines()[-1]) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if m.isfile() and "/" in m.name}
    ignore = [ln.strip() for ln in (ROOT / ".comfyignore").read_text().splitlines() if ln.strip() and ln[0] != "#"]
    left_out = {f for f in tracked if any(f == p or f.startswith(p.rstrip("/") + "/") for p in ignore)}
    assert left_out, ".comfyignore names no tracked file"
    assert sorted(set(tracked) - left_out - members) == []
    assert sorted(left_out & members) == []


def test_a_wheel_carries_the_demo_clip_and_runs_its_demo_from_there(tmp_path):
    """The wheel holds bgfs_core (and its subpackages) and the bundled hand clip as bgfs_core.samples, so that
    `bgfs demo` installed from a wheel finds its default video, not just a checkout; nothing else of the repository."""
    import shutil
    import zipfile

    src = tmp_path / "src"  # a copy, so that the build writes nothing (build/, egg-info) into the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv*", ".ci-*", "*.egg-info", "build",
                                                              "__pycache__", "test-artifacts", "film"))  # fmt: skip
    build = f"from setuptools import build_meta; print(build_meta.build_wheel({str(tmp_path)!r}))"
    done = subprocess.run([sys.executable, "-c", build], cwd=src, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = tmp_path / done.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert zf.read("bgfs_core/samples/fingers-lq.gif") == (ROOT / "tests/data/clips/fingers-lq.gif").read_bytes()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"bgfs_core", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}, tops
    py = {Path(n).parent.as_posix() for n in names if n.endswith(".py")}
    assert {str(p.parent.relative_to(ROOT).as_posix()) for p in (ROOT / "bgfs_core").rglob("*.py")} <= py
    assert any(n.endswith("NOTICE") for n in names), "the clip's MIT notice travels in NOTICE"
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    # installed (unpacked) away from the checkout: the demo's default video is the wheel's copy
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from bgfs_core.commands import demo; "
            "assert demo.__file__.startswith(sys.argv[1]), demo.__file__; print(demo.bundled_video())")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, str(site)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(done.stdout.strip()) == site / "bgfs_core" / "samples" / "fingers-lq.gif"
