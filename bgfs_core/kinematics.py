"""Geometry of a skeleton over time: bone lengths, signed joint bends, curl direction, second differences, scale.

Written once in torch for the fixer's losses (differentiable, batched over any leading dims) and used through the
same functions by the metrics: every function also takes numpy arrays and then returns numpy (float64).

Conventions:
- ``kps [..., K, 2]``: pixel (x, y); missing keypoints may be NaN. ``valid [..., K]`` (bool) says which ones count;
  where it is False the keypoint is replaced by 0 before any arithmetic, so NaNs never reach values or gradients.
- Bends are in **degrees**. The bend at joint ``b`` of ``a -> b -> c`` is the signed angle from the direction
  ``a -> b`` to ``b -> c``: 0 = straight, +-180 = folded back onto itself. The sign is that of the 2D cross
  product ``(b - a) x (c - b)`` (x right, y down), i.e. clockwise on screen is positive.
- A hand curls all its fingers the same way, so the sign of "bending forwards" is the instance's majority bend
  sign (``curl_direction``); a joint bending against it beyond ``JointLimit.max_hyperextension`` is bent backwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .regions import JointLimit, Region

if TYPE_CHECKING:
    import torch

Pairs = Sequence[tuple[int, int]]

# A bone shorter than this share of its region's size (the box diagonal) is measured against this length, not its
# own: MediaPipe's error of a pixel or two would read as stretching by half or more on a 3-px bone (a body's eyes and
# fingers at video scale: 0.2-6% of the body's size). The judge's bone_cv and the bone loss both use it. The hands'
# and feet's bones on the bundled footage are all longer (7% and more); a face turned away foreshortens one or two.
MIN_BONE = 0.05
Triples = Sequence[JointLimit] | Sequence[tuple[int, int, int]]


def _numpy_io(fn: Callable) -> Callable:
    """Let a torch function take numpy arrays (converted to float64 / bool tensors) and return numpy."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not any(isinstance(a, np.ndarray) for a in (*args, *kwargs.values())):
            return fn(*args, **kwargs)
        import torch

        def conv(a: Any) -> Any:
            if isinstance(a, np.ndarray):
                return torch.from_numpy(a.astype(bool if a.dtype == bool else np.float64))
            return a

        out = fn(*(conv(a) for a in args), **{k: conv(v) for k, v in kwargs.items()})
        if isinstance(out, tuple):
            return tuple(o.numpy() for o in out)
        return out.numpy()

    wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = fn.__name__, fn.__doc__, fn  # type: ignore[attr-defined]
    return wrapper


def _triples(joints: Triples) -> tuple[list[int], list[int], list[int]]:
    rows = [(j.a, j.b, j.c) if isinstance(j, JointLimit) else tuple(j) for j in joints]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def _clean(kps: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Keypoints with invalid (or non-finite) ones set to 0, so they cannot poison values or gradients."""
    import torch

    ok = kps.isfinite().all(-1)
    if valid is not None:
        ok = ok & valid.bool()
    return torch.where(ok[..., None], kps, torch.zeros_like(kps))


def _safe_norm(v: torch.Tensor) -> torch.Tensor:
    # sqrt with a floor: the gradient of |v| at v = 0 would be NaN
    return v.square().sum(-1).clamp_min(1e-12).sqrt()


@_numpy_io
def bone_lengths(kps: torch.Tensor, bones: Pairs, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Length of each bone ``(i, j)``: ``[..., B]`` (0 where an end is invalid; see ``bone_valid``)."""
    p = _clean(kps, valid)
    a, b = [i for i, _ in bones], [j for _, j in bones]
    return _safe_norm(p[..., b, :] - p[..., a, :])


@_numpy_io
def bone_valid(valid: torch.Tensor, bones: Pairs) -> torch.Tensor:
    """``[..., B]``: both ends of the bone are valid."""
    a, b = [i for i, _ in bones], [j for _, j in bones]
    return valid[..., a].bool() & valid[..., b].bool()


@_numpy_io
def joint_bends(kps: torch.Tensor, joints: Triples, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Signed bend in degrees at ``b`` of each joint ``(a, b, c)``: ``[..., J]`` (0 = straight, see module doc)."""
    import torch

    p = _clean(kps, valid)
    a, b, c = _triples(joints)
    u = p[..., b, :] - p[..., a, :]
    v = p[..., c, :] - p[..., b, :]
    cross = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    dot = (u * v).sum(-1)
    return torch.rad2deg(torch.atan2(cross, dot + 1e-9))  # +1e-9: atan2(0, 0) has no gradient


@_numpy_io
def joint_valid(valid: torch.Tensor, joints: Triples) -> torch.Tensor:
    """``[..., J]``: all three keypoints of the joint are valid."""
    a, b, c = _triples(joints)
    v = valid.bool()
    return v[..., a] & v[..., b] & v[..., c]


@_numpy_io
def curl_direction(bends: torch.Tensor, valid: torch.Tensor | None = None, time_dim: int | None = None,
                   min_bend: float = 10.0, max_bend: float = 150.0) -> torch.Tensor:
    """The majority bend sign of each instance: ``[...]`` in {-1, +1} (no gradient).

    ``bends [..., J]`` are one instance's joints (one hand) in the last dim; ``valid [..., J]`` says which may vote
    (see ``curl_voters``). Joints bent by ``min_bend`` to ``max_bend`` degrees vote with their sign (a joint folded
    near 180 degrees has no reliable sign). With ``time_dim`` (a dim of ``bends.shape[:-1]``) the votes of all
    frames along it are pooled, so each instance gets one direction for the clip (the output keeps that dim with
    size 1); one finger bent the wrong way in a few frames cannot flip it. No vote or a tie: the sign of the summed voting bends decides, +1
    when even that is 0.
    """
    import torch

    b = bends.detach()
    ok = torch.ones_like(b, dtype=torch.bool) if valid is None else valid.bool()
    ok = ok & (b.abs() <= max_bend)
    b = torch.where(ok, b, torch.zeros_like(b))
    votes = (torch.sign(b) * (b.abs() >= min_bend)).sum(-1)
    total = b.sum(-1)
    if time_dim is not None:
        votes, total = votes.sum(time_dim, keepdim=True), total.sum(time_dim, keepdim=True)
    sign = torch.where(votes != 0, torch.sign(votes), torch.sign(total))
    return torch.where(sign == 0, torch.ones_like(sign), sign)


def curl_voters(region: Region) -> list[bool]:
    """Which of ``region.joint_limits`` share the main curl direction: for hands all but the thumb's joints.

    The thumb flexes across the palm, in another plane than the fingers, so in 2D it often bends the other way;
    ``joint_curl`` gives it its own majority direction.
    """
    if region.source != "hands" or not region.chains:
        return [True] * len(region.joint_limits)
    thumb = set(region.chains[0][1:])
    return [lim.b not in thumb for lim in region.joint_limits]


@_numpy_io
def joint_curl(bends: torch.Tensor, valid: torch.Tensor | None, region: Region,
               time_dim: int | None = None) -> torch.Tensor:
    """Forward sign per joint ``[..., J]`` for ``joint_limit_excess``: the fingers' majority curl for the fingers,
    the thumb's own for the thumb (``curl_voters``); pooled over ``time_dim`` when given (size 1 there)."""
    import torch

    voters = torch.tensor(curl_voters(region), dtype=torch.bool, device=bends.device)
    ok = torch.ones_like(bends, dtype=torch.bool) if valid is None else valid.bool()
    main = curl_direction(bends, ok & voters, time_dim)[..., None]
    if bool(voters.all()):
        return main.expand(*main.shape[:-1], bends.shape[-1])
    other = curl_direction(bends, ok & ~voters, time_dim)[..., None]
    return torch.where(voters, main, other)


@_numpy_io
def joint_limit_excess(bends: torch.Tensor, joints: Sequence[JointLimit], curl: torch.Tensor | None = None,
                       flexion_slack: float | Sequence[float] = 0.0, fold: float = 150.0) -> torch.Tensor:
    """Degrees by which each bend lies outside its ``JointLimit``: ``[..., J]``, 0 inside the range.

    ``bends`` as from ``joint_bends``; ``curl`` the forward sign, ``[...]`` per instance or ``[..., J]`` per joint
    (``curl_direction`` of the same bends when None). Bending forwards beyond ``max_bend + flexion_slack``, or
    backwards beyond ``max_hyperextension``, counts. A joint that reads as bent backwards by more than ``fold``
    degrees is taken as folded forwards (near 180 the sign of a 2D angle is noise) and a fold counts as 180. A
    joint whose ``max_hyperextension`` is None has no forward side (elbows and knees seen in 2D bend either way on
    screen, left and right limbs opposite): its bend either way counts past ``max_bend + flexion_slack``, whatever
    the other joints' curl. ``flexion_slack`` allows for 2D projection: a flexed finger pointing at the camera
    looks folded; ``max_bend + flexion_slack`` (one number, or one per joint) is capped at 180, where flexion is
    not judged at all.
    Differentiable in ``bends``.
    """
    import torch

    if curl is None:
        curl = curl_direction(bends)
    curl = curl.detach()
    if curl.shape != bends.shape:
        curl = curl[..., None]
    forward = bends * curl  # > 0: bends with the instance's curl, < 0: against it
    forward = torch.where(forward < -fold, 360.0 + forward, forward).clamp_max(180.0)  # folded: at most 180
    slack = [float(flexion_slack)] * len(joints) if np.isscalar(flexion_slack) else list(flexion_slack)
    max_bend = bends.new_tensor([min(j.max_bend + d, 180.0) for j, d in zip(joints, slack)])
    max_back = bends.new_tensor([360.0 if j.max_hyperextension is None else j.max_hyperextension for j in joints])
    sided = torch.tensor([j.max_hyperextension is not None for j in joints], device=bends.device)
    return torch.where(sided, torch.relu(forward - max_bend) + torch.relu(-forward - max_back),
                       torch.relu(bends.abs() - max_bend))


@_numpy_io
def second_differences(kps: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(acc [T-2, ..., 2], ok [T-2, ...])``: ``x[t+1] - 2 x[t] + x[t-1]`` over time (dim 0) at the middle frame.

    ``ok`` holds only where the keypoint is valid in all three consecutive frames; ``acc`` is 0 elsewhere, so a
    dropout never shows up as a jump. ``kps [T, ..., 2]``, ``valid [T, ...]``; fewer than 3 frames give empty
    outputs.
    """
    p = _clean(kps, valid)
    v = valid.bool() & kps.isfinite().all(-1)
    if p.shape[0] < 3:
        return p[:0], v[:0]
    ok = v[2:] & v[1:-1] & v[:-2]
    acc = p[2:] - 2 * p[1:-1] + p[:-2]
    return acc * ok[..., None].to(acc.dtype), ok


@_numpy_io
def frame_scale(kps: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Diagonal of the box around the valid keypoints of each instance and frame: ``[...]`` (NaN with < 2)."""
    import torch

    ok = valid.bool() & kps.isfinite().all(-1)
    p = _clean(kps, ok)
    big = torch.finfo(p.dtype).max
    lo = torch.where(ok[..., None], p, torch.full_like(p, big)).amin(-2)
    hi = torch.where(ok[..., None], p, torch.full_like(p, -big)).amax(-2)
    enough = ok.sum(-1) >= 2
    diag = _safe_norm(torch.where(enough[..., None], hi - lo, torch.zeros_like(hi)))
    return torch.where(enough, diag, torch.full_like(diag, float("nan")))


@_numpy_io
def region_scale(kps: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """A size per instance to normalise by: median over time (dim 0) of ``frame_scale``: ``[...]`` (NaN if never seen).

    ``kps [T, ..., K, 2]``, ``valid [T, ..., K]``. The median ignores frames where the instance is missing and
    the odd frame with a stretched or collapsed skeleton.
    """
    return frame_scale(kps, valid).nanmedian(0).values


def region_scale_or_one(kps: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`region_scale` of numpy keypoints with 1 where an instance is never seen: a unit that is always defined."""
    size = np.asarray(region_scale(kps, valid))
    return np.where(np.isfinite(size) & (size > 0), size, 1.0)


def running_nanmedian(series: np.ndarray, radius: int, extra: tuple[np.ndarray, ...] = ()) -> np.ndarray:
    """Median over frames ``t - radius .. t + radius`` (axis 0) of ``series`` for every ``t``, NaN entries skipped;
    NaN where a window holds none. ``extra``: more voters, each shaped as ``series`` (NaN: no vote). Numpy only: the
    judge's bone reference and the fixer's kinematic targets."""
    import warnings

    pad = [(radius, radius)] + [(0, 0)] * (series.ndim - 1)
    padded = np.pad(series, pad, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=0)  # [T, ..., w]
    if extra:
        windows = np.concatenate([windows, *(e[..., None] for e in extra)], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN window (a gap) just gives NaN
        return np.nanmedian(windows, -1)
