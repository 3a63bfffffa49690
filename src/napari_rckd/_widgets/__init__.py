"""napari glue: the dock widgets and the live-analysis binding of a viewer to the engine.

This is the only package that imports Qt, magicgui or napari; everything it calls (inference,
training, io) runs headless. Widgets lay out and wire controls and delegate to plain classes.

Importing it loads triton, when it is installed, with its own LLVM. torch imports triton on
the way to torch._dynamo (here through timm -> torchvision.ops), and triton's bundled LLVM,
loaded after Mesa's llvmpipe has made the viewer's GL context (software OpenGL: Xvfb, virtual
machines, remote desktops), binds to Mesa's LLVM symbols and crashes the process. Loading its
extension with ``RTLD_DEEPBIND`` makes it use its own symbols first; triton stays a working
module (torch.compile keeps its GPU backend), unlike hiding it from the whole process.
"""

import importlib.util
import logging
import os
import sys


def _load_triton_with_its_own_llvm() -> None:
    deepbind = getattr(
        os, "RTLD_DEEPBIND", None
    )  # glibc only: elsewhere there is no llvmpipe clash
    if deepbind is None or "triton" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | deepbind)
    try:
        import triton  # noqa: F401
    except Exception as error:  # a broken triton install: torch will say so if it needs it
        logging.getLogger(__name__).debug("triton did not load: %s", error)
    finally:
        sys.setdlopenflags(flags)


_load_triton_with_its_own_llvm()
