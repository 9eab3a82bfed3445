"""Windowed, chunked decode: decode only the latent window that covers the region, with gradients.

A `LatentWindow` has a *core* (the latent frames and cells that hold the ROI) and a *decoded* region around it: a
spatial margin of latent cells for the decoder's receptive field and latent frames of causal context before the
core. `decode_window` decodes the core in temporal chunks; each chunk re-decodes a few context frames before it, so
it is a pure function of one latent slice (activation checkpointing then just recomputes that chunk), and the
margin and context pixels are discarded. `paste_window` writes optimised window latents back with a feathered mask:
latents outside the decoded region are bit-for-bit unchanged.

Time mapping (causal VAEs, ratio r): latent frame 0 <-> pixel frame 0; latent frame j >= 1 <-> pixel frames
``1 + r(j-1) .. rj``. A decode that starts at latent frame s > 0 treats s as a first frame, which is why chunks
need context: the context frames warm up the decoder's causal caches and their pixels are thrown away.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import BGFSError

if TYPE_CHECKING:
    import torch

    from .base import LatentCodec


@dataclass(frozen=True)
class LatentWindow:
    """Core ``[t0, t1) x [y0, y1) x [x0, x1)`` and decoded region ``[ct0, t1) x [cy0, cy1) x [cx0, cx1)`` (latent)."""

    t0: int
    t1: int
    y0: int
    y1: int
    x0: int
    x1: int
    ct0: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int
    context: int  # latent frames of causal context each chunk re-decodes
    temporal_ratio: int
    spatial_ratio: int
    grid: tuple[int, int, int]  # (t, h, w) of the full latents

    @property
    def decoded_slices(self) -> tuple[slice, ...]:
        """Index of the decoded region in ``[1, C, t, h, w]`` latents."""
        return (slice(None), slice(None), slice(self.ct0, self.t1), slice(self.cy0, self.cy1), slice(self.cx0, self.cx1))

    @property
    def decoded_shape(self) -> tuple[int, int, int]:
        """(t, h, w) of the decoded region."""
        return self.t1 - self.ct0, self.cy1 - self.cy0, self.cx1 - self.cx0

    def local(self) -> LatentWindow:
        """This window on its own decoded region: for latents ``latents[window.decoded_slices]``, which is all that
        `decode_window` reads, so a long video's full latents need not be where the decoding runs. It decodes the
        same frames; its pixel coordinates (`pixel_box_of_window`) are the region's own, its first frame that of
        the region's first latent frame, so map frames and boxes with the full window's."""
        t, h, w = self.decoded_shape
        return LatentWindow(t0=self.t0 - self.ct0, t1=t, y0=self.y0 - self.cy0, y1=self.y1 - self.cy0,
                            x0=self.x0 - self.cx0, x1=self.x1 - self.cx0, ct0=0, cy0=0, cy1=h, cx0=0, cx1=w,
                            context=self.context, temporal_ratio=self.temporal_ratio,
                            spatial_ratio=self.spatial_ratio, grid=(t, h, w))  # fmt: skip


class PixelWindow(NamedTuple):
    """The core of a window in full-frame pixel coordinates: frames ``[frame0, frame1)``, box ``(x0, y0, x1, y1)``."""

    frame0: int
    frame1: int
    x0: int
    y0: int
    x1: int
    y1: int


def latent_index_of_frame(frame: int, temporal_ratio: int) -> int:
    """The latent frame that holds pixel frame ``frame``."""
    return 0 if frame <= 0 else 1 + (frame - 1) // temporal_ratio


def first_pixel_frame(latent_frame: int, temporal_ratio: int) -> int:
    """The first pixel frame of latent frame ``latent_frame``."""
    return 0 if latent_frame <= 0 else 1 + temporal_ratio * (latent_frame - 1)


def window_from_boxes(codec: LatentCodec, latents_shape: Any, boxes: Any, margin: int | None = None,
                      context: int | None = None) -> LatentWindow:
    """The window covering ROI boxes ``[T, 4]`` (pixel ``x0, y0, x1, y1`` per frame; NaN rows = no ROI).

    The core is the union of the boxes over the frames that have one, mapped out to whole latent cells, and the
    latent frames that hold those frames. ``margin`` (latent cells) and ``context`` (latent frames; -1: all from
    frame 0) default to the codec's measured values.
    """
    import numpy as np

    shape = tuple(int(s) for s in latents_shape)
    if len(shape) != 5 or shape[1] != codec.latent_channels:
        raise BGFSError(f"{codec.name}: latents must be [1, {codec.latent_channels}, t, h, w], got {shape}.")
    _, _, t, h, w = shape
    r, s = codec.temporal_ratio, codec.spatial_ratio
    num_frames = codec.pixel_frames(t)
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4 or b.shape[0] != num_frames:
        raise BGFSError(f"ROI boxes must be [{num_frames}, 4] (one x0, y0, x1, y1 per frame of the {num_frames}-frame "
                        f"video these latents decode to), got shape {b.shape}.")
    valid = np.isfinite(b).all(axis=1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    if not valid.any():
        raise BGFSError("no frame has an ROI box: the region was not detected anywhere, so there is nothing to fix.")
    frames = np.flatnonzero(valid)
    margin = codec.default_margin if margin is None else int(margin)
    context = codec.default_context if context is None else int(context)
    if margin < 0 or context < -1:
        raise BGFSError(f"window margin must be >= 0 and context >= -1 (all frames), got {margin} and {context}.")
    t0, t1 = latent_index_of_frame(int(frames[0]), r), latent_index_of_frame(int(frames[-1]), r) + 1
    context = t0 if context == -1 else context
    if r > 1 and t0 > 0:  # a decode starting after frame 0 must see >= 1 frame before (see decode_window)
        context = max(1, context)
    bx = b[valid]
    x0 = max(0, min(w - 1, math.floor(bx[:, 0].min() / s)))
    y0 = max(0, min(h - 1, math.floor(bx[:, 1].min() / s)))
    x1 = max(x0 + 1, min(w, math.ceil(bx[:, 2].max() / s)))
    y1 = max(y0 + 1, min(h, math.ceil(bx[:, 3].max() / s)))
    return LatentWindow(t0=t0, t1=t1, y0=y0, y1=y1, x0=x0, x1=x1, ct0=max(0, t0 - context),
                        cy0=max(0, y0 - margin), cy1=min(h, y1 + margin), cx0=max(0, x0 - margin),
                        cx1=min(w, x1 + margin), context=context, temporal_ratio=r, spatial_ratio=s, grid=(t, h, w))


def pixel_box_of_window(window: LatentWindow) -> PixelWindow:
    """The pixel frames and box (full-frame coordinates) that `decode_window` returns for ``window``.

    Subtract ``(x0, y0)`` from full-frame ROI boxes, and take frames ``frame0:frame1``, to get them in the
    decoded window's coordinates.
    """
    r, s = window.temporal_ratio, window.spatial_ratio
    return PixelWindow(first_pixel_frame(window.t0, r), first_pixel_frame(window.t1, r),
                       window.x0 * s, window.y0 * s, window.x1 * s, window.y1 * s)


def _decode_chunk(codec: LatentCodec, lat: torch.Tensor, skip_frames: int, crop: tuple[int, int, int, int]
                  ) -> torch.Tensor:
    """Decode one latent slice; drop the context frames' pixels and the spatial margin (pure function of ``lat``)."""
    top, bottom, left, right = crop
    frames = codec.decode_for_grad(lat)
    return frames[skip_frames:, :, top:frames.shape[2] - bottom, left:frames.shape[3] - right]


def _stream_chunk(stream: Any, lat: torch.Tensor, state: Any, crop: tuple[int, int, int, int]) -> tuple[Any, Any]:
    """Decode one latent slice after a causal state; crop the margin (pure function of ``lat`` and ``state``)."""
    top, bottom, left, right = crop
    frames, state = stream(lat, state)
    return frames[:, :, top:frames.shape[2] - bottom, left:frames.shape[3] - right], state


def _stream_segment(stream: Any, lats: list, state: Any, crop: tuple[int, int, int, int], checkpoint: bool
                    ) -> torch.Tensor:
    """Decode consecutive latent slices after ``state``, each checkpointed if asked -> frames."""
    import torch
    from torch.utils.checkpoint import checkpoint as torch_checkpoint

    out = []
    for lat in lats:
        if checkpoint:
            frames, state = torch_checkpoint(_stream_chunk, stream, lat, state, crop, use_reentrant=False)
        else:
            frames, state = _stream_chunk(stream, lat, state, crop)
        out.append(frames)
    return torch.cat(out, 0)


_TENSOR = object()  # where a tensor sits in a state template


def _split_state(state: Any) -> tuple[list, list]:
    """A causal state (list of tensors, None or markers) -> (template with the tensors' places marked, tensors)."""
    if state is None:
        return [], []
    return [_TENSOR if _is_tensor(x) else x for x in state], [x for x in state if _is_tensor(x)]


def _join_state(template: list, tensors: Any) -> Any:
    if not template and not tensors:
        return None
    it = iter(tensors)
    return [next(it) if x is _TENSOR else x for x in template]


def _is_tensor(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor)


@functools.cache
def reversal_cost(chunks: int, slots: int) -> tuple[int, int]:
    """Back-propagating through ``chunks`` streamed chunks from the state before the first, with room for ``slots``
    more causal states: the fewest chunk forwards without gradients that recompute the states it needs, and how
    many chunks after the start to keep the first of them (0: keep none, recompute from the start each time).

    Keeping the state after ``m`` chunks costs ``m`` forwards and a slot while the chunks after it are reversed;
    then the first ``m`` are reversed with the slot free again. The optimal ``m`` (dynamic programming over
    lengths and slots; the binomial schedule of checkpointing theory) recomputes much less than ~sqrt(chunks)
    equal segments with the same states kept. 21 chunks, 4 slots: 35 forwards, 18 of them saved by keeping the
    first states on the way of the forward pass (`_stream_reversed`), so 17 against the equal segments' 40.
    """
    if chunks <= 1:
        return 0, 0
    if slots <= 0:
        return chunks * (chunks - 1) // 2, 0
    return min((m + reversal_cost(chunks - m, slots - 1)[0] + reversal_cost(m, slots)[0], m) for m in range(1, chunks))


def stream_slots(chunks: int) -> int:
    """Causal states `_stream_reversed` keeps besides the start: ~sqrt(chunks), as many as equal segments of
    ~sqrt(chunks) chunks would keep (the memory the 81-frame bench was sized with)."""
    size = math.isqrt(max(chunks, 1) - 1) + 1
    return -(-chunks // size) - 1


def _stream_reversed(stream: Any, lats: list, state: Any, crop: tuple[int, int, int, int], slots: int) -> Any:
    """Checkpointed streaming that keeps the start state plus ``slots`` causal states and about three working ones.

    The forward pass runs without gradients and keeps only the states the backward pass will want first. The
    backward pass walks the chunks from last to first: for chunk k it needs the state before k, recomputed without
    gradients from the nearest kept state before it, on the schedule of `reversal_cost`; it runs chunk k with
    gradients and back-propagates the incoming gradients of its frames and of its end state, which yields the
    gradient of the state before it. So at most the kept states, one chunk's state in and out with their gradients
    and one chunk's activations are alive, and a chunk's own forward is not nested in another checkpoint, so the
    stream may checkpoint each decoder block too. Exact: the same gradients as plain backpropagation (tested).
    """
    import torch

    n = len(lats)
    slots = min(slots, n - 1)

    class Stream(torch.autograd.Function):
        @staticmethod
        def forward(ctx, template, *tensors):
            state = _join_state(template, tensors[n:])
            keep, lo, left = set(), 0, slots  # the first split of each level of the schedule, as it will ask
            while n - lo > 1 and left > 0:
                lo += reversal_cost(n - lo, left)[1]
                keep.add(lo)
                left -= 1
            ctx.kept, frames = {}, []
            with torch.no_grad():
                for k, lat in enumerate(tensors[:n]):
                    chunk, state = _stream_chunk(stream, lat, state, crop)
                    frames.append(chunk)
                    if k + 1 in keep:
                        ctx.kept[k + 1] = state
            ctx.template, ctx.sizes = template, [f.shape[0] for f in frames]
            ctx.save_for_backward(*tensors)
            return torch.cat(frames, 0)

        @staticmethod
        def backward(ctx, grad_frames):
            saved = ctx.saved_tensors
            lats_saved = saved[:n]
            grad_lats: list = [None] * n
            ends = list(itertools.accumulate(ctx.sizes))
            grad_state: tuple | None = None  # gradient of the state after the chunk being reversed; none after the last

            def advance(state: Any, a: int, b: int) -> Any:
                with torch.no_grad():  # the state before chunk b, recomputed from the state before chunk a
                    for lat in lats_saved[a:b]:
                        state = stream(lat, state)[1]
                return state

            def reverse_one(k: int, state: Any) -> None:
                nonlocal grad_state
                template, tensors = _split_state(state)
                del state
                leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in tensors]
                del tensors
                lat = lats_saved[k].detach().requires_grad_(True)
                with torch.enable_grad():
                    frames, state_out = _stream_chunk(stream, lat, _join_state(template, leaves), crop)
                outs, grads = [frames], [grad_frames[ends[k] - frames.shape[0]:ends[k]]]
                state_tensors = _split_state(state_out)[1]
                for t, g in zip(state_tensors, grad_state or (None,) * len(state_tensors), strict=True):
                    if g is not None and t.requires_grad:
                        outs.append(t)
                        grads.append(g)
                del frames, state_out
                torch.autograd.backward(outs, grads)
                del outs, grads
                grad_lats[k] = lat.grad
                grad_state = tuple(t.grad for t in leaves)

            def reverse(lo: int, hi: int, state: Any, free: int) -> None:
                """Back-propagate chunks hi-1 .. lo, given the state before lo and room for ``free`` more."""
                if hi - lo == 1:
                    reverse_one(lo, state)
                    return
                if free <= 0:
                    for k in reversed(range(lo, hi)):
                        reverse_one(k, advance(state, lo, k))
                    return
                mid = lo + reversal_cost(hi - lo, free)[1]
                kept = ctx.kept.pop(mid, None)
                reverse(mid, hi, kept if kept is not None else advance(state, lo, mid), free - 1)
                del kept
                reverse(lo, mid, state, free)

            reverse(0, n, _join_state(ctx.template, saved[n:]), slots)
            return (None, *grad_lats, *grad_state)

    template, tensors = _split_state(state)
    return Stream.apply(template, *lats, *tensors)


def _warm_state(stream: Any, context: torch.Tensor, warm: dict | None) -> list:
    """The causal state after the context latents: from ``warm`` when it holds that of the same latents."""
    import torch

    if warm is not None and "state" in warm and torch.equal(warm["context"], context):
        return list(warm["state"])  # the decoders copy the list they are given and replace entries, never edit them
    with torch.no_grad():
        _, state = stream(context, None)
    if warm is not None:
        warm.update(context=context.clone(), state=list(state))
    return state


def decode_window(codec: LatentCodec, latents: torch.Tensor, window: LatentWindow, chunk_frames: int = 2,
                  checkpoint: bool = True, segments: bool = True, checkpoint_blocks: bool = True,
                  keep_states: int | None = None, warm: dict | None = None) -> torch.Tensor:
    """Decode the core of ``window`` from ``latents`` -> frames ``[F, 3, H, W]`` (see `pixel_box_of_window`): the
    full latents, or only the window's decoded region with ``window.local()``.

    Decodes ``chunk_frames`` core latent frames at a time through the codec's gradient decoder. With a stream
    (`LatentCodec.grad_stream`: the Wan VAEs) the context frames ``ct0:t0`` run once without gradients to warm the
    causal caches, and each chunk continues from the previous chunk's state (exact, gradients flow through the
    state). Otherwise each chunk re-decodes ``window.context`` frames before it and drops their pixels. With
    ``checkpoint`` (and latents that need gradients) each chunk's activations are recomputed in the backward
    pass. A causal state per chunk is what grows with the frame count (a full-size Wan 2.1 state is ~1 GB for a
    ~300 px decoded window), so with a stream and ``segments`` (`_stream_reversed`) only ~sqrt(chunks) states are
    kept, plus one chunk's state in and out and their gradients while it is back-propagated; with
    ``checkpoint_blocks`` each residual / resample block inside that chunk is checkpointed too
    (`bgfs_core.codecs.blocks`), so a chunk's backward holds one block's activations at a time instead of the
    whole decoder's. ``keep_states``: how many causal states the segmented stream keeps besides the start (None:
    `stream_slots`, ~sqrt(chunks)); more trade memory for fewer recomputed chunks, chunks - 1 recomputes none.
    ``segments=False`` checkpoints each chunk instead (one state per chunk; no block checkpoints). ``warm``: a dict
    the caller keeps across calls (a fixer's steps): the warm-up's state is kept there and reused while the context
    latents are the same, so a region that appears late in the video costs its warm-up once, not every step.
    """
    import torch
    from torch.utils.checkpoint import checkpoint as torch_checkpoint

    codec.check_latents(latents)
    if tuple(latents.shape[2:]) != window.grid:
        raise BGFSError(f"the window was made for latents of (t, h, w) = {window.grid}, got {tuple(latents.shape[2:])}.")
    if chunk_frames < 1:
        raise BGFSError(f"chunk_frames must be >= 1, got {chunk_frames}.")
    if keep_states is not None and keep_states < 0:
        raise BGFSError(f"keep_states must be >= 0 (or None for ~sqrt(chunks)), got {keep_states}.")
    s = window.spatial_ratio
    crop = ((window.y0 - window.cy0) * s, (window.cy1 - window.y1) * s,
            (window.x0 - window.cx0) * s, (window.cx1 - window.x1) * s)
    spatial = latents[:, :, :, window.cy0:window.cy1, window.cx0:window.cx1]
    use_ckpt = checkpoint and spatial.requires_grad and torch.is_grad_enabled()
    if window.temporal_ratio > 1 and window.ct0 == window.t0 > 0:
        raise BGFSError("a window that starts after frame 0 needs >= 1 latent frame of context (window_from_boxes "
                        "ensures it).")
    segmented = use_ckpt and segments
    # Blocks are not checkpointed inside chunk checkpoints (segments=False): nested there, torch kept every block's
    # inputs of a whole segment alive and memory grew with the frame count (narrow Wan 2.1 decoder, 21 -> 41
    # frames: 5.9 -> 11.8 GB). The segments run each chunk's gradient pass outside any other checkpoint.
    stream = codec.grad_stream(checkpoint_blocks=segmented and checkpoint_blocks)
    if stream is not None:
        state = None
        if window.ct0 < window.t0:  # warm-up: these latents are not optimised (mask 0), so no gradients needed
            state = _warm_state(stream, spatial[:, :, window.ct0:window.t0].detach(), warm)
        lats = [spatial[:, :, a:min(window.t1, a + chunk_frames)] for a in range(window.t0, window.t1, chunk_frames)]
        if segmented:
            slots = stream_slots(len(lats)) if keep_states is None else keep_states
            return _stream_reversed(stream, lats, state, crop, slots)
        return _stream_segment(stream, lats, state, crop, use_ckpt)
    # A slice that starts after frame 0 decodes its first latent frame as 1 pixel frame, not r: at least one
    # context frame is needed there to get the frame count right.
    context = max(window.context, 1 if window.temporal_ratio > 1 else 0)
    out = []
    for a in range(window.t0, window.t1, chunk_frames):
        b = min(window.t1, a + chunk_frames)
        start = max(0, a - context)
        lat = spatial[:, :, start:b]
        skip = codec.pixel_frames(a - start)
        if use_ckpt:
            out.append(torch_checkpoint(_decode_chunk, codec, lat, skip, crop, use_reentrant=False))
        else:
            out.append(_decode_chunk(codec, lat, skip, crop))
    return torch.cat(out, 0)


def window_latents(latents: torch.Tensor, window: LatentWindow) -> torch.Tensor:
    """A copy of the decoded region of ``latents`` (the variable a fixer optimises)."""
    return latents[window.decoded_slices].clone()


def feather_mask(window: LatentWindow, feather: int, device: Any = None) -> torch.Tensor:
    """Blend weights ``[1, 1, t, h, w]`` over the decoded region: 1 on the core, ramping to 0 over ``feather``
    latent cells into the margin (0 beyond), and 0 on the context frames (they only warm up the decoder)."""
    import torch

    if feather < 0:
        raise BGFSError(f"feather must be >= 0 latent cells, got {feather}.")

    def ramp(lo: int, hi: int, core_lo: int, core_hi: int) -> torch.Tensor:
        i = torch.arange(lo, hi, dtype=torch.float32, device=device)
        dist = torch.clamp(core_lo - i, min=0) + torch.clamp(i - (core_hi - 1), min=0)
        return torch.clamp(1.0 - dist / (feather + 1), min=0.0)

    mt = (torch.arange(window.ct0, window.t1, device=device) >= window.t0).float()
    my = ramp(window.cy0, window.cy1, window.y0, window.y1)
    mx = ramp(window.cx0, window.cx1, window.x0, window.x1)
    return (mt[:, None, None] * my[None, :, None] * mx[None, None, :])[None, None]


def paste_window(latents: torch.Tensor, window: LatentWindow, new_window_latents: torch.Tensor,
                 feather: int = 1) -> torch.Tensor:
    """Full latents with the decoded region blended towards ``new_window_latents`` by `feather_mask`.

    Differentiable in ``new_window_latents``; where the mask is 0 (outside the core plus ``feather`` cells, the
    context frames, and everything outside the decoded region) the result equals ``latents`` bit for bit.
    """
    import torch

    if tuple(latents.shape[2:]) != window.grid:
        raise BGFSError(f"the window was made for latents of (t, h, w) = {window.grid}, got {tuple(latents.shape[2:])}.")
    want = (latents.shape[0], latents.shape[1], *window.decoded_shape)
    if tuple(new_window_latents.shape) != want:
        raise BGFSError(f"window latents must have shape {want}, got {tuple(new_window_latents.shape)}.")
    # blended in at least fp32 and rounded once: in bf16 the blend itself would round, so even where the mask is 1
    # the result would miss the new values
    work = torch.promote_types(latents.dtype, torch.float32)
    old = latents[window.decoded_slices].to(work)
    mask = feather_mask(window, feather, device=latents.device).to(work)
    blended = torch.where(mask > 0, old + mask * (new_window_latents.to(work) - old), old).to(latents.dtype)
    out = latents.clone()
    out[window.decoded_slices] = blended
    return out
