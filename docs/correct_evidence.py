"""Few corrections, measured gain (docs/correct.md): the ground truth of k CPM-15 images (40x)
plays a user's corrections; csat is fine-tuned on them with the defaults of ``finetune --task
nuclei`` (replay: CryoNuSeg's ground truth), then the *other* CPM-15 images and MoNuSeg
(forgetting) are scored before and after.

``python docs/correct_evidence.py DATA K SEED OUT [LR]``: DATA is the shared data folder
(nuclei/ and manifest.csv); writes OUT/k{K}-s{SEED}-lr{LR}.json.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

CORRECTED = ["image08", "image10", "image12", "image14", "image09"]  # in this order, first k


def main(data: str, k: str, seed: str, out: str, lr: str = "5e-4") -> None:
    from napari_rckd.teachers import get_teacher
    from napari_rckd.teachers.evaluation import evaluate_teacher, find_ground_truth
    from napari_rckd.training.nuclei_finetune import NucleiRecipe, finetune_nuclei

    data, k, seed, out, lr = Path(data), int(k), int(seed), Path(out), float(lr)
    chosen = CORRECTED[:k]
    corrections = out / f"k{k}-s{seed}-lr{lr:g}" / "corrections"
    shutil.rmtree(corrections.parent, ignore_errors=True)
    (corrections / "cpm15").mkdir(parents=True)
    rows = ["path,mpp"]
    for name in chosen:
        for suffix in (".png", "_label.tif"):
            shutil.copy(data / "nuclei" / "cpm15" / f"{name}{suffix}", corrections / "cpm15")
        rows.append(f"cpm15/{name}.png,0.25")
    (corrections / "manifest.csv").write_text("\n".join(rows) + "\n")
    start = time.time()
    recipe = NucleiRecipe(init="csat", holdout_share=0, seed=seed, device="cpu", lr=lr)
    result = finetune_nuclei(
        [corrections], corrections.parent / "run", recipe, replay=[data / "nuclei" / "cryonuseg"]
    )
    figures = {"k": k, "seed": seed, "lr": lr, "corrections": chosen}
    figures["train_s"] = time.time() - start
    others = [
        g for g in find_ground_truth(data / "nuclei" / "cpm15") if g.image_path.stem not in chosen
    ]
    monuseg = find_ground_truth(data / "nuclei" / "monuseg-train")
    for when, spec in (("before", "csat"), ("after", result.spec)):
        teacher = get_teacher(spec, device="cpu")
        for where, images in (("cpm15_other", others), ("monuseg", monuseg)):
            per_image: list[dict] = []
            evaluate_teacher(teacher, images, per_image)
            figures[f"{where}_{when}"] = {
                m: float(np.mean([p[m] for p in per_image])) for m in ("dice", "aji", "pq")
            }
            figures[f"{where}_{when}_per_image"] = per_image
    print(json.dumps({key: v for key, v in figures.items() if "per_image" not in key}, indent=1))
    (out / f"k{k}-s{seed}-lr{lr:g}.json").write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
