"""RCKD stage 2 as an experiment: does a stage-1 start beat random weights when labels are few?

For every fold, seed, label budget and init, a classifier is fine-tuned on the chosen
training groups through the same recipe and fit loop as `napari-rckd finetune` (no
validation split, no checkpoint choice: the last weights are tested), then scored on the
test tiles. --train and --test hold one sub-folder per class and may hold a groups.csv
(class,group,file: tiles of one source image, slide or patient share a group); without one
each file is its own group. Without --test, --train is split into --folds grouped folds
stratified by class. A budget is the fraction of each class's training groups, drawn per
seed and nested (the 5 % groups are among the 20 %). Tiles without a recorded µm/px
(LC25000's 224-px tiles) are resized to --tile-size and read as --mpp, i.e. the whole tile
is assumed to span --tile-size × --mpp µm; --data-mpp gives their real scale instead.

Prints mean ± sd over seeds and folds per init and budget, then the paired difference of
every init to `none` (same seed, fold and groups) with a 95 % t-interval. Ctrl-C stops after
the current step and keeps the finished runs (in the table and in --json, written after
every run); --resume continues them, training only the runs the file lacks.

--task segment trains region segmenters instead, on SYNTHETIC mosaics of the same tiles
(benign vs tumour, scored by mIoU): see `napari_rckd.bench.transfer_mosaic`.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from napari_rckd.bench import transfer_mosaic
from napari_rckd.bench.transfer_stats import METRICS
from napari_rckd.commands.finetune import add_recipe_arguments

# Chosen so that `--inits csat,none --budgets 0.1 --seeds 2` on lc25000-lung-dev with a
# 600-tile --test takes about 13 of the 20 minutes allowed on a 2-core CPU; see docs/rckd.md.
DEFAULT_STEPS = 100
DEFAULT_BATCH = 32
DEFAULT_TILE = 128


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, metavar="DIR", help="class folders to train on")
    parser.add_argument(
        "--test",
        metavar="DIR",
        help="class folders to test on (default: grouped K-fold on --train)",
    )
    parser.add_argument("--folds", type=int, default=3, help="folds without --test (default 3)")
    parser.add_argument(
        "--task",
        choices=("classify", "segment"),
        default="classify",
        help="classify the tiles (default), or segment benign vs tumour regions in SYNTHETIC "
        "mosaics of them (mIoU)",
    )
    transfer_mosaic.add_arguments(parser)
    parser.add_argument(
        "--inits",
        type=_names,
        default=["csat", "none"],
        help="starts to compare, comma-separated: csat (the shipped RCKD weights), none "
        "(random), imagenet (timm's, needs them downloaded) or a stage-1 .safetensors "
        "(default csat,none)",
    )
    parser.add_argument("--backbone", default="rckd_csat", help="default rckd_csat")
    parser.add_argument(
        "--budgets",
        type=_floats,
        default=[0.05, 0.2, 1.0],
        help="fractions of each class's training groups (default 0.05,0.2,1.0)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help=f"steps per run (default {DEFAULT_STEPS})"
    )
    parser.add_argument(
        "--tile-size", type=int, default=DEFAULT_TILE, help=f"px (default {DEFAULT_TILE})"
    )
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH, help=f"default {DEFAULT_BATCH}"
    )
    parser.add_argument("--mpp", type=float, default=0.5, help="µm/px of the model (default 0.5)")
    parser.add_argument(
        "--data-mpp",
        type=float,
        help="µm/px of the tiles (default: unknown; each tile is then resized to --tile-size "
        "and read as --mpp, e.g. a 224-px LC25000 tile at 128 px as if scanned at 0.29 µm/px)",
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    add_recipe_arguments(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already in --json (same settings) and train only the missing ones",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="data-loading processes (default 0: on a 2-core CPU workers take the model's cores)",
    )


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from napari_rckd.bench.transfer_plan import make_plan
    from napari_rckd.bench.transfer_resume import finished_rows, job_key
    from napari_rckd.commands.pretrain import stop_on_signals
    from napari_rckd.training.recipes.stage2 import Stage2Recipe

    plan = make_plan(
        args.train, args.test, args.folds, args.inits, args.backbone, args.budgets, args.seeds,
        args.data_mpp,
    )  # fmt: skip
    recipe, _ = Stage2Recipe.split(vars(args))  # the flags finetune shares
    if args.task == "segment":
        kind = transfer_mosaic.Segment.from_args(plan, recipe, args)
    else:
        kind = Classify(plan.classes, recipe)
    _print_scale(plan, recipe)
    unused = {"json"} | (set() if args.task == "segment" else set(transfer_mosaic.FLAGS))
    settings = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in unused}
    wanted = {job_key(job) for job in plan.jobs()}
    rows = finished_rows(args.json, args.resume, settings)  # all kept, even other budgets
    done = {job_key(r) for r in rows}
    jobs = [job for job in plan.jobs() if job_key(job) not in done]
    if rows:
        print(f"resuming: {len(rows)} runs kept from {args.json}, {len(jobs)} to train")
    status = "completed"
    quiet = logging.getLogger("napari_rckd")
    level, quiet.level = quiet.level, logging.WARNING  # the bar says enough; keep warnings
    bar = tqdm(total=len(jobs) * args.steps, unit="step", dynamic_ncols=True)
    try:
        with stop_on_signals() as stop, tempfile.TemporaryDirectory(prefix="rckd-transfer-") as tmp:
            tester = None
            for number, job in enumerate(jobs, 1):
                if tester is None or tester.fold != job.fold:
                    tester = kind.tester(plan.test_tiles(job.fold), job.fold)
                bar.set_description(
                    f"run {number}/{len(jobs)} fold {job.fold + 1} seed {job.seed} "
                    f"budget {job.budget:g} {job.init}"
                )
                row = run_job(plan, job, kind, tester, Path(tmp) / f"run{number}", bar, stop)
                if row is None:
                    status = "cancelled"
                    break
                rows.append(row)
                _write(args.json, rows, settings, "running", kind.title)
    finally:
        bar.close()
        quiet.setLevel(level)
    _write(args.json, rows, settings, status, kind.title)
    _print_tables(rows, len(wanted | done), status, kind.title)
    return 0 if status == "completed" else 130


class Classify:
    """What `bench transfer` trains and scores by default: a tile classifier (the segmentation
    twin of this interface is `transfer_mosaic.Segment`)."""

    metrics = METRICS["classify"]
    title = "RCKD transfer: fine-tuned classifiers per init and label budget"

    def __init__(self, classes: list[str], recipe) -> None:
        self.classes, self.recipe = classes, recipe

    def train_set(self, tiles):
        from napari_rckd.training.data.augment import Augment
        from napari_rckd.training.data.labelled import TileFolderDataset

        return TileFolderDataset(
            tiles, self.classes, self.recipe.tile_size, self.recipe.mpp, train=True,
            augment=Augment(),
        )  # fmt: skip

    def tester(self, tiles, fold: int) -> HeldOutTiles:
        return HeldOutTiles(tiles, self.classes, self.recipe, fold)


def run_job(plan, job, kind, tester, out_dir: Path, bar, stop) -> dict | None:
    """Train one job through `train_stage2` and test its last weights; None if stopped."""
    from napari_rckd.models import load_checkpoint
    from napari_rckd.training.callbacks import Callback
    from napari_rckd.training.recipes.stage2 import train_stage2

    class Advance(Callback):
        def on_step(self, info) -> None:
            bar.update(1)

    started = time.perf_counter()
    tiles = plan.train_tiles(job)
    start = plan.inits[job.init]
    result = train_stage2(
        kind.train_set(tiles), None, kind.classes, start, replace(kind.recipe, seed=job.seed),
        out_dir, callbacks=[Advance()], stop_event=stop,
    )  # fmt: skip
    if result.status == "cancelled":
        return None
    model, _ = load_checkpoint(result.last_checkpoint)
    metrics = tester.score(model)
    return {
        "init": job.init,
        "backbone": start.backbone,
        "budget": job.budget,
        "seed": job.seed,
        "fold": job.fold,
        **{name: metrics[name] for name in kind.metrics},
        "n_train": len(tiles),
        "train_groups": len({t.group for t in tiles}),
        "n_test": len(tester),
        "steps": result.step,
        "seconds": round(time.perf_counter() - started, 1),
    }


class HeldOutTiles:
    """A fold's test tiles, decoded and resized once (as uint8) and reused by every run."""

    def __init__(self, tiles, classes, recipe, fold: int) -> None:
        import torch

        from napari_rckd.training.data.labelled import TileFolderDataset

        dataset = TileFolderDataset(tiles, classes, recipe.tile_size, recipe.mpp)
        items = [dataset[i] for i in range(len(dataset))]
        self.images = torch.stack([(it["image"] * 255).round().to(torch.uint8) for it in items])
        self.labels = torch.stack([it["label"] for it in items])
        self.classes, self.recipe, self.fold = classes, recipe, fold

    def __len__(self) -> int:
        return len(self.labels)

    def score(self, model) -> dict[str, float]:
        import torch

        from napari_rckd.devices import resolve_device
        from napari_rckd.training.tasks import ClassificationTask

        device = torch.device(resolve_device(self.recipe.device))
        task = ClassificationTask(model, len(self.classes), self.classes).to(device)
        size = self.recipe.batch_size * 2
        batches = (
            {
                "image": self.images[i : i + size].float().div_(255).to(device),
                "label": self.labels[i : i + size].to(device),
            }
            for i in range(0, len(self), size)
        )
        with torch.inference_mode():
            return task.evaluate(batches)


def _print_scale(plan, recipe) -> None:
    from napari_rckd.training.recipes.stage2 import scale_note

    for start in plan.inits.values():
        note = scale_note(plan.tiles, start, recipe)
        if note:
            print(note)
            return


def _write(json_path: str | None, rows: list[dict], settings: dict, status: str, title: str):
    from napari_rckd.atomic import write_json_atomic
    from napari_rckd.bench.transfer_stats import paired_rows, summary_rows
    from napari_rckd.report import machine_summary

    if not json_path:
        return
    payload = {
        "title": title,
        "status": status,
        "settings": settings,
        "rows": rows,
        "summary": summary_rows(rows),
        "paired": paired_rows(rows),
        "machine": machine_summary(),
    }
    write_json_atomic(Path(json_path), payload)


def _print_tables(rows: list[dict], planned: int, status: str, title: str) -> None:
    from napari_rckd.bench.transfer_stats import paired_rows, summary_rows
    from napari_rckd.report import format_table

    print(f"\n{title}: {len(rows)} of {planned} runs ({status})\n")
    print(format_table(summary_rows(rows)))
    paired = paired_rows(rows)
    if paired:
        print("\npaired difference to none (same seed, fold and groups), mean [95 % interval]\n")
        print(format_table(paired))
