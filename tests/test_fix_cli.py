"""``bgfs fix`` end to end on the real hand video with the pixel codec, and its errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HAND_PHOTOS, HAND_VIDEO

from bgfs_core.cli import main
from bgfs_core.config import load_config
from bgfs_core.corruptions import corrupt
from bgfs_core.critic import CriticSpec, HeatmapCritic
from bgfs_core.critic_io import save_critic
from bgfs_core.detection import detect_video
from bgfs_core.errors import BGFSError
from bgfs_core.fix_video import geometry_worse, judge_detections, judge_fix
from bgfs_core.video_io import read_comment, read_video, write_video


def make_critic(path, region: str = "hands"):
    torch.manual_seed(0)
    spec = CriticSpec.for_region(region, input_hw=(32, 32), heatmap_hw=(16, 16), width=8)
    save_critic(path, HeatmapCritic(spec), spec)
    return path


def tiny_wan_folder(workdir: Path) -> Path:
    """A tiny random-weight diffusers Wan 2.1 VAE folder for --model-id, written once per module."""
    from bgfs_core.codecs import DiffusersWanCodec, wan_vae_config

    folder = workdir / "tinywan_save_latents"
    if not folder.exists():
        DiffusersWanCodec.from_config(wan_vae_config("2.1", base_dim=8)).vae.save_pretrained(folder / "vae")
    return folder


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fix_cli")
    make_critic(d / "hands.safetensors")
    make_critic(d / "face.safetensors", "face")
    return d


def test_fix_runs_end_to_end_and_judges_with_mediapipe(workdir, capsys):
    out = workdir / "fixed.mp4"
    before = HAND_VIDEO.read_bytes()
    code = main(["fix", "--in", str(HAND_VIDEO), "--out", str(out), "--critic", str(workdir / "hands.safetensors"),
                 "--max-frames", "8", "--steps", "2", "--quiet"])  # fmt: skip
    assert code == 0
    assert HAND_VIDEO.read_bytes() == before, "the input must never change"
    frames, _ = read_video(out)
    assert frames.shape == (8, 240, 320, 3)
    report = json.loads((workdir / "fixed_report" / "report.json").read_text())
    assert report["region"] == "hands" and report["codec"] == "pixel codec" and report["frames"] == 8
    judge = report["judge"]
    assert judge["score_before"] is not None and judge["score_after"] is not None
    assert judge["geometry_before"] is not None and judge["geometry_after"] is not None
    kept_input = judge.get("guard_kept_input", False)
    assert kept_input == (geometry_worse(judge) and report["fixer"]["changed"])
    assert {"jitter", "bone_cv", "detection"} <= set(judge["metrics"])
    assert judge["fidelity"]["psnr_outside"] is not None
    assert len(report["fixer"]["history"]) == 2
    for name in ("scores.json", "per_frame.csv", "report.html"):
        assert (workdir / "fixed_report" / name).is_file()
    assert list((workdir / "fixed_report").glob("*.png")), "the before/after plots are missing"
    assert "MediaPipe's judgement" in capsys.readouterr().out


def test_the_report_judges_the_file_as_written(workdir, capsys):
    """H.264 at crf 16 costs a few dB outside the hand: the report's numbers are the written file's, the same as
    `bgfs score` of that file against the input gives, and the frames before encoding are reported beside."""
    out = workdir / "as_written.mp4"
    assert main(["fix", "--in", str(HAND_VIDEO), "--out", str(out), "--max-frames", "8", "--steps", "2",
                 "--no-guard", "--quiet"]) == 0  # fmt: skip
    judge = json.loads((workdir / "as_written_report" / "report.json").read_text())["judge"]
    summary = capsys.readouterr().out
    assert judge["judged"] == "as_written.mp4 as written" and "as_written.mp4 as written: PSNR" in summary
    assert "guard_kept_input" not in judge
    assert main(["score", "--in", str(out), "--ref", str(HAND_VIDEO), "--max-frames", "8",
                 "--out", str(workdir / "as_written_score"), "--quiet"]) == 0  # fmt: skip
    scored = json.loads((workdir / "as_written_score" / "scores.json").read_text())
    assert judge["score_after"] == pytest.approx(scored["score"], abs=1e-9)
    assert judge["fidelity"] == pytest.approx(scored["fidelity"], abs=1e-9)
    unencoded = judge["before_encoding"]["fidelity"]
    assert unencoded["psnr_outside"] > judge["fidelity"]["psnr_outside"] + 3, (unencoded, judge["fidelity"])
    assert "before encoding: anatomy score" in summary and "PSNR inside/outside ROI" in summary
    folder = workdir / "as_written_frames"  # PNG frames lose nothing: nothing to report beside
    assert main(["fix", "--in", str(HAND_VIDEO), "--out", str(folder), "--max-frames", "8", "--steps", "2",
                 "--no-guard", "--quiet"]) == 0  # fmt: skip
    assert "before_encoding" not in json.loads((workdir / "as_written_frames_report" / "report.json")
                                                        .read_text())["judge"]  # fmt: skip


def test_a_folder_of_frames_without_fps_says_the_rate_it_is_written_at(workdir, capsys):
    frames = write_video(workdir / "rate_frames", read_video(HAND_VIDEO, max_frames=5)[0], 10.0)
    out = workdir / "rate_fixed.mp4"
    assert main(["fix", "--in", str(frames), "--out", str(out), "--steps", "1", "--quiet"]) == 0
    says = "rate_frames is a folder of frames, which carries no frame rate: written at 25 fps (--fps to change)"
    assert f"Frame rate: {says}" in capsys.readouterr().out
    assert json.loads((workdir / "rate_fixed_report" / "report.json").read_text())["fps_note"] == says
    assert main(["fix", "--in", str(frames), "--out", str(out), "--fps", "10", "--steps", "1", "--quiet"]) == 0
    assert "Frame rate:" not in capsys.readouterr().out


def test_fix_without_a_critic_lets_the_guide_alone_move_the_hand(workdir, capsys):
    out = workdir / "guided.mp4"
    code = main(["fix", "--in", str(HAND_VIDEO), "--out", str(out), "--max-frames", "8", "--steps", "3",
                 "--no-guard", "--quiet"])  # fmt: skip
    assert code == 0
    report = json.loads((workdir / "guided_report" / "report.json").read_text())
    assert report["critic"] is None and report["region"] == "hands" and report["fixer"]["critic_fit"] is None
    assert report["fixer"]["changed"] and "No critic: the guide alone" in capsys.readouterr().out
    assert np.abs(read_video(out)[0].astype(int) - read_video(HAND_VIDEO, max_frames=8)[0].astype(int)).max() > 8
    for extra, needle in ((["--mode", "latent"], "without a critic only the guide can drive the edit"),
                          (["--guide", "0"], "guide > 0"), (["--region", "paws"], "unknown region 'paws'")):
        never = workdir / "never_guided.mp4"
        assert main(["fix", "--in", str(HAND_VIDEO), "--out", str(never), "--max-frames", "8", "--quiet", *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("bgfs fix: error:") and needle in err, err
        assert not never.exists()


def test_keep_first_frame_leaves_the_first_frame_bit_for_bit(workdir, hand_video_frames, capsys):
    """An I2V start image: written to a lossless folder of frames, the first comes back exactly, the rest fixed."""
    source = hand_video_frames[:8]
    frames_dir = write_video(workdir / "start_image_frames", source, 16.0)
    for keep in (False, True):
        out = workdir / f"start_image_fixed_{keep}"
        flag = ["--keep-first-frame"] if keep else []
        assert main(["fix", "--in", str(frames_dir), "--out", str(out), "--fps", "16", "--steps", "3", "--no-guard",
                     "--quiet", *flag]) == 0  # fmt: skip
        fixed = read_video(out)[0]
        moved = (fixed != source).reshape(len(source), -1).any(1)
        assert bool(moved[0]) != keep and moved[1:].all(), (keep, moved)
    report = json.loads((workdir / "start_image_fixed_True_report" / "report.json").read_text())
    assert report["fixer"]["settings"]["keep_first_frame"] and "first frame kept" in capsys.readouterr().out


def test_fixing_a_fixed_video_again_says_to_fix_once(workdir, capsys):
    """``bgfs fix`` writes the regions it fixed into its output (a comment in the file): a fix of that output for
    the same region says that a second pass measured worse than one, and still runs."""
    once, twice = workdir / "once.mp4", workdir / "twice.mkv"
    args = ["--max-frames", "5", "--steps", "1", "--no-guard", "--quiet"]
    assert main(["fix", "--in", str(HAND_VIDEO), "--out", str(once), *args]) == 0
    assert "already fixed" not in capsys.readouterr().out
    assert read_comment(once) == "BGFS fixed regions: hands"
    assert json.loads((workdir / "once_report" / "report.json").read_text())["fixed_regions"] == ["hands"]

    assert main(["fix", "--in", str(once), "--out", str(twice), *args]) == 0
    out = capsys.readouterr().out
    assert "Warning: once.mp4 was already fixed for hands by an earlier bgfs fix" in out, out
    report = json.loads((workdir / "twice_report" / "report.json").read_text())
    assert any("fix a region once" in w for w in report["fixer"]["warnings"]) and report["fixer"]["changed"]
    assert read_comment(twice) == "BGFS fixed regions: hands", "the list names each region once"


def test_a_folder_of_videos_is_fixed_video_by_video_and_resumes(workdir, hand_video_frames, capsys):
    """``--in`` a folder of videos: each is fixed into ``--out``/NAME.mp4 with its report; one that cannot be read
    is named and the others still go; run again, the fixed ones are skipped (a stopped batch resumes)."""
    videos, out = workdir / "batch_in", workdir / "batch_out"
    videos.mkdir()
    write_video(videos / "take1.mp4", hand_video_frames[:5], 10.0)
    write_video(videos / "take2.gif", hand_video_frames[5:10], 10.0)
    (videos / "broken.mp4").write_bytes(b"not a video")
    (videos / "notes.txt").write_text("not a video either, and not listed")
    args = ["fix", "--in", str(videos), "--out", str(out), "--steps", "1", "--no-guard", "--quiet"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "bgfs fix: broken.mp4: error:" in captured.err
    assert "1 of 3 videos failed (broken.mp4); 2 fixed, 0 skipped as already fixed" in captured.err
    for name in ("take1", "take2"):
        assert read_video(out / f"{name}.mp4")[0].shape == (5, 240, 320, 3)
        assert json.loads((out / f"{name}_report" / "report.json").read_text())["fixer"]["changed"]
        assert f"  {name}.{'mp4' if name == 'take1' else 'gif'}: geometry " in captured.out
    (videos / "broken.mp4").unlink()
    stamp = (out / "take1.mp4").stat().st_mtime_ns
    assert main(args) == 0
    assert "[1/2] take1.mp4: already fixed in" in capsys.readouterr().out
    assert (out / "take1.mp4").stat().st_mtime_ns == stamp, "a video already fixed is not fixed again"


def test_a_folder_of_videos_none_of_which_reads_leaves_no_output_folder(workdir, capsys):
    videos, out = workdir / "batch_broken", workdir / "batch_broken_out"
    videos.mkdir()
    for name in ("a.mp4", "b.gif"):
        (videos / name).write_bytes(b"not a video")
    assert main(["fix", "--in", str(videos), "--out", str(out), "--steps", "1", "--quiet"]) == 2
    assert "2 of 2 videos failed (a.mp4, b.gif); 0 fixed" in capsys.readouterr().err
    assert not out.exists(), "an empty folder would look like a result"
    out.mkdir()  # one the user made is theirs: it stays
    assert main(["fix", "--in", str(videos), "--out", str(out), "--steps", "1", "--quiet"]) == 2
    assert out.is_dir()


def test_a_folder_of_videos_loads_the_critic_and_codec_once(workdir, hand_video_frames, capsys, monkeypatch):
    """A batch loads its critic and VAE for the first video and keeps them (a Wan VAE takes seconds to load); one
    that does not load stops the batch before any video, as no video could be fixed."""
    import bgfs_core.critic_io as critic_io
    import bgfs_core.fix_video as fix_video_module

    videos, out = workdir / "batch_once_in", workdir / "batch_once_out"
    videos.mkdir()
    for k in range(3):
        write_video(videos / f"take{k}.mp4", hand_video_frames[k : k + 5], 10.0)
    loads = {"critic": 0, "codec": 0}

    def counted(name, real):
        def call(*a, **kw):
            loads[name] += 1
            return real(*a, **kw)
        return call

    monkeypatch.setattr(critic_io, "load_critic", counted("critic", critic_io.load_critic))
    monkeypatch.setattr(fix_video_module, "make_codec", counted("codec", fix_video_module.make_codec))
    args = ["fix", "--in", str(videos), "--out", str(out), "--steps", "1", "--no-guard", "--quiet"]
    assert main([*args, "--critic", str(workdir / "hands.safetensors")]) == 0
    assert loads == {"critic": 1, "codec": 1}
    assert all(json.loads((out / f"take{k}_report" / "report.json").read_text())["critic"] for k in range(3))
    capsys.readouterr()

    missing = workdir / "no_such_critic.safetensors"
    assert main([*args, "--out", str(workdir / "batch_once_out2"), "--critic", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("no_such_critic") == 1 and "[2/3]" not in captured.out, captured
    assert not list((workdir / "batch_once_out2").glob("*.mp4"))
    # a frame rate no video can have: said once, before the models load (each video failed with it, one by one)
    loads.update(critic=0, codec=0)
    assert main([*args, "--out", str(workdir / "batch_once_out3"), "--fps", "0.0001"]) == 2
    err = capsys.readouterr().err
    assert err.count("--fps must be between 0.01 and 1000 frames per second") == 1 and "videos failed" not in err
    assert loads == {"critic": 0, "codec": 0} and not (workdir / "batch_once_out3").exists()


def test_a_folder_of_videos_needs_a_folder_out_and_distinct_names(workdir, hand_video_frames, capsys):
    videos = workdir / "batch_names"
    videos.mkdir()
    write_video(videos / "same.mp4", hand_video_frames[:5], 10.0)
    write_video(videos / "same.gif", hand_video_frames[:5], 10.0)
    for extra, needle in ((["--out", str(workdir / "one.mp4")], "so --out must be a folder"),
                          (["--out", str(workdir / "names_out")], "would both be fixed into"),
                          (["--out", str(workdir / "names_out"), "--report-dir", str(workdir)], "--report-dir"),
                          (["--out", str(videos)], "--out must be another folder than --in")):
        assert main(["fix", "--in", str(videos), *extra, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("bgfs fix: error:") and needle in err, err
    (videos / "frame_0001.jpg").write_bytes(HAND_PHOTOS[0].read_bytes())  # frames beside videos: which is it?
    assert main(["fix", "--in", str(videos), "--out", str(workdir / "names_out"), "--quiet"]) == 2
    assert "holds both image frames and video files" in capsys.readouterr().err
    assert not (workdir / "names_out").exists() and not (workdir / "one.mp4").exists()


def test_nothing_detected_passes_through_with_a_message(workdir, capsys):
    blank = workdir / "blank.mp4"
    write_video(blank, np.full((5, 64, 64, 3), 90, np.uint8), 10.0)
    out = workdir / "blank_fixed.mp4"
    code = main(["fix", "--in", str(blank), "--out", str(out), "--critic", str(workdir / "hands.safetensors"),
                 "--steps", "2", "--quiet"])  # fmt: skip
    assert code == 0
    assert "not detected" in capsys.readouterr().out
    assert np.abs(read_video(out)[0].astype(int) - read_video(blank)[0].astype(int)).max() <= 2


@pytest.mark.parametrize(("args", "needle"), [
    (["--in", "typo.mp4", "--model-id", "./no-such-vae"], "video typo.mp4 does not exist"),
    (["--latents", "sampler.latent"], "--latents holds a VAE's latents (16 channels): give the VAE that made them "
                                      "with --model-id"),
    (["--in", str(HAND_VIDEO), "--latents", "sampler.latent", "--max-frames", "-1", "--model-id", "./no-such-vae"],
     "--max-frames must be >= 0"),
    (["--in", str(HAND_VIDEO), "--out", "."], "--out . names no file or folder"),
    (["--in", str(HAND_VIDEO), "--steps", "-1"], "'fixer.steps': must be >= 0, got -1"),
    (["--in", str(HAND_VIDEO), "--device", "gpu"], "--device 'gpu' is not a torch device: use cpu, cuda"),
    # a folder that cannot be written (here /proc, which even root cannot): said before the fix, not after it
    (["--in", str(HAND_VIDEO), "--out", "/proc/bgfs/fixed.mp4"], "cannot be written"),
    (["--in", str(HAND_VIDEO), "--strength", "-0.5"], "'fixer.strength': must be >= 0, got -0.5"),
    # a folder where a file is wanted is named as one, not as "does not exist"
    (["--in", str(HAND_VIDEO), "--critic", "."], "critic file '.' is a folder, not a file"),
    (["--latents", "."], "latents file . is a folder, not a file"),
    (["--in", str(HAND_VIDEO), "--config", "."], "config file '.' is a folder, not a file"),
    (["--in", str(HAND_VIDEO), "--model-id", "sampler.latent", "--gradient-vae", "."],
     "gradient VAE file . is a folder, not a file"),
    # a VAE subfolder with no diffusers folder to look in would be ignored
    (["--in", str(HAND_VIDEO), "--vae-subfolder", "transformer"], "--vae-subfolder transformer names the VAE's "
                                                          "folder inside a diffusers model folder, but no --model-id"),
    (["--in", str(HAND_VIDEO), "--vae-subfolder", "vae_2", "--model-id", "sampler.latent"],
     "but --model-id sampler.latent is a file"),
    # a file that is neither safetensors nor a torch checkpoint: not torch's advice to turn its safety off
    (["--in", str(HAND_VIDEO), "--model-id", "notes.txt"], "notes.txt as a weights file: it is neither a "
                                                           "safetensors file nor a PyTorch checkpoint"),
    # an existing file without a suffix: it would be written as a folder of PNG frames, and fail at the end
    (["--in", str(HAND_VIDEO), "--out", "notes"], "--out notes is a file, and a name without a suffix is written "
                                                  "as a folder of PNG frames: name the video with its suffix"),
])  # fmt: skip
def test_mistakes_in_the_paths_are_named_before_anything_loads(tmp_path, monkeypatch, capsys, args, needle):
    """A mistyped --in, latents without their VAE, a negative --max-frames, --steps or --strength, an --out with no
    name or in a folder that cannot be written, a --device that names no torch device: each is named at once (not after the VAE's load or MediaPipe's reading, nor as a traceback), and nothing
    is written."""
    from safetensors.torch import save_file

    monkeypatch.chdir(tmp_path)
    save_file({"latent_tensor": torch.zeros(1, 16, 3, 4, 4)}, str(tmp_path / "sampler.latent"))  # as Save Latent
    (tmp_path / "notes.txt").write_text("not weights")
    (tmp_path / "notes").write_text("a file without a suffix")
    out = [] if "--out" in args else ["--out", "fixed.mp4"]
    assert main(["fix", *out, "--steps", "1", *args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bgfs fix: error:") and needle in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "notes.txt", "sampler.latent"]
    assert (tmp_path / "notes").read_text() == "a file without a suffix"


def test_a_device_torch_cannot_use_is_refused_up_front(monkeypatch):
    """A CPU build asked for cuda (or a machine with one GPU asked for cuda:1) is told so before any work, not with
    torch's AssertionError at the fixer's first step."""
    from bgfs_core.devices import check_device

    check_device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BGFSError, match=r"--device cuda: this torch \(.*\) sees no cuda device .* use --device cpu"):
        check_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_device("cuda:0")
    with pytest.raises(BGFSError, match=r"--device cuda:1: torch sees 1 cuda device\(s\), numbered from 0"):
        check_device("cuda:1")


def test_an_odd_size_that_h264_cannot_keep_is_said(workdir, capsys):
    """yuv420p H.264 needs even sizes: an odd-sized input comes out one row/column larger, and the summary and
    report say so and what keeps the size; a folder of PNG frames keeps it and says nothing."""
    odd = write_video(workdir / "odd_frames", np.full((5, 63, 64, 3), 90, np.uint8), 10.0)
    out = workdir / "odd_fixed.mp4"
    assert main(["fix", "--in", str(odd), "--out", str(out), "--steps", "1", "--quiet"]) == 0
    says = "the 64x63 frames are written as 64x64, their last row repeated"
    assert f"Size: {says}" in capsys.readouterr().out
    assert read_video(out)[0].shape == (5, 64, 64, 3)
    assert says in json.loads((workdir / "odd_fixed_report" / "report.json").read_text())["size_note"]
    kept = workdir / "odd_fixed_frames"
    assert main(["fix", "--in", str(odd), "--out", str(kept), "--steps", "1", "--quiet"]) == 0
    assert "Size:" not in capsys.readouterr().out and read_video(kept)[0].shape == (5, 63, 64, 3)
    assert "size_note" not in json.loads((workdir / "odd_fixed_frames_report" / "report.json").read_text())


def _with_sound(path, frames: np.ndarray, fps: float, late: int = 0) -> None:
    """An mp4 of ``frames`` with an AAC tone as long as the frames, as a phone or an editor writes it. ``late``:
    the picture starts that many frames after the sound, which is silent until then."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=int(fps))
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        sound = out.add_stream("aac", rate=16000)
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = late + i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        t = np.arange(int(16000 * (late + len(frames)) / fps)) / 16000
        wave = np.where(t < late / fps, 0.0, 0.3 * np.sin(2 * np.pi * 440 * t))
        tone = av.AudioFrame.from_ndarray(wave.astype(np.float32)[None], format="flt", layout="mono")
        tone.sample_rate, tone.pts = 16000, 0
        for packet in [*sound.encode(tone), *sound.encode(None)]:
            out.mux(packet)


def test_the_sound_of_the_input_is_kept_and_cut_to_the_frames(workdir, hand_video_frames, capsys):
    import av

    src = workdir / "with_sound.mp4"
    _with_sound(src, hand_video_frames[:20], 10.0)
    out = workdir / "with_sound_fixed.mp4"
    code = main(["fix", "--in", str(src), "--out", str(out), "--max-frames", "9", "--steps", "1", "--no-guard",
                 "--quiet"])  # fmt: skip
    assert code == 0 and "Sound: the input's sound (1 stream(s)) is copied unchanged." in capsys.readouterr().out
    with av.open(str(out)) as c:
        (sound,) = c.streams.audio
        assert sound.codec_context.name == "aac" and sound.sample_rate == 16000
        seconds = float(sound.duration * sound.time_base)
    assert 0.8 <= seconds <= 1.0  # the 9 frames' 0.9 s, to an AAC frame (64 ms), not the input's 2 s
    report = json.loads((workdir / "with_sound_fixed_report" / "report.json").read_text())
    assert report["audio"].startswith("the input's sound")
    retimed = workdir / "with_sound_retimed.mp4"
    assert main(["fix", "--in", str(src), "--out", str(retimed), "--fps", "16", "--max-frames", "5", "--steps", "1",
                 "--quiet"]) == 0  # fmt: skip
    assert "left out: --fps 16 retimes its 10 fps frames" in capsys.readouterr().out
    with av.open(str(retimed)) as c:
        assert not c.streams.audio
    gif = workdir / "with_sound_fixed.gif"
    assert main(["fix", "--in", str(src), "--out", str(gif), "--max-frames", "5", "--steps", "1", "--quiet"]) == 0
    assert "Sound: the input's sound was left out: .gif holds none (use .mp4)." in capsys.readouterr().out


def test_the_sound_keeps_step_with_a_picture_that_starts_late(workdir, hand_video_frames, capsys):
    """A source whose first frame comes 1 s into its sound: the output's time 0 is that frame, so its sound starts
    1 s into the source's (the tone, not the silence before it)."""
    import av

    src = workdir / "late_picture.mp4"
    _with_sound(src, hand_video_frames[:20], 10.0, late=10)
    with av.open(str(src)) as c:
        assert float(c.streams.video[0].start_time * c.streams.video[0].time_base) == 1.0
    out = workdir / "late_picture_fixed.mp4"
    assert main(["fix", "--in", str(src), "--out", str(out), "--max-frames", "9", "--steps", "1", "--no-guard",
                 "--quiet"]) == 0  # fmt: skip
    with av.open(str(out)) as c:
        sound = c.streams.audio[0]
        seconds = float(sound.duration * sound.time_base)
        pcm = np.concatenate([f.to_ndarray()[0] for f in c.decode(sound)])
    assert 0.8 <= seconds <= 1.0
    assert np.sqrt(np.mean(pcm[:4800] ** 2)) > 0.1, "the first 0.3 s must be the tone heard with the first frame"


def test_fps_gives_a_folder_of_frames_its_frame_rate(workdir, hand_video_frames, capsys):
    """A folder of frames carries no timing (25 fps is assumed): --fps 16 makes a Wan 2.2 render play at 16."""
    frames_dir = write_video(workdir / "wan_frames", hand_video_frames[:9], 16.0)
    out = workdir / "wan_frames_fixed.mp4"
    assert main(["fix", "--in", str(frames_dir), "--out", str(out), "--fps", "16", "--steps", "1", "--quiet"]) == 0
    assert read_video(out)[1] == pytest.approx(16.0)
    assert json.loads((workdir / "wan_frames_fixed_report" / "report.json").read_text())["fps"] == 16.0
    # the report in the folder of frames it fixes: its plots would become frames of that video
    assert main(["fix", "--in", str(frames_dir), "--out", str(workdir / "x.mp4"), "--report-dir", str(frames_dir),
                 "--quiet"]) == 2  # fmt: skip
    assert f"--report-dir {frames_dir} is the input" in capsys.readouterr().err
    assert len(list(frames_dir.iterdir())) == 9
    for bad in ("0", "0.0001", "inf", "nan"):  # 0.0001 ended in a ZeroDivisionError traceback in the writer
        assert main(["fix", "--in", str(frames_dir), "--out", str(out), "--fps", bad, "--quiet"]) == 2
        assert "--fps must be between 0.01 and 1000 frames per second" in capsys.readouterr().err


def test_an_output_it_cannot_write_is_refused_before_any_work(workdir, capsys, monkeypatch):
    import bgfs_core.video_io as video_io

    def no_reading(*a, **k):
        raise AssertionError("the input was read before --out was checked")

    monkeypatch.setattr(video_io, "read_video", no_reading)
    out = workdir / "never_written.avi"
    assert main(["fix", "--in", str(HAND_VIDEO), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bgfs fix: error: --out") and ".mp4" in err and "folder for PNG frames" in err
    assert not out.exists() and not (workdir / "never_written_report").exists()
    a_file = workdir / "a_file"
    a_file.write_text("x")
    for extra in (["--out", str(a_file / "fixed.mp4")], ["--out", str(workdir / "f.mp4"), "--report-dir",
                                                           str(a_file / "report")]):  # fmt: skip
        assert main(["fix", "--in", str(HAND_VIDEO), *extra, "--quiet"]) == 2
        assert f"{a_file} is a file, where a folder would have to be" in capsys.readouterr().err


def test_a_disk_error_is_one_line_that_names_the_path(workdir, capsys, monkeypatch):
    import bgfs_core.commands.score as score

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device", str(workdir / "report.html"))

    monkeypatch.setattr(score, "config_from_args", full_disk)
    assert main(["score", "--in", str(HAND_VIDEO), "--out", str(workdir / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bgfs score: error: No space left on device (") and "report.html" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--critic", "face.safetensors", "--region", "hands"], "trained for 'face'"),
        (["--region", "bogus"], "unknown region 'bogus'"),  # with a critic too, not "train one for bogus"
        (["--critic", "missing.safetensors"], "missing.safetensors"),
        (["--codec", "wan"], "--codec wan needs --model-id"),
        (["--codec", "pixel", "--model-id", "./no-such-folder-here"], "takes no VAE, but --model-id"),
        (["--model-id", "./no-such-folder-here"], "does not exist"),
        (["--model-id", "./no-such-folder-here", "--grad-dtype", "fp16"], "--grad-dtype fp16 needs a CUDA device"),
        (["--grad-dtype", "bf16"], "the pixel codec has no decoder"),
    ],
)
def test_bad_input_gives_clear_errors_and_no_output(workdir, capsys, extra, needle):
    out = workdir / "never.mp4"
    args = ["fix", "--in", str(HAND_VIDEO), "--out", str(out), "--critic", str(workdir / "hands.safetensors"),
            "--steps", "1", "--quiet"]  # fmt: skip
    for flag, value in zip(extra[::2], extra[1::2]):
        value = str(workdir / value) if value.endswith(".safetensors") else value
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("bgfs fix: error:") and needle in err
    assert not out.exists()


def test_without_the_diffusers_extra_the_wan_paths_say_how_to_install_it(workdir, capsys, monkeypatch):
    """The nodes need no diffusers (ComfyUI's VAE); `bgfs fix --model-id` and `bgfs generate` do, and say so in one
    line that names what to install, after the checks that need no diffusers (a missing folder is named first)."""
    import sys

    from bgfs_core import generate as g

    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ModuleNotFoundError, as uninstalled
    (workdir / "wan" / "vae").mkdir(parents=True)
    (workdir / "wan" / "vae" / "config.json").write_text("{}")
    out = workdir / "never.mp4"
    args = ["fix", "--in", str(HAND_VIDEO), "--out", str(out), "--steps", "1", "--quiet", "--max-frames", "5"]
    assert main([*args, "--model-id", str(workdir / "wan")]) == 2
    err = capsys.readouterr().err
    assert "needs diffusers, an optional extra" in err and 'pip install "diffusers>=0.35"' in err, err
    assert "Traceback" not in err and not out.exists()
    assert main([*args, "--model-id", str(workdir / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(BGFSError, match="bgfs generate .* needs diffusers, an optional extra"):
        g.load_pipeline(workdir / "wan")


@pytest.mark.usefixtures("needs_diffusers")
def test_wan_codec_rejects_frame_counts_off_the_4k_plus_1_rule(workdir, capsys):
    from bgfs_core.codecs import DiffusersWanCodec, wan_vae_config

    DiffusersWanCodec.from_config(wan_vae_config("2.1", base_dim=8)).vae.save_pretrained(workdir / "tinywan" / "vae")
    out = workdir / "wan.mp4"
    code = main(["fix", "--in", str(HAND_VIDEO), "--out", str(out), "--critic", str(workdir / "hands.safetensors"),
                 "--model-id", str(workdir / "tinywan"), "--max-frames", "8", "--quiet"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "4k+1" in err and "9" in err
    assert not out.exists()


def test_grad_dtype_auto_is_bf16_where_the_gpu_computes_it_else_fp32(monkeypatch):
    """On a GPU whose bf16 is only emulated (Turing, Volta: `is_bf16_supported()` says yes) ``auto`` takes fp32, not
    slow bf16 nor fp16, which ComfyUI itself avoids for the VAE where it breaks (GTX 16xx, Pascal)."""
    import contextlib

    from bgfs_core.fix_video import grad_dtype_for

    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())  # no GPU here to select
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda including_emulation=True, native=native: native or including_emulation)  # fmt: skip
        assert grad_dtype_for("auto", "cuda:0") == expected
    assert grad_dtype_for("fp16", "cuda") == torch.float16 and grad_dtype_for("auto", "cpu") == torch.float32
    with pytest.raises(BGFSError, match="fp16 needs a CUDA device"):
        grad_dtype_for("fp16", "cpu")


@pytest.mark.parametrize("grad_dtype", ["fp32", "bf16"])
@pytest.mark.usefixtures("needs_diffusers")
def test_grad_dtype_picks_the_decoder_the_gradients_go_through(workdir, grad_dtype):
    """``--model-id`` end to end on 9 real frames; ``--grad-dtype bf16`` optimises through a bf16 copy of the VAE
    while the fp32 one encodes and decodes (the fix itself through such a copy: test_fixer.py). A random VAE
    decodes no hand, so the run ends in the clean pass-through."""
    import json

    from bgfs_core.codecs import DiffusersWanCodec, wan_vae_config

    folder = workdir / "tinywan_e2e"
    if not folder.exists():
        DiffusersWanCodec.from_config(wan_vae_config("2.1", base_dim=8)).vae.save_pretrained(folder / "vae")
    out = workdir / f"wan_{grad_dtype}.mp4"
    code = main(["fix", "--in", str(HAND_VIDEO), "--out", str(out), "--critic", str(workdir / "hands.safetensors"),
                 "--model-id", str(folder), "--max-frames", "9", "--steps", "2", "--grad-dtype", grad_dtype,
                 "--quiet"])  # fmt: skip
    assert code == 0
    report = json.loads((workdir / f"wan_{grad_dtype}_report" / "report.json").read_text())
    expected = {"fp32": "Wan 2.1 VAE (diffusers)",
                "bf16": "Wan 2.1 VAE (diffusers) (gradients through Wan 2.1 VAE (diffusers, bfloat16))"}  # fmt: skip
    assert report["codec"] == expected[grad_dtype]
    assert "not detected in any of the 9 frames" in report["fixer"]["summary"]
    assert len(read_video(out)[0]) == 9


@pytest.mark.usefixtures("needs_diffusers")
def test_a_fix_from_saved_latents_ignores_the_fixed_tag_of_the_in_file(workdir, capsys):
    """With --latents the fix starts from those latents (from `bgfs generate`, never fixed), not from --in's frames:
    a tag an earlier fix wrote into --in neither warns nor carries over to the output."""
    import torch

    from bgfs_core.codecs import DiffusersWanCodec, wan_vae_config
    from bgfs_core.fix_video import encode_frames
    from bgfs_core.generate import save_latents

    folder = workdir / "tinywan_latents"
    codec = DiffusersWanCodec.from_config(wan_vae_config("2.1", base_dim=8))
    codec.vae.save_pretrained(folder / "vae")
    frames = read_video(HAND_VIDEO, max_frames=5)[0]
    tagged = write_video(workdir / "tagged.mp4", frames, 10.0, comment="BGFS fixed regions: hands")
    with torch.no_grad():
        save_latents(workdir / "generated.safetensors", encode_frames(codec, frames), {"fps": 10.0})
    out = workdir / "from_latents.mp4"
    assert main(["fix", "--in", str(tagged), "--latents", str(workdir / "generated.safetensors"), "--out", str(out),
                 "--model-id", str(folder), "--steps", "1", "--no-guard", "--quiet"]) == 0  # fmt: skip
    assert "already fixed" not in capsys.readouterr().out
    report = json.loads((workdir / "from_latents_report" / "report.json").read_text())
    assert report["fixed_regions"] == [] and read_comment(out) is None  # a random VAE decodes no hand: no edit


def test_ctrl_c_leaves_no_output(workdir, monkeypatch, capsys):
    import bgfs_core.fixer as fixer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fixer, "fix_latents", interrupted)
    out = workdir / "interrupted.mp4"
    code = main(["fix", "--in", str(HAND_VIDEO), "--out", str(out), "--critic", str(workdir / "hands.safetensors"),
                 "--max-frames", "5", "--quiet"])  # fmt: skip
    assert code == 130 and not out.exists()
    assert "interrupted" in capsys.readouterr().err


def _stop_writing(monkeypatch, video: Path) -> None:
    """Ctrl-C as ``video`` is written (other writes go through)."""
    import bgfs_core.video_io as video_io

    real = video_io.write_video

    def stopped(path, *a, **kw):
        if Path(path) == video:
            raise KeyboardInterrupt
        return real(path, *a, **kw)

    monkeypatch.setattr(video_io, "write_video", stopped)


def test_a_run_stopped_while_writing_the_video_leaves_the_earlier_runs_video_and_report(workdir, monkeypatch):
    """The report is moved in after the video: stopped while the video was written, the folder still holds the
    earlier run's video beside that run's report (this run's report was written first, beside the old video)."""
    out = workdir / "twice.mp4"
    args = ["fix", "--in", str(HAND_VIDEO), "--out", str(out), "--max-frames", "5", "--steps", "1", "--quiet"]
    assert main(args) == 0
    report_dir = workdir / "twice_report"
    before = {p.name: p.read_bytes() for p in report_dir.iterdir()}
    video = out.read_bytes()
    _stop_writing(monkeypatch, out)
    assert main([*args, "--steps", "2"]) == 130
    assert out.read_bytes() == video and {p.name: p.read_bytes() for p in report_dir.iterdir()} == before
    assert not [p.name for p in workdir.iterdir() if p.name.endswith(".partial")], "no staged report left behind"


@pytest.mark.usefixtures("needs_diffusers")
@pytest.mark.parametrize("suffix", [".latent", ".safetensors"])
def test_a_run_stopped_while_writing_the_video_leaves_the_earlier_runs_latents(workdir, tmp_path, monkeypatch, suffix):
    """--save-latents are staged and moved in after the video, like the report: stopped while the video was
    written, the earlier run's latents stay beside its video (they were written first, beside the old video)."""
    out, saved = tmp_path / "fixed.mp4", tmp_path / f"fixed{suffix}"
    out.write_bytes(b"an earlier run's video")
    saved.write_bytes(b"an earlier run's latents")
    _stop_writing(monkeypatch, out)
    assert main(["fix", "--in", str(HAND_VIDEO), "--max-frames", "5", "--steps", "1", "--quiet", "--model-id",
                 str(tiny_wan_folder(workdir)), "--out", str(out), "--save-latents", str(saved)]) == 130  # fmt: skip
    assert out.read_bytes() == b"an earlier run's video" and saved.read_bytes() == b"an earlier run's latents"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, saved.name]), "nothing staged is left"


def test_guard_refuses_broken_geometry_judged_on_real_frames(hand_video_frames, tmp_path):
    frames = hand_video_frames[:16]
    det = detect_video(frames, "hands", fps=10.0)
    cfg = load_config()
    same = judge_fix(frames, frames.copy(), det, "hands", 10.0, cfg, tmp_path / "same")
    assert same["geometry_after"] == pytest.approx(same["geometry_before"]) and not geometry_worse(same)
    broken = corrupt(frames, det, "finger_jitter", seed=0)
    worse = judge_fix(frames, broken, det, "hands", 10.0, cfg, tmp_path / "broken")
    assert worse["geometry_after"] < worse["geometry_before"] and geometry_worse(worse), worse["summary"]
    assert "geometry" in worse["summary"] and "guard_kept_input" not in worse
    assert "guard kept the input" not in (tmp_path / "broken" / "report.html").read_text()
    # with the guard on, the report says first that the output is the input and these numbers the rejected edit's
    guarded = judge_fix(frames, broken, det, "hands", 10.0, cfg, tmp_path / "guarded", guard=True)
    assert guarded["guard_kept_input"] and "Guard:" in guarded["summary"]
    page = (tmp_path / "guarded" / "report.html").read_text()
    assert "The guard kept the input" in page and page.index("guard kept") < page.index("<h2>Parts</h2>")
    assert json.loads((tmp_path / "guarded" / "scores.json").read_text())["note"].startswith("The guard kept")
    kept = judge_fix(frames, frames.copy(), det, "hands", 10.0, cfg, tmp_path / "kept", guard=True)
    assert "guard_kept_input" not in kept and "note" not in json.loads((tmp_path / "kept" / "scores.json").read_text())
    # the guard reads the frames before encoding (the edit), the report the file: here the "file" is the broken copy
    edit = judge_fix(frames, broken, det, "hands", 10.0, cfg, tmp_path / "edit", guard=True, unencoded=frames.copy(),
                     written_to="out.mp4")  # fmt: skip
    assert "guard_kept_input" not in edit and edit["judged"] == "out.mp4 as written"
    assert edit["geometry_after"] == pytest.approx(worse["geometry_after"])
    assert edit["before_encoding"]["geometry_after"] == pytest.approx(same["geometry_after"])
    assert edit["before_encoding"]["fidelity"]["psnr_outside"] == "inf"  # JSON's infinity: nothing changed
    rejected = judge_fix(frames, frames.copy(), det, "hands", 10.0, cfg, tmp_path / "rejected", guard=True,
                         unencoded=broken, written_to="out.mp4")  # fmt: skip
    assert rejected["guard_kept_input"] and rejected["judged"] == "the rejected edit, as out.mp4 would have held it"
    assert geometry_worse({"geometry_before": 70.0, "geometry_after": None}), "losing the region is worse"
    assert not geometry_worse({"geometry_before": None, "geometry_after": None})

    # the Fixer node's guard has only ROI Detect's detections of its input: the same verdicts
    same = judge_detections(det, frames.copy(), fps=10.0)
    assert same["geometry_after"] == pytest.approx(same["geometry_before"]) and not geometry_worse(same)
    worse = judge_detections(det, broken, fps=10.0)
    assert worse["geometry_after"] < worse["geometry_before"] and geometry_worse(worse), worse["summary"]
    lost = judge_detections(det, np.zeros_like(frames), fps=10.0)
    assert lost["geometry_after"] is None and geometry_worse(lost) and "-> not found" in lost["summary"]
    with pytest.raises(BGFSError, match="decode to 15 frames but the ROI covers 16"):
        judge_detections(det, frames[:15])


def test_demo_trains_its_critic_on_every_clip_unless_asked_to_hold_some_out(tmp_path):
    from bgfs_core.cli import build_parser
    from bgfs_core.commands.demo import demo_config
    from bgfs_core.errors import BGFSError

    parser = build_parser()
    cfg = demo_config(parser.parse_args(["demo", "--out", str(tmp_path)]))
    assert cfg.critic.val_fraction == 0.0  # one video: a held-out clip is frames the critic never learns
    assert cfg.data.cache_dir == str(tmp_path / "cache")
    assert cfg.critic.epochs == 300  # the default config's, untouched
    cfg = demo_config(parser.parse_args(["demo", "--out", str(tmp_path), "--val-fraction", "0.2", "--epochs", "7"]))
    assert (cfg.critic.val_fraction, cfg.critic.epochs) == (0.2, 7)
    with pytest.raises(BGFSError, match="val_fraction"):
        demo_config(parser.parse_args(["demo", "--val-fraction", "1.5"]))


def test_demo_refuses_what_is_not_a_video_before_any_work(tmp_path, capsys, monkeypatch):
    (tmp_path / "notes").mkdir()
    for bad, says in ((tmp_path / "missing.mp4", "(it does not exist)"), (tmp_path / "notes", "a folder of frames")):
        assert main(["demo", "--out", str(tmp_path / "out"), "--video", str(bad), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"bgfs demo: error: --video {bad}: give a video file or a folder of frames") and says in err
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty.mp4").write_bytes(b"")  # named as itself, not as precompute's copy of it after the work
    assert main(["demo", "--out", str(tmp_path / "out"), "--video", str(tmp_path / "empty.mp4"), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith(f"bgfs demo: error: video {tmp_path / 'empty.mp4'} cannot be opened")
    assert not (tmp_path / "out").exists()
    # a corruption that does not exist: said at once, not after minutes of training
    assert main(["demo", "--out", str(tmp_path / "out"), "--corrupt", "finger_jitter,wobble", "--quiet"]) == 2
    assert "unknown corruption 'wobble'" in capsys.readouterr().err and not (tmp_path / "out").exists()
    # the corrupted copy an earlier demo left, fixed again in place: the demo would overwrite it as it reads it
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    shutil.copy(HAND_VIDEO, earlier / "corrupted.mp4")
    before = (earlier / "corrupted.mp4").read_bytes()
    assert main(["demo", "--out", str(earlier), "--video", str(earlier / "corrupted.mp4"), "--quiet"]) == 2
    assert "is a file this demo writes" in capsys.readouterr().err
    assert (earlier / "corrupted.mp4").read_bytes() == before and sorted(earlier.iterdir()) == [earlier / "corrupted.mp4"]
    # neither the checkout's clip nor a wheel's copy is there (an install that lost it): say how to get it
    import bgfs_core.commands.demo as demo

    monkeypatch.setattr(demo, "BUNDLED_VIDEO", tmp_path / "site" / "fingers-lq.gif")
    monkeypatch.setattr(demo, "WHEEL_VIDEO", tmp_path / "site" / "samples" / "fingers-lq.gif")
    assert main(["demo", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "the bundled hand video is missing (looked for " in capsys.readouterr().err


def _cuda_out_of_memory():
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _cpu_out_of_memory():
    torch.empty(2**60, dtype=torch.uint8)  # the CPU allocator's own failure: a plain RuntimeError


@pytest.mark.parametrize("fail,says", [(_cuda_out_of_memory, "CUDA out of memory"),
                                       (_cpu_out_of_memory, "DefaultCPUAllocator: can't allocate memory")])
def test_out_of_memory_is_a_clear_error_in_the_commands_terms(workdir, monkeypatch, capsys, fail, says):
    """The device running out of memory inside the fix (injected into the critic's convolutions: CUDA's error, or
    a real allocation the CPU allocator refuses) ends the command with an error that says how big the job was and
    which flags make it smaller."""
    import torch.nn.functional as F

    real = F.conv2d
    calls = {"n": 0}

    def conv2d(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 40:
            fail()
        return real(*args, **kwargs)

    out = workdir / "oom.mp4"
    args = ["fix", "--in", str(HAND_VIDEO), "--out", str(out), "--critic", str(workdir / "hands.safetensors"),
            "--max-frames", "5", "--steps", "3", "--quiet"]  # fmt: skip
    monkeypatch.setattr(F, "conv2d", conv2d)
    assert main(args) == 2 and calls["n"] > 40 and not out.exists()
    err = capsys.readouterr().err
    assert err.startswith("bgfs fix: error: out of memory on cpu decoding through pixel codec with gradients (a "
                          "window of "), err
    assert says in err and "--max-frames" in err and "(--set roi.margin=0.15)" in err  # 60% of the 0.25 it had
    calls["n"] = 0  # a margin already small: no advice to raise it, nor to lower it further
    assert main([*args, "--set", "roi.margin=0.05"]) == 2 and calls["n"] > 40
    assert "roi.margin" not in capsys.readouterr().err


def test_other_runtime_errors_in_the_fix_are_not_called_out_of_memory(workdir, monkeypatch):
    import torch.nn.functional as F

    def conv2d(*args, **kwargs):
        raise RuntimeError("Given groups=1, weight of size [8, 3, 3, 3], expected input to have 3 channels")

    monkeypatch.setattr(F, "conv2d", conv2d)
    with pytest.raises(RuntimeError, match="expected input"):
        main(["fix", "--in", str(HAND_VIDEO), "--out", str(workdir / "x.mp4"), "--critic",
              str(workdir / "hands.safetensors"), "--max-frames", "5", "--steps", "1", "--quiet"])  # fmt: skip


_SAVE_LATENT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import comfy.cli_args
comfy.cli_args.args.cpu = True  # before comfy.model_management is imported
import folder_paths
folder_paths.set_output_directory(sys.argv[2])
import torch, nodes
samples = torch.load(sys.argv[3])
nodes.SaveLatent().save({"samples": samples}, filename_prefix="latents/wan_sampler")  # the node's default folder
"""

_LOAD_LATENT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import comfy.cli_args
comfy.cli_args.args.cpu = True
import folder_paths
folder_paths.set_input_directory(sys.argv[2])
import torch, nodes
(latent,) = nodes.LoadLatent().load(sys.argv[3])
torch.save(latent["samples"], sys.argv[4])
"""


@pytest.mark.usefixtures("needs_diffusers")
def test_a_comfyui_save_latent_file_is_a_starting_point(workdir, tmp_path, capsys):
    """`bgfs fix --latents` takes the .latent that ComfyUI's own Save Latent node writes (run here in ComfyUI's
    environment): the same latents, and a fix from them alone (no video), whose --save-latents .latent ComfyUI's
    Load Latent reads back; image latents are refused."""
    import subprocess

    from comfy_host import require_comfy
    from safetensors.torch import save_file

    from bgfs_core.codecs import DiffusersWanCodec, wan_vae_config
    from bgfs_core.fix_video import encode_frames
    from bgfs_core.generate import load_latents

    comfy, python = require_comfy()
    folder = workdir / "tinywan_comfy_latent"
    codec = DiffusersWanCodec.from_config(wan_vae_config("2.1", base_dim=8))
    codec.vae.save_pretrained(folder / "vae")
    with torch.no_grad():
        samples = encode_frames(codec, read_video(HAND_VIDEO, max_frames=5)[0])
    torch.save(samples, tmp_path / "samples.pt")
    proc = subprocess.run([python, "-c", _SAVE_LATENT, str(comfy), str(tmp_path / "out"), str(tmp_path / "samples.pt")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (saved,) = (tmp_path / "out" / "latents").glob("wan_sampler_*.latent")
    latents, meta = load_latents(saved)
    assert torch.equal(latents, samples) and meta == {}
    out = tmp_path / "from_comfy.mp4"
    back = tmp_path / "back" / "fixed.latent"
    assert main(["fix", "--latents", str(saved), "--out", str(out), "--model-id", str(folder), "--steps", "1",
                 "--no-guard", "--save-latents", str(back), "--quiet"]) == 0  # fmt: skip
    assert f"{saved.name} carries no frame rate: written at 16 fps" in capsys.readouterr().out  # no video needed
    frames, fps = read_video(out)
    assert len(frames) == 5 and fps == 16.0
    proc = subprocess.run([python, "-c", _LOAD_LATENT, str(comfy), str(back.parent), back.name,
                           str(tmp_path / "loaded.pt")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    # a random VAE decodes no hand, so the output is the input: its latents come back as they went in
    assert torch.equal(torch.load(tmp_path / "loaded.pt"), samples)
    save_file({"latent_tensor": torch.zeros(1, 4, 8, 8), "latent_format_version_0": torch.tensor([])},
              str(tmp_path / "image.latent"))  # fmt: skip
    assert main(["fix", "--in", str(HAND_VIDEO), "--latents", str(tmp_path / "image.latent"), "--out",
                 str(tmp_path / "no.mp4"), "--model-id", str(folder), "--quiet"]) == 2  # fmt: skip
    assert "holds image latents [1, 4, 8, 8], not a video's" in capsys.readouterr().err


@pytest.mark.usefixtures("needs_diffusers")
def test_save_latents_writes_the_outputs_latents_and_refuses_what_it_cannot(workdir, tmp_path, capsys):
    """--save-latents .safetensors: the output's latents with its frame rate and fixed regions, read back by
    --latents; a pixel-codec fix, another suffix and a folder of videos are refused before any work."""
    from bgfs_core.generate import load_latents

    folder = tiny_wan_folder(workdir)
    args = ["fix", "--in", str(HAND_VIDEO), "--max-frames", "5", "--steps", "1", "--quiet"]
    saved = tmp_path / "out.safetensors"
    assert main([*args, "--out", str(tmp_path / "a.mp4"), "--model-id", str(folder), "--save-latents", str(saved)]) == 0
    latents, meta = load_latents(saved)
    assert latents.shape == (1, 16, 2, 30, 40) and meta["fps"] == 10.0 and meta["fixed_regions"] == []
    report = json.loads((tmp_path / "a_report" / "report.json").read_text())
    assert report["latents"] == str(saved)
    (tmp_path / "dir.latent").mkdir()
    wan = ["--model-id", str(folder)]
    for extra, says in ((["--save-latents", str(tmp_path / "p.latent")], "--save-latents writes a Wan VAE's latents"),
                        ([*wan, "--save-latents", str(tmp_path / "x.pt")], "use .latent"),
                        ([*wan, "--save-latents", str(tmp_path / "x.LATENT")], "in lowercase"),
                        ([*wan, "--save-latents", str(tmp_path / "dir.latent")], "is a folder: name a file in it"),
                        ([*wan, "--latents", str(saved), "--save-latents", str(saved)], "inputs are never overwritten")):
        assert main([*args, "--out", str(tmp_path / "b.mp4"), *extra]) == 2
        assert says in capsys.readouterr().err and not (tmp_path / "b.mp4").exists()
    assert load_latents(saved)[0].shape == (1, 16, 2, 30, 40), "the --latents file is untouched"
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "one.gif").write_bytes(HAND_VIDEO.read_bytes())
    assert main(["fix", "--in", str(videos), "--out", str(tmp_path / "fixed"), "--save-latents", str(saved)]) == 2
    assert "--save-latents and --report-dir name one video's files" in capsys.readouterr().err
    assert main(["fix", "--in", str(videos), "--out", str(tmp_path / "fixed"), "--latents", str(saved)]) == 2
    assert "but --latents are one video's: give --in the video they were made from" in capsys.readouterr().err


@pytest.mark.usefixtures("needs_diffusers")
@pytest.mark.parametrize("suffix", [".latent", ".safetensors"])
def test_save_latents_holds_the_kept_fix_and_a_second_fix_of_them_warns(workdir, tmp_path, monkeypatch, capsys,
                                                                         suffix):
    """The saved latents are the fix's when it is kept (and they carry its region, so fixing them again warns), the
    input's when the guard turns the edit away; starting from them, --max-frames keeps the latent frames that
    decode to at most that many frames and --fps wins over the file's rate."""
    import bgfs_core.fix_video as fix_video_module
    import bgfs_core.fixer as fixer
    from bgfs_core.generate import load_latents

    folder = tiny_wan_folder(workdir)
    real_fix = fixer.fix_latents

    def an_edit(latents, *args, **kwargs):  # a random VAE shows no hand: stand in for a fix that changed something
        result = real_fix(latents, *args, **kwargs)
        result.latents = latents + 0.25
        result.report["changed"] = True
        return result

    monkeypatch.setattr(fixer, "fix_latents", an_edit)
    args = ["fix", "--in", str(HAND_VIDEO), "--max-frames", "9", "--steps", "1", "--model-id", str(folder), "--quiet"]
    kept, turned_away = tmp_path / f"kept{suffix}", tmp_path / f"away{suffix}"
    assert main([*args, "--out", str(tmp_path / "kept.mp4"), "--no-guard", "--save-latents", str(kept)]) == 0
    monkeypatch.setattr(fix_video_module, "geometry_worse", lambda judge: True)
    assert main([*args, "--out", str(tmp_path / "away.mp4"), "--save-latents", str(turned_away)]) == 0
    (a, meta_a), (b, meta_b) = load_latents(kept), load_latents(turned_away)
    assert a.shape == (1, 16, 3, 30, 40) and torch.allclose(a - 0.25, b, atol=1e-6)
    assert (meta_a["fps"], meta_a["fixed_regions"], meta_b["fixed_regions"]) == (10.0, ["hands"], [])
    capsys.readouterr()
    again = tmp_path / "again.mp4"
    assert main(["fix", "--in", str(HAND_VIDEO), "--latents", str(kept), "--max-frames", "5", "--fps", "16",
                 "--model-id", str(folder), "--steps", "1", "--no-guard", "--quiet", "--out", str(again)]) == 0  # fmt: skip
    assert f"Warning: {kept.name} was already fixed for hands" in capsys.readouterr().out
    frames, fps = read_video(again)
    assert len(frames) == 5 and fps == 16.0


@pytest.mark.usefixtures("needs_diffusers")
def test_a_latent_file_alone_is_fixed_without_a_video(workdir, tmp_path, hand_video_frames, capsys):
    """`bgfs fix --latents sampler.latent` needs no --in: a Save Latent file (no frame rate) is written at the rate
    of its VAE's Wan models and says so, and that rate is not saved with its latents as if it were the video's; --fps
    wins; an --in video beside the latents lends its rate and sound (a folder of frames, which has neither, lends
    nothing), and a rate of the latents' own that differs leaves the sound out; neither --in nor --latents, or a
    latents file that is not there, is a clear error."""
    import av
    from PIL import Image

    from bgfs_core.codecs import DiffusersWanCodec
    from bgfs_core.fix_video import encode_frames
    from bgfs_core.generate import default_fps_of_latents, load_latents, save_comfy_latent

    folder = tiny_wan_folder(workdir)
    codec = DiffusersWanCodec.from_pretrained(str(folder), subfolder="vae")
    with torch.no_grad():
        latents = encode_frames(codec, read_video(HAND_VIDEO, max_frames=5)[0])
    sampler = save_comfy_latent(tmp_path / "sampler.latent", latents)  # as Save Latent writes it: no bgfs.* rate
    args = ["fix", "--latents", str(sampler), "--model-id", str(folder), "--steps", "1", "--no-guard", "--quiet"]
    out = tmp_path / "alone.mp4"
    assert main([*args, "--out", str(out), "--save-latents", str(tmp_path / "alone.latent")]) == 0
    said = capsys.readouterr().out
    assert "Frame rate: sampler.latent carries no frame rate: written at 16 fps" in said and "Sound:" not in said
    frames, fps = read_video(out)
    assert len(frames) == 5 and fps == 16.0
    report = json.loads((tmp_path / "alone_report" / "report.json").read_text())
    assert (report["input"], report["fps"], report["audio"]) == (str(sampler), 16.0, None)
    assert "fps" not in load_latents(tmp_path / "alone.latent")[1] and default_fps_of_latents(48) == 24.0
    assert main([*args, "--out", str(tmp_path / "twelve.mp4"), "--fps", "12"]) == 0
    assert "Frame rate:" not in capsys.readouterr().out and read_video(tmp_path / "twelve.mp4")[1] == 12.0
    src = tmp_path / "with_sound.mp4"
    _with_sound(src, hand_video_frames[:5], 10.0)
    args[2] = str(tmp_path / "alone.latent")  # the first fix's saved latents: still no rate of their own
    assert main([*args, "--in", str(src), "--out", str(tmp_path / "lent.mp4")]) == 0
    assert "Sound: the input's sound (1 stream(s)) is copied unchanged." in capsys.readouterr().out
    assert read_video(tmp_path / "lent.mp4")[1] == 10.0
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, frame in enumerate(hand_video_frames[:5]):
        Image.fromarray(frame).save(frames_dir / f"{i:03d}.png")
    assert main([*args, "--in", str(frames_dir), "--out", str(tmp_path / "from_frames.mp4")]) == 0
    assert "written at 16 fps" in capsys.readouterr().out and read_video(tmp_path / "from_frames.mp4")[1] == 16.0
    rated = save_comfy_latent(tmp_path / "rated.latent", latents, {"fps": 24.0})
    args[2] = str(rated)
    assert main([*args, "--in", str(src), "--out", str(tmp_path / "rated.mp4")]) == 0
    assert "left out: rated.latent's 24 fps retimes its 10 fps frames" in capsys.readouterr().out
    with av.open(str(tmp_path / "rated.mp4")) as c:
        assert not c.streams.audio and float(c.streams.video[0].average_rate) == 24.0
    assert main(["fix", "--out", str(tmp_path / "none.mp4"), "--quiet"]) == 2
    assert "give the video to fix with --in, or its latents with --latents" in capsys.readouterr().err
    assert main(["fix", "--latents", str(tmp_path / "gone.latent"), "--out", str(tmp_path / "none.mp4"), "--quiet",
                 "--model-id", str(tmp_path / "no_vae_loads_first.safetensors")]) == 2  # fmt: skip
    assert f"latents file {tmp_path / 'gone.latent'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "none.mp4").exists()
