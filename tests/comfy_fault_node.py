"""A test-only ComfyUI node (copied into the test server's custom_nodes, never shipped): it passes a LATENT through
and arms a fault, so that the device "runs out of memory" in the next node's 3-D convolutions (the Wan VAE's), as a
GPU does when the diffusion model still holds its memory. After ``times`` faults the real convolution is back."""

import torch
import torch.nn.functional as F


class BGFSTestOutOfMemory:
    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI's V1 node API)
        return {"required": {"latent": ("LATENT",), "every": ("INT", {"default": 20, "min": 1}),
                             "times": ("INT", {"default": 1, "min": 1})}}  # fmt: skip

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "arm"
    CATEGORY = "testing"

    def arm(self, latent, every, times):
        real = getattr(F.conv3d, "bgfs_real", F.conv3d)
        state = {"calls": 0, "faults": 0}

        def conv3d(*args, **kwargs):
            state["calls"] += 1
            if state["calls"] % every == 0:
                state["faults"] += 1
                if state["faults"] >= times:
                    F.conv3d = real  # disarmed: the next attempt runs for real
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
            return real(*args, **kwargs)

        conv3d.bgfs_real = real
        F.conv3d = conv3d
        return (latent,)


NODE_CLASS_MAPPINGS = {"BGFSTestOutOfMemory": BGFSTestOutOfMemory}
