"""The fixer on regions other than hands, judged by MediaPipe: a talking face from a short film, the feet of a man
filmed swinging his arms and legs, and a face and a whole body from still photos panned and zoomed into clips, each
damaged the way the evaluation damages the hand (per-frame warps of each chain plus a shaking region), fixed by the
guide alone with the pixel codec."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    BODY_PHOTO,
    BODY_VIDEO,
    FACE_PHOTO,
    FACE_VIDEO,
    body_video_frames,
    film_face_frames,
    fix_reach,
    load_rgb,
)

from bgfs_core.codecs import PixelCodec
from bgfs_core.corruptions import corrupt_all, photo_clip
from bgfs_core.detection import detect_video
from bgfs_core.fix_video import decode_frames, encode_frames
from bgfs_core.fixer import FixSettings, fix_latents
from bgfs_core.metrics import score_video

FPS = 16.0


def clip_of(source) -> np.ndarray:
    """16 frames: a photo panned and zoomed, frames 20-35 of the film at half size (352x256), or the body video's
    first 16 at a quarter size (272x480)."""
    videos = {FACE_VIDEO: film_face_frames, BODY_VIDEO: body_video_frames}
    return videos[source]() if source in videos else photo_clip(load_rgb(source), num_frames=16)


@pytest.mark.parametrize(("region", "source", "min_jitter_cut"), [
    ("face", FACE_VIDEO, 0.5),
    ("feet", BODY_VIDEO, 0.3),
    ("face", FACE_PHOTO, 0.5),
    ("full_body", BODY_PHOTO, 0.3),
])  # fmt: skip
def test_the_guide_steadies_a_damaged_face_feet_and_body(region, source, min_jitter_cut):
    clean = clip_of(source)
    damaged = corrupt_all(clean, detect_video(clean, region, fps=FPS), ["finger_jitter", "region_jitter"], seed=0)
    det = detect_video(damaged, region, fps=FPS)
    assert det.present.any(1).all(), f"MediaPipe lost the {region} in the damaged clip"
    codec = PixelCodec()
    latents = encode_frames(codec, damaged)
    result = fix_latents(latents, codec, None, None, det, FixSettings(steps=30, lr=0.035, mode="warp", guide=3.0))
    fixed = decode_frames(codec, result.latents)

    before, after = score_video(damaged, region, fps=FPS).anatomy, score_video(fixed, region, fps=FPS).anatomy
    jitter_before, jitter_after = before.parts["jitter"].raw, after.parts["jitter"].raw
    print(f"\n{region}: jitter {jitter_before:.4f} -> {jitter_after:.4f}, bone_cv {before.parts['bone_cv'].raw:.4f} -> "
          f"{after.parts['bone_cv'].raw:.4f}, geometry {before.geometry_score:.1f} -> {after.geometry_score:.1f}")
    assert jitter_after < (1 - min_jitter_cut) * jitter_before, (jitter_before, jitter_after)
    assert after.geometry_score > before.geometry_score
    changed = (result.latents != latents).any(1)[0].numpy()  # [t, h, w]
    reach = fix_reach(result.report["window"], changed.shape, FixSettings().feather)
    assert changed.any() and not (changed & ~reach).any(), "pixels outside the window changed"


def test_the_guide_keeps_a_talking_face_talking():
    """The film's undamaged face, talking, through the fix: its lips, jaw and eyelids keep their movement, as
    MediaPipe reads it (before they were taken for bones and evened out with the head: 90% of it kept); the guard's
    verdict, as the Fixer nodes show it, says how much."""
    from bgfs_core.fix_video import judge_detections

    clean = clip_of(FACE_VIDEO)
    det = detect_video(clean, "face", fps=FPS)
    codec = PixelCodec()
    result = fix_latents(encode_frames(codec, clean), codec, None, None, det,
                         FixSettings(steps=30, lr=0.035, mode="warp", guide=3.0))  # fmt: skip
    judge = judge_detections(det, decode_frames(codec, result.latents), fps=FPS)
    kept = judge["expression"]
    print(f"\n{judge['summary']}")
    assert kept is not None and kept["range_kept"] > 0.94, kept
    assert f"{100 * kept['range_kept']:.0f}% of their movement kept" in judge["summary"]
