"""builtin's predict_batch as it was and as it is, alternated batch by batch in one process.

As it was: batch norms not folded, only the classical prior on threads beside the model,
skimage's ``h_maxima`` over the whole tile, orphans found with ``np.isin``, instances on the
calling thread. Usage, from the repository root:
``python docs/history/builtin_speed.py ../shared/data/slides/cmu-1-small-region.svs``
"""

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tifffile
import torch
from scipy import ndimage as ndi
from skimage.morphology import h_maxima

import napari_rckd.teachers.instances as instances
from napari_rckd.models import load_checkpoint
from napari_rckd.teachers import get_teacher
from napari_rckd.teachers.base import resize_image
from napari_rckd.teachers.network import nuclei_from_logits


def orphans_with_isin(markers, count, foreground):
    components, _ = ndi.label(foreground)
    orphan = foreground & ~np.isin(components, np.unique(components[markers > 0]))
    markers[orphan] = components[orphan] + count
    return markers


def as_it_was(teacher, tiles):
    instances.h_maxima_by_support, instances._orphans_as_markers = h_maxima, orphans_with_isin
    try:
        with ThreadPoolExecutor(len(tiles)) as pool:  # the prior beside the model, as it was
            pending = [pool.submit(teacher.prior.nuclear_probability, tile) for tile in tiles]
            logits = teacher.logits(tiles)
            priors = [future.result() for future in pending]
        pairs = zip(logits, priors, strict=True)
        return [nuclei_from_logits(each, teacher.mpp, True, prior) for each, prior in pairs]
    finally:
        instances.h_maxima_by_support, instances._orphans_as_markers = SUPPORT, ORPHANS


SUPPORT, ORPHANS = instances.h_maxima_by_support, instances._orphans_as_markers
slide = tifffile.imread(sys.argv[1])  # CMU-1 at 0.5 µm/px: 160² → 320² windows at 0.25
spots = [(y, x) for y in range(300, 2600, 300) for x in range(300, 2000, 300)][:40]
windows = np.stack([resize_image(slide[y : y + 160, x : x + 160], (320, 320)) for y, x in spots])
now, before = get_teacher("builtin"), get_teacher("builtin")
unfolded, _ = load_checkpoint(before.path)
before.runner.model = unfolded.eval().to(memory_format=torch.channels_last)
runs = {"before": lambda b: as_it_was(before, b), "now": now.predict_batch}
for run in runs.values():
    run(windows[:4])  # warm up
seconds, same = {name: [] for name in runs}, True
for repeat in range(2):
    for start in range(0, len(windows), 4):
        order = list(runs) if (start // 4 + repeat) % 2 == 0 else list(runs)[::-1]
        outputs = {}
        for name in order:
            began = time.perf_counter()
            outputs[name] = runs[name](windows[start : start + 4])
            seconds[name].append(time.perf_counter() - began)
        pairs = zip(outputs["before"], outputs["now"], strict=True)
        same &= all(np.array_equal(a.labels, b.labels) for a, b in pairs)
ratio = np.array(seconds["before"]) / np.array(seconds["now"])
print(
    f"ms per 320² window: before {np.median(seconds['before']) / 4 * 1000:.0f}, now "
    f"{np.median(seconds['now']) / 4 * 1000:.0f}; before/now {np.median(ratio):.2f} "
    f"[{ratio.min():.2f}–{ratio.max():.2f}] over {len(ratio)} batches; same labels: {same}"
)
