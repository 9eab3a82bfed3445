"""Video I/O on the real GIF in tests/data: decode, encode H.264 / GIF / PNG frames, and clear errors."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from conftest import HAND_PHOTOS, HAND_VIDEO

from bgfs_core.atomic import current_umask
from bgfs_core.errors import BGFSError
from bgfs_core.video_io import (
    VIDEO_EXTENSIONS,
    list_videos,
    read_comment,
    read_video,
    size_note,
    video_info,
    write_video,
)


def test_a_gif_keeps_every_frame_and_its_frame_rate(tmp_path, hand_video_frames):
    """Pillow stores a run of identical frames as one frame shown that much longer, and has no option not to: the
    writer gives each frame of the run its own frame again, so any reader (PyAV too) counts them, however long the
    still stretch (counted back from the delays, a still clip read back as one frame). GIF delays are in 1/100 s:
    the frames' times rounded to it keep 16 fps (6 and 7 cs), where one delay of 6 cs read back as 16.7 fps."""
    import av

    f = hand_video_frames
    for frames in (f[[0] * 10], f[[0, 1] + [2] * 20], f[[0, 1, 1, 1, 2, 3, 3, 4]], f[:8]):
        for fps in (16.0, 10.0):
            path = write_video(tmp_path / "clip.gif", frames, fps)
            back, got = read_video(path)
            assert back.shape == frames.shape and _mae(back, frames) < 3.0 and got == pytest.approx(fps, abs=0.15)
            with av.open(str(path)) as container:
                assert sum(1 for _ in container.decode(video=0)) == len(frames)
    assert read_video(tmp_path / "clip.gif", max_frames=3)[0].shape[0] == 3
    from bgfs_core.video_io import _gif_delays

    assert _gif_delays(5, 16.0) == [6, 7, 6, 6, 6] and sum(_gif_delays(16, 16.0)) == 100  # 1 s
    assert _gif_delays(3, 60.0) == [2, 2, 2]  # browsers show shorter delays as 10 cs


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_read_gif_matches_pil_frames_and_timing(hand_video_frames):
    frames, fps = read_video(HAND_VIDEO)
    assert frames.dtype == np.uint8 and frames.shape == (43, 240, 320, 3)
    np.testing.assert_array_equal(frames, hand_video_frames)
    assert fps == pytest.approx(10.0)  # 100 ms per frame in the file
    assert read_video(HAND_VIDEO, max_frames=5)[0].shape[0] == 5
    info = video_info(HAND_VIDEO)
    assert (info.num_frames, info.height, info.width) == (43, 240, 320) and info.fps == pytest.approx(10.0)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_h264_round_trip_keeps_frames_fps_and_quality(tmp_path, hand_video_frames, suffix):
    path = write_video(tmp_path / f"clip{suffix}", hand_video_frames, 10.0)
    back, fps = read_video(path)
    assert back.shape == hand_video_frames.shape and fps == pytest.approx(10.0)
    assert _mae(back, hand_video_frames) < 4.0, "crf 16: close to the source"
    per_frame = [_mae(a, b) for a, b in zip(back, hand_video_frames)]
    assert max(per_frame) < 6.0, "frames stay in order (a shifted frame would differ far more)"
    info = video_info(path)
    assert (info.num_frames, info.height, info.width) == (43, 240, 320) and info.fps == pytest.approx(10.0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left behind"


def test_h264_writes_the_same_video_every_time(tmp_path, hand_video_frames):
    """libx264's macroblock tree made PyAV encode the same frames differently on each write (8 writes of the clip:
    8 different decodes), so a fix, a demo or an evaluation through mp4 files did not reproduce."""
    decodes = [read_video(write_video(tmp_path / f"w{i}.mp4", hand_video_frames, 10.0))[0] for i in range(4)]
    for other in decodes[1:]:
        np.testing.assert_array_equal(other, decodes[0])


@pytest.mark.parametrize("suffix,fmt", [(".mkv", "matroska"), (".webm", "webm"), (".mp4", "mp4")])
def test_a_variable_frame_rate_is_read_from_the_frames_times(tmp_path, hand_video_frames, suffix, fmt):
    """A phone or screen recorder writes frames at a rate that varies; Matroska/WebM then state a nominal rate the
    frames do not keep (here 30 fps for 10 frames at 30 fps and 10 at 10 fps). The rate read is the one the frames'
    times keep, 19 intervals in 1.3 s, so the fixed video lasts as long as the input and its sound keeps step."""
    from fractions import Fraction

    import av

    times_ms = [round(i * 1000 / 30) for i in range(10)] + [300 + 100 * i for i in range(1, 11)]
    path = tmp_path / f"vfr{suffix}"
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("libvpx" if fmt == "webm" else "libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(hand_video_frames[i], format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    frames, fps = read_video(path)
    assert len(frames) == 20 and fps == pytest.approx(19 / 1.3, rel=1e-3)
    assert video_info(path).fps == pytest.approx(fps, rel=1e-6) and video_info(path).num_frames == 20
    assert read_video(path, max_frames=10)[1] == pytest.approx(30, rel=1e-2), "the 30 fps frames alone"


def test_h264_odd_size_and_ntsc_rate(tmp_path, hand_video_frames):
    odd = hand_video_frames[:6, :239, :317]
    back, fps = read_video(write_video(tmp_path / "odd.mp4", odd, 30000 / 1001))
    assert fps == pytest.approx(29.97, abs=1e-3)
    assert back.shape == (6, 240, 318, 3), "yuv420p needs even sizes: padded by one repeated row/column"
    assert size_note("odd.mp4", odd.shape[1:3]).startswith("the 317x239 frames are written as 318x240, their last "
                                                           "row and column repeated")  # fmt: skip
    assert size_note("odd.gif", odd.shape[1:3]) is None and size_note("odd_frames", odd.shape[1:3]) is None
    assert size_note("even.mkv", (240, 320)) is None
    assert _mae(back[:, :239, :317], odd) < 4.0
    assert _mae(back[:, 239], back[:, 238]) < 4.0 and _mae(back[:, :, 317], back[:, :, 316]) < 4.0  # edge copies


def test_gif_and_png_folder_round_trips(tmp_path, hand_video_frames):
    frames = hand_video_frames[:10]
    back, fps = read_video(write_video(tmp_path / "clip.gif", frames, 10.0))
    assert back.shape == frames.shape and fps == pytest.approx(10.0)
    assert _mae(back, frames) < 3.0  # the source is already a GIF: palette loss is small
    # a still stretch (a held pose, a frozen fix) is stored as one frame shown longer: read back frame for frame
    held = frames[[0, 1, 1, 1, 2, 3, 3, 4]]
    back, fps = read_video(write_video(tmp_path / "held.gif", held, 10.0))
    assert back.shape == held.shape and fps == pytest.approx(10.0) and _mae(back, held) < 3.0
    assert read_video(tmp_path / "held.gif", max_frames=3)[0].shape[0] == 3
    folder = write_video(tmp_path / "frames", frames, 10.0)
    back, fps = read_video(folder)
    np.testing.assert_array_equal(back, frames)  # PNG is lossless
    assert fps == 25.0  # a folder has no timing: the default
    write_video(folder, frames[:3], 10.0)  # rewriting drops the stale frames
    assert read_video(folder)[0].shape[0] == 3
    (folder / "notes.txt").write_text("kept")  # other files are kept, other images refused: they would be frames
    write_video(folder, frames[:2], 10.0)
    assert read_video(folder)[0].shape[0] == 2 and (folder / "notes.txt").read_text() == "kept"
    (folder / "0000.png").write_bytes((folder / "frame_000000.png").read_bytes())
    with pytest.raises(BGFSError, match=r"frames holds other images \(0000.png\), which would read back as frames"):
        write_video(folder, frames[:2], 10.0)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~current_umask()  # not mkdtemp's 0700


def test_rewriting_a_folder_of_frames_stopped_midway_leaves_the_old_frames(tmp_path, hand_video_frames, monkeypatch):
    """A stop while frames replace frames must not leave a mix of the two videos."""
    import bgfs_core.video_io as video_io

    folder = write_video(tmp_path / "frames", hand_video_frames[:5], 10.0)
    real_replace, calls = os.replace, []

    def stop_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(video_io.os, "replace", stop_on_second)
    with pytest.raises(KeyboardInterrupt):
        write_video(folder, hand_video_frames[10:15], 10.0)
    monkeypatch.undo()
    np.testing.assert_array_equal(read_video(folder)[0], hand_video_frames[:5])  # the old frames, all of them
    assert [p.name for p in tmp_path.iterdir()] == ["frames"]  # and nothing left beside them
    # a folder reached through a link keeps its link: its frames are replaced inside it
    link = tmp_path / "linked"
    link.symlink_to(folder, target_is_directory=True)
    write_video(link, hand_video_frames[10:13], 10.0)
    assert link.is_symlink() and read_video(folder)[0].shape[0] == 3


@pytest.mark.parametrize("name", ["v.mp4", "v.mov", "v.m4v", "v.mkv", "v.gif", "frames"])
def test_a_comment_written_with_the_frames_is_read_back(tmp_path, hand_video_frames, name):
    frames = hand_video_frames[:3]
    write_video(tmp_path / name, frames, 10.0, comment="BGFS fixed regions: hands, face")
    assert read_comment(tmp_path / name) == "BGFS fixed regions: hands, face"
    assert read_video(tmp_path / name)[0].shape == frames.shape, "the comment changes nothing else"
    write_video(tmp_path / ("plain_" + name), frames, 10.0)
    assert read_comment(tmp_path / ("plain_" + name)) is None


def test_no_comment_where_there_is_none_or_nothing_to_read(tmp_path):
    assert read_comment(HAND_VIDEO) is None  # a GIF from elsewhere
    assert read_comment(tmp_path / "missing.mp4") is None
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    assert read_comment(tmp_path / "broken.mp4") is None
    (tmp_path / "empty").mkdir()
    assert read_comment(tmp_path / "empty") is None


def test_list_videos(tmp_path, hand_video_frames):
    write_video(tmp_path / "b.mp4", hand_video_frames[:2], 10.0)
    write_video(tmp_path / "a.gif", hand_video_frames[:2], 10.0)
    write_video(tmp_path / "c_frames", hand_video_frames[:2], 10.0)
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "empty_dir").mkdir()
    report = tmp_path / "b_report"  # what `bgfs fix` writes beside b.mp4: PNG plots, not a video
    write_video(report, hand_video_frames[:1], 10.0)
    (report / "report.json").write_text("{}")
    assert [p.name for p in list_videos(tmp_path)] == ["a.gif", "b.mp4", "c_frames"]


def test_list_videos_errors(tmp_path):
    with pytest.raises(BGFSError, match="does not exist"):
        list_videos(tmp_path / "missing")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(BGFSError, match=r"no videos in .*\.mp4 .*\.gif"):
        list_videos(tmp_path)


def test_unreadable_inputs_name_the_file(tmp_path):
    bad = tmp_path / "random.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mov"
    empty.write_bytes(b"")
    fake_gif = tmp_path / "fake.gif"
    fake_gif.write_text("GIF? no")
    for path in (bad, empty, fake_gif, tmp_path / "missing.mp4"):
        with pytest.raises(BGFSError, match=path.name):
            read_video(path)
    with pytest.raises(BGFSError, match="not a video file"):
        read_video(HAND_PHOTOS[0])
    frames = tmp_path / "frames"  # a folder whose first frame is broken: named, so a folder run goes on
    frames.mkdir()
    (frames / "0000.png").write_bytes(b"not a png")
    for read in (read_video, video_info):
        with pytest.raises(BGFSError, match=r"0000\.png cannot be read .*replace or delete it"):
            read(frames)


def test_truncated_mp4_keeps_what_decodes_or_says_so(tmp_path, hand_video_frames):
    path = write_video(tmp_path / "full.mp4", hand_video_frames, 10.0)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    try:
        frames, _ = read_video(cut)
    except BGFSError as e:
        assert "cut.mp4" in str(e)
    else:
        assert 0 < len(frames) < 43


def test_folder_of_frames_must_share_one_size(tmp_path, hand_video_frames):
    from PIL import Image

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(hand_video_frames[0]).save(folder / "0001.png")
    Image.fromarray(hand_video_frames[1][:100]).save(folder / "0002.png")
    with pytest.raises(BGFSError, match="0002.png.*same size"):
        read_video(folder)


def test_write_rejects_bad_input(tmp_path):
    ok = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(BGFSError, match=r"RGB uint8 \[T, H, W, 3\]"):
        write_video(tmp_path / "x.mp4", ok.astype(np.float32), 10.0)
    with pytest.raises(BGFSError, match=r"RGB uint8 \[T, H, W, 3\]"):
        write_video(tmp_path / "x.mp4", ok[0], 10.0)
    with pytest.raises(BGFSError, match="no frames"):
        write_video(tmp_path / "x.mp4", ok[:0], 10.0)
    for fps in (0, 0.0001, float("inf"), float("nan"), 5000):  # 0.0001 was a ZeroDivisionError in the H.264 writer
        with pytest.raises(BGFSError, match="fps must be between 0.01 and 1000"):
            write_video(tmp_path / "x.mp4", ok, fps)
    with pytest.raises(BGFSError, match=r"\.mp4.*\.gif"):
        write_video(tmp_path / "x.webm", ok, 10.0)
    assert not list(tmp_path.iterdir()), "nothing written on error"
    assert ".webm" in VIDEO_EXTENSIONS  # readable, though not written


def test_a_video_too_big_for_memory_is_refused_before_decoding(tmp_path, hand_video_frames, monkeypatch):
    from bgfs_core import memory

    path = write_video(tmp_path / "clip.mp4", hand_video_frames, 16.0)
    frames, _ = read_video(path)  # fits: read as before
    assert len(frames) == len(hand_video_frames)
    per_frame = 2 * frames[0].nbytes
    monkeypatch.setattr(memory, "available_bytes", lambda: 10 * per_frame)
    with pytest.raises(BGFSError, match=r"clip.mp4: 43 frames of 320x240 need .* read at most about 8 frames"):
        read_video(path)
    assert len(read_video(path, max_frames=8)[0]) == 8  # the advice works
    monkeypatch.setattr(memory, "available_bytes", lambda: None)  # not Linux: no check, as before
    assert len(read_video(path)[0]) == 43


def _set_display_rotation(path, matrix) -> None:
    """Patch the mp4's track header matrix, as a phone writes a portrait video it stored landscape."""
    import struct

    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    version = data[at + 4]
    offset = at + 4 + 4 + (32 if version == 1 else 20) + 8 + 8  # flags, times/ids/duration, reserved, layer..volume
    data[offset : offset + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))


def test_a_video_with_a_display_rotation_reads_as_it_plays(tmp_path, hand_video_frames):
    """A portrait phone video is stored landscape with a display matrix: MediaPipe must see it upright, and the
    fixed output (written upright, without the matrix) plays the same way round as the input."""
    frames = hand_video_frames[:4]  # 320 x 240, a hand pointing up: not symmetric under a quarter turn
    path = write_video(tmp_path / "phone.mp4", frames, 10.0)
    _set_display_rotation(path, (0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30))  # ffmpeg reads -90: play it turned
    back, _ = read_video(path)
    assert back.shape == (4, 320, 240, 3)
    assert _mae(back, np.rot90(frames, -1, axes=(1, 2))) < 3.0  # a quarter turn clockwise, as players show it


def test_photo_frames_are_read_upright_and_16_bit_frames_are_not_white(tmp_path, hand_video_frames):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    frame = hand_video_frames[0]
    im = Image.fromarray(np.rot90(frame, 1).copy())  # stored sideways ...
    exif = im.getexif()
    exif[0x0112] = 6  # ... with EXIF orientation 6: viewers turn it a quarter clockwise
    im.save(folder / "frame_000000.jpg", exif=exif, quality=95)
    back, _ = read_video(folder)
    assert back.shape == (1, 240, 320, 3) and _mae(back[0], frame) < 4.0

    gray16 = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    deep = tmp_path / "deep"
    deep.mkdir()
    Image.fromarray(gray16).save(deep / "frame_000000.png")
    back, _ = read_video(deep)
    assert np.abs(back[0, ..., 0].astype(int) - (gray16 / 257).round().astype(int)).max() <= 1


@pytest.mark.parametrize("codec", ["pcm_u8", "pcm_f32le"])  # refused when added; refused when the file is closed
def test_a_sound_the_container_cannot_hold_is_left_out_not_fatal(tmp_path, hand_video_frames, codec):
    """Such PCM sound fits an .mkv but not an .mp4: the .mp4 gets the frames alone, and audio_kept says so."""
    import av

    from bgfs_core.video_io import audio_kept, audio_streams

    src = tmp_path / "pcm.mkv"
    with av.open(str(src), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        sound = out.add_stream(codec, rate=16000)
        for i, f in enumerate(hand_video_frames[:5]):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        tone = av.AudioFrame(format=sound.codec_context.format.name, layout="mono", samples=8000)
        tone.sample_rate, tone.pts = 16000, 0
        for packet in [*sound.encode(tone), *sound.encode(None)]:
            out.mux(packet)
    frames, fps = read_video(src)
    for name, holds in (("out.mp4", 0), ("out.mkv", 1)):
        write_video(tmp_path / name, frames, fps, audio_from=src)
        assert audio_streams(tmp_path / name) == holds and len(read_video(tmp_path / name)[0]) == 5
    assert "could not be put in a .mp4 file and was left out" in audio_kept(src, tmp_path / "out.mp4")
