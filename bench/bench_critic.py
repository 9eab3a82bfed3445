"""Heatmap critic speed: forward and forward+backward (to the crop, as the fixer does) per crop, and its size.

    python bench/bench_critic.py [--width 32] [--crop 256] [--repeats 10] [--threads N] [--device cpu]

Default sizes (configs/default.yaml): 256 x 256 ROI crops, resized inside the critic to 128 x 128, 64 x 64 heatmaps.
"""

from __future__ import annotations

import argparse
import statistics
import time


def _time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and process CPU seconds per call (CPU time is steadier on a shared machine)."""
    fn()  # warm-up: allocator, kernels
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    import torch

    from bgfs_core.critic import CriticSpec, HeatmapCritic

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--region", default="hands")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--crop", type=int, default=256, help="side of the crops fed to the critic")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    spec = CriticSpec.for_region(args.region, width=args.width)
    torch.manual_seed(0)
    model = HeatmapCritic(spec).to(args.device).eval().requires_grad_(False)  # as load_critic returns it
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"critic {args.region}: width {spec.width}, {model.num_parameters:,} parameters "
          f"({model.num_parameters * 4 / 2**20:.1f} MiB float32), input {spec.input_hw}, heatmaps {spec.heatmap_hw}, "
          f"crops {args.crop}x{args.crop}, device {args.device}, threads {torch.get_num_threads()}")  # fmt: skip
    print("ms per crop, median of --repeats; wall-clock (CPU time of the process, all threads)")
    print(f"{'batch':>5}  {'forward':>20}  {'forward+backward':>20}")
    for batch in (1, 16):
        crops = torch.rand(batch, 3, args.crop, args.crop, device=args.device)

        def forward(crops=crops):
            with torch.no_grad():
                model.predict_keypoints(crops)
            sync()

        def forward_backward(crops=crops):
            x = crops.clone().requires_grad_(True)
            points, conf, _ = model.predict_keypoints(x)
            (points.square().mean() - conf.mean()).backward()
            sync()

        cells = []
        for fn in (forward, forward_backward):
            wall, cpu = _time(fn, args.repeats)
            cells.append(f"{wall / batch * 1e3:.1f} ({cpu / batch * 1e3:.1f})")
        print(f"{batch:>5}  {cells[0]:>20}  {cells[1]:>20}")


if __name__ == "__main__":
    main()
