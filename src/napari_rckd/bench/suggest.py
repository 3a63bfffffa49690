"""How well "Suggest regions" finds tiles the nuclei model gets wrong, against random tiles.

Every labelled image of DATA (X.tif|png beside X_label.tif, mpp from manifest.csv) is answered
by --model (and --other, for the disagreement signal) and cut into tiles of --tile-um µm. A
tile *has an error* when the model's nuclei there miss or invent at least --errors nuclei
against the ground truth (instances matched one to one at IoU > 0.5). Each signal ranks the
tiles; the table gives the precision of its top 10 % and 20 % (the share of those tiles that
have an error) beside the base rate (what random tiles give), the lift (precision ÷ base rate)
and Spearman's rank correlation of the signal with the number of errors. Two definitions of
an error are scored: at least --errors missed + false nuclei in the tile (crowded tiles have
more), and at least --rate of them per true nucleus (a tile the model gets wrong for its
size). ``--from-json`` rescores the tiles a previous run wrote with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SIGNALS = ("unsure", "unsure_per_nucleus", "disagree", "unsure+disagree")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="folder of labelled nuclei sources (or --from-json)")
    parser.add_argument("--model", default="csat", help="the nuclei model (default csat)")
    parser.add_argument(
        "--other", default="builtin", help="second model for disagreement ('none': skip)"
    )
    parser.add_argument("--tile-um", type=float, default=64.0, help="tile side in µm (default 64)")
    parser.add_argument(
        "--errors", type=int, default=10, help="missed + false nuclei that make an error (10)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.8,
        help="missed + false nuclei per true nucleus that make an error (0.8)",
    )
    parser.add_argument("--from-json", metavar="FILE", help="rescore the tiles of an earlier run")


def tile_rows(image, truth, mpp, model, other, tile_um) -> list[dict]:
    """Signals and errors of every whole tile of one image."""
    from napari_rckd.inference.suggest import disagreement, unmatched, unsure_share

    ours = model.predict(image, mpp)
    theirs = other.predict(image, mpp) if other is not None else None
    side = max(16, int(round(tile_um / mpp)))
    rows = []
    for y in range(0, image.shape[0] - side + 1, side):
        for x in range(0, image.shape[1] - side + 1, side):
            window = np.s_[y : y + side, x : x + side]
            prob, labels = ours.prob[window], ours.labels[window]
            nuclear = float(np.mean(prob > 0.5))
            row = {
                "unsure": unsure_share(prob),
                "unsure_per_nucleus": unsure_share(prob) / (nuclear + 0.05),
                "errors": unmatched(truth[window], labels),
                "truth_nuclei": int(len(np.unique(truth[window])) - 1),
            }
            if theirs is not None:
                row["disagree"] = disagreement(labels, theirs.labels[window])
            rows.append(row)
    return rows


def rank_scores(rows: list[dict], signal: str, threshold: float, per_nucleus: bool = False) -> dict:
    """Precision of the top 10 % / 20 % of tiles by ``signal``, base rate, lift, Spearman;
    an error is ``errors`` (or ``errors`` per true nucleus) at or above ``threshold``."""
    from scipy.stats import rankdata, spearmanr

    if signal == "unsure+disagree":
        values = rankdata([r["unsure"] for r in rows]) + rankdata([r["disagree"] for r in rows])
    else:
        values = np.array([r[signal] for r in rows], float)
    errors = np.array([r["errors"] for r in rows], float)
    if per_nucleus:
        errors = errors / np.maximum([r["truth_nuclei"] for r in rows], 1)
    has = errors >= threshold
    order = np.argsort(-values, kind="stable")
    error = f"{'rate' if per_nucleus else 'count'} ≥ {threshold:g}"
    out = {"signal": signal, "error": error, "tiles": len(rows), "base_rate": float(has.mean())}
    for share in (0.1, 0.2):
        k = max(1, int(round(len(rows) * share)))
        out[f"precision_top{int(share * 100)}"] = float(has[order[:k]].mean())
    out["lift_top10"] = out["precision_top10"] / max(out["base_rate"], 1e-9)
    out["spearman"] = float(spearmanr(values, errors).statistic)
    return out


def run(args: argparse.Namespace) -> int:
    from napari_rckd.report import format_table
    from napari_rckd.teachers import get_teacher
    from napari_rckd.teachers.evaluation import find_ground_truth

    if args.from_json:
        earlier = json.loads(Path(args.from_json).read_text())
        rows, names = earlier["tiles"], earlier["args"]
        model_name, other_name = names["model"], names["other"]
        tile_um = names["tile_um"]
    else:
        model = get_teacher(args.model)
        other = None if args.other.lower() == "none" else get_teacher(args.other)
        model_name, other_name, tile_um = model.name, other.name if other else "none", args.tile_um
        rows = []
        for item in find_ground_truth(args.data):
            image, truth = item.load()
            for row in tile_rows(image, truth, item.mpp, model, other, args.tile_um):
                rows.append({"source": item.source, "image": item.image_path.name, **row})
            log.info("%s: %d tiles so far", item.image_path.name, len(rows))
    signals = [s for s in SIGNALS if "disagree" in rows[0] or "disagree" not in s]
    table = []
    for threshold, per_nucleus in ((args.errors, False), (args.rate, True)):
        table += [rank_scores(rows, s, threshold, per_nucleus) for s in signals]
        for source in sorted({r["source"] for r in rows}):
            mine = [r for r in rows if r["source"] == source]
            scores = rank_scores(mine, signals[-1], threshold, per_nucleus)
            table.append({**scores, "signal": f"{signals[-1]} ({source})"})
    print(
        f"model {model_name}, other {other_name}, tiles of {tile_um:g} µm; a tile has an "
        "error when its missed + false nuclei reach a count or a rate per true nucleus"
    )
    print(format_table(table))
    if args.json:
        names = {k: v for k, v in vars(args).items() if not k.startswith("_")}
        names.update(model=model_name, other=other_name, tile_um=tile_um)
        payload = {"args": names,
                   "table": table, "tiles": rows}  # fmt: skip
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str))
    return 0
