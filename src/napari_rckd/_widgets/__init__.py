"""napari glue: the dock widgets and the live-analysis binding of a viewer to the engine.

This is the only package that imports Qt, magicgui or napari; everything it calls (inference,
training, io) runs headless. Widgets lay out and wire controls and delegate to plain classes.

Importing it keeps triton out of the viewer's process. torch (through timm's use of
torch._dynamo) imports triton when it is installed, and triton's bundled LLVM crashes the
process if it loads after Mesa's llvmpipe has made the GL context (software OpenGL: Xvfb,
virtual machines, remote desktops). The viewer process never compiles GPU kernels (training
runs in a child process), so it loses nothing by not having triton.
"""

import sys

if "triton" not in sys.modules:
    sys.modules["triton"] = None  # `import triton` now raises ImportError: torch then skips it
