"""Stage-2 tile folders on the real labelled tiles: label rules, groups, resizing, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared_path
from napari_rckd.errors import RckdError
from napari_rckd.training.data.augment import Augment
from napari_rckd.training.data.labelled import TileFolderDataset, fit_tile, scan_tile_folders

CRC = ["ADI", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]


def test_file_name_prefix_labels_crc():
    tiles = scan_tile_folders(shared_path("tiles/crc-val-he-7k"), mpp=0.5)
    assert len(tiles) == 32
    assert sorted({t.label for t in tiles}) == CRC
    first = tiles[0]
    assert first.path.name == "ADI-TCGA-EENSRDNW.png" and first.label == "ADI"
    # the random code is per tile: each tile is its own source
    assert len({t.group for t in tiles}) == 32
    dataset = TileFolderDataset(tiles, size=256, mpp=0.5)
    item = dataset[0]
    assert item["image"].shape == (3, 256, 256) and item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and int(item["label"]) == CRC.index("ADI")
    assert item["group"] == "crc-val-he-7k/ADI-TCGA-EENSRDNW"


def test_prefix_rule_with_a_fixed_class_list_and_one_outside():
    tiles = scan_tile_folders(shared_path("tiles/nct-crc-he-100k"), label_from="prefix", mpp=0.5)
    assert {t.label for t in tiles} == set(CRC) | {"BACK"}
    with pytest.raises(RckdError, match="labels BACK outside the class list"):
        TileFolderDataset(tiles, classes=CRC)
    dataset = TileFolderDataset([t for t in tiles if t.label != "BACK"], classes=CRC)
    assert dataset.classes == CRC


def test_bracs_field_labels_and_slide_groups():
    auto = scan_tile_folders(shared_path("tiles/bracs"), mpp=0.25)
    explicit = scan_tile_folders(shared_path("tiles/bracs"), label_from="field:1", mpp=0.25)
    assert [t.label for t in auto] == [t.label for t in explicit]
    by_name = {t.path.name: t for t in auto}
    assert by_name["1238_adh_10.png"].label == "adh"
    assert by_name["1238_adh_10.png"].group == "bracs/1238"  # the source slide id
    assert by_name["1231_pathologicalbenign_23.png"].label == "pathologicalbenign"
    # a 1089×1215 region at 0.25 µm/px is ~545×608 at 0.5: random 256 crops when training
    dataset = TileFolderDataset(auto, size=256, mpp=0.5, train=True, augment=Augment())
    index = [t.path.name for t in dataset.tiles].index("1238_adh_10.png")
    a, b = dataset[index]["image"], dataset[index]["image"]
    assert a.shape == (3, 256, 256) and not torch.equal(a, b)


def test_folder_names_label_tcga_and_case_groups():
    tiles = scan_tile_folders(
        [shared_path("tiles/tcga-chol"), shared_path("tiles/tcga-coad")], label_from="folder"
    )
    assert sorted({t.label for t in tiles}) == ["tcga-chol", "tcga-coad"]
    coad_groups = {t.group for t in tiles if t.label == "tcga-coad"}
    assert coad_groups == {"tcga-coad/TCGA-AD-6964"}  # three tiles of one patient: one group
    dataset = TileFolderDataset(tiles, size=224)
    assert dataset[0]["image"].shape == (3, 224, 224)  # unknown mpp: scaled to cover the tile
    with pytest.raises(RckdError, match="all fields are numbers"):
        scan_tile_folders(shared_path("tiles/tcga-chol"))  # auto: names are 0_0_0_506...


def test_sub_folders_are_classes_and_bad_input(tmp_path):
    root = shared_path("tiles/tissue-vs-background")
    tiles = scan_tile_folders(root)
    assert {t.label for t in tiles} == {"tissue", "background"}
    with pytest.raises(RckdError, match="only one class \\(tissue\\)"):
        TileFolderDataset([t for t in tiles if t.label == "tissue"])
    (tmp_path / "readme.txt").write_text("nothing")
    with pytest.raises(RckdError, match="contains no images"):
        scan_tile_folders(tmp_path)
    with pytest.raises(RckdError, match="is not a rule"):
        scan_tile_folders(root, label_from="suffix")


def test_fit_tile_rescales_by_mpp():
    image = np.zeros((448, 600, 3), np.uint8)
    image[:, 300:] = 200
    assert fit_tile(image, 224, 0.5, None).shape == (224, 224, 3)  # 0.25 -> 0.5 µm/px, centre
    small = np.full((100, 120, 3), 7, np.uint8)
    assert fit_tile(small, 128, 1.0, np.random.default_rng(0)).shape == (128, 128, 3)


def test_unlabelled_images_are_refused_with_how_labels_are_read(tmp_path):
    """a.png, b.png would be classes "a" and "b" of one tile each: refuse, naming --label-from."""
    from PIL import Image

    for name in ("a.png", "b.png", "slide7.png"):
        Image.new("RGB", (32, 32), (200, 120, 180)).save(tmp_path / name)
    tiles = scan_tile_folders(tmp_path)
    with pytest.raises(RckdError, match="--label-from") as error:
        TileFolderDataset(tiles, size=32)
    assert "one tile only" in str(error.value) and ". " not in str(error.value)
