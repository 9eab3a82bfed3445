"""bgfs_core: the host-agnostic library under the BGFS ComfyUI pack and the ``bgfs`` command line.

Importing it is cheap: torch, mediapipe, diffusers and the rest are imported by the functions that need them.
"""

__version__ = "0.1.0"
