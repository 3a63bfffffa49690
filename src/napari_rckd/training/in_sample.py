"""Whether test data is data a model learnt from, by what its checkpoint records.

Stage 2 records a fingerprint (a sha256 prefix of the file's bytes) of every training and
validation tile, so a copy under another name or folder is still recognised; a nuclei teacher
records its training and validation image names, and a stage-1 student its unlabeled slides.
`evaluate` warns with these sentences when a test is not one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

TRAIN_KEY, VAL_KEY = "train_sha256", "val_sha256"


def tile_fingerprints(tiles, train_index, val_index) -> dict[str, list[str]]:
    """The provenance entries naming the training and validation tiles by content."""
    from napari_rckd.files import sha256_prefix

    hashes = [sha256_prefix(Path(tile.path)) for tile in tiles]
    return {
        TRAIN_KEY: sorted({hashes[i] for i in train_index}),
        VAL_KEY: sorted({hashes[i] for i in val_index}),
    }


def tiles_seen(provenance: dict, paths: Sequence[Path], folders: Sequence[str], model: str):
    """A warning when test tiles trained or validated ``model``, else None.

    Without recorded fingerprints (older checkpoints) a test folder named like one the model
    trained on is reported as probably the same data.
    """
    from napari_rckd.files import sha256_prefix

    train, val = set(provenance.get(TRAIN_KEY, [])), set(provenance.get(VAL_KEY, []))
    if train or val:
        hashes = [sha256_prefix(Path(p)) for p in paths]
        trained, validated = sum(h in train for h in hashes), sum(h in val for h in hashes)
        if not (trained or validated):
            return None
        return (
            f"{trained} of the {len(hashes)} test tiles trained {model} and {validated} "
            "validated it (the same files, by the fingerprints its provenance records): these "
            "figures are in-sample, not a test; evaluate on tiles it never saw"
        )
    names = {Path(f).name for f in folders} & set(provenance.get("data", []))
    if names:
        return (
            f"the test folder {', '.join(sorted(names))} has the name of data {model} was "
            "trained on (it records no tile fingerprints to check): if it holds the same "
            "tiles, these figures are in-sample, not a test"
        )
    return None


def images_seen(provenance: dict, names: Sequence[str], model: str) -> str | None:
    """A warning when test images trained, validated or (unlabeled) distilled ``model``."""
    told = []
    for key, what in (
        ("train_images", "trained it"),
        ("val_images", "validated it"),
        ("slides", "were among the unlabeled images it was distilled on"),
    ):
        recorded = set(provenance.get(key) or [])
        count = sum(name in recorded for name in names)
        if count:
            told.append(f"{count} {what}")
    if not told:
        return None
    return (
        f"{model}: of the {len(names)} test images, {', '.join(told)} (by the image names its "
        "provenance records): its scores on them are in-sample, not a test"
    )


def warn_if_nuclei_seen(spec: str, names: Sequence[str], model: str) -> str | None:
    """Warn (and return the sentence) when the nuclei model ``spec`` learnt from test images
    named ``names``; models without napari-rckd weights record nothing to compare."""
    from napari_rckd.models.weights import read_weights
    from napari_rckd.training.run_notes import teacher_weights

    path = teacher_weights(spec)
    if path is None:
        return None
    _, metadata = read_weights(path)
    warning = images_seen((metadata or {}).get("provenance", {}), names, model)
    if warning:
        log.warning(warning)
    return warning
