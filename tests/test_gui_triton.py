"""triton loads beside the viewer's software OpenGL without crashing it, and stays a real module.

triton's bundled LLVM, loaded after Mesa's llvmpipe made the GL context, once crashed napari
(Xvfb, virtual machines, remote desktops). The check runs in a fresh interpreter, with the GL
context made first, as in a viewer the user opened before docking a widget."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gui

SCRIPT = """
import sys
import numpy as np
import napari

viewer = napari.Viewer(show=False)
viewer.add_image(np.zeros((8, 8)))
viewer.screenshot(canvas_only=True)  # the GL context exists before triton loads
import napari_rckd._widgets  # noqa: F401  (what docking a widget imports first)
import timm, torch

out = timm.create_model("resnet18").eval()(torch.zeros(1, 3, 64, 64))
print(type(sys.modules["triton"]).__name__, tuple(out.shape))
viewer.close()
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_loads_after_the_gl_context_without_crashing():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "module (1, 1000)"
