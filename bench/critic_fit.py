"""How well a critic reads footage it was not trained on: PCK@0.1 of its keypoints against MediaPipe's, per file.

    python bench/critic_fit.py --critic outputs/demo/critic/critic_best.safetensors [FILES...]

FILES are videos, GIFs or photos (default: every hand photo and clip in tests/data). Each is detected with MediaPipe
(static mode for photos), cropped as the fixer crops (ROI margin 0.25), and read by the critic. The fixer reports
the same number for the video it fixes (``critic_fit``); this prints it for any footage, e.g. to see whether a
critic trained on one clip carries over to others.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--critic", required=True, help="critic file")
    p.add_argument("files", nargs="*", help="videos or photos (default: the hand media in tests/data)")
    args = p.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from bgfs_core.critic_io import load_critic
    from bgfs_core.detection import detect_video
    from bgfs_core.roi import crop_frames, frame_to_crop, roi_boxes
    from bgfs_core.train_critic import pck
    from bgfs_core.video_io import read_video

    model, spec, _ = load_critic(args.critic)
    model.eval()
    data = ROOT / "tests/data"
    files = [Path(f) for f in args.files] or sorted((data / "images").glob("*.jpg")) + [data / "clips/fingers-lq.gif"]
    total_correct = total_scored = 0
    for path in files:
        if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
            frames, fps = np.asarray(Image.open(path).convert("RGB"))[None], 10.0
        else:
            frames, fps = read_video(path)
        det = detect_video(frames, spec.region, fps=fps)
        boxes = roi_boxes(det, 0.25, 0.3, 0.0)
        correct = scored = 0
        for i in range(det.keypoints.shape[1]):
            ok = np.isfinite(boxes[:, i]).all(-1) & det.present[:, i]
            if not ok.any():
                continue
            crops = crop_frames(frames[ok], boxes[ok, i], spec.input_hw)
            truth = np.asarray(frame_to_crop(det.keypoints[ok, i], boxes[ok, i], spec.input_hw))
            with torch.no_grad():
                points, _, _ = model.predict_keypoints(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255)
            c, s = pck(points.numpy(), truth, det.confidence[ok, i] >= 0.3, 0.1)
            correct, scored = correct + c, scored + s
        fit = f"{correct / scored:.3f}" if scored else "n/a (nothing detected)"
        print(f"{path.name:40} {int(det.present.any(1).sum()):4d} frame(s) with {spec.region}: PCK@0.1 {fit}")
        total_correct, total_scored = total_correct + correct, total_scored + scored
    if total_scored:
        print(f"{'all':40} PCK@0.1 {total_correct / total_scored:.3f} over {total_scored} keypoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
