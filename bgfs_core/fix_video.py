"""``bgfs fix`` end to end: read -> encode -> detect -> fix latents -> decode -> write, then judge with MediaPipe.

The fixer optimises against the critic; the judge (``metrics.score_video``) runs MediaPipe on the real decode of
the latents before and after, so an edit that fools the critic without fixing anything shows in the report.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, write_json_atomic
from .config import GRAD_DTYPES, Config
from .errors import BGFSError, OutOfMemoryError
from .regions import get_region


@dataclass
class FixVideoRequest:
    input: str | None  # the video; None when ``latents`` alone is fixed (no sound, the latents' or a default rate)
    output: str
    critic: str | None  # None: the guide alone drives the edit (warp mode)
    codec: str = "auto"  # auto | pixel | wan
    model_id: str | None = None
    vae_subfolder: str | None = None  # None: "vae" (a diffusers model folder's), or the VAE folder itself
    latents: str | None = None
    region: str | None = None
    max_frames: int = 0
    report_dir: str | None = None
    device: str = "cpu"
    grad_dtype: str = "auto"  # the decoder the gradients go through (GRAD_DTYPES); the result is judged in fp32
    gradient_vae: str | None = None  # a TAEHV file (taew2_1, lighttaew2_1/2_2): the gradients go through it instead
    save_latents: str | None = None  # where the output's latents go: .latent (ComfyUI's Load Latent) or .safetensors
    progress: bool = True
    guard: bool = True  # keep the input when MediaPipe finds the geometry worse after the fix
    fps: float | None = None  # the input's frame rate, in place of the file's (a folder of frames has none)


@dataclass
class FixVideoResult:
    output: Path
    report_path: Path
    report: dict[str, Any]
    summary: str


@dataclass
class FixModels:
    """What a fix loads before it reads the video: the critic (None: the guide alone), its spec, the region it
    fixes and the codec. `bgfs fix` on a folder loads them once for all its videos."""

    critic: Any
    spec: Any
    region: str
    codec: Any


def load_fix_models(cfg: Config, req: FixVideoRequest) -> FixModels:
    """The critic and codec ``req`` names, and the region: the critic's own, else ``req.region`` or the config's."""
    from .critic_io import load_critic
    from .devices import check_device

    check_device(req.device)
    if req.critic:
        critic, spec, _ = load_critic(req.critic, region=req.region, device=req.device)
        region = spec.region
    else:  # no critic: the guide alone, on the region asked for (or the config's)
        critic = spec = None
        region = req.region or cfg.roi.region
        get_region(region)  # an unknown name is a clear BGFSError before any work
    codec = make_codec(req.codec, req.model_id, req.vae_subfolder, req.device, req.grad_dtype, req.gradient_vae)
    return FixModels(critic, spec, region, codec)


def grad_dtype_for(name: str, device: str) -> Any:
    """The torch dtype of the decoder the gradients go through: ``auto`` is bf16 on a GPU that computes it natively
    (as ComfyUI loads the Wan VAE there), else fp32: fp16 only when asked, since ComfyUI itself keeps the VAE in
    fp32 on GPUs where fp16 breaks (GTX 16xx, Pascal), and bf16 only pays off on a CPU with native support."""
    import torch

    from .generate import resolve_dtype

    if name not in GRAD_DTYPES:
        raise BGFSError(f"unknown --grad-dtype {name!r}; use {', '.join(GRAD_DTYPES)}")
    cuda = str(device).startswith("cuda")
    if name == "fp16" and not cuda:
        raise BGFSError(f"--grad-dtype fp16 needs a CUDA device (--device is {device}); use fp32 or bf16")
    if name == "auto":  # not generate's auto (bf16 on any GPU)
        name = "fp32"
        if cuda:  # native bf16 (Ampere on); emulated it is slow
            with torch.cuda.device(torch.device(device)):
                name = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    return resolve_dtype(name, device)


def codec_kind(kind: str, model_id: str | None) -> str:
    """The codec a request names, ``auto`` resolved: ``wan`` when a VAE is given, else ``pixel``."""
    if kind == "pixel" and model_id:  # else the VAE named would be left out without a word
        raise BGFSError(f"--codec pixel edits the frames themselves and takes no VAE, but --model-id {model_id} was "
                        "given: leave one of them out")  # fmt: skip
    return ("wan" if model_id else "pixel") if kind == "auto" else kind


def make_codec(kind: str, model_id: str | None, subfolder: str | None = None, device: str = "cpu",
               grad_dtype: str = "auto", gradient_vae: str | None = None) -> Any:
    """The codec a request names: ``pixel`` (no VAE) or ``wan`` (a Wan VAE from ``model_id``: a file, a diffusers
    folder or model id), whose gradients go through a copy in ``grad_dtype`` when that is not fp32, or through the
    TAEHV decoder of ``gradient_vae`` in that dtype (the result is judged on the fp32 VAE)."""
    import torch

    from .codecs import DiffusersWanCodec, GradientProxyCodec, ModuleCodec, PixelCodec

    kind = codec_kind(kind, model_id)
    if subfolder not in (None, "vae") and (kind == "pixel" or not model_id or Path(model_id).expanduser().is_file()):
        # a subfolder only means something inside a diffusers model folder: elsewhere it would be ignored ("vae",
        # the default, is what callers that name none have always passed)
        given = f"--model-id {model_id} is a file" if model_id else "no --model-id was given"
        raise BGFSError(f"--vae-subfolder {subfolder} names the VAE's folder inside a diffusers model folder, but "
                        f"{given}: leave --vae-subfolder out")  # fmt: skip
    if kind == "pixel":
        if grad_dtype not in ("auto", "fp32"):
            raise BGFSError(f"--grad-dtype {grad_dtype} is for a Wan VAE (--model-id); the pixel codec has no decoder")
        if gradient_vae:
            raise BGFSError("--gradient-vae decodes a Wan VAE's latents: give the VAE with --model-id")
        return PixelCodec()
    if kind == "wan":
        if not model_id:
            raise BGFSError("--codec wan needs --model-id (a Wan VAE file, a diffusers Wan model id or a local folder)")
        dtype = grad_dtype_for(grad_dtype, device)
        tae = None
        if gradient_vae:  # read before the VAE: a file that is no TAEHV is named before the long load
            from .codecs.taehv import load_taehv_decoder

            tae = load_taehv_decoder(gradient_vae)
        codec = DiffusersWanCodec.from_pretrained(model_id, subfolder=subfolder or "vae", device=device)
        if tae is not None:
            name = f"TAEHV {Path(gradient_vae).name}"
            name += "" if dtype == torch.float32 else f" ({str(dtype).replace('torch.', '')})"
            grad = ModuleCodec(tae.to(device, dtype), latent_channels=tae.latent_channels,
                               spatial_ratio=8 * tae.patch_size, signed=False, name=name)  # fmt: skip
            return GradientProxyCodec(codec, grad)  # checks that both decode one latent space
        return codec if dtype == torch.float32 else GradientProxyCodec(codec, codec.in_dtype(dtype), same_weights=True)
    raise BGFSError(f"unknown codec {kind!r}: use pixel or wan")


def _to_tensor(frames: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(255.0)


def encode_frames(codec: Any, frames: np.ndarray, device: Any = "cpu") -> Any:
    """uint8 ``[T, H, W, 3]`` frames encoded by ``codec`` (``decode_frames`` is the way back)."""
    return codec.encode(_to_tensor(frames).to(device))


def decode_frames(codec: Any, latents) -> np.ndarray:
    """The real, full decode as uint8 ``[T, H, W, 3]`` (no gradients)."""
    import torch

    from .codecs import frames_to_uint8

    with torch.no_grad():
        return frames_to_uint8(codec.decode(latents))


def fix_video(cfg: Config, req: FixVideoRequest, models: FixModels | None = None) -> FixVideoResult:
    """Run the whole fix on one video file; the output and report are written only when everything succeeded.
    ``models``: what ``load_fix_models(cfg, req)`` gives, already loaded (else they are loaded here)."""
    import torch

    from .atomic import check_folder_possible
    from .codecs import PixelCodec
    from .detection import detector_from_config
    from .fixer import FixSettings, fix_latents
    from .video_io import (
        as_written,
        audio_kept,
        check_fps,
        check_report_apart,
        check_video_exists,
        check_writable,
        read_comment,
        read_video,
        size_note,
        video_info,
        write_video,
    )

    started = time.perf_counter()
    out_path = Path(req.output)
    in_path = Path(req.input) if req.input else None
    if in_path is None and not req.latents:
        raise BGFSError("give the video to fix with --in, or its latents with --latents (e.g. a .latent from "
                        "ComfyUI's Save Latent node)")  # fmt: skip
    if out_path.name in ("", ".", ".."):  # its report folder is named after it
        raise BGFSError(f"--out {req.output} names no file or folder: give e.g. fixed.mp4, or fixed/ for PNG frames")
    if in_path is not None and out_path.resolve() == in_path.resolve():
        raise BGFSError("--out must differ from --in: the input is never overwritten")
    if in_path is not None:  # before the models load, as --latents
        check_video_exists(in_path)
    if req.max_frames < 0:
        raise BGFSError(f"--max-frames must be >= 0 (0 = all frames), got {req.max_frames}")
    check_writable(out_path, "--out")
    if req.save_latents:
        _check_latents_path(req, out_path, in_path)
    if req.fps is not None:
        check_fps(req.fps, "--fps")
    report_dir = Path(req.report_dir) if req.report_dir else out_path.with_name(out_path.stem + "_report")
    check_folder_possible(report_dir, "--report-dir")
    check_report_apart(report_dir, "--report-dir", in_path, out_path)
    if req.latents:  # before the models load: the latents may be the whole input
        from .generate import latents_channels

        channels = latents_channels(req.latents)  # a missing file is named here
        if codec_kind(req.codec, req.model_id) == "pixel" and channels not in (None, 3):
            raise BGFSError(f"--latents holds a VAE's latents ({channels} channels): give the VAE that made them with "
                            "--model-id (e.g. ComfyUI's models/vae/wan_2.1_vae.safetensors, or a diffusers Wan "
                            "folder)")  # fmt: skip
    models = models or load_fix_models(cfg, req)
    critic, spec, region, codec = models.critic, models.spec, models.region, models.codec
    cfg.roi.region = region
    rate_note = None  # how the frame rate was chosen, when nothing gave one
    rate_guessed = False  # nothing gave one: saved latents leave it out, so that a later fix chooses again
    # `done`: the regions an earlier `bgfs fix` wrote into this file, or into the --latents file (--save-latents)
    with torch.no_grad():
        if req.latents:  # the frames are the latents' decode; --in, when given, lends its frame rate and sound
            from .generate import default_fps_of_latents, load_latents

            latents, lat_meta = load_latents(req.latents)
            # a folder of frames carries no rate of its own (nor sound): it lends nothing
            fps_in = video_info(in_path).fps if in_path is not None and not in_path.is_dir() else None
            fps = float(req.fps or lat_meta.get("fps") or fps_in or 0)
            if not fps:  # a .latent from Save Latent carries no rate: the Wan model's own
                fps = default_fps_of_latents(int(latents.shape[1]))
                rate_guessed = True
                rate_note = (f"{Path(req.latents).name} carries no frame rate: written at {fps:g} fps, the rate of "
                             "the Wan models of its VAE (--fps to change)")  # fmt: skip
            done = [str(r) for r in lat_meta.get("fixed_regions", [])]
            if req.max_frames:  # the latent frames that decode to at most that many frames
                latents = latents[:, :, : (req.max_frames - 1) // codec.temporal_ratio + 1]
        else:
            frames, fps_in = read_video(in_path, max_frames=req.max_frames)
            fps = req.fps or fps_in
            rate_guessed = in_path.is_dir() and not req.fps
            if rate_guessed and out_path.suffix and not out_path.is_dir():  # a video file is timed, frames are not
                rate_note = (f"{in_path.name} is a folder of frames, which carries no frame rate: written at {fps:g} "
                             "fps (--fps to change)")  # fmt: skip
            done = fixed_regions(read_comment(in_path))
            codec.check_frame_count(len(frames))
            # the pixel codec's latents are the frames: they stay on the CPU, fix_latents moves only the ROI's window
            latents = encode_frames(codec, frames, "cpu" if isinstance(codec, PixelCodec) else req.device)
    codec.check_latents(latents)
    before = decode_frames(codec, latents)
    with detector_from_config(cfg, video_mode=True) as detector:
        det = detector.detect_video(before, fps=fps, progress=req.progress)
    source = Path(req.latents if req.latents else in_path).name  # what holds the regions in `done`
    refix = refix_warning(f"{source} was", region, "an earlier bgfs fix") if region in done else None
    if refix and req.progress:  # said now too, so that it can be stopped before the work
        print(f"bgfs fix: warning: {refix}", file=sys.stderr)
    fx = cfg.fixer
    settings = FixSettings(steps=fx.steps, lr=fx.lr, strength=fx.strength, mode=fx.mode, guide=fx.guide,
                           lr_decay=fx.lr_decay, keep_first_frame=fx.keep_first_frame, margin=cfg.roi.margin,
                           min_conf=cfg.roi.min_conf, smooth=cfg.roi.smooth)
    bar = None
    if req.progress:
        from tqdm import tqdm

        bar = tqdm(total=settings.steps, desc=f"bgfs fix ({region}, {settings.mode})", unit="step")

    def on_step(step: int, total: int, losses: dict, crop: np.ndarray | None) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses['total']:.4f}", anatomy=f"{losses['anatomy']:.4f}")

    try:
        result = fix_latents(latents, codec, critic, spec, det, settings, on_step=on_step, device=req.device,
                             judged_frames=before)  # fmt: skip
    except OutOfMemoryError as exc:  # the same advice, in this command's flags
        from .codecs import DiffusersWanCodec  # a Wan VAE with fp32 gradients; bf16 ones take ~0.6x the memory

        lighter = ", or take the gradients through bf16 (--grad-dtype bf16)" if isinstance(codec, DiffusersWanCodec) else ""
        smaller = round(0.6 * cfg.roi.margin, 2)  # a margin below the one that ran out, if one is left
        margin = f" or lower the ROI margin (--set roi.margin={smaller:g})" if smaller >= 0.05 else ""
        raise OutOfMemoryError(f"{exc.what}: fix fewer frames (--max-frames){margin}{lighter}", exc.what) from exc
    finally:
        if bar is not None:
            bar.close()
    after = decode_frames(codec, result.latents) if result.report.get("changed") else before
    # The report is staged beside its folder and moved in after the video: a run stopped while writing the video
    # leaves an earlier run's video and report together, not this run's report beside that video
    report_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{report_dir.name}.", suffix=".partial", dir=report_dir.parent) as tmp:
        staged = Path(tmp)
        # judged as written: H.264 at crf 16 costs a few dB outside the ROI, and the report speaks of the file
        written = as_written(after, out_path, fps)
        judge = judge_fix(before, written, det, region, fps, cfg, staged,
                          guard=req.guard and bool(result.report.get("changed")),
                          unencoded=None if np.array_equal(written, after) else after,
                          written_to=out_path.name)  # fmt: skip
        del written
        if judge.get("guard_kept_input"):  # never hand back a video whose geometry the judge finds worse than the input's
            after = before
        if refix:
            result.report.setdefault("warnings", []).append(refix)
            result.report["summary"] += f"\nWarning: {refix}"
        kept = result.report.get("changed") and not judge.get("guard_kept_input")
        regions = [*done, region] if kept and region not in done else done
        report = {
            "input": str(in_path or req.latents), "latents_in": req.latents, "output": str(out_path),
            "critic": str(req.critic) if req.critic else None, "region": region,
            "codec": codec.name, "frames": len(before), "fps": fps, "fixer": result.report, "judge": judge,
            "fixed_regions": regions, "seconds": time.perf_counter() - started,
        }  # fmt: skip
        # the sound of a video file whose frames keep their rate (at another, it would drift)
        retimed = in_path is not None and not in_path.is_dir() and fps_in is not None and abs(fps - fps_in) > 1e-3
        with contextlib.ExitStack() as stage:
            if req.save_latents:  # the output's own latents (the fix's, or the input's where nothing was kept),
                from .generate import save_comfy_latent, save_latents  # written first, moved in after the video:

                # a failure leaves no video without them, and no new latents beside an earlier run's video
                staged_latents = stage.enter_context(atomic_path(req.save_latents))
                out_latents = result.latents if kept else latents
                save = save_comfy_latent if Path(req.save_latents).suffix == ".latent" else save_latents
                # a rate chosen here is not the video's: left out, so that a later fix chooses again (or takes --in's)
                save(staged_latents, out_latents, {"fixed_regions": regions} | ({} if rate_guessed else {"fps": fps}))
                report["latents"] = str(req.save_latents)
            write_video(out_path, after, fps, comment=FIXED_TAG + ", ".join(regions) if regions else None,
                        audio_from=None if retimed else in_path)
        report["audio"] = audio_kept(in_path, out_path) if in_path is not None else None
        if retimed and report["audio"]:
            why = f"--fps {fps:g}" if req.fps else f"{Path(req.latents or '').name}'s {fps:g} fps"
            report["audio"] = f"the input's sound was left out: {why} retimes its {fps_in:g} fps frames"
        if rate_note:
            report["fps_note"] = rate_note
        resized = size_note(out_path, after.shape[1:3])
        if resized:
            report["size_note"] = resized
        write_json_atomic(staged / "report.json", report)
        report_dir.mkdir(exist_ok=True)
        for staged_file in sorted(staged.iterdir()):  # file by file: a --report-dir may hold other files too
            os.replace(staged_file, report_dir / staged_file.name)
        report_path = report_dir / "report.json"
        sound = f"\nSound: {report['audio']}." if report["audio"] else ""
        sound += f"\nFrame rate: {rate_note}." if rate_note else ""
        sound += f"\nSize: {resized}." if resized else ""
        summary = (result.report["summary"] + "\n" + judge.get("summary", "") + sound
                   + f"\nWrote {out_path} and {report_path}.")
        return FixVideoResult(out_path, report_path, report, summary)


def _check_latents_path(req: FixVideoRequest, out_path: Path, in_path: Path | None) -> None:
    """Refuse a --save-latents path before any work: its suffix, a folder, the input files, a pixel-codec fix."""
    from .atomic import check_folder_possible

    path = Path(req.save_latents or "")
    if codec_kind(req.codec, req.model_id) == "pixel":
        raise BGFSError("--save-latents writes a Wan VAE's latents: give the VAE with --model-id (the pixel codec's "
                        "latents are the frames themselves)")  # fmt: skip
    if path.suffix not in (".latent", ".safetensors"):  # ComfyUI's Load Latent lists lowercase .latent files only
        raise BGFSError(f"--save-latents {path}: use .latent (ComfyUI's Load Latent reads it) or .safetensors "
                        "(bgfs fix --latents and bgfs generate's format), in lowercase")  # fmt: skip
    if path.is_dir():
        raise BGFSError(f"--save-latents {path} is a folder: name a file in it, e.g. {path / 'fixed.latent'}")
    inputs = [p for p in (in_path, out_path, req.latents and Path(req.latents)) if p]
    if any(path.resolve() == p.resolve() for p in inputs):
        raise BGFSError(f"--save-latents {path} is --in, --out or --latents: inputs are never overwritten; name "
                        f"another file, e.g. {out_path.with_suffix('').name}{path.suffix}")  # fmt: skip
    check_folder_possible(path.parent, f"--save-latents {path}")


# The comment `bgfs fix` writes into its output (video_io.write_video): the regions fixed in it so far, so that a
# fix of its own output can warn. Fixing a region twice resamples it twice, which measured worse than once.
FIXED_TAG = "BGFS fixed regions: "


def fixed_regions(comment: str | None) -> list[str]:
    """The regions a comment written by ``bgfs fix`` names (none for any other comment)."""
    if not comment or not comment.startswith(FIXED_TAG):
        return []
    return [r for r in comment[len(FIXED_TAG):].split(", ") if r]


def refix_warning(what: str, region: str, by: str) -> str:
    """The warning for a second fix of ``region``, for ``bgfs fix`` and the Fixer node alike."""
    return (f"{what} already fixed for {region} by {by}: each pass resamples the region once more, and a second pass "
            "measured worse than one (bone-length variation -16% against -22%); fix a region once")


def _score_text(value: float | None) -> str:
    return "not found" if value is None else f"{value:.1f}"


def geometry_worse(judge: dict[str, Any]) -> bool:
    """The guard's rule: MediaPipe's geometry score (``metrics.GEOMETRY_PARTS``) fell, or the region was lost.

    Not the full anatomy score: its swaps and landmark-confidence parts move by several points when MediaPipe's
    handedness label flickers on one frame; on the full score the guard turned away 3 to 5 of the 24 evaluation fixes
    (by critic), each with better jitter and bone lengths.
    """
    before, after = judge["geometry_before"], judge["geometry_after"]
    return before is not None and (after is None or after < before)


def judge_detections(before: Any, after_frames: np.ndarray, fps: float = 16.0,
                     detector_kwargs: dict[str, Any] | None = None, what: str = "the fixed decode") -> dict[str, Any]:
    """The guard's verdict when only the input's detections are at hand (the Fixer node gets ROI Detect's, made on
    the decode of its input latents): MediaPipe on ``after_frames`` (uint8 ``[T, H, W, 3]``), both scored.

    Returns ``score_before/after``, ``geometry_before/after`` (for `geometry_worse`) and a one-line ``summary``.
    """
    from .detection import detect_video
    from .expression import describe as describe_expression
    from .expression import expression_kept
    from .metrics import score_detections

    if len(after_frames) != before.num_frames:
        raise BGFSError(f"the fixed latents decode to {len(after_frames)} frames but the ROI covers "
                        f"{before.num_frames}: run ROI Detect on frames decoded from these latents")
    after = detect_video(after_frames, before.region, fps=fps, **(detector_kwargs or {}))
    ref, now = score_detections(before), score_detections(after, reference=before)
    kept = expression_kept(before, after)

    t = _score_text
    summary = (f"MediaPipe on {what}: geometry {t(ref.geometry_score)} -> {t(now.geometry_score)} "
               f"(anatomy score {t(ref.score)} -> {t(now.score)})")
    if kept is not None:
        summary += "; " + describe_expression(kept)
    return {"score_before": ref.score, "score_after": now.score, "geometry_before": ref.geometry_score,
            "geometry_after": now.geometry_score, "expression": kept, "fps": fps, "summary": summary}  # fmt: skip


# what the report says when the guard handed back the input: its numbers and plots are the rejected edit's
GUARD_NOTE = ("The guard kept the input: MediaPipe found the region's geometry worse after the fix, so the output "
              "file is the input (decoded) unchanged. The numbers and plots below are those of the rejected edit "
              "(after) against the input (before).")


def judge_fix(before: np.ndarray, after: np.ndarray, det_before: Any, region: str, fps: float, cfg: Config,
              report_dir: Path, guard: bool = False, unencoded: np.ndarray | None = None,
              written_to: str | None = None) -> dict[str, Any]:
    """MediaPipe's verdict on before and after, fidelity inside and outside the ROI, and the before/after plots.

    ``after`` is what the user gets: the output file's frames as written (``video_io.as_written``; ``written_to``
    names the file, for the report). ``unencoded``: the same frames before that encoding, when it changed them:
    they are judged too, so that the edit's own effect and the encoder's can be told apart. ``guard``: when the
    edit's geometry got worse, mark the verdict ``guard_kept_input`` and say so in the report. The guard reads the
    frames before encoding where there are some: on 8 frames of the bundled clip, encoding alone moved the geometry
    score by up to 6 points, as much as a fix gains, which would let the encoder decide.
    """
    from .detection import detector_kwargs
    from .expression import describe as describe_expression
    from .expression import expression_kept
    from .fidelity import compare
    from .metrics import PART_NAMES, fidelity_mask, json_safe, score_video
    from .report import write_report

    roi = (cfg.roi.margin, cfg.roi.min_conf, cfg.roi.smooth)
    result = score_video(after, region, reference=before, fps=fps, detector_kwargs=detector_kwargs(cfg),
                         ref_detections=det_before, roi=roi)  # fmt: skip
    ref, now = result.reference, result.anatomy
    table = {
        name: {"before": ref.parts[name].raw, "after": now.parts[name].raw}
        for name in PART_NAMES
        if name in ref.parts and name in now.parts
    }
    kept = expression_kept(result.ref_detections, result.detections)
    out = {"score_before": ref.score, "score_after": now.score, "geometry_before": ref.geometry_score,
           "geometry_after": now.geometry_score, "metrics": table, "expression": kept,
           "fidelity": result.fidelity.to_dict() if result.fidelity is not None else None}  # fmt: skip
    verdict = out  # what the guard reads
    t = _score_text
    fid = result.fidelity.describe() if result.fidelity is not None else ""
    unencoded_line = ""
    if unencoded is not None:
        verdict = judge_detections(result.ref_detections, unencoded, fps, detector_kwargs(cfg))
        mask = fidelity_mask(result.ref_detections, result.detections, before.shape[1:3], roi)  # the same mask
        edit = compare(unencoded, before, mask)
        psnr = edit.describe_psnr() if edit.mask_fraction > 0 else edit.describe()
        out["before_encoding"] = {"score_after": verdict["score_after"], "geometry_after": verdict["geometry_after"],
                                  "fidelity": edit.to_dict()}  # fmt: skip
        unencoded_line = (f"\n  before encoding: anatomy score {t(verdict['score_after'])}, geometry "
                          f"{t(verdict['geometry_after'])}, {psnr} (the differences are the encoder's)")
    kept_input = guard and geometry_worse(verdict)
    if written_to:
        out["judged"] = (f"the rejected edit, as {written_to} would have held it" if kept_input
                         else f"{written_to} as written")  # fmt: skip
        fid = f"{out['judged']}: {fid}"
    write_report(report_dir, result, after, before, note=GUARD_NOTE if kept_input else None)
    rows = [f"  {name:<17} {v['before']:.4f} -> {v['after']:.4f}" for name, v in table.items()]
    head = (f"MediaPipe's judgement (anatomy score {t(ref.score)} -> {t(now.score)}; geometry "
            f"{t(ref.geometry_score)} -> {t(now.geometry_score)}):")
    expression = [f"  {describe_expression(kept)}"] if kept else []
    out["summary"] = "\n".join([head, *rows, *expression, f"  {fid}"]) + unencoded_line
    if kept_input:
        out["guard_kept_input"] = True
        out["summary"] += ("\nGuard: MediaPipe found the region's geometry (detection, jitter, bone lengths, joint "
                           "limits) worse after the fix, so the output is the input (decoded) unchanged; pass "
                           "--no-guard to keep the edit anyway.")
    return json_safe(out)
