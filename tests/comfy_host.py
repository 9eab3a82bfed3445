"""A real ComfyUI server for the integration tests, and what it needs: a base folder with the pack linked in, a tiny
random-weight Wan 2.1 VAE, a tiny critic, a sample video, and a converter from frontend workflows to API prompts.

``COMFYUI_DIR`` names the ComfyUI checkout; ``COMFY_PYTHON`` its Python (default ``$COMFYUI_DIR/../comfyui-venv/
bin/python`` if it exists, else this interpreter). Without them the tests skip, loudly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PACK = "bgfs"  # folder name under custom_nodes/
TINY_VAE = "bgfs_tiny_wan21_vae.safetensors"  # the name the CPU example workflow uses
TINY_CRITIC = "bgfs_tiny_hands_critic.safetensors"
SAMPLE_VIDEO = "bgfs_hand_sample.mp4"
# Frontend-only node types: they never reach the server, so /object_info does not list them.
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


# --- locating the host ---------------------------------------------------------------------------------------------


def comfy_dir() -> Path | None:
    value = os.environ.get("COMFYUI_DIR")
    if not value:
        return None
    path = Path(value)
    return path if (path / "main.py").is_file() else None


def comfy_python(comfy: Path) -> str:
    if os.environ.get("COMFY_PYTHON"):
        return os.environ["COMFY_PYTHON"]
    venv = comfy.parent / "comfyui-venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def require_comfy() -> tuple[Path, str]:
    """(checkout, python) or a loud skip that says how to run these tests."""
    import pytest

    comfy = comfy_dir()
    if comfy is None:
        msg = ("COMFYUI_DIR is not set to a ComfyUI checkout (a folder with main.py): the ComfyUI integration tests "
               "are SKIPPED. Run `COMFYUI_DIR=/opt/comfyui python -m pytest tests/test_comfyui_integration.py`.")  # fmt: skip
        print(f"\n!!! {msg}", file=sys.stderr)
        warnings.warn(msg, stacklevel=2)
        pytest.skip(msg)
    return comfy, comfy_python(comfy)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the base folder and its files ---------------------------------------------------------------------------------


def make_base_dir(base: Path) -> Path:
    """ComfyUI's --base-directory layout with the pack linked in as custom_nodes/bgfs."""
    for sub in ("custom_nodes", "models/vae", "models/bgfs_critics", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    return base


_TINY_VAE_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import comfy.cli_args
comfy.cli_args.args.cpu = True  # before comfy.model_management is imported
import torch, safetensors.torch
from comfy.ldm.wan.vae import WanVAE
torch.manual_seed(int(sys.argv[4]))
dim = int(sys.argv[3])
wan = WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
             temperal_downsample=[False, True, True], image_channels=3, dropout=0.0)
# comfy.ops layers are created uninitialised (torch.empty): fill every weight explicitly.
with torch.no_grad():
    for name, p in wan.named_parameters():
        if name.endswith("gamma"):
            p.fill_(1.0)
        elif p.dim() > 1:
            torch.nn.init.kaiming_uniform_(p, a=5 ** 0.5)
        else:
            p.zero_()
sd = {k: v.contiguous() for k, v in wan.state_dict().items()}
assert all(torch.isfinite(v).all() for v in sd.values())
safetensors.torch.save_file(sd, sys.argv[2])
"""


def build_tiny_wan_vae(python: str, comfy: Path, out: Path, dim: int = 8, seed: int = 0) -> Path:
    """A random-weight Wan 2.1 VAE of width ``dim`` built with ComfyUI's own class (so VAELoader detects it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([python, "-c", _TINY_VAE_SCRIPT, str(comfy), str(out), str(dim), str(seed)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"building the tiny Wan VAE failed:\n{proc.stdout}\n{proc.stderr}")
    return out


# ComfyUI's video VAE classes, by the names the tests and benches use
COMFY_CLASSES = {"wan21": ("comfy.ldm.wan.vae", "WanVAE"), "wan22": ("comfy.ldm.wan.vae2_2", "WanVAE"),
                 "taehv": ("comfy.taesd.taehv", "TAEHV")}


def load_comfy_module(comfyui_dir: str, kind: str, device: str = "cpu", seed: int = 0, **kwargs: Any) -> Any:
    """ComfyUI's own ``kind`` (a COMFY_CLASSES key) imported in this process from a checkout and built as its
    constructor takes ``kwargs``, random weights (``seed``), frozen. TAEHV with 16 channels is the (light)taew2_1
    architecture; with 48 (2x2 pixel patches) lighttaew2_2's, for the Wan 2.2 VAE's latents. ``device`` says
    where it will run: on a CPU ComfyUI probes no GPU; on CUDA it makes its own choices (PyTorch attention in the
    VAE, as on a user's machine)."""
    import importlib

    import torch

    if comfyui_dir not in sys.path:
        sys.path.insert(0, comfyui_dir)
    import comfy.cli_args

    comfy.cli_args.args.cpu = torch.device(device).type == "cpu"  # before comfy.model_management is imported
    path, name = COMFY_CLASSES[kind]
    torch.manual_seed(seed)
    module = getattr(importlib.import_module(path), name)(**kwargs)
    for m in module.modules():  # comfy.ops.disable_weight_init skips init: the weights would be garbage
        for base in (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear):
            if isinstance(m, base):
                base.reset_parameters(m)
    return module.eval().requires_grad_(False)


def build_tiny_critic(out: Path, region: str = "hands", seed: int = 0) -> Path:
    """A small untrained heatmap critic (random weights are enough to wire the fixer)."""
    import torch

    from bgfs_core.critic import CriticSpec, HeatmapCritic
    from bgfs_core.critic_io import save_critic

    spec = CriticSpec.for_region(region, input_hw=(64, 64), heatmap_hw=(32, 32), width=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HeatmapCritic(spec)
    return save_critic(out, model, spec, {"train_summary": {"note": "untrained, for wiring tests"}})


def write_sample_video(out: Path, frames: Any, fps: float = 16.0) -> Path:
    from bgfs_core.video_io import write_video

    return write_video(out, frames, fps)


# --- the server ------------------------------------------------------------------------------------------------------


class ComfyServer:
    """``python main.py --cpu ...`` on a free loopback port with ``base`` as its base directory; ``extra_args``:
    more of ComfyUI's command-line flags."""

    def __init__(self, comfy: Path, python: str, base: Path, port: int | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.comfy, self.python, self.base, self.extra_args = comfy, python, base, tuple(extra_args)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        self.proc: subprocess.Popen | None = None
        self.startup_seconds = 0.0

    def start(self, timeout: float = 180.0) -> ComfyServer:
        cmd = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--disable-auto-launch", "--database-url", "sqlite:///:memory:", *self.extra_args]  # fmt: skip
        started = time.perf_counter()
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.comfy, stdout=log, stderr=subprocess.STDOUT)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} while starting:\n{self.log()[-4000:]}")
            try:
                self.get("/object_info/KSampler", timeout=5)
                break
            except (OSError, urllib.error.URLError):
                if time.perf_counter() - started > timeout:
                    self.stop()
                    raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log()[-4000:]}") from None
                time.sleep(0.3)
        self.startup_seconds = time.perf_counter() - started
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- HTTP ---
    def request(self, path: str, data: Any = None, timeout: float = 30.0) -> tuple[int, bytes]:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, body, {"Content-Type": "application/json"} if body else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path: str, timeout: float = 30.0) -> Any:
        status, body = self.request(path, timeout=timeout)
        if status != 200:
            raise AssertionError(f"GET {path} -> {status}: {body[:2000]!r}")
        return json.loads(body)

    def post(self, path: str, data: Any, timeout: float = 30.0) -> Any:
        status, body = self.request(path, data, timeout=timeout)
        if status != 200:
            raise AssertionError(f"POST {path} -> {status}: {body[:4000].decode(errors='replace')}")
        return json.loads(body) if body.strip() else None

    def queue(self, prompt: dict, client_id: str = "bgfs-tests") -> str:
        return self.post("/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """The /history entry of a prompt once it has finished (success, error or interrupt)."""
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                return hist[prompt_id]
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"ComfyUI died while running {prompt_id}:\n{self.log()[-4000:]}")
            time.sleep(0.25)
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{self.log()[-3000:]}")

    def running(self) -> list:
        return self.get("/queue")["queue_running"]


class EventListener:
    """ComfyUI's websocket (``/ws``) for one client id, read in a thread: the JSON events its frontend gets (some,
    such as an ExecutionBlocker's error, reach only the frontend, not /history). Standard library only."""

    def __init__(self, port: int, client_id: str) -> None:
        import base64
        import threading

        self.events: list[dict] = []
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise AssertionError(f"no websocket: {head[:200]!r}")
        self.sock.settimeout(None)
        threading.Thread(target=self._read, daemon=True).start()

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _read(self) -> None:
        try:
            while True:
                b0, b1 = self._exact(2)
                size = b1 & 0x7F
                if size >= 126:
                    size = int.from_bytes(self._exact(2 if size == 126 else 8), "big")
                payload = self._exact(size)  # a server's frames are not masked
                if b0 & 0x0F == 1:  # text: a JSON event (binary frames are previews)
                    self.events.append(json.loads(payload))
                elif b0 & 0x0F == 8:
                    return
        except (OSError, EOFError, ValueError):
            return

    def of_type(self, kind: str) -> list[dict]:
        return [e.get("data", {}) for e in self.events if e.get("type") == kind]

    def close(self) -> None:
        self.sock.close()


def history_messages(entry: dict) -> dict[str, dict]:
    """The status messages of a /history entry by event name (the last of each)."""
    return dict(entry.get("status", {}).get("messages", []))


# --- frontend workflow -> API prompt -----------------------------------------------------------------------------


def _is_widget(spec: list) -> bool:
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return (isinstance(spec[0], list) or spec[0] in WIDGET_TYPES) and not opts.get("forceInput")


def _extra_values(name: str, spec: list) -> int:
    """Widget values the frontend stores after this input's own: the seed control, the upload button."""
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    n = 0
    if opts.get("control_after_generate") or (spec[0] == "INT" and name in ("seed", "noise_seed")):
        n += 1
    if any(opts.get(k) for k in ("image_upload", "video_upload", "audio_upload")):
        n += 1
    return n


def workflow_to_api(workflow: dict, object_info: dict) -> dict:
    """Turn a frontend workflow (``nodes`` + ``links``, as the templates store it) into an API prompt.

    Virtual nodes (notes, reroutes) and muted nodes (mode 2) are dropped; a bypassed node (mode 4) passes each
    output through from its first input of the same type. Widget values are matched to the node's widget inputs in
    /object_info order. Unknown node types raise, naming them.
    """
    nodes = {int(n["id"]): n for n in workflow["nodes"]}
    links = {int(lk[0]): lk for lk in workflow["links"]}  # id -> [id, from, from_slot, to, to_slot, type]

    def source(link_id: int | None) -> list | None:
        """[node id, slot] feeding a link, followed through reroutes and bypassed nodes; None if nothing does."""
        seen = 0
        while link_id is not None and seen < 100:
            seen += 1
            _, src, slot, _, _, typ = links[int(link_id)]
            node = nodes[int(src)]
            if node["type"] == "Reroute" or node.get("mode", 0) == 4:
                ins = [i for i in node.get("inputs", []) if i.get("link") is not None]
                match = next((i for i in ins if node["type"] == "Reroute" or i.get("type") == typ), None)
                link_id = None if match is None else match["link"]
                continue
            if node.get("mode", 0) == 2:
                return None
            return [str(src), int(slot)]
        return None

    missing = sorted({n["type"] for n in nodes.values() if n["type"] not in object_info and n["type"] not in VIRTUAL_NODES})
    if missing:
        raise KeyError(f"node types not known to this ComfyUI: {', '.join(missing)}")
    prompt: dict[str, dict] = {}
    for nid, node in nodes.items():
        if node["type"] in VIRTUAL_NODES or node.get("mode", 0) in (2, 4):
            continue
        info = object_info[node["type"]]
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        order = info.get("input_order", {})
        names = list(order.get("required", [])) + list(order.get("optional", []))
        linked = {i["name"]: i.get("link") for i in node.get("inputs", [])}
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), dict):  # some nodes store {name: value}
            values = []
        inputs: dict[str, Any] = {}
        pos = 0
        for name in names:
            spec = specs[name]
            if _is_widget(spec):
                if pos < len(values):
                    inputs[name] = values[pos]
                pos += 1 + _extra_values(name, spec)
            if linked.get(name) is not None:
                src = source(linked[name])
                if src is not None:
                    inputs[name] = src
                else:
                    inputs.pop(name, None)
        prompt[str(nid)] = {"class_type": node["type"], "inputs": inputs, "_meta": {"title": node.get("title", node["type"])}}
    return prompt
