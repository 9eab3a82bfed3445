"""``bgfs score`` end to end on real media: the report files, before/after with --ref, and its errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import FACE_PHOTO, HAND_VIDEO, load_rgb

from bgfs_core.cli import main
from bgfs_core.errors import BGFSError

FRAMES = 16


def _strict(path) -> dict:
    def bad(name: str):
        raise AssertionError(f"{name} in {path}")

    return json.loads(path.read_text(), parse_constant=bad)


@pytest.fixture(scope="module")
def hand_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("score") / "report"
    rc = main(["score", "--in", str(HAND_VIDEO), "--region", "hands", "--out", str(out), "--max-frames", str(FRAMES),
               "--quiet"])  # fmt: skip
    return rc, out


def test_score_writes_json_csv_plots_and_html(hand_report, capsys):
    rc, out = hand_report
    assert rc == 0
    scores = _strict(out / "scores.json")
    assert scores["found"] is True and 0 < scores["score"] <= 100
    assert scores["num_frames"] == FRAMES and set(scores["anatomy"]["parts"]) >= {"detection", "jitter", "bone_cv"}
    rows = list(csv.DictReader((out / "per_frame.csv").open()))
    assert len(rows) == FRAMES and {"frame", "score", "jitter", "bone_dev", "swap"} <= set(rows[0])
    assert float(rows[5]["score"]) == pytest.approx(scores["anatomy"]["per_frame"]["score"][5], rel=1e-5)
    for name in ("trajectories", "bone_lengths", "per_frame_score"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "data:image/jpeg;base64," in page  # plots + frame strip
    assert "src=\"http" not in page and f"{scores['score']:.1f} / 100" in page  # self-contained


def test_an_odd_sized_source_scores_against_its_padded_mp4(tmp_path, capsys, hand_video_frames):
    """H.264 needs even sizes, so a 319x239 source comes back 320x240: --ref compares them on the shared size."""
    from bgfs_core.video_io import read_video, write_video

    odd = hand_video_frames[:6, :239, :319].copy()
    ref = write_video(tmp_path / "odd_frames", odd, 10.0)
    out_mp4 = write_video(tmp_path / "odd.mp4", odd, 10.0)
    assert read_video(out_mp4)[0].shape[1:3] == (240, 320)
    assert main(["score", "--in", str(out_mp4), "--ref", str(ref), "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    assert "comparing the videos at 319x239" in capsys.readouterr().err
    far = write_video(tmp_path / "far.mp4", hand_video_frames[:6, :200, :300].copy(), 10.0)
    assert main(["score", "--in", str(far), "--ref", str(ref), "--out", str(tmp_path / "rep2"), "--quiet"]) == 2
    assert "does not match the video" in capsys.readouterr().err


def test_score_against_a_reference_reports_before_after_and_fidelity(tmp_path, capsys):
    out = tmp_path / "rep"
    rc = main(["score", "--in", str(HAND_VIDEO), "--ref", str(HAND_VIDEO), "--region", "hands", "--out", str(out),
               "--max-frames", "12", "--quiet"])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Reference:" in printed and "change +0.0" in printed and "inf dB" in printed
    scores = _strict(out / "scores.json")
    assert scores["delta"] == 0.0 and scores["reference"]["score"] == scores["score"]
    geometry = scores["anatomy"]["geometry_score"]
    assert geometry == scores["reference"]["geometry_score"] and f"geometry {geometry:.1f} -> {geometry:.1f}" in printed
    assert scores["fidelity"]["psnr_inside"] == "inf" and scores["fidelity"]["ssim_outside"] == 1.0
    assert "ref_score" in (out / "per_frame.csv").read_text().splitlines()[0]
    page = (out / "report.html").read_text()
    assert "reference (before)" in page and "Fidelity against the reference" in page


def test_reference_of_another_length_is_a_clear_error(tmp_path, capsys):
    from bgfs_core.video_io import read_video, write_video

    frames, fps = read_video(HAND_VIDEO, max_frames=8)
    short = write_video(tmp_path / "short.gif", frames[:5], fps)
    rc = main(["score", "--in", str(HAND_VIDEO), "--ref", str(short), "--region", "hands", "--out",
               str(tmp_path / "r"), "--max-frames", "8", "--quiet"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "bgfs score: error:" in err and "same number of frames" in err
    assert not (tmp_path / "r" / "scores.json").exists()


def test_a_report_folder_that_is_the_input_frames_is_refused(tmp_path, capsys):
    """--out equal to a folder of frames (--in or --ref): the report's PNG plots would become frames of it."""
    from bgfs_core.video_io import read_video, write_video

    frames, fps = read_video(HAND_VIDEO, max_frames=3)
    folder = write_video(tmp_path / "frames", frames, fps)
    for args in (["--in", str(folder)], ["--in", str(HAND_VIDEO), "--ref", str(folder)]):
        assert main(["score", *args, "--region", "hands", "--out", str(folder), "--quiet"]) == 2
        assert "bgfs score: error: --out " in capsys.readouterr().err
        assert sorted(p.name for p in folder.iterdir()) == [f"frame_{i:06d}.png" for i in range(3)]


@pytest.mark.parametrize("gate", ["nan", "inf", "101", "-5"])
def test_a_gate_no_score_can_meet_is_refused(tmp_path, capsys, gate):
    """--fail-below nan never failed and 101 always did: a score runs from 0 to 100."""
    rc = main(["score", "--in", str(HAND_VIDEO), "--out", str(tmp_path / "r"), "--fail-below", gate, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("bgfs score: error: --fail-below is a score from 0 to 100"), err
    assert not (tmp_path / "r").exists()


def test_region_not_found_is_reported_and_fails_the_gate(tmp_path, capsys):
    from bgfs_core.video_io import write_video

    clip = write_video(tmp_path / "portrait.gif", np.repeat(load_rgb(FACE_PHOTO)[None], 4, 0), 8.0)
    out = tmp_path / "r"
    rc = main(["score", "--in", str(clip), "--region", "hands", "--out", str(out), "--fail-below", "50", "--quiet"])
    assert rc == 1
    captured = capsys.readouterr()
    assert "not found" in captured.out and "region not found" in captured.err
    scores = _strict(out / "scores.json")
    assert scores["score"] is None and scores["found"] is False
    assert "not found" in (out / "report.html").read_text()


def test_write_report_checks_its_inputs(tmp_path, hand_video_frames):
    from bgfs_core.metrics import score_video
    from bgfs_core.report import png_to_rgb, render_plots, write_report

    frames = hand_video_frames[:6]
    res = score_video(frames, "hands", fps=10.0)
    with pytest.raises(BGFSError, match="no reference"):
        write_report(tmp_path, res, frames, ref_frames=frames)
    with pytest.raises(BGFSError, match="scored frames"):
        write_report(tmp_path, res, frames[:3])
    plots = render_plots(res)  # what a node shows
    assert set(plots) == {"trajectories", "bone_lengths", "per_frame_score"}
    img = png_to_rgb(plots["per_frame_score"])
    assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 0


def test_quiet_keeps_mediapipe_native_log_lines_off_stderr(tmp_path):
    """MediaPipe's C++ side writes its notices straight to descriptor 2 ("W0000 ... inference_feedback_manager.cc",
    "INFO: Created TensorFlow Lite XNNPACK delegate"): --quiet drops them and only them; without it they pass, and
    an error under --quiet still arrives."""
    import subprocess
    import sys

    def score(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bgfs_core", "score", "--in", str(HAND_VIDEO), "--max-frames",
                               "3", "--out", str(tmp_path / "r"), *extra], capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    loud = score()
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "inference_feedback_manager.cc" in loud.stderr, "MediaPipe no longer logs: this test checks nothing"
    quiet = score("--quiet")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    wrong = score("--quiet", "--region", "tail")
    assert wrong.returncode == 2 and wrong.stderr.startswith("bgfs score: error:"), wrong.stderr


def test_the_native_log_filter_drops_only_mediapipes_notices():
    """Through descriptor 2 and Python's stderr alike: absl's I/W lines and TensorFlow Lite's notice go, an absl
    error line and everything else stay, in order; after the block nothing is filtered. A native abort inside the
    block loses nothing: its last line still arrives."""
    import subprocess
    import sys

    script = """if True:
        import os, sys
        from bgfs_core.native_logs import native_info_filtered
        with native_info_filtered():
            os.write(2, b"W0000 00:00:1796492498.377485    7785 inference_feedback_manager.cc:114] Feedback\\n")
            print("first", file=sys.stderr)
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
            os.write(2, b"E0000 00:00:1796492498.377485    7785 calculator_graph.cc:887] failed\\n")
            os.write(2, b"I1205 17:01:02.000001 12 gl_context.cc:369] GL version\\nsecond\\n")
        os.write(2, b"W0000 00:00:1.5 1 after.cc:1] kept\\n")
    """
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "first", "E0000 00:00:1796492498.377485    7785 calculator_graph.cc:887] failed", "second",
        "W0000 00:00:1.5 1 after.cc:1] kept",
    ]  # fmt: skip
    crash = """if True:
        import os
        from bgfs_core.native_logs import native_info_filtered
        with native_info_filtered():
            os.write(2, b"W0000 00:00:1.5 1 feedback.cc:1] noise\\nF0000 00:00:1.5 1 graph.cc:9] Check failed\\n")
            os.abort()
    """
    died = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, timeout=120)
    assert died.returncode != 0 and died.stderr.splitlines() == ["F0000 00:00:1.5 1 graph.cc:9] Check failed"], died
