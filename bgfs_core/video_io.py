"""Video files and folders of frames in, H.264 mp4 / gif / png frames out. Frames are RGB ``uint8 [T, H, W, 3]``."""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, check_folder_possible, current_umask
from .errors import BGFSError

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".webm", ".gif", ".mkv", ".avi", ".m4v")
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_FOLDER_FPS = 25.0
_H264_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv")
_CONTAINER_FORMAT = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
WRITABLE_SUFFIXES = (*_H264_SUFFIXES, ".gif")


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int


def _natural_key(path: Path) -> list:
    # frame_2.png before frame_10.png
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted((p for p in files if not p.name.startswith(".")), key=_natural_key)


def holds_frames(folder: str | Path) -> bool:
    """Whether ``folder`` holds image frames itself (one video), rather than videos or folders of them."""
    folder = Path(folder)
    return folder.is_dir() and bool(_frame_files(folder))


def is_video_file(path: Path) -> bool:
    """A (not hidden) file with a video extension."""
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def list_videos(folder: str | Path) -> list[Path]:
    """Sorted video files in ``folder`` plus its sub-folders that hold image frames (one video each), but for the
    report folders ``bgfs fix`` writes beside its outputs (they hold a report.json and PNG plots)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BGFSError(f"videos folder {folder} does not exist (or is not a folder)")
    found = []
    for entry in sorted(folder.iterdir(), key=_natural_key):
        if is_video_file(entry) or (entry.is_dir() and not entry.name.startswith(".") and _frame_files(entry)
                                    and not (entry / "report.json").is_file()):  # a bgfs fix report's plots
            found.append(entry)
    if not found:
        raise BGFSError(
            f"no videos in {folder}: put video files ({' '.join(VIDEO_EXTENSIONS)}) or sub-folders of frames "
            f"({' '.join(IMAGE_EXTENSIONS)}) there"
        )
    return found


def check_video_exists(path: Path) -> None:
    """Refuse a video path that is missing or not a video (a file of another kind)."""
    if not path.exists():
        raise BGFSError(f"video {path} does not exist")
    if path.is_file() and path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise BGFSError(f"{path}: not a video file; accepted extensions: {' '.join(VIDEO_EXTENSIONS)} "
                        "(or a folder of image frames)")


def read_video(path: str | Path, max_frames: int = 0) -> tuple[np.ndarray, float]:
    """Decode a video file or a folder of frames to (RGB ``uint8 [T, H, W, 3]``, fps); ``max_frames`` 0 = all."""
    path = Path(path)
    check_video_exists(path)
    if max_frames < 0:
        raise BGFSError(f"max_frames must be >= 0 (0 = all frames), got {max_frames}")
    if path.suffix.lower() != ".gif":  # a gif's frame count needs a full decode; gifs are small
        _check_fits(path, video_info(path, timed=False), max_frames)
    if path.is_dir():
        frames, fps = _read_folder(path, max_frames)
    elif path.suffix.lower() == ".gif":
        frames, fps = _read_gif(path, max_frames)
    else:
        frames, fps = _read_av(path, max_frames)
    if len(frames) == 0:
        raise BGFSError(f"video {path} has no frames: it is empty or unreadable, re-export it")
    return np.stack(frames), fps


def _check_fits(path: Path, info: VideoInfo, max_frames: int) -> None:
    """Refuse, before decoding, a video whose frames would not fit in memory (decoding holds them twice while
    stacking): a clear error instead of the process being killed half-way."""
    n = min(info.num_frames, max_frames) if max_frames else info.num_frames
    need = 2 * n * info.height * info.width * 3
    from .memory import available_bytes

    available = available_bytes()
    if available is not None and need > 0.8 * available:
        fit = max(1, int(0.8 * available / (2 * info.height * info.width * 3)))
        raise BGFSError(
            f"video {path}: {n} frames of {info.width}x{info.height} need {need / 2**30:.1f} GiB to decode, "
            f"{available / 2**30:.1f} GiB are free; read at most about {fit} frames (bgfs precompute: "
            "--set clips.max_frames_per_video=N; bgfs fix / score: --max-frames N) or trim the video"
        )


def upright_rgb(image: Any) -> Any:
    """A PIL image as 8-bit RGB the way viewers show it: turned by its EXIF orientation (a phone stores a portrait
    photo sideways), and 16-bit greyscale scaled to 8 bits (``convert("RGB")`` clips it to white)."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0  # 16-bit greyscale ("I;16", or "I" on Pillow < 10.3): per-frame peaks would flicker
        image = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def _read_folder(folder: Path, max_frames: int) -> tuple[list[np.ndarray], float]:
    from PIL import Image

    files = _frame_files(folder)
    if not files:
        raise BGFSError(f"folder {folder} holds no image frames ({' '.join(IMAGE_EXTENSIONS)})")
    frames: list[np.ndarray] = []
    for f in files[: max_frames or None]:
        try:
            with Image.open(f) as im:
                arr = np.asarray(upright_rgb(im))
        except OSError as e:
            raise BGFSError(f"frame {f} cannot be read ({e}); replace or delete it") from None
        if frames and arr.shape != frames[0].shape:
            raise BGFSError(
                f"frame {f} is {arr.shape[1]}x{arr.shape[0]} but {files[0].name} is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}: all frames of a folder must have the same size"
            )
        frames.append(arr)
    return frames, DEFAULT_FOLDER_FPS


def _read_gif(path: Path, max_frames: int) -> tuple[list[np.ndarray], float]:
    # PIL composes GIF frames (palettes, disposal) the way browsers show them and gives per-frame durations.
    from PIL import Image, ImageSequence

    frames: list[np.ndarray] = []
    durations: list[float] = []
    try:
        with Image.open(path) as im:
            for frame in ImageSequence.Iterator(im):
                frames.append(np.asarray(frame.convert("RGB")))
                durations.append(float(frame.info.get("duration") or 0.0))
                if max_frames and len(frames) >= max_frames:
                    break
    except (OSError, EOFError, ValueError) as e:
        raise BGFSError(f"video {path} cannot be read as a GIF ({e}); re-export it") from None
    valid = [d for d in durations if d > 0]
    fps = 1000.0 / float(np.mean(valid)) if valid else 10.0  # browsers show a GIF without delays at ~10 fps
    held = _held_frames(durations)
    if held is not None:  # frames shown for whole multiples of the shortest delay: held frames, one per delay
        frames = [frame for frame, times in zip(frames, held) for _ in range(times)][: max_frames or None]
        fps = 1000.0 / min(valid)
    return frames, fps


def _held_frames(durations: list[float]) -> list[int] | None:
    """How many frames each GIF frame stands for, when its delays are whole multiples of the shortest (Pillow, and
    most GIF optimisers, store a run of identical frames as one frame shown that much longer, as BGFS's GIFs did
    before ``_gif_every_frame``); None when they are not, or nothing is held."""
    valid = [d for d in durations if d > 0]
    if not valid or min(valid) < 20:  # delays under 20 ms are shown as 100 ms by browsers: no unit to count in
        return None
    base = min(valid)
    held = [max(1, round(d / base)) if d > 0 else 1 for d in durations]
    exact = all(abs(d / base - h) < 0.05 for d, h in zip(durations, held) if d > 0)
    return held if exact and max(held) > 1 and sum(held) <= 4 * len(held) else None


def _stream_fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0:
            return float(rate)
    return DEFAULT_FOLDER_FPS


def _timed_rate(nominal: float, count: int, first: float | None, last: float | None, tick: float) -> float:
    """The rate ``count`` frames from time ``first`` to ``last`` (seconds) keep, where it differs from the stream's
    ``nominal`` rate by more than the timestamps' rounding (``tick``: their time base) and 1%: Matroska and WebM
    give a nominal rate that a variable-rate video does not keep, and written at it the video would play too fast
    or slow and leave its sound behind."""
    if count < 2 or first is None or last is None or last <= first:
        return nominal
    measured = (count - 1) / (last - first)
    return measured if abs(measured - nominal) > nominal * (0.01 + 2 * tick / (last - first)) else nominal


def _open_av(path: Path):
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise BGFSError(f"video {path} cannot be opened ({e}); is it a complete video file?") from None
    if not container.streams.video:
        container.close()
        raise BGFSError(f"{path} has no video stream")
    return container


def _read_av(path: Path, max_frames: int) -> tuple[list[np.ndarray], float]:
    import av

    frames: list[np.ndarray] = []
    with _open_av(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = _stream_fps(stream)
        size = None
        turns = 0
        first = last = None  # the frames' times, for a rate the stream's nominal one misstates
        try:
            for frame in container.decode(stream):
                if frame.time is not None:
                    first = frame.time if first is None else first
                    last = frame.time
                if size is None:
                    size = (frame.width, frame.height)
                    # a phone's portrait video is stored landscape with a display rotation: read it as it plays
                    turns = int(round(float(getattr(frame, "rotation", 0) or 0) / 90.0)) % 4
                # A stream that changes size mid-way is scaled back to its first size, so frames stack.
                if (frame.width, frame.height) != size:
                    frame = frame.reformat(width=size[0], height=size[1])
                rgb = frame.to_ndarray(format="rgb24")
                frames.append(np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb)
                if max_frames and len(frames) >= max_frames:
                    break
        except av.FFmpegError as e:
            if not frames:
                raise BGFSError(f"video {path} cannot be decoded ({e}); re-export it") from None
            # A truncated file: keep the frames that decoded, as players do.
        fps = _timed_rate(fps, len(frames), first, last, float(stream.time_base or 0))
    return frames, fps


def video_info(path: str | Path, timed: bool = True) -> VideoInfo:
    """Frame count, fps and size without decoding to RGB (a GIF is decoded, a video's packets are read). The
    size is as stored: a video with a display rotation of 90 degrees reads (``read_video``) with height and width
    swapped. ``timed`` False: the stream's own rate, and the packets read only where the container stores no frame
    count (what ``read_video`` needs before it decodes, without reading the file twice)."""
    path = Path(path)
    check_video_exists(path)
    if path.is_dir():
        files = _frame_files(path)
        if not files:
            raise BGFSError(f"folder {path} holds no image frames ({' '.join(IMAGE_EXTENSIONS)})")
        from PIL import Image

        try:
            with Image.open(files[0]) as im:
                return VideoInfo(len(files), DEFAULT_FOLDER_FPS, im.height, im.width)
        except OSError as e:
            raise BGFSError(f"frame {files[0]} cannot be read ({e}); replace or delete it") from None
    if path.suffix.lower() == ".gif":
        frames, fps = _read_gif(path, 0)
        if not frames:
            raise BGFSError(f"video {path} has no frames")
        return VideoInfo(len(frames), fps, frames[0].shape[0], frames[0].shape[1])
    import av

    with _open_av(path) as container:
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        if stream.frames and not timed:
            return VideoInfo(int(stream.frames), fps, stream.codec_context.height, stream.codec_context.width)
        # The packets' times give the rate `read_video` finds (webm/mkv store no frame count, nor a rate they keep)
        try:
            times = [float(p.pts * p.time_base) for p in container.demux(stream) if p.size and p.pts is not None]
        except av.FFmpegError as e:
            raise BGFSError(f"video {path} cannot be read ({e})") from None
        if times and timed:
            fps = _timed_rate(fps, len(times), min(times), max(times), float(stream.time_base or 0))
        n = stream.frames or len(times)
        return VideoInfo(int(n), fps, stream.codec_context.height, stream.codec_context.width)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise BGFSError(f"frames must be RGB uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise BGFSError(f"no frames to write (shape {list(frames.shape)})")
    return frames


def check_writable(path: str | Path, what: str = "cannot write") -> None:
    """Refuse a path ``write_video`` cannot write, before any work is done for it (prefix: ``what``)."""
    path = Path(path)
    if path.suffix and not path.is_dir() and path.suffix.lower() not in WRITABLE_SUFFIXES:
        raise BGFSError(f"{what} {path}: use {', '.join(WRITABLE_SUFFIXES)}, or a folder for PNG frames")
    if not path.suffix and path.exists() and not path.is_dir():  # no suffix means a folder of PNG frames
        raise BGFSError(f"{what} {path} is a file, and a name without a suffix is written as a folder of PNG frames: "
                        f"name the video with its suffix ({path}.mp4), or give a folder")  # fmt: skip
    if path.is_dir():  # PNG frames: images of its own there would read back as frames of the video
        others = sorted(f.name for f in _frame_files(path) if not _FRAME_NAME.fullmatch(f.name))
        if others:
            raise BGFSError(f"{what} {path} holds other images ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}"
                            "), which would read back as frames: give an empty or new folder")  # fmt: skip
    check_folder_possible(path.parent, f"{what} {path}")


def check_report_apart(report_dir: str | Path, what: str, *inputs: str | Path | None) -> None:
    """Refuse a report folder that is one of the ``inputs`` (a folder of frames, or a video's own path): its PNG plots
    would become frames of that video, or the report would replace it."""
    out = Path(report_dir).resolve()
    for given in inputs:
        if given is not None and Path(given).resolve() == out:
            raise BGFSError(f"{what} {report_dir} is the input {given}: the report's PNG plots would join its frames; "
                            "give the report a folder of its own")


MIN_FPS, MAX_FPS = 0.01, 1000.0  # what the writers hold: H.264's rate as a fraction over at most 1001, ms clocks


def check_fps(fps: float, what: str = "fps") -> None:
    """Refuse a frame rate no video can be written at (NaN, inf, 0, below ``MIN_FPS`` or above ``MAX_FPS``)."""
    try:
        rate = float(fps)  # numpy scalars too
    except (TypeError, ValueError):
        rate = float("nan")
    if not (np.isfinite(rate) and MIN_FPS <= rate <= MAX_FPS):
        raise BGFSError(f"{what} must be between {MIN_FPS:g} and {MAX_FPS:g} frames per second, got {fps}")


def write_video(path: str | Path, frames: np.ndarray, fps: float, comment: str | None = None,
                audio_from: str | Path | None = None) -> Path:
    """Write frames atomically: .mp4/.mov/.m4v/.mkv as H.264, .gif, or PNG frames for a folder / suffix-less path.
    ``comment``: a text stored in the file (the container's comment tag, the GIF comment, each PNG's Comment), read
    back by ``read_comment``. ``audio_from``: a video whose sound is copied in, unchanged and cut to the frames'
    length (H.264 outputs only; see ``audio_kept`` for what happened)."""
    path = Path(path)
    frames = _check_frames(frames)
    check_fps(fps)
    check_writable(path)
    suffix = path.suffix.lower()
    if path.is_dir() or not suffix:
        _write_png_folder(path, frames, comment)
    elif suffix in _H264_SUFFIXES:
        import av

        with atomic_path(path) as tmp:
            try:
                _write_h264(tmp, frames, fps, _CONTAINER_FORMAT[suffix], comment, audio_from)
            except (av.FFmpegError, ValueError):  # ValueError: PyAV's ArgumentError, a muxer refusing a stream
                if not audio_streams(audio_from or ""):
                    raise
                _write_h264(tmp, frames, fps, _CONTAINER_FORMAT[suffix], comment)  # the frames without the sound
    elif suffix == ".gif":
        with atomic_path(path) as tmp:
            _write_gif(tmp, frames, fps, comment)
    return path


def as_written(frames: np.ndarray, path: str | Path, fps: float) -> np.ndarray:
    """The frames that reading ``path`` back gives after ``write_video(path, frames, fps)``: H.264 (crf 16, yuv420p)
    and GIF (a 256-colour palette) lose detail, a folder of PNG frames keeps every pixel. Same shape as ``frames``
    (an odd size's repeated row or column is cut off). The encoders are deterministic (H.264 with mbtree off), so
    these are the file's own frames: a report can judge what the user gets, not the frames before encoding."""
    frames = _check_frames(frames)
    suffix = Path(path).suffix.lower()
    if Path(path).is_dir() or suffix not in WRITABLE_SUFFIXES:
        return frames
    t, h, w, _ = frames.shape
    with tempfile.TemporaryDirectory(prefix="bgfs-as-written.") as tmp:
        probe = Path(tmp) / f"frames{suffix}"
        write_video(probe, frames, fps)
        if suffix == ".gif":
            back = np.stack(_read_gif(probe, 0)[0])
            count = len(back)
        else:  # into one array, as read_video decodes it: a long video is held twice, not three times
            import av

            back = np.empty_like(frames)
            count = 0
            with av.open(str(probe)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for count, frame in enumerate(container.decode(stream), 1):
                    if count <= t:
                        back[count - 1] = frame.to_ndarray(format="rgb24")[:h, :w]
    if count != t or back.shape[1:] != frames.shape[1:]:  # never seen: say it, not guess
        raise BGFSError(f"{suffix} gave back {count} frames of {back.shape[2]}x{back.shape[1]} for {t} of {w}x{h}: "
                        "write a folder of PNG frames instead")  # fmt: skip
    return back


def audio_streams(path: str | Path) -> int:
    """How many sound streams a video file holds (0 for GIFs, frame folders and anything unreadable)."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() == ".gif":
        return 0
    import av

    try:
        with av.open(str(path)) as container:
            return len(container.streams.audio)
    except av.FFmpegError:
        return 0


def audio_kept(source: str | Path, output: str | Path) -> str | None:
    """What became of ``source``'s sound in ``output`` (written with ``audio_from=source``): None when it had none,
    else a sentence for a report."""
    had = audio_streams(source)
    if not had:
        return None
    if audio_streams(output):
        return f"the input's sound ({had} stream(s)) is copied unchanged"
    if Path(output).suffix.lower() in _H264_SUFFIXES:
        return f"the input's sound could not be put in a {Path(output).suffix} file and was left out: use .mkv"
    return f"the input's sound was left out: {Path(output).suffix or 'a folder of frames'} holds none (use .mp4)"


def size_note(path: str | Path, frame_hw: tuple[int, int]) -> str | None:
    """What ``write_video`` does to frames of ``frame_hw`` (height, width) written to ``path`` that changes their
    size, as a sentence for a report; None when they keep it."""
    h, w = frame_hw
    if Path(path).suffix.lower() not in _H264_SUFFIXES or not (h % 2 or w % 2):
        return None
    return (f"the {w}x{h} frames are written as {w + w % 2}x{h + h % 2}, their last "
            f"{'row and column' if h % 2 and w % 2 else 'row' if h % 2 else 'column'} repeated: H.264 in yuv420p "
            "needs even sizes (write a folder of PNG frames or a .gif to keep the size)")


def _write_h264(path: Path, frames: np.ndarray, fps: float, fmt: str, comment: str | None = None,
                audio_from: str | Path | None = None) -> None:
    import av

    # yuv420p (what every player decodes) needs even sizes: repeat the last row/column rather than drop pixels.
    t, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    rate = Fraction(fps).limit_denominator(1001)
    opts = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
    with av.open(str(path), "w", format=fmt, options=opts) as container:
        if comment:
            container.metadata["comment"] = comment
        # mbtree off: with it, PyAV's libx264 encodes the same frames differently from run to run (measured: 8
        # writes, 8 different decodes), so a fix or a demo could not be reproduced; files grow ~20% at crf 16
        stream = container.add_stream("libx264", rate=rate,
                                      options={"crf": "16", "preset": "medium", "x264-params": "mbtree=0"})
        stream.width, stream.height = w + pad_w, h + pad_h
        stream.pix_fmt = "yuv420p"
        source = av.open(str(audio_from)) if audio_streams(audio_from or "") else None
        try:
            copies = {}
            if source is not None:
                for a in source.streams.audio:
                    try:
                        copies[a.index] = container.add_stream_from_template(a)
                    except (ValueError, av.FFmpegError):  # a codec this container cannot hold: left out
                        continue
            for i in range(t):
                frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
                frame.pts = i
                frame.time_base = 1 / rate
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))  # flush delayed frames
            if copies:
                video = source.streams.video[0] if source.streams.video else None
                start = float(video.start_time * video.time_base) if video is not None and video.start_time else 0.0
                _copy_audio(source, container, copies, start, t / fps)
        finally:
            if source is not None:
                source.close()


def _copy_audio(source: Any, container: Any, copies: dict, start: float, seconds: float) -> None:
    """Mux ``source``'s audio packets into ``container``'s copies (stream index -> output stream), unchanged but
    moved by ``start`` (the source video's first frame is the output's time 0), up to ``seconds`` of frames."""
    for packet in source.demux(*(s for s in source.streams.audio if s.index in copies)):
        if packet.dts is None or packet.pts is None or packet.stream.index not in copies:  # end-of-stream markers
            continue
        shift = int(round(start / packet.time_base))
        at = float((packet.pts - shift) * packet.time_base)
        if at >= seconds or at + float((packet.duration or 0) * packet.time_base) <= 0:
            continue
        packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
        packet.stream = copies[packet.stream.index]
        container.mux(packet)


def _write_gif(path: Path, frames: np.ndarray, fps: float, comment: str | None = None) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    delays = _gif_delays(len(frames), fps)
    extra = {"comment": comment.encode()} if comment else {}
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=[d * 10 for d in delays],
                   loop=0, **extra)  # fmt: skip
    path.write_bytes(_gif_every_frame(path.read_bytes(), delays))


def _gif_delays(count: int, fps: float) -> list[int]:
    """Each of ``count`` frames' GIF delay in 1/100 s, the GIF's clock: the frames' times rounded to it, so that the
    delays average 1/fps (16 fps: 6, 7, 6, 6, ... cs, as ffmpeg writes them; one delay of 6 cs for all read back
    as 16.7 fps). At least 2 cs each: browsers show shorter delays as 10 cs, so a GIF above 50 fps plays at 50."""
    step = 100.0 / fps
    if step <= 2.0:
        return [2] * count
    times = [math.floor(k * step + 0.5) for k in range(count + 1)]
    return [max(2, b - a) for a, b in zip(times, times[1:])]


def _gif_every_frame(data: bytes, delays: list[int]) -> bytes:
    """Pillow writes a run of identical frames as one frame shown for the whole run (it has no option not to), so a
    held pose or a still clip read back shorter: give each frame of the run its own frame again, a 1x1 transparent
    one that leaves the picture as it is (as ffmpeg's GIFs do), with its own delay. ``delays``: each frame's delay
    in 1/100 s, as given to Pillow. ``data`` comes back unchanged where it is not laid out as expected."""

    def blocks_end(at: int) -> int:  # the end of the data sub-blocks that start at ``at``
        while data[at]:
            at += data[at] + 1
        return at + 1

    def table(packed: int) -> int:  # the size of the colour table a descriptor's flags announce
        return 3 << ((packed & 7) + 1) if packed & 0x80 else 0

    try:
        pos = 13 + table(data[10])
        out, gce, i = bytearray(data[:pos]), None, 0
        while data[pos] != 0x3B:  # the trailer
            if data[pos] == 0x21:  # an extension; 0xF9, the graphic control extension, holds the next frame's delay
                end = blocks_end(pos + 2)
                gce = len(out) if data[pos + 1] == 0xF9 else gce
                out += data[pos:end]
            elif data[pos] == 0x2C and gce is not None:  # a frame: its descriptor, colour table and image data
                end = blocks_end(pos + 10 + table(data[pos + 9]) + 1)
                out += data[pos:end]
                stored, run, total = int.from_bytes(out[gce + 4 : gce + 6], "little"), 0, 0
                while total < stored and i + run < len(delays):
                    total, run = total + delays[i + run], run + 1
                if run == 0 or total != stored:
                    return data
                out[gce + 4 : gce + 6] = delays[i].to_bytes(2, "little")
                for delay in delays[i + 1 : i + run]:
                    out += _GIF_HOLD[:4] + delay.to_bytes(2, "little") + _GIF_HOLD[6:]
                i, gce = i + run, None
            else:
                return data
            pos = end
    except IndexError:
        return data
    return bytes(out + data[pos:]) if i == len(delays) else data


# A frame that changes nothing: a graphic control extension (leave the picture, colour 0 transparent; the delay goes
# in bytes 4-5), then one transparent pixel at the top left with a 2-colour table of its own.
_GIF_HOLD = (b"\x21\xf9\x04\x05\x00\x00\x00\x00" + b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x80" + b"\x00" * 6
             + b"\x02\x02\x44\x01\x00")


_FRAME_NAME = re.compile(r"frame_\d{6}\.png")


def _write_png_folder(folder: Path, frames: np.ndarray, comment: str | None = None) -> None:
    from PIL import Image, PngImagePlugin

    info = None
    if comment:
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", comment)

    folder.parent.mkdir(parents=True, exist_ok=True)
    names = [f"frame_{i:06d}.png" for i in range(len(frames))]
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        for name, frame in zip(names, frames):
            Image.fromarray(frame).save(tmp / name, pnginfo=info)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes a 0700 folder
        if not folder.exists():
            os.replace(tmp, folder)
            return
        old = None
        if not folder.is_symlink() and all(_FRAME_NAME.fullmatch(f.name) for f in folder.iterdir()):
            # only frames written here before: swap the whole folder, so a stop leaves the old frames or the new
            old = folder.with_name(tmp.name + ".old")
            try:
                os.replace(folder, old)
            except OSError:  # a mount point, a folder open elsewhere (Windows): replace the frames one by one
                old = None
        if old is not None:
            try:
                os.replace(tmp, folder)
            except BaseException:  # stopped between the two renames: put the old frames back
                if not folder.exists():
                    os.replace(old, folder)
                raise
            shutil.rmtree(old, ignore_errors=True)
            return
        # A folder that holds other files too, or cannot be swapped: replace our frames one by one, drop stale ones.
        for name in names:
            os.replace(tmp / name, folder / name)
        keep = set(names)
        for stale in folder.glob("frame_*.png"):
            if stale.name not in keep and _FRAME_NAME.fullmatch(stale.name):
                stale.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_comment(path: str | Path) -> str | None:
    """The comment ``write_video`` stored in a video file, GIF or folder of frames (its first frame's); None when
    there is none or the file cannot be read (a missing comment never stops anything)."""
    path = Path(path)
    try:
        if path.is_dir():
            files = _frame_files(path)
            if not files:
                return None
            from PIL import Image

            with Image.open(files[0]) as im:
                text = getattr(im, "text", {}).get("Comment") or im.info.get("comment")
        elif path.suffix.lower() == ".gif":
            from PIL import Image

            with Image.open(path) as im:
                text = im.info.get("comment")
        else:
            import av

            with av.open(str(path)) as container:
                tags = {k.lower(): v for k, v in container.metadata.items()}  # Matroska's tags are upper case
                text = tags.get("comment")
    except Exception:  # any unreadable file: no comment
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text or None
