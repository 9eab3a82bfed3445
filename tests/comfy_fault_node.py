"""Test-only ComfyUI nodes (copied into the test server's custom_nodes, never shipped): each passes its input
through and arms a fault (or, BGFSTestGuardKeeps, a verdict), so that the device "runs out of memory" in the next node's convolutions (3-D: the Wan
VAE's; 2-D: the critic's), as a GPU does when a diffusion model still holds its memory. After ``times`` faults the
real convolution is back."""

import torch
import torch.nn.functional as F


def _arm(op: str, every: int, times: int) -> None:
    real = getattr(getattr(F, op), "bgfs_real", getattr(F, op))
    state = {"calls": 0, "faults": 0}

    def faulty(*args, **kwargs):
        state["calls"] += 1
        if state["calls"] % every == 0:
            state["faults"] += 1
            if state["faults"] >= times:
                setattr(F, op, real)  # disarmed: the next attempt runs for real
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
        return real(*args, **kwargs)

    faulty.bgfs_real = real
    setattr(F, op, faulty)


class BGFSTestOutOfMemory:
    """A LATENT through; the Wan VAE's 3-D convolutions fail (the Fixer)."""

    TYPE, OP = "LATENT", "conv3d"
    RETURN_TYPES = (TYPE,)
    FUNCTION = "arm"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's V1 node API)
        return {"required": {"value": (cls.TYPE,), "every": ("INT", {"default": 20, "min": 1}),
                             "times": ("INT", {"default": 1, "min": 1})}}  # fmt: skip

    def arm(self, value, every, times):
        _arm(self.OP, every, times)
        return (value,)


class BGFSTestOutOfMemoryString(BGFSTestOutOfMemory):
    """A STRING (a cache path) through; the critic's 2-D convolutions fail (the Critic Trainer)."""

    TYPE, OP = "STRING", "conv2d"
    RETURN_TYPES = (TYPE,)


class BGFSTestGuardKeeps:
    """A LATENT through; the next Fixer's guard keeps its edit whatever MediaPipe finds (a tiny random VAE decodes
    noise, in which the hand is always lost), once: the path a real VAE takes when the fix helps."""

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "arm"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's V1 node API)
        return {"required": {"value": ("LATENT",), "tag": ("INT", {"default": 0})}}

    def arm(self, value, tag):
        import sys

        from server import PromptServer

        (judge,) = [m for name, m in sys.modules.items() if name.endswith(".bgfs_core.fix_video")]
        real = getattr(judge.geometry_worse, "bgfs_real", judge.geometry_worse)
        armed_in = PromptServer.instance.last_prompt_id

        def keeps(report):
            judge.geometry_worse = real  # once, and only in this prompt: a later one gets the real verdict
            return False if PromptServer.instance.last_prompt_id == armed_in else real(report)

        keeps.bgfs_real = real
        judge.geometry_worse = keeps
        return (value,)


NODE_CLASS_MAPPINGS = {"BGFSTestOutOfMemory": BGFSTestOutOfMemory,
                       "BGFSTestOutOfMemoryString": BGFSTestOutOfMemoryString,
                       "BGFSTestGuardKeeps": BGFSTestGuardKeeps}
