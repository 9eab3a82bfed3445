"""The Latent Anatomy Fixer: optimise the latents of a video so the critic sees consistent anatomy.

One step: paste the optimised window into the latents, decode only that window (chunked, checkpointed, through the
codec's gradient decoder), crop each ROI differentiably, let the critic find the keypoints, and descend on
``strength * anatomy + fidelity``. Two edit modes: ``latent`` optimises the window's latent values directly;
``warp`` optimises a smooth displacement field over the ROI and resamples the latents with it, so the edit moves
anatomy instead of painting texture that fools the critic. Latents outside the window come back bit for bit.
``guide`` adds a pull towards ROI Detect's keypoint trajectories cleaned of jitter and stretching
(`bgfs_core.targets`): in warp mode measured on the displacement field at each detected keypoint (geometry, which
no texture can fake), in latent mode through the critic's keypoints. Without a critic the guide alone drives a
warp. ``critic_fit`` in the report: how well the critic reads the input, against ROI Detect's keypoints.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import FIXER_LR_DECAYS, FIXER_MODES
from .detections import Detections
from .errors import BGFSError, OutOfMemoryError, first_line, is_out_of_memory
from .losses import (
    LossWeights,
    bone_constancy_loss,
    confidence_loss,
    joint_limit_loss,
    latent_proximity_loss,
    pixel_proximity_loss,
    smoothness_loss,
    target_loss,
    warp_smoothness_loss,
    warp_temporal_loss,
)
from .regions import get_region
from .tracks import cut_words, detection_cuts, follow_tracks

if TYPE_CHECKING:
    import torch

    from .codecs import LatentCodec
    from .codecs.window import LatentWindow
    from .critic import CriticSpec

StepCallback = Callable[[int, int, dict, "np.ndarray | None"], None]

# Below this share of ROI Detect's keypoints found by the critic on the input (PCK@0.1), the fix warns: a critic
# trained on other footage reads these frames poorly, and its anatomy terms then pull the wrong way.
CRITIC_FIT_WARN = 0.5

# Below this PSNR (dB) inside the ROI between the gradient decoder's frames of the input and the judged VAE's, the
# fix warns: the gradients come from a decoder of another latent space (e.g. HunyuanVideo's taehv given for a Wan
# VAE), so they move pixels the judged decode does not show. Measured with tiny random-weight models: a bf16 copy
# of a Wan VAE agrees to 52-54 dB (so a copy is not measured: `GradientProxyCodec.same_weights`), another Wan VAE
# (other weights) to 15-17 dB, a TAEHV to 6 dB. A tiny decoder made for the VAE is expected well above 20 dB, but
# no real weights are here to measure it. The measurement costs no decode where the caller has the judged VAE's
# decode of the input (`bgfs fix`), else one decode of the window's first chunk (a few frames) by that VAE, without
# gradients (the node): 35 s on this CPU at full size, where a TAEHV step of 5 frames took 2-4 s. A region that
# first appears later in the video adds the VAE's causal warm-up over the window's frames before it (the Wan
# VAE's context is all earlier frames): at most one pass over the window's region, less than the guard's decode.
DECODER_AGREEMENT_WARN_DB = 20.0

# The backward pass runs on the loss times this, and the gradient is divided by it after: a half-precision (fp16)
# gradient decoder (ComfyUI's Wan VAE on a GPU without bf16) otherwise loses small gradients below fp16's range.
# The fidelity term is a mean over the window's pixels: through a small Wan 2.1 VAE in fp16, a mean over 440k
# pixels reached the latents 75% off fp32's gradient (relative error; 13% of it 0), 0.5% off scaled. A power of
# two: exact for fp32 and bf16, which have the range. A step whose scaled gradient is not finite is taken again
# unscaled; if that one is finite, the scaled one overflowed, and the scale is divided by 8 from then on.
GRAD_SCALE = 2.0**10


@dataclass
class FixSettings:
    steps: int = 30
    lr: float = 0.035  # warp: control-point spacings per step; latent: latent units per step
    strength: float = 1.0  # weight of the anatomy terms against fidelity
    mode: str = "warp"  # warp | latent
    margin: float = 0.25  # ROI box margin (fraction of its size)
    min_conf: float = 0.3  # detections below this do not shape the ROI
    smooth: float = 0.6  # temporal smoothing of ROI boxes
    feather: int = 1  # latent cells over which the edit fades out at the window's edge
    chunk_frames: int | None = None  # latent frames per decode chunk (None: codec-dependent)
    checkpoint: bool = True  # activation checkpointing of each decode chunk
    checkpoint_blocks: bool = True  # and of each decoder block inside it (causal Wan decoders): less memory, one
    # more forward pass of each block in the backward
    keep_states: int | None = None  # causal decoder states kept between chunks (None: ~sqrt(chunks)); more: less
    # recomputation in the backward, more memory (decode_window)
    warp_grid: int = 8  # warp mode: control points of the displacement field across the window's longer side
    crop_jitter: float = 0.05  # random shift / scale of the critic's crops each step (fraction of the ROI side)
    seed: int = 0
    guide: float = 3.0  # weight of the pull towards ROI Detect's cleaned trajectories (bgfs_core.targets); 0: off
    target_sigma: float = 3.0  # frames: temporal smoothing of those trajectories
    target_pose_sigma: float = 0.1  # ... over neighbouring frames whose pose is this alike (share of the size)
    guide_by_flow: bool = True  # warp mode: measure how far each keypoint moves on the displacement field itself
    keypoint_conf: float = 0.25  # critic keypoints below this share of their best frame's confidence are not used
    lr_decay: str = "cosine"  # cosine: anneal lr to 0 over the steps (less step noise left in the edit) | none
    # the video's first frame stays bit for bit: an I2V start image, or the frame a chained clip continues from.
    # The first latent frame decodes to it alone (causal Wan VAE; the pixel codec's frame), so it becomes context
    keep_first_frame: bool = False
    weights: LossWeights = field(default_factory=LossWeights)

    def validate(self) -> None:
        if self.mode not in FIXER_MODES:
            raise BGFSError(f"mode must be one of {', '.join(FIXER_MODES)}, got {self.mode!r}")
        if self.steps < 0:
            raise BGFSError(f"steps must be >= 0, got {self.steps}")
        if not self.lr > 0:
            raise BGFSError(f"lr must be > 0, got {self.lr}")
        if self.guide < 0:
            raise BGFSError(f"guide must be >= 0, got {self.guide}")
        if self.strength < 0:
            raise BGFSError(f"strength must be >= 0, got {self.strength}")
        if self.keep_states is not None and self.keep_states < 0:
            raise BGFSError(f"keep_states must be >= 0 or None, got {self.keep_states}")
        if self.lr_decay not in FIXER_LR_DECAYS:
            raise BGFSError(f"lr_decay must be one of {', '.join(FIXER_LR_DECAYS)}, got {self.lr_decay!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FixResult:
    latents: torch.Tensor  # same shape and dtype as the input; outside the window bit for bit unchanged
    report: dict[str, Any]  # JSON-able; report["summary"] is one readable paragraph
    preview: dict[str, np.ndarray] = field(default_factory=dict)  # before/after crops, heatmaps, keypoints
    window: LatentWindow | None = None  # what was optimised; outside its decoded region the latents are the input's


def _scaled_detections(det: Detections, frame_hw: tuple[int, int], warnings: list[str]) -> Detections:
    """Detections in the pixel space of the decoded frames; rescaled (with a warning) when only the size differs."""
    if tuple(det.frame_hw) == tuple(frame_hw):
        return det
    (h0, w0), (h1, w1) = det.frame_hw, frame_hw
    if abs(h0 / w0 - h1 / w1) > 0.02 * (h1 / w1):
        raise BGFSError(
            f"the ROI was detected on {w0}x{h0} frames but the latents decode to {w1}x{h1} frames, another aspect "
            "ratio: run ROI Detect on frames decoded from these latents"
        )
    warnings.append(
        f"the ROI was detected on {w0}x{h0} frames but the latents decode to {w1}x{h1}: ROI boxes were rescaled"
    )
    sx, sy = w1 / w0, h1 / h0
    scale2, scale4 = np.array([sx, sy], np.float32), np.array([sx, sy, sx, sy], np.float32)
    return Detections(det.region, det.keypoints * scale2, det.confidence, det.present, det.boxes * scale4,
                      det.scores, (h1, w1))  # fmt: skip


class _Problem:
    """What one optimisation step evaluates, set up once: window, boxes, masks, the critic's crops."""

    def __init__(self, latents, codec, critic, spec, det, settings, warnings, device=None):
        import torch

        from .codecs import pixel_box_of_window, window_from_boxes, window_latents
        from .roi import roi_boxes, roi_mask_union

        self.codec, self.critic, self.spec, self.settings = codec, critic, spec, settings
        self.region = get_region(det.region)
        # the critic's input size; with no critic, a size for the preview crops only
        self.crop_hw = tuple(spec.input_hw) if spec is not None else (128, 128)
        # where the optimisation runs; only the window's decoded region of the latents goes there
        self.device = dev = torch.device(device) if device is not None else latents.device
        boxes = roi_boxes(det, settings.margin, settings.min_conf, settings.smooth)  # [T, I, 4]
        present = np.isfinite(boxes).all(-1) & (boxes[..., 2] > boxes[..., 0])
        self.only_kept = False  # the region is in the kept first frame alone
        if settings.keep_first_frame:
            from .codecs.window import first_pixel_frame

            kept = first_pixel_frame(1, codec.temporal_ratio)  # the pixel frames of latent frame 0
            # (the boxes are held a few frames past the last detection: the detections say where the region is)
            self.only_kept = bool(det.present[:kept].any() and not det.present[kept:].any())
            present[:kept] = False  # no core there: latent frame 0 is only the decoder's causal context
            present &= not self.only_kept
        self.any_roi = bool(present.any())
        if not self.any_roi:
            return
        union = np.full((boxes.shape[0], 4), np.nan, np.float32)
        has = present.any(1)
        b = np.where(present[..., None], boxes, np.nan)
        union[has] = np.stack([np.nanmin(b[has, :, 0], 1), np.nanmin(b[has, :, 1], 1),
                               np.nanmax(b[has, :, 2], 1), np.nanmax(b[has, :, 3], 1)], 1)  # fmt: skip
        self.union = union  # [T, 4]: per frame, the box around every ROI
        self.window = window_from_boxes(codec, latents.shape, union)
        # the decoded region alone, and the window on it: a long video's full latents (the Image Fixer's are its
        # frames) are never copied to the device nor once per step
        self.local = self.window.local()
        self.z0 = latents.detach()[self.window.decoded_slices].to(dev, torch.float32, copy=True)
        pw = pixel_box_of_window(self.window)
        self.frame0, self.frame1 = pw.frame0, pw.frame1
        offset = np.array([pw.x0, pw.y0, pw.x0, pw.y0], np.float32)
        self.boxes = boxes[pw.frame0 : pw.frame1] - offset  # window pixel coordinates
        self.present = present[pw.frame0 : pw.frame1]
        self.pairs = np.argwhere(self.present)  # (frame, instance) of every crop
        sides = np.where(present, boxes[..., 2] - boxes[..., 0], 0.0)
        # per instance: the median ROI side, the unit of the anatomy terms (1 for an instance never seen)
        self.side = np.array([np.median(sides[present[:, i], i]) if present[:, i].any() else 1.0
                              for i in range(present.shape[1])], np.float32)  # fmt: skip
        self.z_win0 = window_latents(self.z0, self.local)
        # the first frame the edit can change: the causal context before it only warms the decoder up, so the
        # regularisers leave it out (averaged over it they would weaken the later the region appears)
        self.core = self.window.t0 - self.window.ct0
        chunk = settings.chunk_frames or (64 if codec.temporal_ratio == 1 else 2)
        self.chunk = max(1, int(chunk))
        hw = (pw.y1 - pw.y0, pw.x1 - pw.x0)
        inside = roi_mask_union(np.where(self.present[..., None], self.boxes, np.nan), hw, feather=0.1)
        self.outside = torch.from_numpy(1.0 - inside)[:, None].to(dev)
        self.roi_latent = self._latent_roi_mask(torch.from_numpy(inside)).to(dev)
        # how far each keypoint should move (region units), from the detector's keypoints on the input
        from .targets import kinematic_targets

        move, move_ok = kinematic_targets(det, min_conf=settings.min_conf, sigma=settings.target_sigma,
                                          pose_sigma=settings.target_pose_sigma).displacement(det)  # fmt: skip
        move = move[pw.frame0 : pw.frame1] / self.side[None, :, None, None]
        self.move = torch.from_numpy(move).to(dev)
        self.move_ok = torch.from_numpy(move_ok[pw.frame0 : pw.frame1] & self.present[..., None]).to(dev)
        self._setup_flow_probe(det, pw)
        # where another shot begins: the critic's bone and smoothness terms do not compare frames across it, nor does
        # the warp's temporal term the latent frames that hold it
        cut = detection_cuts(det, settings.min_conf)
        self.cut = torch.from_numpy(cut[pw.frame0 : pw.frame1])
        self.warp_across = torch.from_numpy(self._latent_steps_across(cut))
        # ROI Detect's keypoints of every crop, in window pixels: what the critic should find (critic_fit)
        kp = det.keypoints[pw.frame0 : pw.frame1][self.pairs[:, 0], self.pairs[:, 1]]
        conf = det.confidence[pw.frame0 : pw.frame1][self.pairs[:, 0], self.pairs[:, 1]]
        self.detected = kp - np.array([pw.x0, pw.y0], np.float32)
        self.detected_ok = (conf >= settings.min_conf) & np.isfinite(kp).all(-1)
        self.points0 = None
        self.frames0 = None
        self.warm: dict = {}  # decode_window's warm-up state, computed on the first step and reused after
        self.rng = torch.Generator().manual_seed(settings.seed)

    def _latent_steps_across(self, cut: np.ndarray) -> np.ndarray:
        """``[t1 - t0 - 1]`` bool: the steps between the window's consecutive core latent frames that a cut (``cut``,
        ``[T]`` over the video's pixel frames) lies across: from the second pixel frame of the first latent frame
        to the last of the second."""
        from .codecs.window import first_pixel_frame

        win, r = self.window, self.window.temporal_ratio
        frames = np.flatnonzero(cut)
        return np.array([((frames > first_pixel_frame(j - 1, r)) & (frames < first_pixel_frame(j + 1, r))).any()
                         for j in range(win.t0 + 1, win.t1)], bool)  # fmt: skip

    def _latent_roi_mask(self, inside: torch.Tensor) -> torch.Tensor:
        """Per latent frame, the ROI on the decoded region's latent grid ``[t, h, w]`` (max over the pixel frames
        and pixels a latent cell holds): where the warp may move content."""
        import torch
        import torch.nn.functional as F

        from .codecs.window import first_pixel_frame

        win, r, s = self.window, self.window.temporal_ratio, self.window.spatial_ratio
        out = torch.zeros(win.t1 - win.ct0, win.cy1 - win.cy0, win.cx1 - win.cx0)
        for j in range(win.t0, win.t1):
            a = first_pixel_frame(j, r) - self.frame0
            b = first_pixel_frame(j + 1, r) - self.frame0
            cell = F.max_pool2d(inside[a:b].amax(0)[None, None], s)[0, 0]
            out[j - win.ct0, win.y0 - win.cy0 : win.y1 - win.cy0, win.x0 - win.cx0 : win.x1 - win.cx0] = cell
        return out

    def _setup_flow_probe(self, det: Detections, pw: Any) -> None:
        """Where each detected keypoint sits on the window's latent grid (for `keypoint_motion`)."""
        import torch

        from .codecs.window import latent_index_of_frame

        win, s = self.window, self.window.spatial_ratio
        h, w = win.cy1 - win.cy0, win.cx1 - win.cx0
        kp = det.keypoints[pw.frame0 : pw.frame1].astype(np.float32)  # frame pixels
        u = kp[..., 0] / s - win.cx0 - 0.5  # latent cell centres are at (i + 0.5) * s pixels
        v = kp[..., 1] / s - win.cy0 - 0.5
        grid = np.stack([(u + 0.5) / w * 2 - 1, (v + 0.5) / h * 2 - 1], -1)
        self.kp_grid = torch.from_numpy(np.nan_to_num(grid)).to(self.device)  # [Tn, I, K, 2] for grid_sample
        lat = [latent_index_of_frame(f, win.temporal_ratio) - win.ct0 for f in range(pw.frame0, pw.frame1)]
        self.kp_latent_frame = torch.tensor(lat, device=self.device)  # (move_ok is False where kp is NaN)

    def keypoint_motion(self, flow: torch.Tensor) -> torch.Tensor:
        """How far the warp moves each detected keypoint, ``[Tn, I, K, 2]`` in region units.

        The warped latents sample ``z(p + flow(p))``: content at ``q`` lands near ``q - flow(q)``.
        """
        import torch
        import torch.nn.functional as F

        f = flow[self.kp_latent_frame]  # [Tn, 2, h, w], latent cells
        tn, i, k, _ = self.kp_grid.shape
        at = F.grid_sample(f, self.kp_grid.reshape(tn, 1, i * k, 2), mode="bilinear", align_corners=False)
        moved = -at.reshape(tn, 2, i, k).permute(0, 2, 3, 1) * self.window.spatial_ratio  # pixels
        return moved / torch.from_numpy(self.side).to(flow)[None, :, None, None]

    # --- the edit -------------------------------------------------------------------------------------------------
    def init_params(self) -> torch.Tensor:
        import torch

        if self.settings.mode == "latent":
            return torch.zeros_like(self.z_win0, requires_grad=True)
        # a coarse grid of control points: the field can move fingers and limbs, not paint texture
        t, h, w = self.z_win0.shape[2:]
        n = max(2, int(self.settings.warp_grid))
        gh, gw = (n, max(2, round(n * w / h))) if h >= w else (max(2, round(n * h / w)), n)
        return torch.zeros(t, 2, gh, gw, device=self.device, requires_grad=True)

    @staticmethod
    def _spacing(h: int, w: int, params: torch.Tensor) -> torch.Tensor:
        """Latent cells between control points, as (x, y) shaped to scale a ``[t, 2, gh, gw]`` field."""
        gh, gw = params.shape[-2:]
        return params.new_tensor([w / (gw - 1), h / (gh - 1)])[None, :, None, None]

    def flow_from_params(self, params: torch.Tensor) -> torch.Tensor:
        """Warp mode: the dense displacement ``[t, 2, h, w]`` in latent cells, zero outside each frame's ROI."""
        import torch.nn.functional as F

        h, w = self.z_win0.shape[3:]
        # params are in units of the control-point spacing, so lr means the same for every codec and ROI size
        dense = F.interpolate(params * self._spacing(h, w, params), size=(h, w), mode="bicubic", align_corners=True)
        return dense * self.roi_latent[:, None]  # each frame moves only inside its own ROI

    def window_from_params(self, params: torch.Tensor, flow: torch.Tensor | None = None) -> torch.Tensor:
        """The edited window latents; in warp mode ``flow`` is ``flow_from_params(params)`` when already at hand."""
        import torch
        import torch.nn.functional as F

        if self.settings.mode == "latent":
            return self.z_win0 + params
        # warp: displacement in latent cells, faded out at each frame's ROI edge, applied frame by frame
        z = self.z_win0[0].permute(1, 0, 2, 3)  # [t, C, h, w]
        t, _, h, w = z.shape
        flow = self.flow_from_params(params) if flow is None else flow
        ys, xs = torch.meshgrid(torch.arange(h, dtype=z.dtype, device=z.device),
                                torch.arange(w, dtype=z.dtype, device=z.device), indexing="ij")  # fmt: skip
        gx = (xs + flow[:, 0] + 0.5) / w * 2 - 1
        gy = (ys + flow[:, 1] + 0.5) / h * 2 - 1
        warped = F.grid_sample(z, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="border",
                               align_corners=False)  # fmt: skip
        return warped.permute(1, 0, 2, 3)[None]

    def _jittered(self, boxes: torch.Tensor) -> torch.Tensor:
        """``boxes`` shifted and zoomed at random. A box at the window's edge (the window is the boxes' union) often
        leaves it, and its crop shows black there, as training's augmentation shows the critic (zero padding).
        Kept inside the window instead, the hand clip's fixes came out slightly worse (8 seeds, the demo's critic:
        bone -21% against -23%, geometry +7.5 against +8.3), so they are not."""
        import torch

        j = self.settings.crop_jitter
        noise = torch.randn(len(boxes), 3, generator=self.rng).to(boxes)
        side = boxes[:, 2:] - boxes[:, :2]
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2 + noise[:, :2] * j * side
        half = side / 2 * (1 + j * noise[:, 2:3])
        return torch.cat([centre - half, centre + half], 1)

    # --- one evaluation ---------------------------------------------------------------------------------------------
    def evaluate(self, params: torch.Tensor, need_preview: bool = False, jitter: bool = False
                 ) -> tuple[torch.Tensor, dict, dict]:
        import torch

        from .codecs import decode_window, frames_to_uint8, paste_window
        from .roi import crop_torch

        s, w = self.settings, self.settings.weights
        flow = self.flow_from_params(params) if s.mode == "warp" else None
        z_win = self.window_from_params(params, flow)
        z_region = paste_window(self.z0, self.local, z_win, feather=s.feather)
        frames = decode_window(self.codec, z_region, self.local, chunk_frames=self.chunk, checkpoint=s.checkpoint,
                               checkpoint_blocks=s.checkpoint_blocks, keep_states=s.keep_states, warm=self.warm)
        if self.frames0 is None:
            self.frames0 = frames.detach()
        dev = self.device
        t_idx = torch.from_numpy(self.pairs[:, 0]).to(dev)
        i_idx = torch.from_numpy(self.pairs[:, 1]).to(dev)
        boxes = torch.from_numpy(self.boxes[self.pairs[:, 0], self.pairs[:, 1]]).to(dev)
        if jitter and s.crop_jitter > 0:
            # Expectation over small crop shifts and zooms: an edit must move the keypoints the critic sees in
            # every such crop, which adversarial texture does not survive but real geometry does
            boxes = self._jittered(boxes)
        crops = crop_torch(frames[t_idx], boxes, self.crop_hw)
        points, confidence, valid, preview = (self._read_keypoints(crops, boxes, t_idx, i_idx)
                                              if self.critic is not None else (None, None, None, {}))  # fmt: skip
        if s.mode == "warp" and s.guide_by_flow:
            # geometry, not the critic's reading: where the displacement field takes each detected keypoint
            target = target_loss(self.keypoint_motion(flow), 0.0, self.move, self.move_ok)
        else:
            target = target_loss(points, self.points0, self.move, valid & self.move_ok)
        if self.critic is not None:
            read = {
                "bone": bone_constancy_loss(points, valid, self.region, cut=self.cut),
                "smooth": smoothness_loss(points, valid, self.region, cut=self.cut),
                "joint": joint_limit_loss(points, valid, self.region),
                "confidence": confidence_loss(confidence, torch.from_numpy(self.present).to(dev)),
            }
        else:  # guide only: nothing reads keypoints, so those terms are 0
            read = dict.fromkeys(("bone", "smooth", "joint", "confidence"), frames.new_zeros(()))
        parts = {
            "target": target,
            **read,
            # warp mode reports the latent change but does not optimise it: no graph (it would outlive the step)
            "latent": latent_proximity_loss((z_win if s.mode == "latent" else z_win.detach())[:, :, self.core :],
                                            self.z_win0[:, :, self.core :]),
            "pixel": pixel_proximity_loss(frames, self.frames0, self.outside),
        }
        anatomy = w.bone * parts["bone"] + w.smooth * parts["smooth"] + w.joint * parts["joint"]
        anatomy = anatomy + w.confidence * parts["confidence"] + s.guide * parts["target"]
        # fidelity: pixels outside the ROI always; latent values only in latent mode (moving them is warp's point)
        fidelity = w.pixel * parts["pixel"] + (w.latent * parts["latent"] if s.mode == "latent" else 0.0)
        total = s.strength * anatomy + fidelity
        if s.mode == "warp":
            parts["warp"] = warp_smoothness_loss(params[self.core :])  # strain: params in control-point spacings
            parts["warp_time"] = warp_temporal_loss(params[self.core :], self.warp_across)
            total = total + w.warp * parts["warp"] + w.warp_time * parts["warp_time"]
        parts["anatomy"] = anatomy
        parts["total"] = total
        extras: dict[str, Any] = {}
        if need_preview:
            extras = {"crops": frames_to_uint8(crops),
                      **preview}
        return total, parts, extras

    def _read_keypoints(self, crops: torch.Tensor, boxes: torch.Tensor, t_idx: torch.Tensor, i_idx: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """The critic's reading of the crops: keypoints ``[Tn, I, K, 2]`` (region units), their confidence, the
        ones it is sure of, and what the preview and ``critic_fit`` need."""
        import torch

        from .roi import crop_to_frame

        s, dev = self.settings, self.device
        pts_crop, conf, heat = self.critic.predict_keypoints(crops)
        pts = crop_to_frame(pts_crop, boxes, self.crop_hw)  # window pixels
        side = torch.from_numpy(self.side[self.pairs[:, 1]])[:, None, None].to(dev)
        t_n, i_n = self.present.shape
        k = self.region.num_keypoints
        points = pts.new_zeros(t_n, i_n, k, 2)
        confidence = pts.new_zeros(t_n, i_n, k)
        points = points.index_put((t_idx, i_idx), pts / side)
        confidence = confidence.index_put((t_idx, i_idx), conf)
        roi_present = torch.from_numpy(self.present).to(dev)
        # a keypoint counts where the critic is at least keypoint_conf x as sure as its best frame for it: critics
        # differ in how high their peaks are, so the threshold is relative
        c = confidence.detach()
        best = c.amax(0, keepdim=True).clamp_min(1e-6)
        valid = (c >= s.keypoint_conf * best) & roi_present[..., None]
        if self.points0 is None:
            self.points0 = points.detach()
        preview = {
            "heatmaps": heat.detach().float().cpu().numpy(),
            "keypoints": pts_crop.detach().float().cpu().numpy(),
            "window_points": pts.detach().float().cpu().numpy(),
        }
        return points, confidence, valid, preview

    def decoder_agreement(self, latents: torch.Tensor, judged_frames: np.ndarray | None = None) -> float | None:
        """PSNR (dB) inside the ROI of the first step's frames (the gradient decoder's decode of ``latents``) against
        the judged decoder's, when they are two models (a `GradientProxyCodec`; else None): how close what the
        optimiser sees is to what the result is judged on (100 when identical). Against ``judged_frames`` (the
        judged decoder's full decode, uint8 ``[T, H, W, 3]``) over the whole window when given; else on the window's
        first chunk of latent frames (5-8 frames), which the judged decoder decodes here with its own reach (margin,
        causal context: for a Wan VAE, every frame before them, without gradients)."""
        import dataclasses

        import torch

        from .codecs import decode_window, frames_to_uint8, pixel_box_of_window, window_from_boxes
        from .codecs.window import first_pixel_frame
        from .fidelity import psnr

        real = getattr(self.codec, "real", None)
        if real is None or getattr(self.codec, "same_weights", False) or self.frames0 is None:
            return None

        if judged_frames is not None:
            pw = pixel_box_of_window(self.window)
            judged = judged_frames[pw.frame0 : pw.frame1, pw.y0 : pw.y1, pw.x0 : pw.x1]
            n = len(judged)
        else:
            win = window_from_boxes(real, latents.shape, self.union)
            win = dataclasses.replace(win, t1=min(win.t1, win.t0 + self.chunk))
            n = first_pixel_frame(win.t1, win.temporal_ratio) - first_pixel_frame(win.t0, win.temporal_ratio)
            with torch.no_grad():
                z = latents.detach()[win.decoded_slices].to(self.device, torch.float32)
                judged = frames_to_uint8(decode_window(real, z, win.local(), chunk_frames=self.chunk, checkpoint=False))
        inside = 1.0 - self.outside[:n, 0].float().cpu().numpy()
        db = psnr(frames_to_uint8(self.frames0[:n]), judged, inside)
        return None if math.isnan(db) else min(db, 100.0)  # identical: 100, finite for JSON

    def critic_fit(self, points: np.ndarray) -> dict[str, Any]:
        """How well the critic reads these frames: the share of ROI Detect's keypoints (confident ones) that the
        critic's ``points`` (window pixels, one row per crop) put within 0.1 of the hand's size (PCK@0.1)."""
        from .train_critic import pck

        correct, scored = pck(points, self.detected, self.detected_ok, 0.1)
        return {"pck": correct / scored if scored else None, "keypoints": scored}


def fix_latents(
    latents: torch.Tensor,
    codec: LatentCodec,
    critic: Any | None,
    critic_spec: CriticSpec | None,
    det: Detections,
    settings: FixSettings | None = None,
    on_step: StepCallback | None = None,
    device: torch.device | str | None = None,
    judged_frames: np.ndarray | None = None,
) -> FixResult:
    """Optimise ``latents [1, C, t, h, w]`` so the critic sees consistent anatomy in the ROI of ``det``.

    ``det`` are detections on the frames these latents decode to (rescaled, with a warning, when only their size
    differs). ``on_step(step, total, losses, preview_crop)`` runs after every step; an exception raised there
    (a user's cancel) propagates and leaves ``latents`` untouched. With no ROI anywhere, the latents come back
    unchanged and the report says why.

    ``device``: where the optimisation runs (default: the latents' device; the critic and the codec's gradient
    decoder must be there). Only the window's decoded region goes there, so the full latents of a long video may
    stay on the CPU; the result comes back on the latents' device and dtype.

    With no critic (``critic`` and ``critic_spec`` None) only the guide drives the edit: warp mode, the field
    pulled so each detected keypoint follows ROI Detect's cleaned trajectory, against the fidelity terms.

    ``judged_frames``: the codec's full decode of ``latents`` (uint8 ``[T, H, W, 3]``), when the caller has it
    (`bgfs fix` judges against it): the gradient decoder is then measured against it over the whole window, instead
    of against a decode of the window's first frames (`_Problem.decoder_agreement`).
    """
    import torch

    settings = settings or FixSettings()
    settings.validate()
    codec.check_latents(latents)
    if (critic is None) != (critic_spec is None):
        raise BGFSError("give both the critic and its spec, or neither (guide only)")
    if critic is None and not (settings.mode == "warp" and settings.guide_by_flow and settings.guide > 0):
        raise BGFSError(
            f"without a critic only the guide can drive the edit: use mode warp with guide > 0 (got mode "
            f"{settings.mode}, guide {settings.guide}), or connect a critic"
        )
    if critic_spec is not None and critic_spec.region != det.region:
        raise BGFSError(
            f"the critic was trained for {critic_spec.region!r} but the ROI is {det.region!r}: "
            "load a critic for the same region"
        )
    t, h, w = (int(v) for v in latents.shape[2:])
    num_frames, frame_hw = codec.pixel_frames(t), codec.pixel_hw((h, w))
    if det.num_frames != num_frames:
        raise BGFSError(
            f"the ROI covers {det.num_frames} frames but the latents decode to {num_frames} frames: "
            "run ROI Detect on frames decoded from these latents"
        )
    if judged_frames is not None and tuple(judged_frames.shape) != (num_frames, *frame_hw, 3):
        raise BGFSError(f"judged_frames are {list(judged_frames.shape)}, but the latents decode to "
                        f"[{num_frames}, {frame_hw[0]}, {frame_hw[1]}, 3]: pass the codec's decode of these latents")
    warnings: list[str] = []
    det = _scaled_detections(det, frame_hw, warnings)
    # Hand slots are labels (left / right); a label that flips for a frame would make one ROI jump between two
    # hands, and every term over time (boxes, trajectories, bone lengths) would compare two different hands.
    det, relinked = follow_tracks(det, settings.min_conf)
    if relinked:
        warnings.append(f"ROI Detect's instance slots changed places in {relinked} of {num_frames} frames (e.g. a "
                        "left/right label that flipped): the fix follows each instance by position instead")
    cut = cut_words(det.region, detection_cuts(det, settings.min_conf))
    if cut:
        warnings.append(f"{cut}: each side is fixed alone")
    started = time.perf_counter()
    problem = None  # for the out-of-memory message: how big the window was, once known
    try:
        with torch.enable_grad(), _frozen(critic, codec):
            problem = _Problem(latents, codec, critic, critic_spec, det, settings, warnings, device)
            if not problem.any_roi:
                unsure = int(det.present.any(1).sum())
                summary = (f"{det.region}: found only in the first frame, which keep_first_frame keeps as it is; "
                           "nothing changed" if problem.only_kept else
                           f"{det.region}: found in {unsure} of the {num_frames} frames, but no keypoint as sure as "
                           f"min_conf {settings.min_conf:g}, so there is no ROI; nothing changed (lower ROI Detect's "
                           "min_conf, or roi.min_conf, to fix it anyway)" if unsure else
                           f"{det.region}: not detected in any of the {num_frames} frames; nothing changed")
                return FixResult(latents, {"summary": summary, "changed": False, "warnings": warnings})
            params = problem.init_params()
            optimiser = torch.optim.Adam([params], lr=settings.lr)
            decay = (torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(1, settings.steps))
                     if settings.lr_decay == "cosine" else None)  # fmt: skip
            history: list[dict[str, float]] = []
            bad_steps = 0
            grad_scale = GRAD_SCALE
            with torch.no_grad():  # a graph kept for nothing would hold its activations through every step
                _, before, preview_before = problem.evaluate(params, need_preview=True)
            fit = problem.critic_fit(preview_before.pop("window_points")) if critic is not None else None
            try:
                agreement = problem.decoder_agreement(latents, judged_frames)
            except RuntimeError as exc:  # a measurement: the fix goes on without it
                if not is_out_of_memory(exc):
                    raise
                agreement = None
                warnings.append("how alike the gradient decoder and the VAE decode was not measured: the VAE ran out "
                                "of memory decoding the window's first frames")  # fmt: skip
            if agreement is not None and agreement < DECODER_AGREEMENT_WARN_DB:
                warnings.append(
                    f"the gradient decoder ({getattr(codec, 'grad', codec).name}) decodes these latents unlike the "
                    f"VAE the result is judged on: {agreement:.1f} dB PSNR in the ROI, below "
                    f"{DECODER_AGREEMENT_WARN_DB:g}. It is likely made for another latent space, so its gradients "
                    "move what the VAE does not show: use the tiny autoencoder made for this VAE (lighttaew2_1 or "
                    "taew2_1 for Wan 2.1, lighttaew2_2 for Wan 2.2; not HunyuanVideo's taehv), or none"
                )
            if fit is not None and fit["pck"] is not None and fit["pck"] < CRITIC_FIT_WARN:
                warnings.append(
                    f"the critic finds only {100 * fit['pck']:.0f}% of ROI Detect's keypoints on these frames (PCK@0.1): "
                    "it was trained on footage unlike this, so its anatomy terms pull the wrong way. Train a critic "
                    "on footage like this (best: the same subject without the failure), or fix without a critic and "
                    "let the guide alone move the region"
                )

            def gradient(scale: float) -> tuple[torch.Tensor, dict, dict]:
                optimiser.zero_grad(set_to_none=True)
                total, parts, extras = problem.evaluate(params, need_preview=on_step is not None, jitter=True)
                (total * scale).backward()
                params.grad /= scale  # params are fp32: exact, as is the scaling of an fp32 backward
                return total, parts, extras

            for step in range(settings.steps):
                total, parts, extras = gradient(grad_scale)
                if grad_scale > 1 and not torch.isfinite(params.grad).all():
                    # a half-precision decoder overflowed, or the gradient is not finite anyway: unscaled tells
                    total, parts, extras = gradient(1.0)
                    if torch.isfinite(params.grad).all():  # it overflowed: scale less from now on
                        grad_scale = max(1.0, grad_scale / 8)
                if not torch.isfinite(params.grad).all():
                    # e.g. RMS norms differentiated at an all-zero latent: skip those components, never spread NaN
                    bad_steps += 1
                    params.grad = torch.nan_to_num(params.grad, nan=0.0, posinf=0.0, neginf=0.0)
                optimiser.step()
                if decay is not None:
                    decay.step()
                history.append({k: float(v.detach()) for k, v in parts.items()})
                if on_step is not None:
                    crop = extras["crops"][0] if len(extras.get("crops", ())) else None
                    on_step(step + 1, settings.steps, history[-1], crop)
            with torch.no_grad():
                _, after, preview_after = problem.evaluate(params, need_preview=True)
                preview_after.pop("window_points", None)
                z_win = problem.window_from_params(params).detach()
    except RuntimeError as exc:  # torch.OutOfMemoryError (CUDA, ...) is one; the CPU allocator raises a plain one
        if not is_out_of_memory(exc):
            raise
        what = _out_of_memory(exc, latents.device if device is None else device, codec, problem)
        raise OutOfMemoryError(f"{what}: fix a shorter clip, lower the ROI margin, or let the gradients go through "
                               "a lighter decoder (the Tiny AutoEncoder for Wan) or in half precision", what) from exc
    from .codecs import paste_window

    if bad_steps:
        warnings.append(f"{bad_steps} of {settings.steps} steps had non-finite gradients; those components were "
                        "skipped (an all-zero or saturated latent?)")
    if not torch.isfinite(z_win).all():
        warnings.append("the optimised window was not finite: nothing changed")
        return FixResult(latents, {"summary": "BGFS fix failed numerically; nothing changed",
                                   "changed": False, "warnings": warnings})
    # Nothing moved (no step, or every gradient zero: strength and guide 0, say): the latents as they came, as a
    # warp by zero still resamples, at float noise level
    moved = settings.steps > 0 and bool(params.detach().ne(0).any())
    if settings.steps > 0 and not moved:
        off = [f"{name} is 0" for name, value in (("strength", settings.strength), ("guide", settings.guide))
               if value == 0]  # fmt: skip
        why = " and ".join(off) if off else "the keypoints already follow steady, well-formed tracks"
        warnings.append(f"the edit moved nothing: every gradient was zero ({why}), so the latents are returned as "
                        "they came")  # fmt: skip
    out = paste_window(latents, problem.window, z_win.to(latents.device), feather=settings.feather) if moved else latents
    before_f = {k: float(v.detach()) for k, v in before.items()}
    after_f = {k: float(v) for k, v in after.items()}
    win = problem.window
    report = {
        "changed": moved,
        "mode": settings.mode,
        "settings": settings.to_dict(),
        "codec": codec.name,
        "window": {"latent_t": [win.t0, win.t1], "latent_y": [win.y0, win.y1], "latent_x": [win.x0, win.x1],
                   "frames": [problem.frame0, problem.frame1], "crops": len(problem.pairs)},  # fmt: skip
        "critic_before": before_f,
        "critic_after": after_f,
        "critic_fit": fit,
        "decoder_agreement_db": agreement,
        "history": history,
        "seconds": time.perf_counter() - started,
        "warnings": warnings,
    }
    report["summary"] = _summary(det.region, settings, before_f, after_f, report)
    preview = dict(preview_before)
    preview.update({f"after_{k}": v for k, v in preview_after.items()})
    # which frame of the video and which instance each crop shows, for the preview's slider
    preview["crop_frames"] = problem.frame0 + problem.pairs[:, 0]
    preview["crop_instances"] = problem.pairs[:, 1].copy()
    return FixResult(out, report, preview, problem.window)


@contextlib.contextmanager
def _frozen(*holders: Any) -> Iterator[None]:
    """The parameters of the critic and of the codec's modules without gradients while the fix runs, as they were
    after: the fix differentiates the latents alone, and a caller's unfrozen VAE would gather a weight gradient
    the size of the decoder on every step (its memory, its compute, and its ``.grad`` changed)."""
    import torch

    trainable: list[Any] = []
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if obj is None or id(obj) in seen or depth > 3:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.nn.Module):
            # (inference tensors, e.g. a ComfyUI model's originals beside the copy the fix uses, never gather one)
            trainable.extend(p for p in obj.parameters() if p.requires_grad and not p.is_inference())
        elif hasattr(obj, "__dict__"):  # a codec: its modules, and the codecs it wraps (a gradient proxy)
            for value in vars(obj).values():
                if isinstance(value, torch.nn.Module) or hasattr(value, "decode_for_grad"):
                    visit(value, depth + 1)

    for holder in holders:
        visit(holder, 0)
    for param in trainable:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in trainable:
            param.requires_grad_(True)


def _out_of_memory(exc: BaseException, device: Any, codec: Any, problem: _Problem | None) -> str:
    """What ran out of memory and how big it was, for the error a user sees."""
    size = ""
    if problem is not None and problem.any_roi:
        win, s = problem.window, problem.window.spatial_ratio
        size = (f"a window of {(win.cx1 - win.cx0) * s}x{(win.cy1 - win.cy0) * s} pixels, frames "
                f"{problem.frame0}-{problem.frame1 - 1}; ")  # fmt: skip
    return (f"out of memory on {device} decoding through {codec.name} with gradients "
            f"({size}{first_line(exc, 160)})")


def _fit_line(fit: dict | None) -> str:
    if fit is None:
        return "No critic: the guide alone moved the region (ROI Detect's cleaned keypoint trajectories)."
    if fit["pck"] is None:
        return "Critic fit: n/a (no confident ROI Detect keypoints to compare with)."
    return (f"Critic fit: it finds {100 * fit['pck']:.0f}% of ROI Detect's {fit['keypoints']} confident keypoints on "
            "the input (PCK@0.1).")


def _summary(region: str, s: FixSettings, before: dict, after: dict, report: dict) -> str:
    def change(key: str) -> str:
        a, b = before[key], after[key]
        pct = "n/a" if a <= 0 or not math.isfinite(a) else f"{100 * (b - a) / a:+.0f}%"
        return f"{key} {a:.4f} -> {b:.4f} ({pct})"

    lines = [
        f"BGFS fix ({region}, mode {s.mode}, {s.steps} steps, lr {s.lr}, strength {s.strength}) on "
        f"{report['window']['crops']} ROI crops in {report['seconds']:.1f} s"
        + (", the first frame kept as it is." if s.keep_first_frame else "."),
        ("Critic view: " + "; ".join(change(k) for k in ("target", "bone", "smooth", "joint", "confidence"))
         if report["critic_fit"] is not None else "Guide: " + change("target")) + ".",
        _fit_line(report["critic_fit"]),
        f"Fidelity: latent change {after['latent']:.5f}, pixel change outside the ROI {after['pixel']:.6f}.",
    ]
    if report["decoder_agreement_db"] is not None:
        lines.append(f"Gradient decoder: {report['decoder_agreement_db']:.1f} dB PSNR against the judged VAE's "
                     "decode in the ROI.")
    lines += [f"Warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)
