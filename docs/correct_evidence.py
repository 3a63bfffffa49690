"""Few corrections, measured gain (docs/correct.md): a simulated user on a source the starting
model never saw.

The ground truth of k images of the held-out source (``--source``, drawn at random per seed)
plays the user's corrections. The starting model (``--init``, e.g. a leave-one-source-out
teacher made by ``train-teacher --holdout SOURCE``) is fine-tuned on them with the defaults of
``finetune --task nuclei`` plus replay of the labelled sources it was trained on (``--replay``).
Then the *other* images of the source are scored before and after, paired (Dice, AJI, PQ), and
the replay sources too (forgetting).

    python docs/correct_evidence.py ../shared/data --init runs/loso-cpm15/best.safetensors+classical \
        --source cpm15 --replay cryonuseg monuseg-train --k 1 3 5 --seeds 0 1 2 --out evidence

Writes OUT/<k>-<seed>.json per run and OUT/summary.json; prints one line per run and the mean
gain per k. Runs already in OUT are read back, not repeated.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

METRICS = ("dice", "aji", "pq")


def scores_of(spec: str, images, cache: dict) -> dict[str, dict]:
    """Per-image Dice/AJI/PQ of ``spec`` on ``images``; ``cache`` keeps the starting model's."""
    from napari_rckd.teachers import get_teacher
    from napari_rckd.teachers.evaluation import evaluate_teacher

    missing = [g for g in images if (spec, str(g.image_path)) not in cache]
    if missing:
        per_image: list[dict] = []
        evaluate_teacher(get_teacher(spec, device="cpu"), missing, per_image)
        for item, row in zip(missing, per_image, strict=True):
            cache[(spec, str(item.image_path))] = {m: float(row[m]) for m in METRICS}
    return {g.image_path.name: cache[(spec, str(g.image_path))] for g in images}


def mean(per_image: dict[str, dict]) -> dict[str, float]:
    return {m: float(np.mean([row[m] for row in per_image.values()])) for m in METRICS}


def corrections_folder(chosen, folder: Path) -> Path:
    """The chosen ground truth as a nuclei folder with its manifest, as Analyze slide saves."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "truth").mkdir(parents=True)
    rows = ["path,mpp"]
    for item in chosen:
        shutil.copy(item.image_path, folder / "truth")
        shutil.copy(item.label_path, folder / "truth")
        rows.append(f"truth/{item.image_path.name},{item.mpp}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


def one_run(args, k: int, seed: int, source, others_by_source, cache) -> dict:
    from napari_rckd.training.nuclei_finetune import NucleiRecipe, finetune_nuclei

    rng = np.random.default_rng(seed)
    chosen = [source[i] for i in sorted(rng.choice(len(source), size=k, replace=False))]
    names = {g.image_path.name for g in chosen}
    others = [g for g in source if g.image_path.name not in names]
    run_dir = args.out / f"k{k}-s{seed}"
    corrections = corrections_folder(chosen, run_dir / "corrections")
    recipe = NucleiRecipe(
        init=args.init, holdout_share=0, seed=seed, device="cpu", lr=args.lr, **args.changes
    )
    start = time.time()
    shutil.rmtree(run_dir / "run", ignore_errors=True)
    result = finetune_nuclei([corrections], run_dir / "run", recipe, replay=args.replay_dirs)
    figures = {"k": k, "seed": seed, "init": args.init, "lr": args.lr, "changes": args.changes}
    figures["corrections"] = sorted(names)
    figures["train_s"] = round(time.time() - start, 1)
    for when, spec in (("before", args.init), ("after", result.spec)):
        figures[f"source_{when}"] = scores_of(spec, others, cache)
        for name, images in others_by_source.items():
            figures[f"{name}_{when}"] = scores_of(spec, images, cache)
    return figures


def line(figures: dict, elsewhere: list[str]) -> str:
    b, a = mean(figures["source_before"]), mean(figures["source_after"])
    text = f"k={figures['k']} seed={figures['seed']} {','.join(figures['corrections'])}: "
    text += " ".join(f"{m} {b[m]:.3f}→{a[m]:.3f}" for m in METRICS)
    for name in elsewhere:
        d = mean(figures[f"{name}_after"])["dice"] - mean(figures[f"{name}_before"])["dice"]
        text += f" | {name} Dice {d:+.3f}"
    return text


def main() -> None:
    from napari_rckd.teachers.evaluation import find_ground_truth

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="shared data folder (nuclei/, manifest.csv)")
    parser.add_argument("--init", required=True, help="the starting nuclei model")
    parser.add_argument("--source", required=True, help="the held-out source under nuclei/")
    parser.add_argument("--replay", nargs="*", default=[], help="sources the start trained on")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lr", type=float, default=None, help="default: finetune's")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="another NucleiRecipe value, e.g. train_encoder=True or steps=200",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.changes = {k: json.loads(v.lower()) for k, v in (c.split("=", 1) for c in args.set)}
    if args.lr is None:
        from napari_rckd.training.nuclei_finetune import NUCLEI_FINETUNE_LR

        args.lr = NUCLEI_FINETUNE_LR
    nuclei = args.data / "nuclei"
    args.replay_dirs = [nuclei / name for name in args.replay]
    args.out.mkdir(parents=True, exist_ok=True)
    source = find_ground_truth(nuclei / args.source)
    others_by_source = {name: find_ground_truth(nuclei / name) for name in args.replay}
    cache: dict = {}
    runs = []
    for k in args.k:
        for seed in args.seeds:
            path = args.out / f"k{k}-s{seed}.json"
            if path.is_file():
                figures = json.loads(path.read_text())
            else:
                figures = one_run(args, k, seed, source, others_by_source, cache)
                path.write_text(json.dumps(figures, indent=1))
            runs.append(figures)
            print(line(figures, args.replay), flush=True)
    summary = {}
    for k in args.k:
        of_k = [r for r in runs if r["k"] == k]
        gains = {
            m: [mean(r["source_after"])[m] - mean(r["source_before"])[m] for r in of_k]
            for m in METRICS
        }
        summary[k] = {
            m: [float(np.mean(g)), float(min(g)), float(max(g))] for m, g in gains.items()
        }
        for name in args.replay:
            drops = [
                mean(r[f"{name}_after"])["dice"] - mean(r[f"{name}_before"])["dice"] for r in of_k
            ]
            summary[k][f"{name}_dice"] = [
                float(np.mean(drops)),
                float(min(drops)),
                float(max(drops)),
            ]
        print(f"k={k}: mean gain (min..max) " + ", ".join(
            f"{key} {v[0]:+.3f} ({v[1]:+.3f}..{v[2]:+.3f})" for key, v in summary[k].items()
        ))  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
