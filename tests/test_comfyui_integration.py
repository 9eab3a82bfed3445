"""The pack inside a real ComfyUI server (``COMFYUI_DIR``): start-up, /object_info, example workflows, a CPU run
of the whole graph with a tiny random-weight Wan 2.1 VAE on real hand frames, a cancel, and critic training.

One server for the module (loopback, free port, a temporary --base-directory with the pack linked in). Skips,
loudly, without ``COMFYUI_DIR``.
"""

from __future__ import annotations

import json
import re
import shutil
import time

import numpy as np
import pytest
from comfy_host import (
    PACK,
    REPO,
    SAMPLE_VIDEO,
    TINY_VAE,
    VIRTUAL_NODES,
    ComfyServer,
    EventListener,
    build_tiny_critic,
    build_tiny_wan_vae,
    history_messages,
    make_base_dir,
    require_comfy,
    workflow_to_api,
    write_sample_video,
)
from conftest import BODY_VIDEO, film_face_frames, fix_reach, lively

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

EXAMPLES = REPO / "example_workflows"
CRITIC = "hands_critic.safetensors"  # the name the example workflows load
FIXER = "BGFSLatentAnatomyFixer"
TINY_TAE = "lighttaew2_1.safetensors"  # the name VAELoader lists from models/vae_approx (random weights here)
IMAGE_FIXER = "BGFSImageAnatomyFixer"

# node id -> (required inputs, optional inputs, outputs, output node): names and types that must stay stable
EXPECTED = {
    "BGFSROIDetect": ({"images": "IMAGE", "region": "COMBO", "margin": "FLOAT", "min_conf": "FLOAT", "smooth": "FLOAT",
                       "backend": "COMBO", "fps": "FLOAT"}, {},
                      [("roi", "BGFS_ROI"), ("mask", "MASK"), ("overlay", "IMAGE")], False),
    "BGFSCriticLoader": ({"critic_name": "COMBO"}, {}, [("critic", "BGFS_CRITIC")], False),
    FIXER: ({"latent": "LATENT", "vae": "VAE", "roi": "BGFS_ROI", "steps": "INT",
             "lr": "FLOAT", "strength": "FLOAT", "mode": "COMBO"},
            {"critic": "BGFS_CRITIC", "guide": "FLOAT", "gradient_vae": "VAE", "guard": "BOOLEAN", "decode": "BOOLEAN",
             "keep_first_frame": "BOOLEAN"},
            [("latent", "LATENT"), ("report", "STRING"), ("images", "IMAGE")], False),
    "BGFSCacheBuilder": ({"images": "IMAGE", "region": "COMBO", "cache_name": "STRING", "fps": "FLOAT",
                          "clip_len": "INT", "clips_per_video": "INT", "frame_stride": "INT", "crop_size": "INT",
                          "clip_seed": "INT"}, {"backend": "COMBO"}, [("cache_path", "STRING")], True),
    "BGFSCriticTrainer": ({"cache": "STRING", "critic_name": "STRING", "epochs": "INT", "lr": "FLOAT",
                           "batch_size": "INT", "val_fraction": "FLOAT", "resume": "BOOLEAN"}, {"articulate": "FLOAT"},
                          [("critic", "BGFS_CRITIC")], True),
    "BGFSAnatomyScore": ({"images": "IMAGE", "region": "COMBO", "threshold": "FLOAT", "fps": "FLOAT", "backend": "COMBO"},
                         {"reference": "IMAGE"}, [("score", "FLOAT"), ("summary", "STRING"), ("needs_fixing", "BOOLEAN")],
                         False),
    IMAGE_FIXER: ({"images": "IMAGE", "roi": "BGFS_ROI", "steps": "INT", "lr": "FLOAT", "strength": "FLOAT",
                   "mode": "COMBO"}, {"critic": "BGFS_CRITIC", "guide": "FLOAT", "guard": "BOOLEAN",
                                      "keep_first_frame": "BOOLEAN"},
                  [("images", "IMAGE"), ("report", "STRING")], False),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory, hand_video_frames):
    comfy, python = require_comfy()
    base = make_base_dir(tmp_path_factory.mktemp("comfy_base"))
    build_tiny_wan_vae(python, comfy, base / "models" / "vae" / TINY_VAE)
    build_tiny_critic(base / "models" / "bgfs_critics" / CRITIC)
    build_tiny_taehv(base / "models" / "vae_approx" / TINY_TAE)
    write_sample_video(base / "input" / SAMPLE_VIDEO, hand_video_frames, fps=10.0)
    shutil.copy(REPO / "tests" / "comfy_fault_node.py", base / "custom_nodes" / "bgfs_test_faults.py")
    srv = ComfyServer(comfy, python, base).start()
    srv.object_info = srv.get("/object_info")
    yield srv
    srv.stop()


def _example(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def _by_title(prompt: dict, title: str) -> str:
    return next(k for k, v in prompt.items() if v["_meta"]["title"] == title)


def _by_type(prompt: dict, class_type: str) -> str:
    ids = [k for k, v in prompt.items() if v["class_type"] == class_type]
    assert len(ids) == 1, f"expected one {class_type}, got {ids}"
    return ids[0]


# --- start-up, /object_info ---------------------------------------------------------------------------------------


def test_server_loads_the_pack_without_import_failure(server):
    log = server.log()
    assert "IMPORT FAILED" not in log, log[-3000:]
    assert f"Cannot import {server.base / 'custom_nodes' / PACK}" not in log
    assert re.search(rf"\d+\.\d+ seconds: \S*custom_nodes/{PACK}\s*$", log, re.M), "the pack is listed as loaded"
    assert not [line for line in log.splitlines() if "Traceback" in line], log[-3000:]
    assert set(EXPECTED) <= set(server.object_info)
    print(f"\nComfyUI ready in {server.startup_seconds:.1f} s with {len(server.object_info)} node types")


def test_object_info_lists_every_node_with_its_inputs_and_outputs(server):
    for node_id, (required, optional, outputs, output_node) in EXPECTED.items():
        info = server.object_info[node_id]
        assert info["category"] == "BGFS" and info["display_name"].startswith("BGFS ")
        assert info["python_module"] == f"custom_nodes.{PACK}"
        got_req = {k: v[0] if isinstance(v[0], str) else "COMBO" for k, v in info["input"]["required"].items()}
        got_opt = {k: v[0] for k, v in info["input"].get("optional", {}).items()}
        assert got_req == required, node_id
        assert got_opt == optional, node_id
        assert list(zip(info["output_name"], info["output"])) == outputs, node_id
        assert info["output_node"] is output_node, node_id
        for name, spec in {**info["input"]["required"], **info["input"].get("optional", {})}.items():
            assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    # the model folder is registered: the critic put into models/bgfs_critics is offered
    assert CRITIC in server.object_info["BGFSCriticLoader"]["input"]["required"]["critic_name"][1]["options"]
    assert server.object_info["BGFSROIDetect"]["input"]["required"]["region"][1]["options"] == [
        "hands", "face", "feet", "upper_body", "full_body"]


def test_every_float_input_keeps_the_values_its_range_allows(server):
    """The frontend rounds a FLOAT widget's value to the decimals of its ``step`` (frontend 1.35's useFloatWidget:
    ``precision = -floor(log10(step))``, then ``toFixed(precision)``, then clamps to ``min``): a step coarser than
    ``min`` turned a typed lr of 0.00003 into 0.000001 on the Critic Trainer, and 0.0004 into 0.0001 on the Fixers.
    So every value written to the decimals of min, default and three times min must survive that rounding."""
    import math

    for node_id in EXPECTED:
        info = server.object_info[node_id]["input"]
        for name, (kind, opts) in {**info["required"], **info.get("optional", {})}.items():
            if kind != "FLOAT":
                continue
            precision = max(0, -math.floor(math.log10(opts["step"])))
            for value in (opts["min"], opts["default"], 3 * opts["min"]):
                kept = max(opts["min"], float(f"{round(value / 10**-precision) * 10**-precision:.{precision}f}"))
                assert kept == pytest.approx(value, rel=1e-9, abs=1e-12), (
                    f"{node_id}.{name}: {value:g} becomes {kept:g} in the frontend (step {opts['step']:g})")


def test_every_node_has_a_help_page_that_names_each_input_and_output(server):
    """web/docs/<node id>.md is the frontend's node help (it fetches /extensions/<pack>/docs/<node id>.md): one
    per BGFS node, served by the server, naming every input and output the node has now, and none it lacks."""
    docs = REPO / "web" / "docs"
    nodes = {k: v for k, v in server.object_info.items() if v["python_module"] == f"custom_nodes.{PACK}"}
    assert set(nodes) == set(EXPECTED) and sorted(p.stem for p in docs.glob("*.md")) == sorted(nodes)
    for node_id, info in nodes.items():
        status, body = server.request(f"/extensions/{PACK}/docs/{node_id}.md")
        text = body.decode()
        assert status == 200 and text == (docs / f"{node_id}.md").read_text(), node_id
        assert text.startswith(f"# {info['display_name']}\n"), node_id
        sections = {}
        for part in re.split(r"^## ", text, flags=re.M)[1:]:
            title, _, rest = part.partition("\n")
            sections[title.strip()] = set(re.findall(r"^- \*\*(\w+)\*\*", rest, re.M))
        inputs = [*info["input"]["required"], *info["input"].get("optional", {})]
        assert sections.get("Inputs") == set(inputs), f"{node_id}: documented inputs {sections.get('Inputs')}"
        assert sections.get("Outputs") == set(info["output_name"]), f"{node_id}: documented outputs"


# --- example workflows ----------------------------------------------------------------------------------------------


def test_every_example_workflow_is_served_and_refers_to_known_nodes(server):
    from PIL import Image

    names = sorted(p.stem for p in EXAMPLES.glob("*.json"))
    assert len(names) >= 5
    assert sorted(server.get("/api/workflow_templates")[PACK]) == names
    info = server.object_info
    for name in names:
        served = server.get(f"/api/workflow_templates/{PACK}/{name}.json")
        assert served == _example(name)
        status, jpg = server.request(f"/api/workflow_templates/{PACK}/{name}.jpg")
        assert status == 200 and jpg[:3] == b"\xff\xd8\xff", f"{name}.jpg thumbnail"
        with Image.open(EXAMPLES / f"{name}.jpg") as im:
            assert im.format == "JPEG" and min(im.size) >= 200
        types = {n["type"] for n in served["nodes"]}
        assert types - VIRTUAL_NODES <= set(info), f"{name}: unknown node types {types - VIRTUAL_NODES - set(info)}"
        assert any(t.startswith("BGFS") for t in types)
        _check_api_prompt(name, workflow_to_api(served, info), info)


def _check_api_prompt(name: str, prompt: dict, info: dict) -> None:
    """Every required input is there, links join matching types, widget values fit their specs."""
    for nid, node in prompt.items():
        spec = info[node["class_type"]]["input"]
        for key in spec["required"]:
            assert key in node["inputs"], f"{name}: node {nid} {node['class_type']} lacks {key}"
        for key, value in node["inputs"].items():
            typ = {**spec["required"], **spec.get("optional", {})}[key][0]
            if isinstance(value, list):
                src = prompt[value[0]]
                out_type = info[src["class_type"]]["output"][value[1]]
                assert typ in ("*", out_type) or out_type == "*", f"{name}: {nid}.{key} {typ} <- {out_type}"
            elif typ in ("INT", "FLOAT"):
                assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{name}: {nid}.{key}={value!r}"
            elif typ == "BOOLEAN":
                assert isinstance(value, bool), f"{name}: {nid}.{key}={value!r}"
            elif typ == "COMBO" or isinstance(typ, list):
                assert isinstance(value, str), f"{name}: {nid}.{key}={value!r}"


def _in_group(pos: list, bounding: list) -> bool:
    x, y, w, h = bounding
    return x <= pos[0] <= x + w and y <= pos[1] <= y + h


def _fp8_branch(workflow: dict) -> dict:
    """A 14B template switched to its other branch, as its note tells users to: the nodes in the group
    "... fp8_scaled + 4steps LoRA" bypassed, those in the plain "... fp8_scaled" group enabled."""
    branches = {"LoRA" in g["title"]: g["bounding"] for g in workflow["groups"] if "fp8_scaled" in g["title"]}
    assert sorted(branches) == [False, True], [g["title"] for g in workflow["groups"]]
    for lora, bounding in branches.items():
        for n in workflow["nodes"]:
            if _in_group(n["pos"], bounding):
                n["mode"] = 4 if lora else 0
    return workflow


def test_the_wan_examples_insert_roi_detect_and_the_fixer_after_the_last_sampler(server):
    """The Fixer follows the last sampler in each Wan template, and in both branches of the 14B ones."""
    for name, vae in (("bgfs_wan2_2_14B_t2v_fix_hands", "wan_2.1_vae.safetensors"),
                      ("bgfs_wan2_2_14B_i2v_fix_hands", "wan_2.1_vae.safetensors"),
                      ("bgfs_wan2_2_5B_ti2v_fix_hands", "wan2.2_vae.safetensors")):  # fmt: skip
        variants = [(name, _example(name))]
        if "14B" in name:  # the "fp8_scaled" branch (no LoRA) that the template invites users to switch to
            variants.append((f"{name} (fp8_scaled branch)", _fp8_branch(_example(name))))
            # the shared Critic Loader is in neither branch's group: Ctrl + B on a box-selected branch flips each
            # node, so a loader inside one would be switched on, asking for a critic the user may not have
            workflow = variants[0][1]
            (at,) = [n["pos"] for n in workflow["nodes"] if n["type"] == "BGFSCriticLoader"]
            holders = [g["title"] for g in workflow["groups"] if "fp8_scaled" in g["title"] and _in_group(at, g["bounding"])]
            assert not holders, f"{name}: the Critic Loader sits in {holders}"
        default: dict = {}
        for label, workflow in variants:
            prompt = workflow_to_api(workflow, server.object_info)
            shared = sorted(default.keys() & prompt.keys())
            assert not shared, f"{label}: nodes of the default branch still run: {shared}"
            default = default or prompt
            fix = prompt[_by_type(prompt, FIXER)]
            sampler = prompt[fix["inputs"]["latent"][0]]
            assert sampler["class_type"] in ("KSamplerAdvanced", "KSampler"), label
            if sampler["class_type"] == "KSamplerAdvanced":
                assert sampler["inputs"]["start_at_step"] > 0, f"{label}: the fixer follows the second (low-noise) sampler"
            assert prompt[fix["inputs"]["vae"][0]]["inputs"]["vae_name"] == vae, label
            roi = prompt[fix["inputs"]["roi"][0]]
            assert roi["class_type"] == "BGFSROIDetect", label
            pre = prompt[roi["inputs"]["images"][0]]
            assert pre["class_type"] == "VAEDecode" and pre["inputs"]["samples"] == fix["inputs"]["latent"], label
            # the Fixer decodes its output itself (reusing its guard's decode): no second VAE Decode
            assert fix["inputs"]["guard"] is True and fix["inputs"]["decode"] is True, label
            assert [v for v in prompt.values() if v["class_type"] == "VAEDecode"] == [pre], label
            assert prompt[_by_type(prompt, "CreateVideo")]["inputs"]["images"] == [_by_type(prompt, FIXER), 2], label
            assert prompt[_by_type(prompt, "BGFSAnatomyScore")]["inputs"]["images"] == [_by_type(prompt, FIXER), 2], label
            # the Critic Loader (one, shared by both branches) is there but bypassed: the template runs before any
            # critic is trained (guide only)
            loader = [n for n in workflow["nodes"] if n["type"] == "BGFSCriticLoader"]
            assert len(loader) == 1 and loader[0]["mode"] == 4 and "critic" not in fix["inputs"], label


def test_cancel_stops_mediapipe_within_a_frame(server):
    """ROI Detect on a long, large video (the body footage at full size, 1080x1920, about 25 s of MediaPipe here):
    Cancel stops it within a frame, where it used to run to the end; the node's progress bar counts the frames."""
    from bgfs_core.video_io import read_video

    frames, fps = read_video(BODY_VIDEO)
    write_sample_video(server.base / "input" / "bgfs_body_full.mp4", frames, fps=fps)
    prompt = {
        "load": {"class_type": "LoadVideo", "inputs": {"file": "bgfs_body_full.mp4"}},
        "parts": {"class_type": "GetVideoComponents", "inputs": {"video": ["load", 0]}},
        "detect": {"class_type": "BGFSROIDetect", "inputs": {
            "images": ["parts", 0], "region": "full_body", "margin": 0.25, "min_conf": 0.3, "smooth": 0.6,
            "backend": "solutions", "fps": fps}},
        "show": {"class_type": "PreviewImage", "inputs": {"images": ["detect", 2]}},
    }  # fmt: skip
    # Cancel once MediaPipe has read 2 frames: its start (models loaded, the first frame's set-up) is not a frame
    entry, latency = _cancel_after(server, prompt, f"BGFS ROI Detect: full_body in {len(frames)} frames",
                                   "ROI Detect", progress=("detect", 2))
    msgs = history_messages(entry)
    assert entry["status"]["status_str"] == "error", json.dumps(entry["status"])[:2000]
    assert msgs["execution_interrupted"]["node_type"] == "BGFSROIDetect", msgs
    assert latency < 5.0


# --- the finished-video example: the Image Fixer on real, damaged frames ---------------------------------------


@pytest.mark.parametrize("region", ["hands", "face"])
def test_the_video_example_fixes_a_damaged_real_video_in_pixel_space(server, hand_video_frames, region):
    """The templates for a video that is already made, as shipped, on real footage with the evaluation's damage
    (warped, jittering fingers on the bundled hand clip; a warped, shaking face on the bundled film): the guide alone
    (the Critic Loader is bypassed), 30 steps. The Image Fixer edits inside the ROI only (every other pixel bit for
    bit), MediaPipe finds the geometry better so the guard keeps the edit, the Score rates the fix above the damaged
    source, and Save Video writes it at the source's frame rate."""
    import av

    from bgfs_core.corruptions import corrupt_all
    from bgfs_core.detection import detect_video

    clean, fps = (hand_video_frames, 10.0) if region == "hands" else (film_face_frames(), 24.0)
    damaged = corrupt_all(clean, detect_video(clean, region, fps=fps), ["finger_jitter", "region_jitter"])
    write_sample_video(server.base / "input" / f"bgfs_{region}_damaged.mp4", damaged, fps=fps)
    prompt = workflow_to_api(_example(f"bgfs_fix_video_{region}"), server.object_info)
    assert prompt[_by_type(prompt, "BGFSROIDetect")]["inputs"]["region"] == region
    assert prompt[_by_type(prompt, "BGFSAnatomyScore")]["inputs"]["region"] == region
    prompt[_by_type(prompt, "LoadVideo")]["inputs"]["file"] = f"bgfs_{region}_damaged.mp4"
    fix, parts = _by_type(prompt, IMAGE_FIXER), _by_type(prompt, "GetVideoComponents")
    assert "critic" not in prompt[fix]["inputs"] and prompt[fix]["inputs"]["guard"] is True
    prompt["probe_fixed"] = {"class_type": "SaveImage", "inputs": {"images": [fix, 0], "filename_prefix": "probe/vfixed"}}
    prompt["probe_source"] = {"class_type": "SaveImage", "inputs": {"images": [parts, 0], "filename_prefix": "probe/vsource"}}
    started = time.perf_counter()
    entry = server.wait(server.queue(prompt), timeout=600)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
    out = entry["outputs"]
    report = json.loads(out[_by_title(prompt, "fix report")]["text"][0])
    print(f"\nvideo example ({region}): {time.perf_counter() - started:.1f} s; {report['judge']['summary']}")
    assert report["changed"] is True and report["codec"] == "pixel codec" and len(report["history"]) == 30
    judge = report["judge"]
    assert judge["geometry_after"] > judge["geometry_before"] and "guard_kept_input" not in report, judge
    assert "MediaPipe on the fixed frames: geometry" in out[fix]["text"][0]
    assert judge["fps"] == fps, "the video's frame rate reaches ROI Detect through its link, and the guard from it"
    fixed, source = _load_images(server, out, "probe_fixed"), _load_images(server, out, "probe_source")
    assert fixed.shape == source.shape == damaged.shape
    changed = (fixed != source).any(-1)
    assert changed.any() and not changed[~fix_reach(report["window"], changed.shape)].any()
    summary = out[_by_title(prompt, "score (fixed against the source)")]["text"][0]
    score, ref = float(re.search(r"\): ([\d.]+)/100", summary).group(1)), float(re.search(r"Reference: ([\d.]+)/100", summary).group(1))
    assert score > ref, summary
    (video,) = out[_by_type(prompt, "SaveVideo")]["images"]
    with av.open(str(server.base / "output" / video["subfolder"] / video["filename"])) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == fps and stream.frames in (0, len(damaged))


# --- running the CPU example ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cpu_prompt(server) -> dict:
    """The CPU template with its Critic Loader switched on. It ships bypassed, so that a fresh install can queue
    it before any critic is trained; these tests put a critic in models/bgfs_critics."""
    workflow = _example("bgfs_cpu_tiny_vae")
    (loader,) = [n for n in workflow["nodes"] if n["type"] == "BGFSCriticLoader"]
    shipped = workflow_to_api(_example("bgfs_cpu_tiny_vae"), server.object_info)
    assert loader["mode"] == 4 and "critic" not in shipped[_by_type(shipped, FIXER)]["inputs"]
    loader["mode"] = 0
    prompt = workflow_to_api(workflow, server.object_info)
    assert prompt[_by_type(prompt, FIXER)]["inputs"]["critic"][0] == str(loader["id"])
    assert prompt[_by_type(prompt, "LoadVideo")]["inputs"]["file"] == SAMPLE_VIDEO
    assert prompt[_by_type(prompt, "VAELoader")]["inputs"]["vae_name"] == TINY_VAE
    return prompt


def build_tiny_taehv(out) -> None:
    """A random-weight Tiny AutoEncoder for Wan 2.1 latents (lighttaew2_1's layout, fp32: ComfyUI reads it as
    lighttaew2_1, not as HunyuanVideo's fp16 taehv)."""
    from safetensors.torch import save_file

    from bgfs_core.codecs.taehv import TAEHVDecoder

    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(lively(TAEHVDecoder(16)).state_dict(), str(out))


def _with_latent_probes(prompt: dict) -> dict:
    """The prompt plus SaveLatent nodes for the encoded and the fixed latents (test probes, not in the example)."""
    prompt = json.loads(json.dumps(prompt))
    enc, fix = _by_type(prompt, "VAEEncode"), _by_type(prompt, FIXER)
    prompt["probe_before"] = {"class_type": "SaveLatent", "inputs": {"samples": [enc, 0], "filename_prefix": "probe/before"}}
    prompt["probe_after"] = {"class_type": "SaveLatent", "inputs": {"samples": [fix, 0], "filename_prefix": "probe/after"}}
    return prompt


def _with_image_probes(prompt: dict) -> dict:
    """The prompt plus SaveImage nodes for the Fixer's images output and for core's VAE Decode of its latent."""
    prompt = json.loads(json.dumps(prompt))
    fix, vae = _by_type(prompt, FIXER), prompt[_by_type(prompt, FIXER)]["inputs"]["vae"]
    prompt["vae_decode"] = {"class_type": "VAEDecode", "inputs": {"samples": [fix, 0], "vae": vae}}
    prompt["probe_vae_decode"] = {"class_type": "SaveImage", "inputs": {"images": ["vae_decode", 0], "filename_prefix": "probe/vae_decode"}}
    prompt["probe_images"] = {"class_type": "SaveImage", "inputs": {"images": [fix, 2], "filename_prefix": "probe/images"}}
    return prompt


def _load_images(server, outputs: dict, node: str) -> np.ndarray:
    from PIL import Image

    items = outputs[node]["images"]
    return np.stack([np.asarray(Image.open(server.base / "output" / i["subfolder"] / i["filename"])) for i in items])


def _load_latent(server, outputs: dict, node: str):
    from safetensors.torch import load_file

    item = outputs[node]["latents"][0]
    return load_file(str(server.base / "output" / item["subfolder"] / item["filename"]))["latent_tensor"]


def _assert_changed_inside_the_window_only(server, outputs: dict, report: dict) -> None:
    """The probes' latents: changed inside the fix's window, bit for bit the input outside it."""
    before, after = _load_latent(server, outputs, "probe_before"), _load_latent(server, outputs, "probe_after")
    assert before.shape == after.shape == (1, 16, 2, 9, 12)
    win = report["window"]
    t0, t1 = win["latent_t"]
    y0, y1 = win["latent_y"]
    x0, x1 = win["latent_x"]
    core = (slice(None), slice(None), slice(t0, t1), slice(y0, y1), slice(x0, x1))
    assert (after[core] - before[core]).abs().max() > 1e-4, "the fixer changed the latents inside the ROI window"
    outside = ~fix_reach(win, before.shape[2:])  # FixSettings.feather: one latent cell around the core
    assert outside.any()
    np.testing.assert_array_equal(after.numpy()[:, :, outside], before.numpy()[:, :, outside])


def test_cpu_example_runs_end_to_end_on_real_frames(server, cpu_prompt):
    prompt = _with_latent_probes(cpu_prompt)
    prompt[_by_type(prompt, FIXER)]["inputs"]["guard"] = False  # a random VAE's decode shows no hand (test below)
    started = time.perf_counter()
    entry = server.wait(server.queue(prompt), timeout=400)
    seconds = time.perf_counter() - started
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
    out = entry["outputs"]
    print(f"\nCPU example: {seconds:.1f} s")

    roi_text = out[_by_type(prompt, "BGFSROIDetect")]["text"][0]
    assert roi_text.startswith("hands: found in 5 of 5 frames (96x72"), roi_text
    fix_out = out[_by_type(prompt, FIXER)]
    assert fix_out["text"][0].startswith("BGFS fix (hands, mode warp, 2 steps")
    report = json.loads(out[_by_title(prompt, "fix report")]["text"][0])
    assert report["settings"]["guide"] == 3.0  # the optional widget's value reaches the fixer
    assert report["changed"] is True and report["codec"].startswith("WanVAE")
    assert len(report["history"]) == 2 and report["window"]["crops"] >= 5
    assert report["images"] == "decoded", "guard off: the Fixer decodes its output for the images output"

    _assert_changed_inside_the_window_only(server, out, report)

    # A random VAE decodes noise: the judge must say "not found" there (score -1), and score the real source
    # frames given as the reference.
    score = float(out[_by_title(prompt, "score")]["text"][0])
    summary = out[_by_title(prompt, "score summary")]["text"][0]
    assert score == -1.0 and "Anatomy score (hands): not found" in summary, summary
    ref_score = float(re.search(r"Reference: ([\d.]+)/100", summary).group(1))
    assert 0.0 < ref_score <= 100.0, summary
    assert "Verdict: not found" in summary and "Fidelity:" in summary
    plots = out[_by_type(prompt, "BGFSAnatomyScore")]["images"]
    assert len(plots) == 3 and all((server.base / "temp" / p["filename"]).stat().st_size > 5000 for p in plots)
    previews = out[_by_title(prompt, "ROI overlay")]["images"]
    assert len(previews) == 5 and all((server.base / "temp" / p["subfolder"] / p["filename"]).is_file() for p in previews)
    if "bgfs_preview" in fix_out:  # the heatmap widget's payload (nodes/preview_ui.py)
        sheet = fix_out["bgfs_preview"][0]
        assert sheet["kind"] == "fix" and (server.base / "temp" / sheet["crops"]["subfolder"] / sheet["crops"]["filename"]).is_file()
        assert "after_crops" in sheet and "after_keypoints" in sheet, "before / after of the edit"


def test_the_fixer_runs_without_a_critic_on_the_guide_alone(server, cpu_prompt):
    """The critic input is optional (the Wan examples bypass their Critic Loader): ROI Detect's cleaned keypoint
    tracks alone move the hand."""
    prompt = _with_latent_probes(cpu_prompt)
    fix = prompt[_by_type(prompt, FIXER)]
    del fix["inputs"]["critic"]
    del prompt[_by_type(prompt, "BGFSCriticLoader")]  # nothing else reads it
    fix["inputs"]["guard"] = False
    entry = server.wait(server.queue(prompt), timeout=400)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
    out = entry["outputs"]
    report = json.loads(out[_by_title(prompt, "fix report")]["text"][0])
    assert report["critic_fit"] is None and "No critic: the guide alone moved the region" in report["summary"]
    assert report["changed"] is True and report["critic_before"]["target"] > 0
    _assert_changed_inside_the_window_only(server, out, report)
    sheet = out[_by_type(prompt, FIXER)].get("bgfs_preview", [{}])[0]
    assert "heat" not in sheet and "after_heat" not in sheet  # crops to preview, no critic heatmaps
    # the slider names each crop by its frame in the video and its hand, as ROI Detect's does, not by its number
    # among the window's crops
    first, last = report["window"]["frames"]
    frames = [int(re.fullmatch(r"(\d+)/(\d+)( (left|right)(_\d+)?)?", label).group(1)) for label in sheet["labels"]]
    assert len(frames) == sheet["n"] and all(first < f <= last for f in frames), (sheet["labels"], first, last)
    (total,) = {label.split("/")[1].split(" ")[0] for label in sheet["labels"]}  # of the video's frames
    assert int(total) >= last, sheet["labels"]


def test_keep_first_frame_leaves_the_start_image_bit_for_bit_in_comfyui(server, cpu_prompt):
    """An I2V start image: with *keep_first_frame* the first latent frame is not edited, so core's VAE Decode (of
    ComfyUI's own causal Wan VAE) gives the first frame exactly as before the fix; the later frames change."""
    prompt = _with_image_probes(_with_latent_probes(cpu_prompt))
    fix = prompt[_by_type(prompt, FIXER)]
    del fix["inputs"]["critic"]
    del prompt[_by_type(prompt, "BGFSCriticLoader")]
    fix["inputs"].update(guard=False, keep_first_frame=True)
    enc = _by_type(prompt, "VAEEncode")
    prompt["decode_before"] = {"class_type": "VAEDecode", "inputs": {"samples": [enc, 0], "vae": fix["inputs"]["vae"]}}
    prompt["probe_decode_before"] = {"class_type": "SaveImage",
                                     "inputs": {"images": ["decode_before", 0], "filename_prefix": "probe/before"}}
    entry = server.wait(server.queue(prompt), timeout=400)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
    out = entry["outputs"]
    report = json.loads(out[_by_title(prompt, "fix report")]["text"][0])
    assert report["changed"] is True and report["window"]["latent_t"] == [1, 2], report["window"]
    assert "the first frame kept as it is" in report["summary"]
    before, after = _load_latent(server, out, "probe_before"), _load_latent(server, out, "probe_after")
    np.testing.assert_array_equal(after[:, :, 0].numpy(), before[:, :, 0].numpy())
    assert (after[:, :, 1] != before[:, :, 1]).any()
    decoded_before = _load_images(server, out, "probe_decode_before")
    decoded_after = _load_images(server, out, "probe_vae_decode")
    moved = (decoded_after != decoded_before).reshape(len(decoded_before), -1).any(1)
    assert not moved[0] and moved[1:].any(), moved


def test_the_fixer_takes_its_gradients_through_a_tiny_autoencoder(server, cpu_prompt):
    """*gradient_vae* from core's Load VAE (lighttaew2_1 in models/vae_approx): the steps decode through it, the
    report names it and measures how alike it and the VAE decode the input (two random-weight models: unalike, so
    the node warns), and the edit stays inside the window."""
    prompt = _with_latent_probes(cpu_prompt)
    assert TINY_TAE in server.object_info["VAELoader"]["input"]["required"]["vae_name"][0]
    prompt["tae"] = {"class_type": "VAELoader", "inputs": {"vae_name": TINY_TAE}}
    fix = prompt[_by_type(prompt, FIXER)]
    fix["inputs"].update(gradient_vae=["tae", 0], guard=False)
    entry = server.wait(server.queue(prompt), timeout=400)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
    out = entry["outputs"]
    report = json.loads(out[_by_title(prompt, "fix report")]["text"][0])
    assert report["codec"].endswith("(gradients through TAEHV (gradient_vae))"), report["codec"]
    assert report["decoder_agreement_db"] < 20 and "Gradient decoder:" in report["summary"]
    assert any(w.startswith("the gradient decoder (TAEHV (gradient_vae))") for w in report["warnings"])
    assert report["changed"] is True
    _assert_changed_inside_the_window_only(server, out, report)


def test_a_second_fixer_on_the_same_region_says_to_fix_once(server, cpu_prompt):
    """Chaining two Fixers resamples the region twice, which measured worse than once: the second one says so,
    and both still run (the LATENT carries which regions were fixed; SaveLatent takes it as any other LATENT)."""
    prompt = _with_latent_probes(cpu_prompt)
    first = _by_type(prompt, FIXER)
    fix = prompt[first]
    del fix["inputs"]["critic"]  # the guide alone: the cheapest fix
    del prompt[_by_type(prompt, "BGFSCriticLoader")]
    fix["inputs"]["guard"] = False
    fix["inputs"]["lr"] = 0.03  # settings no other test uses: ComfyUI's cache would skip an identical first Fixer
    prompt["fix2"] = {"class_type": FIXER, "inputs": {**fix["inputs"], "latent": [first, 0]}, "_meta": {"title": "fix 2"}}
    prompt["probe_after2"] = {"class_type": "SaveLatent", "inputs": {"samples": ["fix2", 0], "filename_prefix": "probe/after2"}}
    entry = server.wait(server.queue(prompt), timeout=400)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
    out = entry["outputs"]
    once, twice = out[first]["text"][0], out["fix2"]["text"][0]
    assert "already fixed" not in once, once
    assert "Warning: these latents were already fixed for hands by an earlier BGFS Latent Anatomy Fixer" in twice, twice
    assert _load_latent(server, out, "probe_after2").shape == (1, 16, 2, 9, 12)


def test_the_fixers_guard_passes_the_input_through_when_the_decode_loses_the_hand(server, cpu_prompt):
    """The guard (on by default) decodes the fix with the real VAE and runs MediaPipe on it. The tiny random VAE
    decodes noise, so the hand ROI Detect found is lost: the Fixer must hand back its input latent, bit for bit,
    and say why."""
    prompt = _with_image_probes(_with_latent_probes(cpu_prompt))
    assert prompt[_by_type(prompt, FIXER)]["inputs"]["guard"] is True, "the example's setting (and the default)"
    entry = server.wait(server.queue(prompt), timeout=400)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
    out = entry["outputs"]
    report = json.loads(out[_by_title(prompt, "fix report")]["text"][0])
    assert report["changed"] is True and len(report["history"]) == 2, "the fix ran"
    judge = report["judge"]
    assert judge["geometry_before"] > 0 and judge["geometry_after"] is None and judge["seconds"] > 0
    assert report["guard_kept_input"] is True
    text = out[_by_type(prompt, FIXER)]["text"][0]
    assert "MediaPipe on the fixed decode: geometry" in text and "-> not found" in text and "(guard: " in text
    assert "Guard: the geometry got worse, so the output is the input latent unchanged" in text
    sheet = out[_by_type(prompt, FIXER)]["bgfs_preview"][0]
    assert "crops" in sheet and not [k for k in sheet if k.startswith("after_")], "no preview of an edit not kept"
    before, after = _load_latent(server, out, "probe_before"), _load_latent(server, out, "probe_after")
    np.testing.assert_array_equal(after.numpy(), before.numpy())
    # decode on (the example's setting): the guard decoded the edit it did not keep, so the input is decoded
    assert report["images"] == "decoded"
    images = _load_images(server, out, "probe_images")
    assert images.shape == (5, 72, 96, 3)
    np.testing.assert_array_equal(images, _load_images(server, out, "probe_vae_decode"))


def test_the_fixers_images_output_reuses_the_guards_decode_of_a_kept_edit(server, cpu_prompt):
    """With the guard on, a kept edit's frames are the guard's own decode (one decode, not two), and they are the
    frames core's VAE Decode gives for the Fixer's latent. A test node makes the guard keep the edit: the tiny
    random VAE decodes noise, in which MediaPipe never finds the hand."""
    prompt = _with_image_probes(_with_latent_probes(cpu_prompt))
    fix = _by_type(prompt, FIXER)
    prompt["keep"] = {"class_type": "BGFSTestGuardKeeps", "inputs": {"value": prompt[fix]["inputs"]["latent"], "tag": 1}}
    prompt[fix]["inputs"]["latent"] = ["keep", 0]
    entry = server.wait(server.queue(prompt), timeout=400)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
    out = entry["outputs"]
    report = json.loads(out[_by_title(prompt, "fix report")]["text"][0])
    assert report["judge"]["geometry_after"] is None and "guard_kept_input" not in report, "kept by the test node"
    assert report["images"] == "the guard's decode"
    _assert_changed_inside_the_window_only(server, out, report)
    images = _load_images(server, out, "probe_images")
    assert images.shape == (5, 72, 96, 3)
    np.testing.assert_array_equal(images, _load_images(server, out, "probe_vae_decode"))


def test_the_images_output_with_decode_off_stops_what_it_feeds_with_a_message(server, cpu_prompt):
    """decode off (the default, so that graphs with their own VAE Decode do not decode twice): the latent and
    report outputs work, and a node fed from images does not run; the frontend is told why."""
    prompt = _with_image_probes(cpu_prompt)
    fix = _by_type(prompt, FIXER)
    prompt[fix]["inputs"].update(decode=False, guard=False, steps=1)  # steps no other test uses: nothing cached
    listener = EventListener(server.port, "bgfs-decode-off")
    try:
        entry = server.wait(server.queue(prompt, client_id="bgfs-decode-off"), timeout=400)
        end = time.perf_counter() + 10  # the events may still be on their way when /history says done
        while len(listener.of_type("execution_error")) < 3 and time.perf_counter() < end:
            time.sleep(0.1)
        errors = listener.of_type("execution_error")
    finally:
        listener.close()
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
    out = entry["outputs"]
    assert "probe_images" not in out and "probe_vae_decode" in out
    assert json.loads(out[_by_title(prompt, "fix report")]["text"][0])["changed"] is True
    fed = {k for k, v in prompt.items() if [fix, 2] in v["inputs"].values()}  # the probe, the Score, a preview
    assert len(fed) == 3 and {e["node_id"] for e in errors} == fed, errors
    assert {e["exception_message"] for e in errors} == {
        "Execution Blocked: BGFS Latent Anatomy Fixer: its images output needs decode on (or decode its latent "
        "output with VAE Decode)"}, errors


@pytest.mark.parametrize("flag,dtype", [("--bf16-vae", "torch.bfloat16"), ("--fp16-vae", "torch.float16")])
def test_the_fixer_edits_through_a_half_precision_vae_as_gpus_load_it(server, cpu_prompt, tmp_path, flag, dtype):
    """On a GPU ComfyUI loads the Wan VAE in bf16 (fp16 where the GPU has no bf16), and the Fixer's gradients go
    through that decoder. ComfyUI's own flag forces the same dtype here; given the same latent, the Fixer's edit
    must be the fp32 VAE's up to half precision, in the latent's own dtype, outside the window bit for bit."""
    comfy, python = require_comfy()
    prompt = _with_latent_probes(cpu_prompt)
    prompt[_by_type(prompt, FIXER)]["inputs"]["guard"] = False  # a random VAE's decode shows no hand
    entry = server.wait(server.queue(prompt), timeout=400)  # fp32, as the end-to-end test runs it
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
    ref_before, ref_after = (_load_latent(server, entry["outputs"], k) for k in ("probe_before", "probe_after"))

    base = make_base_dir(tmp_path / "base")
    for sub in (f"models/vae/{TINY_VAE}", f"models/bgfs_critics/{CRITIC}", f"input/{SAMPLE_VIDEO}"):
        shutil.copy(server.base / sub, base / sub)
    encoded = entry["outputs"]["probe_before"]["latents"][0]
    shutil.copy(server.base / "output" / encoded["subfolder"] / encoded["filename"], base / "input" / "encoded.latent")
    # the same input latent: VAE Encode in half precision would already differ by ~2% (bf16)
    enc = _by_type(prompt, "VAEEncode")
    prompt[enc] = {"class_type": "LoadLatent", "inputs": {"latent": "encoded.latent"}, "_meta": prompt[enc]["_meta"]}
    half = ComfyServer(comfy, python, base, extra_args=(flag,)).start()
    try:
        entry = half.wait(half.queue(prompt), timeout=400)
        assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + half.log()[-3000:]
        assert f"dtype: {dtype}" in half.log(), "ComfyUI loaded the VAE in half precision"
        report = json.loads(entry["outputs"][_by_title(prompt, "fix report")]["text"][0])
        before, after = _load_latent(half, entry["outputs"], "probe_before"), _load_latent(half, entry["outputs"], "probe_after")
    finally:
        half.stop()

    assert report["changed"] is True and len(report["history"]) == 2
    assert after.dtype == before.dtype == ref_after.dtype
    np.testing.assert_array_equal(before.numpy(), ref_before.numpy())
    edit, ref_edit = (after - before).flatten(), (ref_after - ref_before).flatten()
    assert np.isfinite(edit.numpy()).all() and edit.abs().max() > 1e-4, "the half-precision decoder passed gradients"
    cos = float(edit @ ref_edit / (edit.norm() * ref_edit.norm()))
    ratio = float(edit.norm() / ref_edit.norm())
    print(f"\n{dtype} VAE: the Fixer's edit against the fp32 VAE's: cosine {cos:.4f}, size ratio {ratio:.3f}")
    assert cos > 0.9 and 0.8 < ratio < 1.25  # measured: bf16 0.967 / 1.037, fp16 0.998 / 1.005
    outside = ~fix_reach(report["window"], before.shape[2:])
    np.testing.assert_array_equal(after.numpy()[:, :, outside], before.numpy()[:, :, outside])


def _insert_fault(prompt: dict, node: str, input_name: str, class_type: str, every: int) -> None:
    """Put a test fault node (tests/comfy_fault_node.py) in front of ``node``'s input: the device runs out of
    memory at every ``every``-th convolution of that node, once (``prompt["fault"]["inputs"]["times"]``)."""
    prompt["fault"] = {"class_type": class_type,
                       "inputs": {"value": prompt[node]["inputs"][input_name], "every": every, "times": 1}}
    prompt[node]["inputs"][input_name] = ["fault", 0]


def _run_and_log(server, prompt: dict) -> tuple[dict, str]:
    """Queue ``prompt`` and wait: its history entry and what the server logged meanwhile."""
    start = len(server.log())
    entry = server.wait(server.queue(prompt), timeout=400)
    return entry, server.log()[start:]


def test_out_of_memory_in_the_fixer_unloads_the_other_models_and_starts_again(server, cpu_prompt):
    """On a GPU the diffusion model may still hold its memory when the Fixer starts. A test node makes the VAE's
    convolutions run out of memory (as CUDA would) inside the Fixer: once, and the Fixer unloads the other models,
    starts again and gives the same result as a run that never failed; twice, and the node's error says what to
    make smaller."""
    prompt = _with_latent_probes(cpu_prompt)
    fix = _by_type(prompt, FIXER)
    prompt[fix]["inputs"].update(steps=4, guard=False)  # steps no other test uses: nothing cached
    entry = server.wait(server.queue(prompt), timeout=400)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
    clean = _load_latent(server, entry["outputs"], "probe_after")

    _insert_fault(prompt, fix, "latent", "BGFSTestOutOfMemory", every=25)
    entry, log = _run_and_log(server, prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + log[-3000:]
    assert "BGFS Latent Anatomy Fixer: out of memory; unloading the other models and starting again" in log, log
    report = json.loads(entry["outputs"][_by_title(prompt, "fix report")]["text"][0])
    assert report["changed"] is True and len(report["history"]) == 4
    np.testing.assert_array_equal(_load_latent(server, entry["outputs"], "probe_after").numpy(), clean.numpy())

    prompt["fault"]["inputs"]["times"] = 2
    entry, log = _run_and_log(server, prompt)
    assert entry["status"]["status_str"] == "error"
    # as ComfyUI does after its own out-of-memory errors (it recognises only torch's type, not the node's)
    assert "BGFS Latent Anatomy Fixer: still out of memory; unloading every model" in log, log[-3000:]
    error = history_messages(entry)["execution_error"]
    assert error["node_type"] == FIXER, error
    text = error["exception_message"]
    assert text.startswith("BGFS Latent Anatomy Fixer: out of memory on cpu decoding through WanVAE"), text
    assert "a window of" in text and "even with the other models unloaded" in text and "to gradient_vae" in text, text


def _drop_consumers(prompt: dict, sources: list) -> None:
    """Remove the nodes fed from any of ``sources`` ([node, slot]), and the nodes fed from those, and so on."""
    gone = {k for k, v in prompt.items() if any(src in v["inputs"].values() for src in sources)}
    while gone:
        for key in gone:
            del prompt[key]
        gone = {k for k, v in prompt.items() for x in v["inputs"].values() if isinstance(x, list) and x and x[0] in gone}


def test_needs_fixing_gates_the_fixer_through_cores_lazy_switch(server, cpu_prompt):
    """The README's recipe: Anatomy Score's needs_fixing -> core's Switch (on_true: the Fixer, on_false: the
    unfixed latent) -> VAE Decode. The Switch is lazy, so the Fixer runs only when the score asks for it."""
    for threshold, needs in ((0.0, False), (99.0, True)):  # thresholds no other test uses: nothing cached
        prompt = _with_latent_probes(cpu_prompt)
        fix, enc = _by_type(prompt, FIXER), _by_type(prompt, "VAEEncode")
        prompt[fix]["inputs"].update(steps=3, guard=False, decode=False)  # steps no other test uses: nothing cached
        _drop_consumers(prompt, [[fix, 1], [fix, 2]])  # they would pull the Fixer in on their own
        frames = [_by_type(prompt, "ImageScale"), 0]
        prompt["gate_score"] = {"class_type": "BGFSAnatomyScore",
                                "inputs": {"images": frames, "region": "hands", "threshold": threshold, "fps": 10.0,
                                           "backend": "solutions"}}  # fmt: skip
        prompt["gate"] = {"class_type": "ComfySwitchNode",
                          "inputs": {"switch": ["gate_score", 2], "on_true": [fix, 0], "on_false": [enc, 0]}}
        prompt["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["gate", 0], "vae": prompt[fix]["inputs"]["vae"]}}
        prompt["decoded"] = {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}}
        prompt["probe_after"]["inputs"]["samples"] = ["gate", 0]
        entry = server.wait(server.queue(prompt), timeout=400)
        assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
        out = entry["outputs"]
        assert ("needs fixing" in out["gate_score"]["text"][0]) == needs
        assert (fix in out) == needs, "the Fixer ran exactly when the score said the clip needs fixing"
        before, after = _load_latent(server, out, "probe_before"), _load_latent(server, out, "probe_after")
        assert (after - before).abs().max() > 1e-4 if needs else bool((after == before).all())


def test_score_node_scores_real_frames_and_gates(server, cpu_prompt):
    prompt = json.loads(json.dumps(cpu_prompt))
    frames = [_by_type(prompt, "ImageScale"), 0]
    prompt["judge"] = {"class_type": "BGFSAnatomyScore",
                       "inputs": {"images": frames, "region": "hands", "threshold": 100.0, "fps": 10.0,
                                  "backend": "solutions"}}  # fmt: skip
    prompt["judge_score"] = {"class_type": "PreviewAny", "inputs": {"source": ["judge", 0]}}
    prompt["judge_gate"] = {"class_type": "PreviewAny", "inputs": {"source": ["judge", 2]}}
    # against itself as the reference: before and after tiles show the same hands, named as their tracks
    prompt["judge_ref"] = {"class_type": "BGFSAnatomyScore",
                           "inputs": {"images": frames, "reference": frames, "region": "hands", "threshold": 50.0,
                                      "fps": 10.0, "backend": "solutions"}}  # fmt: skip
    prompt["judge_ref_score"] = {"class_type": "PreviewAny", "inputs": {"source": ["judge_ref", 0]}}
    entry = server.wait(server.queue(prompt), timeout=400)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    out = entry["outputs"]
    score = float(out["judge_score"]["text"][0])
    assert 0.0 < score < 100.0
    assert out["judge_gate"]["text"][0] == "True", "below a threshold of 100 the clip needs fixing"
    text = out["judge"]["text"][0]
    assert text.startswith(f"Anatomy score (hands): {score:.1f}/100") and "needs fixing (threshold 100)" in text
    assert len(out["judge"]["images"]) == 3
    sheet = out["judge_ref"]["bgfs_preview"][0]
    assert sheet["after_keypoints"] == sheet["keypoints"]
    assert sheet["labels"] and all(label.split(" ")[1] in ("left", "right", "left_2", "right_2")
                                   for label in sheet["labels"])  # fmt: skip


def _cancel_after(server, prompt: dict, marker: str, what: str, settle: float = 0.0,
                  progress: tuple[str, int] = ("", 0)) -> tuple[dict, float]:
    """Queue ``prompt``, wait until ``marker`` is in the server's log (and ``settle`` s more, and until the progress
    bar of node ``progress[0]`` reached ``progress[1]``), press Cancel (POST /interrupt): the prompt's history entry
    and the seconds from Cancel to its end."""
    listener = EventListener(server.port, "bgfs-cancel")
    log_start = len(server.log())
    prompt_id = server.queue(prompt, client_id="bgfs-cancel")
    end = time.perf_counter() + 300
    node, done = progress
    while marker not in server.log()[log_start:] or max(
            (e["value"] for e in listener.of_type("progress") if e.get("node") == node), default=0) < done:  # fmt: skip
        assert time.perf_counter() < end, f"{what}: never saw {marker!r}, {progress}:\n" + server.log()[-3000:]
        time.sleep(0.1)
    listener.close()
    time.sleep(settle)
    sent = time.perf_counter()
    server.post("/interrupt", {})
    entry = server.wait(prompt_id, timeout=120)
    latency = time.perf_counter() - sent
    print(f"\ncancel: {what} stopped {latency:.1f} s after POST /interrupt")
    return entry, latency


def test_cancel_stops_the_fixer_promptly(server, cpu_prompt):
    prompt = json.loads(json.dumps(cpu_prompt))
    prompt[_by_type(prompt, FIXER)]["inputs"]["steps"] = 5000
    entry, latency = _cancel_after(server, prompt, "BGFS Latent Anatomy Fixer: 5000 steps", "the fixer",
                                   settle=2.0)  # let it take a step or two
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    msgs = history_messages(entry)
    assert "execution_interrupted" in msgs and "execution_error" not in msgs, json.dumps(entry["status"])[:2000]
    assert msgs["execution_interrupted"]["node_type"] == FIXER
    assert latency < 30.0
    assert server.get("/queue")["queue_running"] == []


# --- critic training graph -----------------------------------------------------------------------------------------


def test_training_example_builds_a_cache_and_trains_a_critic(server):
    from bgfs_core.cache import load_manifest
    from bgfs_core.critic_io import load_critic

    prompt = workflow_to_api(_example("bgfs_train_critic"), server.object_info)
    prompt[_by_type(prompt, "LoadVideo")]["inputs"]["file"] = SAMPLE_VIDEO
    builder, trainer = _by_type(prompt, "BGFSCacheBuilder"), _by_type(prompt, "BGFSCriticTrainer")
    prompt[builder]["inputs"].update(cache_name="e2e_hands", crop_size=128)
    prompt[trainer]["inputs"].update(critic_name="e2e_critic", epochs=1, batch_size=16)
    entry = server.wait(server.queue(prompt), timeout=400)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
    cache_dir = server.base / "output" / "bgfs_cache" / "e2e_hands"
    manifest = load_manifest(cache_dir)  # the CLI reads it the same way
    assert manifest["region"] == "hands" and len(manifest["clips"]) >= 2
    assert "clips:" in entry["outputs"][builder]["text"][0]
    text = entry["outputs"][trainer]["text"][0]
    assert "epoch 1/1: train loss" in text
    critic_path = server.base / "models" / "bgfs_critics" / "e2e_critic.safetensors"
    model, spec, meta = load_critic(critic_path, region="hands")
    assert spec.input_hw == (128, 128) and meta["train_summary"]["clips"] == len(manifest["clips"])
    assert entry["outputs"][trainer]["images"][0]["type"] == "temp"
    assert "e2e_critic.safetensors" in server.get("/object_info/BGFSCriticLoader")["BGFSCriticLoader"]["input"][
        "required"]["critic_name"][1]["options"]
    # the cache deleted behind ComfyUI's back: queued again, the builder runs and builds it anew (it used to stay
    # "cached" and report the clips it no longer had), and the trainer finds its run on the same clips
    shutil.rmtree(cache_dir)
    entry = server.wait(server.queue(prompt), timeout=400)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
    assert load_manifest(cache_dir)["clips"] == manifest["clips"]


def test_a_cache_queued_with_other_settings_is_refused_in_the_nodes_words(server):
    """A cache keeps the settings it was started with: the Cache Builder names the inputs that differ and says to use a
    new cache_name, and the cache is left as it was."""
    cache_dir = server.base / "output" / "bgfs_cache" / "e2e_hands"  # the cache the training test built
    before = (cache_dir / "manifest.json").read_bytes()
    prompt = workflow_to_api(_example("bgfs_train_critic"), server.object_info)
    prompt[_by_type(prompt, "LoadVideo")]["inputs"]["file"] = SAMPLE_VIDEO
    builder = _by_type(prompt, "BGFSCacheBuilder")
    prompt[builder]["inputs"].update(cache_name="e2e_hands", crop_size=96, clip_seed=7)
    entry = server.wait(server.queue(prompt), timeout=400)
    assert entry["status"]["status_str"] == "error", json.dumps(entry["status"])[:3000]
    error = history_messages(entry)["execution_error"]
    assert error["node_type"] == "BGFSCacheBuilder", error
    text = error["exception_message"]
    assert text.startswith("BGFS Cache Builder: the cache 'e2e_hands' was built with "), text
    assert "crop_size 128, not 96" in text and "clip_seed 0, not 7" in text and "use a new cache_name" in text, text
    assert "--cache-dir" not in text, text
    assert (cache_dir / "manifest.json").read_bytes() == before
    # a cache that got no clip (the wrong region for the video) is started over with other settings, not refused:
    # it holds nothing to keep
    from bgfs_core.cache import load_manifest

    del prompt[_by_type(prompt, "BGFSCriticTrainer")]  # no clips to train on
    empty_dir = cache_dir.parent / "e2e_no_clips"
    prompt[builder]["inputs"].update(cache_name="e2e_no_clips", region="feet")
    entry = server.wait(server.queue(prompt), timeout=400)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
    assert load_manifest(empty_dir)["clips"] == []
    prompt[builder]["inputs"].update(region="hands")
    entry = server.wait(server.queue(prompt), timeout=400)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log()[-3000:]
    manifest = load_manifest(empty_dir)
    assert manifest["region"] == "hands" and manifest["clips"], manifest["sources"]


def test_out_of_memory_in_training_unloads_the_other_models_and_resumes(server):
    """A test node makes the critic's convolutions run out of memory (as CUDA would) inside the Critic Trainer: once,
    and the trainer unloads the other models and goes on from its last finished epoch; twice, and the node's error
    says to lower batch_size."""
    prompt = workflow_to_api(_example("bgfs_train_critic"), server.object_info)
    prompt[_by_type(prompt, "LoadVideo")]["inputs"]["file"] = SAMPLE_VIDEO
    builder, trainer = _by_type(prompt, "BGFSCacheBuilder"), _by_type(prompt, "BGFSCriticTrainer")
    prompt[builder]["inputs"].update(cache_name="e2e_hands", crop_size=128)  # the cache the test above built
    prompt[trainer]["inputs"].update(critic_name="e2e_oom", epochs=2, batch_size=16)
    _insert_fault(prompt, trainer, "cache", "BGFSTestOutOfMemoryString", every=30)
    entry, log = _run_and_log(server, prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + log[-3000:]
    assert "BGFS Critic Trainer: out of memory; unloading the other models and resuming" in log, log[-3000:]
    assert "epoch 2/2: train loss" in entry["outputs"][trainer]["text"][0]
    assert (server.base / "models" / "bgfs_critics" / "e2e_oom.safetensors").is_file()

    prompt[trainer]["inputs"].update(critic_name="e2e_oom_twice", resume=False)
    prompt["fault"]["inputs"]["times"] = 2
    entry, log = _run_and_log(server, prompt)
    assert entry["status"]["status_str"] == "error"
    assert "BGFS Critic Trainer: still out of memory; unloading every model" in log, log[-3000:]
    error = history_messages(entry)["execution_error"]
    assert error["node_type"] == "BGFSCriticTrainer", error
    text = error["exception_message"]
    assert text.startswith("BGFS Critic Trainer: out of memory on cpu training the critic (CUDA out of memory"), text
    assert "lower batch_size (now 16)" in text, text
    assert not (server.base / "models" / "bgfs_critics" / "e2e_oom_twice.safetensors").exists()


def test_cancel_stops_training_and_the_run_resumes(server):
    prompt = workflow_to_api(_example("bgfs_train_critic"), server.object_info)
    prompt[_by_type(prompt, "LoadVideo")]["inputs"]["file"] = SAMPLE_VIDEO
    builder, trainer = _by_type(prompt, "BGFSCacheBuilder"), _by_type(prompt, "BGFSCriticTrainer")
    prompt[builder]["inputs"].update(cache_name="e2e_hands", crop_size=128)  # the cache the test above built
    prompt[trainer]["inputs"].update(critic_name="e2e_resumed", epochs=50, batch_size=16)
    log_start = len(server.log())
    entry, latency = _cancel_after(server, prompt, "epoch 1/50", "training")
    msgs = history_messages(entry)
    assert entry["status"]["status_str"] == "error" and msgs["execution_interrupted"]["node_type"] == "BGFSCriticTrainer"
    assert latency < 30.0
    assert not (server.base / "models" / "bgfs_critics" / "e2e_resumed.safetensors").exists()

    prompt[trainer]["inputs"]["epochs"] = 2  # resumes after the saved epoch(s) and trains only what is missing
    entry = server.wait(server.queue(prompt), timeout=400)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    text = entry["outputs"][trainer]["text"][0]
    assert "resuming" in server.log()[log_start:] and "epoch 1/2" not in text, text
    assert (server.base / "models" / "bgfs_critics" / "e2e_resumed.safetensors").is_file()
