"""ROI cache build speed on real clips, next to its parts: decoding, MediaPipe detection alone, the rest.

    python bench/bench_cache.py [--reps 3] [--loops 2] [--clips-per-video 4] [--clip-len 8]

Sources (built in a temp folder from tests/data/clips/fingers-lq.gif, 320x240): the GIF played forward and back
``--loops`` times (as a GIF), the same backwards as H.264 mp4, and a PNG folder of its second half. Each rep builds
a fresh cache with the default config (hands, 256x256 crops, 64x64 heatmaps) and, on the same frames, times
decoding alone and detection alone (one ``Detector``, start-up included, as in the build); "cache work" is build minus the two (crops, heatmaps, npz
compression, manifest). A resumed run on the finished cache is timed last. Medians over --reps.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bgfs_core.cache import build_cache, load_manifest  # noqa: E402
from bgfs_core.config import load_config  # noqa: E402
from bgfs_core.detection import detector_from_config  # noqa: E402
from bgfs_core.video_io import list_videos, read_video, write_video  # noqa: E402

GIF = ROOT / "tests" / "data" / "clips" / "fingers-lq.gif"


def make_sources(folder: Path, loops: int) -> None:
    frames, fps = read_video(GIF)
    ping_pong = np.concatenate([frames, frames[::-1]] * loops)
    write_video(folder / "forward.gif", ping_pong, fps)
    write_video(folder / "backward.mp4", ping_pong[::-1].copy(), fps)
    write_video(folder / "second_half", ping_pong[len(ping_pong) // 2 :].copy(), fps)


def time_cache_work(cfg, decoded: list) -> float:
    """Redo what the build did after detection, for every cached clip, from its stored detections."""
    from bgfs_core.cache import clip_arrays, save_clip
    from bgfs_core.detections import Detections
    from bgfs_core.roi import roi_boxes

    cache = Path(cfg.data.cache_dir)
    manifest = load_manifest(cache)
    out = cache / "bench_clips"
    t0 = time.perf_counter()
    for idx, (frames, _) in enumerate(decoded):
        det_file = next((cache / "detections").glob(f"{idx:04d}_*.npz"))
        with np.load(det_file) as z:
            det = Detections.from_dict({k: z[k] for k in z.files})
        boxes = roi_boxes(det, cfg.roi.margin, cfg.roi.min_conf, cfg.roi.smooth)
        for n, e in enumerate(c for c in manifest["clips"] if c["source"] == idx):
            fidx = np.asarray(e["frame_indices"])
            arrays = clip_arrays(frames, det, boxes[:, e["instance"]], e["instance"], fidx, idx, cfg)
            save_clip(out / f"{idx}_{n}.npz", arrays)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--loops", type=int, default=2, help="forward+backward passes of the 43-frame GIF per video")
    ap.add_argument("--clips-per-video", type=int, default=4)
    ap.add_argument("--clip-len", type=int, default=8)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bgfs_bench_cache_"))
    try:
        videos = tmp / "videos"
        videos.mkdir()
        make_sources(videos, args.loops)
        overrides = {"data.videos_dir": str(videos), "clips.clips_per_video": args.clips_per_video,
                     "clips.clip_len": args.clip_len}  # fmt: skip
        paths = list_videos(videos)
        build_s, decode_s, detect_s, resume_s, work_s = [], [], [], [], []
        clips = frames = 0
        for rep in range(args.reps):
            cfg = load_config(ROOT / "configs" / "default.yaml", {**overrides, "data.cache_dir": str(tmp / f"c{rep}")})
            with contextlib.redirect_stderr(io.StringIO()):  # MediaPipe's log lines
                t0 = time.perf_counter()
                summary = build_cache(cfg, progress=False)
                build_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                build_cache(cfg, progress=False)
                resume_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                decoded = [read_video(p) for p in paths]
                decode_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()  # the build creates its detector too, so its start-up counts here
                with detector_from_config(cfg) as det:
                    for f, fps in decoded:
                        det.detect_video(f, fps=fps)
                detect_s.append(time.perf_counter() - t0)
            work_s.append(time_cache_work(cfg, decoded))
            frames = summary.frames
            clips = len(load_manifest(cfg.data.cache_dir)["clips"])
        med = {k: statistics.median(v) for k, v in
               (("build", build_s), ("decode", decode_s), ("detect", detect_s), ("resume", resume_s),
                ("work", work_s))}  # fmt: skip
        rest = med["build"] - med["decode"] - med["detect"]
        clip_frames = clips * args.clip_len
        size = sum(p.stat().st_size for p in (tmp / "c0" / "clips").iterdir()) / 2**20
        print(f"{len(paths)} videos, {frames} frames (320x240), {clips} clips x {args.clip_len} frames "
              f"(256x256 crops, 21x64x64 heatmaps); median of {args.reps}")  # fmt: skip
        print(f"{'':<28}{'seconds':>9}{'frames/s':>10}")
        print(f"{'cache build (all)':<28}{med['build']:>9.2f}{frames / med['build']:>10.1f}")
        print(f"{'  decode alone':<28}{med['decode']:>9.2f}{frames / med['decode']:>10.1f}")
        print(f"{'  detection alone':<28}{med['detect']:>9.2f}{frames / med['detect']:>10.1f}")
        print(f"{'  the rest (build - both)':<28}{rest:>9.2f}")
        per = 1000 * med["work"] / max(clip_frames, 1)
        print(
            f"{'  cache work, timed alone':<28}{med['work']:>9.2f}   {per:.1f} ms per clip frame "
            "(boxes, crops, heatmaps, npz)"
        )
        print(f"{'resume of a finished cache':<28}{med['resume']:>9.2f}")
        print(
            f"cache size: {size:.1f} MiB for {clip_frames} clip frames ({1024 * size / max(clip_frames, 1):.0f} KiB each)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
