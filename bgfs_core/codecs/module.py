"""`ModuleCodec`: any decoder module with ``decode(z) -> video [B, 3, T, H, W]`` (and maybe ``encode``), duck-typed.

This is how the ComfyUI node wraps ``comfy.sd.VAE.first_stage_model`` without bgfs_core importing ComfyUI:
- ``comfy.ldm.wan.vae.WanVAE`` (Wan 2.1) and ``comfy.ldm.wan.vae2_2.WanVAE`` (Wan 2.2): raw latents in, video in
  [-1, 1] out, no clamp; ``encode`` takes [-1, 1] video and returns the posterior mean.
- ``comfy.taesd.taehv.TAEHV`` (Tiny AutoEncoder for Wan, ``taew2_1`` / ``lighttaew2_1`` / ``taew2_2``): the same
  ``[B, C, T, H, W]`` layout in and out (it moves time to dim 1 internally), video in [0, 1], raw latents (its
  ``latent_format`` is None for Wan); 4t-3 frames. Its default sequential mode detaches the temporal memory, so
  gradients would stop at each frame; this adapter switches it to its ``parallel`` mode while decoding.
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import TYPE_CHECKING, Any

from ..errors import BGFSError
from .base import LatentCodec, straight_through_clamp

if TYPE_CHECKING:
    import torch


class ModuleCodec(LatentCodec):
    """Wrap a VAE-like ``torch.nn.Module``; ``signed`` says whether its pixels are in [-1, 1] (else [0, 1])."""

    def __init__(self, module: Any, *, latent_channels: int, spatial_ratio: int, temporal_ratio: int = 4,
                 signed: bool = True, name: str | None = None, context: int | None = None,
                 margin: int | None = None) -> None:
        if not callable(getattr(module, "decode", None)):
            raise BGFSError(f"{type(module).__name__} has no decode(z) method; it cannot be used as a VAE decoder.")
        self.module = module
        self._channels = int(latent_channels)
        self._spatial = int(spatial_ratio)
        self._temporal = int(temporal_ratio)
        self.signed = signed
        self._name = name or type(module).__name__
        # The window's reach, measured with random weights: the Wan VAEs as DiffusersWanCodec (the same
        # architecture: 6 cells of margin, time streamed exactly from frame 0), so the node and `bgfs fix` decode
        # the same window; anything else as TAEHV, whose change 4 cells or 2 latent frames away is 1-2% of the peak.
        wan = self._is_wan_vae()
        self.default_context = int(context if context is not None else -1 if wan else 2)
        self.default_margin = int(margin if margin is not None else 6 if wan else 4)

    @classmethod
    def from_comfy_vae(cls, vae: Any, name: str | None = None, **kwargs: Any) -> ModuleCodec:
        """Wrap a ``comfy.sd.VAE`` (duck-typed: ``first_stage_model``, ``latent_channels``, ``upscale_ratio``)."""
        import torch

        module = getattr(vae, "first_stage_model", None)
        if module is None:
            raise BGFSError("this VAE has no first_stage_model (invalid or empty VAE file); load a Wan VAE.")
        up = vae.upscale_ratio
        if isinstance(up, (tuple, list)):
            temporal = int(up[0](2) - up[0](1)) if callable(up[0]) else 1
            spatial = int(up[-1])
        else:
            raise BGFSError(f"{type(module).__name__} is an image VAE (upscale ratio {up}); a video VAE is needed.")
        # ComfyUI maps the decoder's output to [0, 1] with process_output: (x + 1) / 2 for WanVAE, identity for TAEHV.
        probe = vae.process_output(torch.tensor([-1.0, 1.0]))
        signed = bool(torch.allclose(probe.float(), torch.tensor([0.0, 1.0])))
        return cls(module, latent_channels=int(vae.latent_channels), spatial_ratio=spatial, temporal_ratio=temporal,
                   signed=signed, name=name or f"{type(module).__name__} (ComfyUI)", **kwargs)

    @property
    def name(self) -> str:
        return self._name

    @property
    def latent_channels(self) -> int:
        return self._channels

    @property
    def temporal_ratio(self) -> int:
        return self._temporal

    @property
    def spatial_ratio(self) -> int:
        return self._spatial

    def _param(self) -> torch.Tensor:
        return next(self.module.parameters())

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[T, 3, H, W]`` in [0, 1] -> latents ``[1, C, t, h, w]``, float32."""
        if not callable(getattr(self.module, "encode", None)):
            raise BGFSError(f"{self.name} cannot encode; use it as the gradient decoder of a GradientProxyCodec.")
        self.check_frames(frames)
        p = self._param()
        x = frames.to(p.device, p.dtype).permute(1, 0, 2, 3).unsqueeze(0)
        out = self.module.encode(x * 2.0 - 1.0 if self.signed else x)
        if hasattr(out, "latent_dist"):  # a diffusers-style module
            out = out.latent_dist.mode()
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return out.float()

    def _is_wan_vae(self) -> bool:
        """ComfyUI's WanVAE (2.1 or 2.2): ``conv2`` + a causal ``decoder(x, feat_cache, feat_idx)``."""
        m = self.module
        return hasattr(m, "conv2") and hasattr(m, "decoder") and "feat_cache" in inspect.signature(
            m.decoder.forward).parameters

    def decode_stream(self, latents: torch.Tensor, state: list | None = None, checkpoint_blocks: bool = False
                      ) -> tuple[torch.Tensor, list]:
        """ComfyUI WanVAE's frame loop with its causal cache passed in and out (None: a video's first frames);
        ``checkpoint_blocks``: see `bgfs_core.codecs.blocks`."""
        import torch

        from .blocks import checkpoint_cached_blocks

        self.check_latents(latents)
        m = self.module
        p = self._param()
        first = state is None
        if first:  # one cache slot per causal conv, as comfy's count_conv3d counts them
            n = sum(type(c).__name__ == "CausalConv3d" for c in m.decoder.modules())
            state = [None] * n
        feat_map = list(state)
        takes_first = "first_chunk" in inspect.signature(m.decoder.forward).parameters
        x = m.conv2(latents.to(p.device, p.dtype))
        outs = []
        with checkpoint_cached_blocks(m.decoder, enabled=checkpoint_blocks):
            for i in range(x.shape[2]):
                kw = {"first_chunk": True} if takes_first and first and i == 0 else {}
                outs.append(m.decoder(x[:, :, i:i + 1], feat_cache=feat_map, feat_idx=[0], **kw))
        video = torch.cat(outs, 2)
        if video.shape[1] != 3:  # Wan 2.2 decodes 2x2 patches: the module's own unpatchify restores them
            video = sys.modules[type(m).__module__].unpatchify(video, patch_size=2)
        frames = video[0].float().permute(1, 0, 2, 3)
        return straight_through_clamp((frames + 1.0) * 0.5 if self.signed else frames), feat_map

    def grad_stream(self, checkpoint_blocks: bool = False) -> Any:
        if not self._is_wan_vae():
            return None
        return functools.partial(self.decode_stream, checkpoint_blocks=checkpoint_blocks)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[1, C, t, h, w]`` -> frames ``[T, 3, H, W]`` in [0, 1], float32, differentiable."""
        self.check_latents(latents)
        p = self._param()
        m = self.module
        saved = {k: getattr(m, k) for k in ("parallel", "show_progress_bar") if hasattr(m, k)}
        try:
            if "parallel" in saved:  # TAEHV: the sequential mode detaches its temporal memory
                m.parallel = True
            if "show_progress_bar" in saved:
                m.show_progress_bar = False
            video = m.decode(latents.to(p.device, p.dtype))
        finally:
            for k, v in saved.items():
                setattr(m, k, v)
        if hasattr(video, "sample"):  # a diffusers-style DecoderOutput
            video = video.sample
        frames = video[0].float().permute(1, 0, 2, 3)
        return straight_through_clamp((frames + 1.0) * 0.5 if self.signed else frames)
