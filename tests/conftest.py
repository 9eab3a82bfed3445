"""Shared fixtures: paths to the real media in tests/data and frames decoded from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
HAND_VIDEO = DATA / "clips" / "fingers-lq.gif"
HAND_PHOTOS = [DATA / "images" / n for n in ("handSrc.jpg", "handDst.jpg", "fullcurl.jpg", "halfcurl.jpg", "nocurl.jpg")]
FACE_PHOTO = DATA / "images" / "face_swapped.jpg"
BODY_PHOTO = DATA / "images" / "messi5.jpg"


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def load_gif(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence

    return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(path))])


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def hand_video_frames() -> np.ndarray:
    """The 43 frames of the real hand video, uint8 [T, H, W, 3]."""
    return load_gif(HAND_VIDEO)
