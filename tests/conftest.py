"""Shared fixtures: paths to the real media in tests/data and frames decoded from them."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
HAND_VIDEO = DATA / "clips" / "fingers-lq.gif"
HAND_PHOTOS = [DATA / "images" / n for n in ("handSrc.jpg", "handDst.jpg", "fullcurl.jpg", "halfcurl.jpg", "nocurl.jpg")]
FACE_PHOTO = DATA / "images" / "face_swapped.jpg"
FACE_VIDEO = DATA / "film" / "Megamind.avi"  # a CG film: a talking, turning face in frames 1-97
BODY_PHOTO = DATA / "images" / "messi5.jpg"
BODY_VIDEO = DATA / "body" / "cam01.mp4"  # a barefoot man swinging his arms and legs, head to feet in view


DIFFUSERS_MISSING = ("the diffusers extra is not installed: the tests of the real Wan VAE classes are SKIPPED "
                     "(pip install -e '.[diffusers]' runs them)")


def require_diffusers() -> None:
    """Skip, loudly, a test that needs the optional diffusers extra (``AutoencoderKLWan``) where it is absent."""
    from bgfs_core.errors import BGFSError, import_diffusers

    try:  # raises ModuleNotFoundError, a failure, when diffusers is installed but one of its dependencies is not
        import_diffusers("the tests")
    except BGFSError:
        print(f"\n!!! {DIFFUSERS_MISSING}", file=sys.stderr)
        warnings.warn(DIFFUSERS_MISSING, stacklevel=2)
        pytest.skip(DIFFUSERS_MISSING)


@pytest.fixture
def needs_diffusers() -> None:
    require_diffusers()


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def load_gif(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence

    return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(path))])


def video_frames(path: Path, start: int, stop: int, size: tuple[int, int]) -> np.ndarray:
    """Frames ``start:stop`` of a bundled video, resized to ``size`` (w, h)."""
    from PIL import Image

    from bgfs_core.video_io import read_video

    frames, _ = read_video(path, max_frames=stop)
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BICUBIC)) for f in frames[start:stop]])


def film_face_frames() -> np.ndarray:
    """Frames 20-35 of the bundled film at half size (352x256): a woman talking and turning her head."""
    return video_frames(FACE_VIDEO, 20, 36, (352, 256))


def body_video_frames() -> np.ndarray:
    """The first 16 frames of the bundled body video at a quarter size (272x480, the man about 185 px tall)."""
    return video_frames(BODY_VIDEO, 0, 16, (272, 480))


def lively(module, seed: int = 0):
    """``module`` (a tiny autoencoder) with random weights large enough that frames differ visibly (a default init
    decodes to about 0.03)."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 1.4 / max(1, p[0].numel()) ** 0.5 if p.ndim > 1 else 0.05)  # He init
    return module


def fix_reach(window: dict, grid: tuple[int, ...], feather: int = 1) -> np.ndarray:
    """Latent cells ``[t, h, w]`` a fix may change: its report's window plus the ring over which the edit fades
    out (``FixSettings.feather`` cells); everything else must come back bit for bit."""
    reach = np.zeros(grid, bool)
    (t0, t1), (y0, y1), (x0, x1) = window["latent_t"], window["latent_y"], window["latent_x"]
    reach[t0:t1, max(0, y0 - feather) : y1 + feather, max(0, x0 - feather) : x1 + feather] = True
    return reach


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def hand_video_frames() -> np.ndarray:
    """The 43 frames of the real hand video, uint8 [T, H, W, 3]."""
    return load_gif(HAND_VIDEO)
