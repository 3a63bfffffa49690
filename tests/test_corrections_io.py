"""The corrections sidecar: saving, reopening, listing, refusing bad corrections, and reading back
as a nuclei folder in `evaluate nuclei` and the teacher's training data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_rckd.errors import RckdError
from napari_rckd.io.corrections import (
    CorrectionsFolder,
    count_changes,
    read_pair,
    sidecar_for,
)


def disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


@pytest.fixture
def region():
    """A 96² crop, the model's answer (3 nuclei) and the user's fix (one removed, one added)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    answer = np.zeros((96, 96), np.int32)
    for i, centre in enumerate([(20, 20), (20, 70), (70, 20)], 1):
        answer[disc(answer.shape, centre, 8)] = i
    corrected = answer.copy()
    corrected[corrected == 2] = 0  # a false nucleus erased
    corrected[disc(answer.shape, (70, 70), 9)] = 7  # a missed nucleus painted
    corrected[18:23, 5:12] = 1  # nucleus 1 reshaped
    return image, answer, corrected


@pytest.fixture
def slide(tmp_path):
    path = tmp_path / "case 1.svs"
    path.write_bytes(b"not really a slide, but a file with bytes to hash")
    return path


def test_count_changes(region):
    _, answer, corrected = region
    changes = count_changes(answer, corrected)
    assert (changes.model, changes.corrected) == (3, 3)
    assert (changes.added, changes.removed, changes.edited, changes.kept) == (1, 1, 1, 1)


def test_save_list_reopen_update(region, slide):
    image, answer, corrected = region
    folder = CorrectionsFolder(slide)
    assert folder.folder == sidecar_for(slide) == slide.with_name("case 1.svs.corrections")
    bounds = dict(y=100, x=200, height=192, width=192)
    first = folder.save(image, corrected, 0.5, bounds=bounds, model="csat:abc", answer=answer,
                        context=np.zeros((128, 128, 3), np.uint8))  # fmt: skip
    second = folder.save(image, answer, 0.5, bounds=bounds, model="csat:abc", answer=answer)
    assert (first.id, second.id) == (1, 2)  # a new region never overwrites an earlier one
    assert (folder.folder / "case-1" / "region-0001.tif").is_file()
    assert (folder.folder / "case-1" / "region-0001_label.tif").is_file()
    assert [r.id for r in folder.regions()] == [1, 2]
    assert folder.regions()[0].changes.removed == 1 and folder.regions()[1].changes.kept == 3
    assert "1 added" in folder.regions()[0].summary().replace("+", "")

    again, labels, old_answer, record = folder.load(1)
    np.testing.assert_array_equal(again, image)
    np.testing.assert_array_equal(labels, corrected)
    np.testing.assert_array_equal(old_answer, answer)
    labels[labels == 7] = 0  # the user changes their mind and saves the reopened region
    updated = folder.save(again, labels, record.mpp, bounds=record.bounds, model=record.model,
                          region=1)  # fmt: skip
    assert updated.id == 1 and updated.changes.added == 0 and updated.created == first.created
    assert updated.context == first.context  # the context crop is kept on update
    data = json.loads((folder.folder / "corrections.json").read_text())
    assert data["slide"] == "case 1.svs" and len(data["slide_sha256_16"]) == 16
    assert data["next_id"] == 3 and len(data["regions"]) == 2
    third = folder.save(image, corrected, 0.5, bounds=bounds, model="m", answer=answer)
    assert third.id == 3
    # files deleted by hand: the id is still not reused
    (folder.folder / "case-1" / "region-0003.tif").unlink()
    assert folder.save(image, corrected, 0.5, bounds=bounds, model="m").id == 4
    manifest = (folder.folder / "manifest.csv").read_text()
    assert "case-1/region-0001.tif,0.5" in manifest and "context/region-0001.tif" in manifest
    assert not list(folder.folder.rglob("*.tmp"))


def test_the_sidecar_reads_back_as_a_nuclei_folder(region, slide):
    from napari_rckd.teachers import get_teacher
    from napari_rckd.teachers.evaluation import evaluate_teacher, find_ground_truth
    from napari_rckd.training.data.nuclei import find_nuclei_images

    image, answer, corrected = region
    folder = CorrectionsFolder(slide)
    folder.save(image, corrected, 0.5, bounds=dict(y=0, x=0, height=96, width=96), model="m",
                answer=answer, context=image)  # fmt: skip
    truth = find_ground_truth(folder.folder)
    assert [(t.source, t.image_path.name, t.mpp) for t in truth] == [
        ("case-1", "region-0001.tif", 0.5)
    ]
    rows = evaluate_teacher(get_teacher("otsu"), truth)
    assert rows[0]["images"] == 1 and 0 <= rows[0]["dice"] <= 1
    images = find_nuclei_images(folder.folder)
    assert [i.image_path.name for i in images] == ["region-0001.tif"]


@pytest.mark.parametrize(
    "case, words",
    [
        ("empty", "is empty"),
        ("sizes", "96×96 px but the image is 64×64"),
        ("float", "not integers"),
        ("mpp", "no µm per pixel"),
    ],
)
def test_bad_corrections_are_refused_in_one_sentence_naming_the_file(tmp_path, case, words):
    image = np.zeros((64, 64, 3), np.uint8)
    labels = np.zeros((64, 64), np.uint16)
    image_path, label_path = tmp_path / "x.tif", tmp_path / "x_label.tif"
    mpp = 0.5
    if case == "empty":
        image_path.write_bytes(b"")
    else:
        tifffile.imwrite(image_path, image, photometric="rgb")
    if case == "sizes":
        labels = np.zeros((96, 96), np.uint16)
    if case == "float":
        labels = labels.astype(np.float32) + 0.5
    if case == "mpp":
        mpp = None
    tifffile.imwrite(label_path, labels)
    with pytest.raises(RckdError) as caught:
        read_pair(image_path, label_path, mpp)
    message = str(caught.value)
    assert words in message and "x" in message and message.count(". ") == 0
    assert str(tmp_path) in message


def test_saving_bad_arrays_is_refused(region, slide):
    image, answer, _ = region
    folder = CorrectionsFolder(slide)
    with pytest.raises(RckdError, match="not integers"):
        folder.save(image, answer.astype(float), 0.5, bounds=dict(y=0, x=0, height=1, width=1),
                    model="m")  # fmt: skip
    with pytest.raises(RckdError, match="no µm per pixel"):
        folder.save(image, answer, None, bounds=dict(y=0, x=0, height=1, width=1), model="m")
    with pytest.raises(RckdError, match="is empty"):
        folder.save(image[:0], answer[:0], 0.5, bounds=dict(y=0, x=0, height=1, width=1),
                    model="m")  # fmt: skip
    assert not folder.folder.exists()  # nothing half-written
