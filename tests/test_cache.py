"""The ROI cache built from real videos with real MediaPipe: format, heatmaps on the keypoints, bad files, resume."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import HAND_VIDEO

from bgfs_core import cache as cache_mod
from bgfs_core.cache import (
    CLIP_KEYS,
    MIN_VISIBLE,
    append_frames_to_cache,
    build_cache,
    load_clip,
    load_manifest,
    sample_clips,
)
from bgfs_core.config import Config, load_config
from bgfs_core.detection import Detector
from bgfs_core.errors import BGFSError
from bgfs_core.roi import crop_frames, frame_to_crop
from bgfs_core.video_io import read_video, write_video

SETTINGS = {
    "clips.clip_len": 4, "clips.clips_per_video": 2, "clips.max_frames_per_video": 24, "clips.seed": 3,
    "roi.out_hw": [96, 96], "critic.heatmap_hw": [32, 32], "critic.heatmap_sigma": 1.5,
}  # fmt: skip


def _cfg(videos: Path, cache: Path, **extra: object) -> Config:
    return load_config(None, {**SETTINGS, "data.videos_dir": str(videos), "data.cache_dir": str(cache), **extra})


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory, hand_video_frames: np.ndarray) -> Path:
    """Four sources: the GIF, an mp4 of it played backwards, a PNG folder of a later part, a corrupt mp4."""
    folder = tmp_path_factory.mktemp("videos")
    shutil.copy(HAND_VIDEO, folder / HAND_VIDEO.name)
    write_video(folder / "reversed.mp4", hand_video_frames[::-1].copy(), 10.0)
    write_video(folder / "later_frames", hand_video_frames[15:].copy(), 10.0)
    (folder / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    return folder


@pytest.fixture(scope="module")
def built(videos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, cache_mod.CacheSummary, str]:
    cache = tmp_path_factory.mktemp("cache") / "c"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        summary = build_cache(_cfg(videos, cache), progress=False)
    return cache, summary, err.getvalue()


class _CountDetections:
    """Counts the videos real MediaPipe detection runs on (the call goes through unchanged)."""

    def __init__(self, mp: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = Detector.detect_video

        def spy(det: Detector, frames, *args, **kwargs):
            self.calls += 1
            return real(det, frames, *args, **kwargs)

        mp.setattr(Detector, "detect_video", spy)


def test_build_writes_manifest_and_clips(built, videos: Path) -> None:
    cache, summary, _ = built
    assert (summary.sources_total, summary.sources_ok, summary.sources_failed) == (4, 3, 1)
    assert summary.detections_run == 3 and summary.frames == 24 + 24 + 24
    m = load_manifest(cache)
    assert m["version"] == 1 and m["region"] == "hands" and len(m["keypoint_names"]) == 21
    assert (m["out_hw"], m["heatmap_hw"], m["heatmap_sigma"], m["clip_len"], m["seed"]) == ([96, 96], [32, 32],
                                                                                           1.5, 4, 3)  # fmt: skip
    names = [s["name"] for s in m["sources"]]
    assert names == ["broken.mp4", "fingers-lq.gif", "later_frames", "reversed.mp4"]
    ok = [s for s in m["sources"] if s["status"] == "ok"]
    assert len(ok) == 3 and all(s["frames"] == 24 and s["hw"] == [240, 320] for s in ok)
    assert len(m["clips"]) == summary.clips_written and summary.clips_written >= 3
    for entry in m["clips"]:
        clip = load_clip(cache, entry)
        src = m["sources"][entry["source"]]
        assert src["status"] == "ok" and clip["source_index"] == entry["source"]
        assert clip["instance"] == entry["instance"] and entry["label"] == ("left", "right")[entry["instance"]]
        assert set(CLIP_KEYS) <= set(clip)
        assert clip["roi"].shape == (4, 96, 96, 3) and clip["roi"].dtype == np.uint8
        assert clip["hm"].shape == (4, 21, 32, 32) and clip["hm"].dtype == np.float16
        for key in ("keypoints", "keypoints_frame"):
            assert clip[key].shape == (4, 21, 2) and clip[key].dtype == np.float32
        assert clip["visibility"].shape == (4, 21) and clip["boxes"].shape == (4, 4)
        fidx = clip["frame_indices"]
        assert fidx.dtype == np.int32 and list(fidx) == entry["frame_indices"] and (np.diff(fidx) == 1).all()
        assert entry["visible_fraction"] >= MIN_VISIBLE
        # the crop is the source's frames cut to the stored boxes; the keypoints are the frame ones mapped in
        frames, _ = read_video(src["path"], max_frames=24)
        np.testing.assert_array_equal(clip["roi"], crop_frames(frames[fidx], clip["boxes"], (96, 96)))
        np.testing.assert_allclose(clip["keypoints"], frame_to_crop(clip["keypoints_frame"], clip["boxes"], (96, 96)),
                                   atol=1e-4)  # fmt: skip
        vis = clip["visibility"] > 0
        assert vis.mean() > 0.5
        assert ((clip["keypoints"][vis] >= 0) & (clip["keypoints"][vis] < 96)).all()
    # the three ok sources all show the hand, so each gave clips
    assert {e["source"] for e in m["clips"]} == {i for i, s in enumerate(m["sources"]) if s["status"] == "ok"}


def test_heatmap_peaks_sit_where_mediapipe_put_the_keypoints(built) -> None:
    cache, _, _ = built
    m = load_manifest(cache)
    gif = names_index(m)["fingers-lq.gif"]
    frames, fps = read_video(HAND_VIDEO, max_frames=24)
    with Detector("hands") as det:  # an independent MediaPipe run on the same frames
        fresh = det.detect_video(frames, fps=fps)
    checked = 0
    for entry in m["clips"]:
        clip = load_clip(cache, entry)
        if entry["source"] == gif:
            got = clip["keypoints_frame"]
            np.testing.assert_allclose(got, fresh.keypoints[clip["frame_indices"], entry["instance"]], atol=0.01)
        expected = frame_to_crop(clip["keypoints_frame"], clip["boxes"], (96, 96)) * (32 / 96)  # heatmap px
        hm = clip["hm"].astype(np.float32)
        vis = clip["visibility"] > 0
        flat = hm.reshape(4, 21, -1).argmax(-1)
        peak = np.stack([flat % 32, flat // 32], -1) + 0.5  # pixel centres
        dist = np.linalg.norm(peak - expected, axis=-1)
        assert (dist[vis] <= 0.75).all(), dist[vis].max()  # within the pixel that holds the point
        assert (hm.max((-2, -1))[vis] > 0.75).all() and (hm.max((-2, -1))[~vis] == 0).all()
        checked += int(vis.sum())
    assert checked > 100


def names_index(manifest: dict) -> dict[str, int]:
    return {s["name"]: i for i, s in enumerate(manifest["sources"])}


def test_corrupt_video_is_reported_and_skipped(built) -> None:
    cache, summary, stderr = built
    m = load_manifest(cache)
    broken = m["sources"][names_index(m)["broken.mp4"]]
    assert broken["status"] == "error" and "broken.mp4" in broken["error"] and broken["clips"] == 0
    assert len(summary.errors) == 1 and "broken.mp4" in summary.errors[0]
    assert "skipping broken.mp4" in stderr
    assert "1 failed" in summary.format() and "broken.mp4" in summary.format()


def test_second_run_skips_finished_sources_without_detecting(built, videos: Path) -> None:
    cache, first, _ = built
    before = load_manifest(cache)
    stamps = {p: p.stat().st_mtime_ns for p in [*(cache / "clips").iterdir(), cache / "manifest.json"]}
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(io.StringIO()):
        spy = _CountDetections(mp)
        again = build_cache(_cfg(videos, cache), progress=False)
    assert spy.calls == 0 and again.detections_run == 0
    assert again.sources_skipped == 3 and again.clips_skipped == first.clips_written and again.clips_written == 0
    assert again.sources_failed == 1  # the broken file is tried again, and fails again
    after = load_manifest(cache)
    assert after["clips"] == before["clips"] and after["sources"] == before["sources"]
    assert {p: p.stat().st_mtime_ns for p in [*(cache / "clips").iterdir(), cache / "manifest.json"]} == stamps


def test_a_lost_clip_is_cut_again_without_detecting_again(built, videos: Path, tmp_path: Path) -> None:
    """A clip file deleted from a finished cache: precompute used to call it cached (and training then failed on
    it); now it cuts that source's clips again from its cached detections."""
    cache = tmp_path / "c"
    shutil.copytree(built[0], cache)
    ref = load_manifest(cache)
    lost = cache / ref["clips"][0]["file"]
    reference = load_clip(cache, ref["clips"][0])
    lost.unlink()
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        spy = _CountDetections(mp)
        again = build_cache(_cfg(videos, cache), progress=False)
    assert spy.calls == 0  # the lost clip is cut from the cached detections
    assert "missing" in err.getvalue() and again.clips_written == 1 and lost.is_file()
    got = load_manifest(cache)
    assert sorted(c["file"] for c in got["clips"]) == sorted(c["file"] for c in ref["clips"])
    for key in CLIP_KEYS:
        np.testing.assert_array_equal(load_clip(cache, ref["clips"][0])[key], reference[key])


def test_interrupted_run_resumes_and_is_deterministic(built, videos: Path, tmp_path: Path) -> None:
    """Ctrl-C while the first good video's clips are written; the rerun detects only the videos not yet done."""
    cache = tmp_path / "c"
    real_arrays = cache_mod.clip_arrays
    made = []

    def interrupt_on_second_clip(*args, **kwargs):
        made.append(1)
        if len(made) == 2:
            raise KeyboardInterrupt
        return real_arrays(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(io.StringIO()):
        mp.setattr(cache_mod, "clip_arrays", interrupt_on_second_clip)
        with pytest.raises(KeyboardInterrupt):
            build_cache(_cfg(videos, cache), progress=False)
    m = load_manifest(cache)  # valid after the interrupt
    assert [s["status"] for s in m["sources"]] == ["error", "pending", "pending", "pending"] and m["clips"] == []
    assert len(list((cache / "clips").glob("*.npz"))) == 1 and not list(cache.rglob("*.partial*"))
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(io.StringIO()):
        spy = _CountDetections(mp)
        resumed = build_cache(_cfg(videos, cache), progress=False)
    assert spy.calls == 2 and resumed.detections_run == 2  # the GIF's detections were kept
    assert resumed.clips_skipped == 1 and resumed.sources_ok == 3
    # same seed, same config: the same clips, byte for byte the same arrays as the uninterrupted build
    ref_cache = built[0]
    ref = load_manifest(ref_cache)
    got = load_manifest(cache)
    assert got["clips"] == ref["clips"]
    for entry in got["clips"]:
        a, b = load_clip(cache, entry), load_clip(ref_cache, entry)
        for key in CLIP_KEYS:
            np.testing.assert_array_equal(a[key], b[key])


def test_sample_clips_is_deterministic_and_non_overlapping() -> None:
    visible = np.ones((200, 2), bool)
    visible[50:60, 0] = False
    visible[:, 1] = False
    visible[100:110, 1] = True  # instance 1: just one stretch
    a = sample_clips(visible, 8, 2, 6, seed=0, key="video.mp4")
    assert [(i, list(f)) for i, f in a] == [(i, list(f)) for i, f in sample_clips(visible, 8, 2, 6, 0, "video.mp4")]
    assert len(a) == 6
    others = {(i, int(f[0])) for i, f in sample_clips(visible, 8, 2, 6, seed=1, key="video.mp4")}
    assert others != {(i, int(f[0])) for i, f in a}
    for i, f in a:
        assert (np.diff(f) == 2).all() and visible[f, i].mean() >= MIN_VISIBLE
    spans = sorted((int(f[0]), int(f[-1])) for i, f in a if i == 0)
    assert all(s1 > e0 for (_, e0), (s1, _) in zip(spans, spans[1:]))
    # instance 1 has 10 visible frames: a stride-1 clip of 8 fits, one of stride 2 (15 frames) does not
    assert any(i == 1 for i, _ in sample_clips(visible, 8, 1, 100, 0, "v"))
    assert not any(i == 1 for i, _ in sample_clips(visible, 8, 2, 100, 0, "v"))
    assert sample_clips(np.zeros((3, 2), bool), 8, 1, 4, 0, "short") == []


def test_changed_settings_need_a_new_cache_or_overwrite(built, videos: Path, tmp_path: Path) -> None:
    only_broken = tmp_path / "v"
    only_broken.mkdir()
    shutil.copy(videos / "broken.mp4", only_broken)
    cache = tmp_path / "c"
    shutil.copytree(built[0], cache)  # a cache with clips: those would mix with clips cut otherwise
    with contextlib.redirect_stderr(io.StringIO()):
        with pytest.raises(BGFSError, match=r"roi.out_hw \[96, 96\] -> \[128, 128\].*new data.cache_dir.*--overwrite"):
            build_cache(_cfg(only_broken, cache, **{"roi.out_hw": [128, 128]}), progress=False)
        with pytest.raises(BGFSError, match="roi.region 'hands' -> 'face'"):
            build_cache(_cfg(only_broken, cache, **{"roi.region": "face"}), progress=False)
        build_cache(_cfg(only_broken, cache, **{"roi.out_hw": [128, 128]}), progress=False, overwrite=True)
        assert load_manifest(cache)["out_hw"] == [128, 128]
        # a cache from a BGFS whose hands had other keypoints: adding to it would mix two sets in one cache
        manifest = load_manifest(cache)
        (cache / "manifest.json").write_text(json.dumps({**manifest, "keypoint_names": manifest["keypoint_names"][:20]}))
        with pytest.raises(BGFSError, match=r"holds 20 keypoints per hands .* this BGFS has 21: rebuild it \(bgfs "
                                            r"precompute --overwrite"):  # fmt: skip
            build_cache(_cfg(only_broken, cache, **{"roi.out_hw": [128, 128]}), progress=False)
        build_cache(_cfg(only_broken, cache, **{"roi.out_hw": [128, 128]}), progress=False, overwrite=True)
    assert len(load_manifest(cache)["keypoint_names"]) == 21


def test_overwrite_deletes_only_a_bgfs_cache(built, videos: Path, tmp_path: Path) -> None:
    """A folder of the user's own videos called clips/ is not a cache's clips/: --overwrite must not delete it, and
    a cache may not be built into the videos' folder."""
    project = tmp_path / "project"
    (project / "clips").mkdir(parents=True)
    shutil.copy(videos / "broken.mp4", project / "clips")
    with contextlib.redirect_stderr(io.StringIO()):
        with pytest.raises(BGFSError, match="into the videos' folder"):
            build_cache(_cfg(project / "clips", project), progress=False, overwrite=True)
        with pytest.raises(BGFSError, match="but no manifest.json, so it may not be a BGFS cache and nothing was "
                                            "deleted"):  # fmt: skip
            build_cache(_cfg(videos, project), progress=False, overwrite=True)
        assert (project / "clips" / "broken.mp4").is_file()
        (project / "clips" / "broken.mp4").rename(project / "broken.mp4")
        with pytest.raises(BGFSError, match="into the videos' folder"):
            build_cache(_cfg(project, project), progress=False)
        # a real cache beside them is overwritten as before
        cache = tmp_path / "cache"
        shutil.copytree(built[0], cache)
        (cache / "clips" / "stale.npz").write_bytes(b"x")
        build_cache(_cfg(project, cache), progress=False, overwrite=True)
    assert not (cache / "clips" / "stale.npz").exists() and load_manifest(cache)["sources"]


def test_clips_without_their_manifest_are_not_reused(built, videos: Path, tmp_path: Path) -> None:
    """A build writes its manifest before any clip, so clips/ and detections/ without one are not a stopped build's:
    their crop size and detector settings are unknown, and a build there (another crop size here) is refused
    instead of mixing them in; --overwrite says what it found, an unreadable manifest included."""
    cache = tmp_path / "c"
    shutil.copytree(built[0], cache)
    (cache / "manifest.json").unlink()
    for overwrite, says in ((False, "holds clips/, detections/ but no manifest.json, so their settings are unknown"),
                            (True, "holds clips/, detections/ but no manifest.json, so it may not be")):
        with pytest.raises(BGFSError, match=says):
            build_cache(_cfg(videos, cache, **{"roi.out_hw": [64, 64]}), progress=False, overwrite=overwrite)
    (cache / "manifest.json").write_text("{ half a manifest")
    with pytest.raises(BGFSError, match="a manifest.json that is not a BGFS one"):
        build_cache(_cfg(videos, cache), progress=False, overwrite=True)
    assert sorted(p.name for p in (cache / "clips").iterdir()) == sorted(p.name for p in (built[0] / "clips").iterdir())


def test_missing_or_empty_inputs_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BGFSError, match="does not exist"):
        build_cache(_cfg(tmp_path / "nope", tmp_path / "c"), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BGFSError, match="no videos in"):
        build_cache(_cfg(tmp_path / "empty", tmp_path / "c"), progress=False)
    with pytest.raises(BGFSError, match="run bgfs precompute first"):
        load_manifest(tmp_path / "c")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "manifest.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(BGFSError, match="format 99"):
        load_manifest(tmp_path / "c")
    with pytest.raises(BGFSError, match="is missing"):
        load_clip(tmp_path / "c", {"file": "clips/x.npz"})


def test_append_frames_adds_a_source_once(built, hand_video_frames: np.ndarray, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    shutil.copytree(built[0], cache)
    cfg = _cfg(tmp_path, cache)
    mirrored = hand_video_frames[:12, :, ::-1].copy()  # a different clip: the hand mirrored
    with pytest.MonkeyPatch.context() as mp:
        spy = _CountDetections(mp)
        first = append_frames_to_cache(mirrored, 10.0, "comfy batch 1", cfg)
        stamp = (cache / "manifest.json").stat().st_mtime_ns
        second = append_frames_to_cache(mirrored, 10.0, "comfy batch 1", cfg)
    assert spy.calls == 1
    # Nothing added, nothing written: the Cache Builder node reads the manifest's time as "the cache changed"
    assert (cache / "manifest.json").stat().st_mtime_ns == stamp
    assert first.sources_ok == 1 and first.clips_written >= 1 and second.sources_skipped == 1
    m = load_manifest(cache)
    idx = names_index(m)["comfy batch 1"]
    new = [e for e in m["clips"] if e["source"] == idx]
    assert len(new) == first.clips_written and m["sources"][idx]["hw"] == [240, 320]
    clip = load_clip(cache, new[0])
    np.testing.assert_array_equal(clip["roi"], crop_frames(mirrored[clip["frame_indices"]], clip["boxes"], (96, 96)))
    with pytest.raises(BGFSError, match="RGB uint8"):
        append_frames_to_cache(mirrored.astype(np.float32), 10.0, "x", cfg)
    with pytest.raises(BGFSError, match="source name"):
        append_frames_to_cache(mirrored, 10.0, " ", cfg)


def test_other_critic_heatmap_settings_still_add_to_a_cache(built, hand_video_frames: np.ndarray,
                                                            tmp_path: Path) -> None:
    """critic.heatmap_* set for training (which renders its own targets from the keypoints) do not lock a cache:
    videos are added with the heatmaps the cache was started with, so all its clips agree."""
    mirrored = hand_video_frames[:12, :, ::-1].copy()
    clips = {}
    for name, extra in (("same", {}), ("other", {"critic.heatmap_hw": [48, 48], "critic.heatmap_sigma": 3.0})):
        cache = tmp_path / name
        shutil.copytree(built[0], cache)
        summary = append_frames_to_cache(mirrored, 10.0, "mirrored", _cfg(tmp_path, cache, **extra))
        assert summary.clips_written >= 1
        m = load_manifest(cache)
        assert m["heatmap_hw"] == [32, 32] and m["heatmap_sigma"] == 1.5
        clips[name] = [load_clip(cache, e) for e in m["clips"] if e["source"] == names_index(m)["mirrored"]]
    for a, b in zip(clips["same"], clips["other"], strict=True):
        assert a["hm"].shape[-2:] == (32, 32)
        np.testing.assert_array_equal(a["hm"], b["hm"])


def test_an_append_stopped_while_cutting_clips_resumes(hand_video_frames: np.ndarray, tmp_path: Path) -> None:
    """The Cache Builder node's path into a new cache: stopped (a cancel) while its clips are cut, it leaves a
    manifest, so the next run goes on from the saved detections instead of finding clips with no settings."""
    cfg = _cfg(tmp_path, tmp_path / "c")
    frames = hand_video_frames[:12].copy()
    with pytest.MonkeyPatch.context() as mp:
        spy = _CountDetections(mp)
        mp.setattr(cache_mod, "save_clip", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            append_frames_to_cache(frames, 10.0, "batch", cfg)
        mp.undo()
        spy = _CountDetections(mp)
        done = append_frames_to_cache(frames, 10.0, "batch", cfg)
    assert done.sources_ok == 1 and done.clips_written >= 1 and spy.calls == 0  # the detections were kept


def test_a_truncated_clip_is_cut_again(built, videos: Path, tmp_path: Path) -> None:
    """A clip cut short (a partial copy of the cache) is not taken as done: it is cut again from the saved
    detections, so the cache is ready to train on instead of failing there."""
    cache = tmp_path / "c"
    shutil.copytree(built[0], cache)
    clip = cache / load_manifest(cache)["clips"][0]["file"]
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with contextlib.redirect_stderr(io.StringIO()):
        summary = build_cache(_cfg(videos, cache), progress=False)
    assert summary.clips_written >= 1
    for entry in load_manifest(cache)["clips"]:
        load_clip(cache, entry)


def test_a_source_without_clips_says_why(hand_video_frames: np.ndarray, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, tmp_path / "c")
    short = append_frames_to_cache(hand_video_frames[:3].copy(), 10.0, "three frames", cfg)  # clip_len is 4
    blank = append_frames_to_cache(np.full((6, 72, 96, 3), 90, np.uint8), 10.0, "grey", cfg)
    assert short.sources_empty == blank.sources_empty == 1
    assert short.empty == ["three frames: 3 frame(s), shorter than one clip (4 frames: clips.clip_len 4, "
                           "clips.frame_stride 1)"]  # fmt: skip
    assert blank.empty == ["grey: no clip shows the hands in 75% of its frames"]
    assert "  no clips: three frames: 3 frame(s), shorter than one clip" in short.format()


def test_precompute_command(built, videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bgfs_core.commands import precompute

    parser = argparse.ArgumentParser()
    precompute.add_arguments(parser)
    sets = [f"--set={k}={json.dumps(v)}" for k, v in SETTINGS.items()]
    cache = tmp_path / "c"
    shutil.copytree(built[0], cache)
    rc = precompute.run(parser.parse_args(["--videos-dir", str(videos), "--cache-dir", str(cache), "--quiet", *sets]))
    out = capsys.readouterr().out
    assert rc == 0 and "3 skipped (done before)" in out and f"{len(load_manifest(cache)['clips'])} clip(s)" in out
    only_broken = tmp_path / "v"
    only_broken.mkdir()
    shutil.copy(videos / "broken.mp4", only_broken)
    args = parser.parse_args(["--videos-dir", str(only_broken), "--cache-dir", str(tmp_path / "d"), "--quiet", *sets])
    with pytest.raises(BGFSError, match=r"none of the 1 video\(s\) .* could be read \(broken.mp4: "):
        precompute.run(args)
    assert "1 failed" in capsys.readouterr().out
    assert not (tmp_path / "d").exists(), "a cache none of whose videos was read is not left behind"
    grey = tmp_path / "grey"
    write_video(grey / "grey.mp4", np.full((6, 72, 96, 3), 90, np.uint8), 10.0)
    args = parser.parse_args(["--videos-dir", str(grey), "--cache-dir", str(tmp_path / "e"), "--quiet", *sets])
    with pytest.raises(BGFSError, match="no clip shows the hands region: .* lower detect.min_detection_confidence"):
        precompute.run(args)


def test_a_cache_without_clips_starts_over_with_new_settings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # "no clip shows the region: lower detect.min_detection_confidence" must not be answered by "the cache was
    # built with other settings"; a cache with clips still refuses them
    grey = tmp_path / "grey"
    write_video(grey / "grey.mp4", np.full((6, 72, 96, 3), 90, np.uint8), 10.0)
    cache = tmp_path / "c"
    assert build_cache(_cfg(grey, cache), progress=False).sources_empty == 1
    assert (cache / "detections").is_dir() and not load_manifest(cache)["clips"]
    (cache / "clips").mkdir()
    (cache / "clips" / "0000_grey_mp4_left_000000.npz").write_bytes(b"a clip a stopped run left, old settings")
    (cache / "clips" / "holiday.mp4").write_bytes(b"the user's own")
    lower = {"detect.min_detection_confidence": 0.2}
    again = build_cache(_cfg(grey, cache, **lower), progress=False)
    assert again.detections_run == 1, "the old settings' detections are not reused"
    assert sorted(p.name for p in (cache / "clips").iterdir()) == ["holiday.mp4"], "BGFS's own files go, no other"
    assert load_manifest(cache)["config"]["detect.min_detection_confidence"] == 0.2
    assert "holds no clips: starting it over with the new settings" in capsys.readouterr().err
    append_frames_to_cache(read_video(HAND_VIDEO, max_frames=24)[0], 10.0, "hand", _cfg(grey, cache, **lower))
    assert load_manifest(cache)["clips"]
    with pytest.raises(BGFSError, match="built with other settings"):
        build_cache(_cfg(grey, cache), progress=False)


def test_clips_follow_a_hand_whose_label_flips(videos: Path, tmp_path: Path) -> None:
    # MediaPipe's handedness flips: every other frame the real detections come back in swapped slots; each clip
    # must still show one hand (by position), named by the label its track carried most often
    gif = tmp_path / "gif"
    gif.mkdir()
    shutil.copy(videos / HAND_VIDEO.name, gif / HAND_VIDEO.name)
    real = Detector.detect_video

    def flipping(det: Detector, frames, *args, **kwargs):
        out = real(det, frames, *args, **kwargs)
        for arr in (out.keypoints, out.confidence, out.present, out.boxes, out.scores):
            arr[1::2] = arr[1::2, ::-1].copy()
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Detector, "detect_video", flipping)
        summary = build_cache(_cfg(gif, tmp_path / "c", **{"clips.clips_per_video": 4}), progress=False)
    assert summary.clips_written >= 2
    m = load_manifest(tmp_path / "c")
    for entry in m["clips"]:
        kp = load_clip(tmp_path / "c", entry)["keypoints_frame"]  # [T, K, 2] frame pixels
        centres = np.nanmean(kp, 1)
        size = np.nanmedian(np.linalg.norm(np.nanmax(kp, 1) - np.nanmin(kp, 1), axis=-1))
        jumps = np.linalg.norm(np.diff(centres, axis=0), axis=-1)
        assert np.nanmax(jumps) < 0.5 * size, (entry["label"], jumps, size)
    assert "left" in {e["label"] for e in m["clips"]}
