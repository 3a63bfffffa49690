"""Run the whole workflow on the synthetic sample slide and screenshot every step.

Open the sample, annotate it from its ground truth, train (RCKD stage 1, then stage 2 for
subtype and cancer region), follow a pan-and-zoom path with live analysis, export; screenshots,
exports and demo.json (steps, timings, checkpoints, tiles, files) go into --out. With
--headless no window is shown; without a display a private Xvfb is started (napari's canvas
needs OpenGL, which Qt's offscreen platform does not give).
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import subprocess
from contextlib import contextmanager, nullcontext
from pathlib import Path

from napari_rckd.errors import RckdError

log = logging.getLogger(__name__)

# Training per stage: the demo shows the workflow (fast) or models worth looking at (full). The
# demo waits while training moves, however long that takes here (demo_script.STALL_S).
BUDGETS = {"fast": {"steps": 20, "tiles": 64}, "full": {"steps": 300, "tiles": 512}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for screenshots, exports, demo.json")
    parser.add_argument("--headless", action="store_true", help="no window; close when done")
    parser.add_argument(
        "--budget",
        choices=sorted(BUDGETS),
        default="fast",
        help="fast (default: minutes on a laptop CPU, models barely trained) or full (models "
        "that learn; tens of minutes on a CPU, a few on a GPU)",
    )
    parser.add_argument("--steps", type=int, help="training steps per stage (overrides --budget)")
    parser.add_argument("--tiles", type=int, help="stage-1 tissue tiles (overrides --budget)")
    parser.add_argument("--backbone", default="rckd_csat", help="student backbone (timm name)")
    parser.add_argument("--device", default="cpu", help="training and inference device")


@contextmanager
def virtual_display():
    """A private Xvfb for the run when there is no display; nothing to do when there is one."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        yield
        return
    if shutil.which("Xvfb") is None:
        raise RckdError(
            "--headless needs a display for napari's OpenGL canvas and Xvfb is not installed; "
            "install it (apt install xvfb) or run under `xvfb-run -a napari-rckd demo ...`"
        )
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
        pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    if not number:
        server.kill()
        raise RckdError("Xvfb did not start; run under `xvfb-run -a napari-rckd demo ...`")
    os.environ["DISPLAY"] = f":{number}"
    atexit.register(server.terminate)  # after Qt let go of the display, not before
    yield


def training_budget(args: argparse.Namespace) -> tuple[int, int]:
    """Steps per stage and stage-1 tiles: --budget's, unless --steps / --tiles say otherwise."""
    budget = BUDGETS[args.budget]
    steps = budget["steps"] if args.steps is None else args.steps
    return steps, budget["tiles"] if args.tiles is None else args.tiles


def run(args: argparse.Namespace) -> int:
    args.steps, args.tiles = training_budget(args)
    if args.steps < 1:
        raise RckdError(f"--steps must be at least 1, got {args.steps}")
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    # recent-model lists of this throwaway run stay in its folder, not the user's settings
    os.environ.setdefault("NAPARI_RCKD_CONFIG", str(out / "config"))
    with virtual_display() if args.headless else nullcontext():
        # demo_script's package (napari_rckd._widgets) keeps triton, whose LLVM clashes with
        # Mesa's software OpenGL, out of this process before the viewer makes its GL context
        import napari

        from napari_rckd._widgets.demo_script import DemoConfig, run_demo

        config = DemoConfig(
            out=out, steps=args.steps, tiles=args.tiles, backbone=args.backbone, device=args.device
        )
        viewer = napari.Viewer(title="napari-rckd demo", show=not args.headless)
        viewer.window.resize(1500, 950)
        try:
            summary = run_demo(viewer, config)
        finally:
            if args.headless:
                viewer.close()
        log.info("screenshots, exports and %s are in %s", summary.name, out)
        if not args.headless:
            napari.run()
    return 0
