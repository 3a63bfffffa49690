"""Fault injection: kill -9 `predict` or `pretrain` at random moments, check what is left.

``--target predict``: a first run writes a slide's results (GeoJSON + CSV). Each trial
restores that folder, starts ``predict --overwrite --export csv`` (a different set of files,
so old and new are told apart), kills it with SIGKILL after a random share of a full run's
time, runs what the next start runs (`recover`), and classifies the slide's files: the
complete old set, the complete new set, or a mix (the failure this command exists to count).

``--target train``: each trial starts a small ``pretrain`` (ResNet-18, 64-px tiles, 30 steps),
kills it the same way, then checks that every checkpoint file in the run folder loads and
that ``--resume`` finishes the run ("resumed"; "intact, no checkpoint yet" when the kill came
before the first one), or not ("torn"); temporary files of a killed write must be gone after
the resumed start.

Without SLIDE a 2048² synthetic slide is written first; the models are the fast classical
nuclei detector (predict) and Otsu (the pretraining teacher).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

OUTCOMES = ("old", "new", "mixed")
TRAIN_OUTCOMES = ("resumed", "intact, no checkpoint yet", "torn")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slide", nargs="?", help="slide to use (default: a synthetic one)")
    parser.add_argument("--target", choices=("predict", "train"), default="predict")
    parser.add_argument("--kills", type=int, default=20, help="killed runs (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the kill times")
    parser.add_argument("--slide-mpp", type=float, default=0.5, help="µm/px if SLIDE lacks it")


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="rckd-faults-") as tmp:
        slide = Path(args.slide) if args.slide else _synthetic(Path(tmp) / "slide.tif")
        if args.target == "train":
            return _train_faults(args, slide, Path(tmp))
        return _predict_faults(args, slide, Path(tmp))


def _predict_faults(args: argparse.Namespace, slide: Path, tmp: Path) -> int:
    from napari_rckd.inference.outputs import recover, slide_outputs
    from napari_rckd.report import report

    rng = np.random.default_rng(args.seed)
    counts: Counter = Counter()
    stem = slide.stem
    pristine, out = tmp / "pristine", tmp / "out"
    started = time.perf_counter()
    _predict(slide, pristine, args.slide_mpp, "geojson,csv").wait()
    full = time.perf_counter() - started
    old = _fingerprint(pristine, stem, slide_outputs)
    for _ in range(args.kills):
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(pristine, out)
        process = _predict(slide, out, args.slide_mpp, "csv", "--overwrite")
        time.sleep(float(rng.uniform(0, full * 1.1)))
        process.send_signal(signal.SIGKILL)
        process.wait()
        recover(out)
        state = _fingerprint(out, stem, slide_outputs)
        names = set(state)
        if state == old:
            counts["old"] += 1
        elif names == {f"{stem}.zarr", f"{stem}.nuclei.csv"} and state[f"{stem}.zarr"]:
            counts["new"] += 1
        else:
            counts["mixed"] += 1
            print(f"mixed: {json.dumps(state)}", file=sys.stderr)
    rows = [{"state after kill -9 and the next start": k, "runs": counts[k]} for k in OUTCOMES]
    report(
        f"predict killed at random moments ({args.kills} runs, seed {args.seed})",
        rows,
        args.json,
        full_run_s=round(full, 1),
    )
    return 1 if counts["mixed"] else 0


def _train_faults(args: argparse.Namespace, slide: Path, tmp: Path) -> int:
    from napari_rckd.report import report

    rng = np.random.default_rng(args.seed)
    counts: Counter = Counter()
    started = time.perf_counter()
    _pretrain(slide, tmp / "full", args.slide_mpp).wait()
    full = time.perf_counter() - started
    for trial in range(args.kills):
        out = tmp / f"run{trial}"
        process = _pretrain(slide, out, args.slide_mpp)
        time.sleep(float(rng.uniform(0, full * 1.1)))
        process.send_signal(signal.SIGKILL)
        process.wait()
        problem, outcome = _unloadable(out), "intact, no checkpoint yet"
        if problem is None and (out / "last.state.pt").exists():
            outcome = "resumed"
            if _pretrain(slide, out, args.slide_mpp, "--resume").wait() != 0:
                problem = "--resume failed"
            elif list(out.glob(".*.tmp")):
                problem = "temporary files left after the resumed start"
        counts["torn" if problem else outcome] += 1
        if problem:
            print(f"torn: {problem}", file=sys.stderr)
        shutil.rmtree(out, ignore_errors=True)
    rows = [{"run folder after kill -9": k, "runs": counts[k]} for k in TRAIN_OUTCOMES]
    title = f"pretrain killed at random moments ({args.kills} runs, seed {args.seed})"
    report(title, rows, args.json, full_run_s=round(full, 1))
    return 1 if counts["torn"] else 0


def _unloadable(out: Path) -> str | None:
    """Why a checkpoint file of the run cannot be loaded, or None when all that exist load."""
    from napari_rckd.errors import RckdError
    from napari_rckd.models import load_checkpoint
    from napari_rckd.training.checkpointing import load_state

    try:
        for name in ("last.safetensors", "best.safetensors"):
            if (out / name).exists():
                load_checkpoint(out / name)
        if (out / "last.state.pt").exists():
            load_state(out / "last.state.pt")
    except RckdError as error:
        return str(error)
    return None


def _pretrain(slide: Path, out: Path, mpp: float, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "napari_rckd.cli", "pretrain", str(slide), "--out", str(out)]
    command += ["--teacher", "otsu", "--backbone", "resnet18", "--tile-size", "64"]
    command += ["--tiles", "32", "--val-tiles", "8", "--steps", "30", "--batch-size", "4"]
    command += ["--workers", "0", "--slide-mpp", str(mpp), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _predict(slide: Path, out: Path, mpp: float, exports: str, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "napari_rckd.cli", "predict", str(slide), "--out", str(out)]
    command += ["--nuclei", "classical", "--slide-mpp", str(mpp), "--export", exports, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _fingerprint(out: Path, stem: str, slide_outputs) -> dict:
    """Per output: the CSV/GeoJSON bytes' size, or for the .zarr whether it is complete."""
    state = {}
    for path in slide_outputs(out, stem):
        if path.suffix == ".zarr":
            attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
            state[path.name] = bool(attrs.get("napari_rckd_complete"))
        else:
            state[path.name] = path.stat().st_size
    return state


def _synthetic(path: Path) -> Path:
    from napari_rckd.io.synthetic import make_synthetic_slide

    make_synthetic_slide(path, size=2048)
    return path
