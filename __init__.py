"""ComfyUI entry point of the BGFS node pack.

Nothing heavy happens here: the nodes module is imported when ComfyUI asks for the extension, and the nodes import
torch, mediapipe and the rest only when they run. Relative imports only (ComfyUI loads this under a mangled name).
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import BGFSExtension

    return BGFSExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
