"""Training the learned nuclei teacher: ground-truth discovery, targets, masked loss, the recipe."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from conftest import shared_path
from napari_rckd.errors import RckdError
from napari_rckd.files import sha256_prefix
from napari_rckd.training.data.nuclei import (
    NucleiCropDataset,
    find_nuclei_images,
    target_channels,
)
from napari_rckd.training.recipes.teacher import TeacherRecipe, train_teacher


def test_holdout_leaves_a_whole_cohort_out():
    nuclei = shared_path("nuclei")
    sources = {item.source for item in find_nuclei_images(nuclei)}
    assert {"cpm15", "cryonuseg", "monuseg-train", "monuseg-train-semantic"} <= sources
    without = {item.source for item in find_nuclei_images(nuclei, holdout=["monuseg"])}
    assert without == sources - {"monuseg-train", "monuseg-train-semantic"}


def test_real_crops_teach_boundaries_only_where_instances_are_known():
    nuclei = shared_path("nuclei")
    images = find_nuclei_images(nuclei)
    semantic = next(i for i in images if not i.has_instances)
    instance = next(i for i in images if i.has_instances and i.source == "cryonuseg")
    for item, boundary_known in ((semantic, False), (instance, True)):
        data = NucleiCropDataset([item], size=128, mpp=0.5, count=4, seed=1)
        batch = data[0]
        assert batch["image"].shape == (3, 128, 128)
        assert batch["target"].shape == batch["mask"].shape == (2, 128, 128)
        nuclei_px, boundary = batch["target"]
        assert 0.02 < nuclei_px.mean() < 0.8  # real nuclei in every crop of these images
        assert bool((boundary <= nuclei_px).all())  # contours lie on nuclei
        assert bool(batch["mask"][0].all())
        assert bool(batch["mask"][1].any()) is boundary_known
    # fixed crops without augmentation: validation sees the same pixels every time
    again = NucleiCropDataset([instance], size=128, mpp=0.5, count=4, seed=1)[0]
    assert torch.equal(again["image"], data[0]["image"])


def test_touching_nuclei_are_separated_by_their_contours():
    labels = np.zeros((20, 20), np.int32)
    labels[5:15, 2:10], labels[5:15, 10:18] = 1, 2
    (nuclei, boundary), (known, boundary_known) = target_channels(labels, True)
    assert boundary[10, 9] == boundary[10, 10] == 1  # the shared edge is contour on both sides
    assert nuclei[10, 5] == 1 and boundary[10, 5] == 0
    assert known.all() and boundary_known.all()
    _, (_, unknown) = target_channels(labels > 0, False)
    assert not unknown.any()


def test_masked_channel_teaches_nothing():
    from napari_rckd.training.tasks import DistillationTask

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, 1)
    task = DistillationTask(model)
    batch = {
        "image": torch.rand(2, 3, 8, 8),
        "target": (torch.rand(2, 2, 8, 8) > 0.5).float(),
        "mask": torch.ones(2, 2, 8, 8),
    }
    batch["mask"][:, 1] = 0
    task(batch)["loss"].backward()
    assert model.weight.grad[1].abs().sum() == 0 and model.weight.grad[0].abs().sum() > 0


def _synthetic_source(folder, count=3, size=96, seed=0):
    """H&E-ish images with dark round nuclei, their instance maps and a manifest."""
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    rows = ["path,mpp"]
    source = folder / "synthetic"
    source.mkdir(parents=True)
    for index in range(count):
        image = np.full((size, size, 3), (235, 200, 220), np.uint8)
        labels = np.zeros((size, size), np.int32)
        for nucleus in range(1, 12):
            rr, cc = disk(tuple(rng.integers(8, size - 8, 2)), 5, shape=labels.shape)
            labels[rr, cc], image[rr, cc] = nucleus, (80, 40, 140)
        tifffile.imwrite(source / f"im{index}.tif", image)
        tifffile.imwrite(source / f"im{index}_label.tif", labels)
        rows.append(f"synthetic/im{index}.tif,0.5")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_train_teacher_writes_a_teacher_that_separates_with_contours(tmp_path):
    from napari_rckd.teachers import get_teacher

    data = _synthetic_source(tmp_path / "data")
    recipe = TeacherRecipe(steps=3, tile_size=64, batch_size=2, workers=0, val_fraction=0.34)
    result = train_teacher(data, tmp_path / "run", recipe)
    assert result.status == "completed" and result.best_checkpoint.is_file()
    teacher = get_teacher(result.best_checkpoint)
    assert teacher.use_boundary and teacher.mpp == 0.25  # the recipe works at 40x
    assert teacher.name == "student:run/best"  # folder and stem: two runs never share a label
    output = teacher.predict(np.full((70, 90, 3), 200, np.uint8), 0.5)
    assert output.labels.shape == (70, 90)
    with pytest.raises(RckdError, match="already holds a trained model"):
        train_teacher(data, tmp_path / "run", TeacherRecipe(steps=3, tile_size=64, workers=0))


def test_train_teacher_builds_the_decoder_asked_for(tmp_path):
    from napari_rckd.models import load_checkpoint

    data = _synthetic_source(tmp_path / "data")
    recipe = TeacherRecipe(
        backbone="efficientnet_b0", decoder="light", steps=1, tile_size=64, batch_size=2,
        workers=0, val_fraction=0.34,
    )  # fmt: skip
    result = train_teacher(data, tmp_path / "run", recipe)
    model, metadata = load_checkpoint(result.best_checkpoint)
    assert metadata["config"]["decoder"] == "light"
    assert model.decoder.out_channels == 16  # EfficientNet-B0's stride-2 width


def test_train_teacher_can_start_from_a_nuclei_model(tmp_path):
    """``init`` fine-tunes a nuclei model (all its weights) instead of training a new one."""
    from napari_rckd.models import load_checkpoint
    from napari_rckd.models.shipped import shipped_weights

    data = _synthetic_source(tmp_path / "data")
    recipe = TeacherRecipe(
        init="learned", steps=1, tile_size=64, batch_size=2, workers=0, val_fraction=0.34, lr=1e-9
    )
    result = train_teacher(data, tmp_path / "run", recipe)
    model, metadata = load_checkpoint(result.best_checkpoint)
    init = metadata["provenance"]["init"]
    assert init["path"] == "learned" and init["sha256"] == sha256_prefix(shipped_weights("learned"))
    assert model.config.tile_size == 64
    learned, _ = load_checkpoint(shipped_weights("learned"))
    ours, theirs = model.state_dict(), learned.state_dict()
    assert torch.allclose(ours["head.conv.weight"], theirs["head.conv.weight"], atol=1e-3)
    with pytest.raises(RckdError, match="pass --backbone rckd_csat --decoder standard --mpp 0.5"):
        train_teacher(data, tmp_path / "csat", TeacherRecipe(init="csat", steps=1))
    assert not (tmp_path / "csat").exists()


def test_train_teacher_refuses_bad_input_before_writing(tmp_path):

    with pytest.raises(RckdError, match="does not exist"):
        train_teacher(tmp_path / "nowhere", tmp_path / "run")
    with pytest.raises(RckdError, match="multiple of 32"):
        train_teacher(tmp_path, tmp_path / "run", TeacherRecipe(tile_size=100))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RckdError, match="no labelled nuclei images"):
        train_teacher(tmp_path, tmp_path / "run")
    data = _synthetic_source(tmp_path / "data")
    with pytest.raises(RckdError, match="typo.svs does not exist"):
        train_teacher(data, tmp_path / "run", unlabeled=[tmp_path / "typo.svs"])
    assert not (tmp_path / "run").exists()


def test_mpp_table_gives_files_their_pixel_size(tmp_path):
    from napari_rckd.training.data.sampling import read_mpp_table

    (tmp_path / "t.csv").write_text("path,mpp,note\na/x.png,~0.25,\nb.png,,unknown\n")
    table = read_mpp_table(tmp_path / "t.csv")
    assert table == {str((tmp_path / "a" / "x.png").resolve()): 0.25}
    (tmp_path / "bad.csv").write_text("path,mpp\nx.png,-1\n")
    with pytest.raises(RckdError, match="x.png has mpp '-1'"):
        read_mpp_table(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("file,um\nx.png,1\n")
    with pytest.raises(RckdError, match="needs the columns path and mpp"):
        read_mpp_table(tmp_path / "cols.csv")


def test_shipped_recipe_distils_on_unlabeled_tissue_of_known_scale_only():
    from napari_rckd.training.shipped_recipe import LC25000_ASSUMED_MPP, stage1_sources

    paths, table = stage1_sources(shared_path("."))
    names = {p.name for p in paths}
    assert set(table) == {str(p.resolve()) for p in paths}  # every file has its µm/px
    assert "tcga-cr-7395-jp2k.svs" not in names  # records no pixel size
    assert not any(p.parent.name == "pannuke-semantic" for p in paths)  # smaller than a tile
    assert not any("ihc" in n or "pyramid" in n or n.endswith("_label.tif") for n in names)
    lung = [p for p in paths if p.parent.parent.name == "lc25000-lung-dev"]
    assert 200 < len(lung) < 300  # one tile per source image, not its rotations and flips
    assert {table[str(p.resolve())] for p in lung} == {LC25000_ASSUMED_MPP}
    # a leave-one-source-out pair: the student never sees the held-out source's images
    held, _ = stage1_sources(shared_path("."), ("cpm15",))
    assert any(p.parent.name == "cpm15" for p in paths)
    assert not any(p.parent.name == "cpm15" for p in held)
    assert len(held) == len(paths) - sum(p.parent.name == "cpm15" for p in paths)


def test_shipped_recipe_never_packages_a_held_out_pair(tmp_path, capsys):
    from napari_rckd.training.shipped_recipe import main

    with pytest.raises(SystemExit):
        main([str(tmp_path), str(tmp_path / "out"), "--holdout", "cpm15", "--package"])
    assert "never packaged" in capsys.readouterr().err


def test_the_nuclei_student_copies_its_teacher_with_the_classical_half():
    from napari_rckd.training.shipped_recipe import with_classical_half

    assert with_classical_half("learned") == "learned+classical"
    assert with_classical_half("run/best.safetensors") == "run/best.safetensors+classical"
    for already in ("builtin", "hybrid", "run/best.safetensors+classical"):
        assert with_classical_half(already) == already


@pytest.mark.parametrize(("student", "jitter"), [("nuclei", "stain"), ("stage2", "light")])
def test_each_student_trains_with_its_measured_jitter_unless_told(
    student, jitter, tmp_path, monkeypatch
):
    """The nuclei student copies ``builtin``'s place under the stain jitter; the stage-2 start
    keeps the light jitter it was measured with; ``--stage1-augment`` overrides either."""
    import napari_rckd.training.recipes.stage1 as stage1
    from napari_rckd.training.shipped_recipe import main

    recipes = []
    monkeypatch.setattr(stage1, "pretrain", lambda paths, out, recipe, **_: recipes.append(recipe))
    argv = [str(shared_path(".")), str(tmp_path), "--teacher", "learned", "--student", student]
    assert main(argv) == 0
    assert main([*argv, "--stage1-augment", "strong"]) == 0
    assert [recipe.augment for recipe in recipes] == [jitter, "strong"]
    assert recipes[0].teacher == ("learned+classical" if student == "nuclei" else "learned")


def test_package_writes_csat_nuclei_weights_or_its_stage2_start(tmp_path, monkeypatch):
    from napari_rckd.models import shipped
    from napari_rckd.models.weights import read_weights
    from napari_rckd.training.shipped_recipe import package

    checkpoint = shipped.shipped_weights("csat", stage2=True)
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path)
    for stage2 in (False, True):
        written = package(checkpoint, "csat", "some tissue", stage2=stage2)
        assert written == shipped.weights_path("csat", stage2)
        provenance = read_weights(written)[1]["provenance"]
        assert provenance["training_data"] == "some tissue"
        assert provenance["recipe"].endswith("--student stage2") == stage2


def test_mixed_dataset_replaces_a_fixed_share_with_pseudo_labelled_tiles():
    from napari_rckd.training.data.mixed import MixedDataset

    labelled = [{"image": torch.zeros(3, 4, 4), "target": torch.zeros(2, 4, 4), "mask": None}] * 400
    pseudo = [{"image": torch.ones(3, 4, 4), "target": torch.full((2, 4, 4), 0.7)}] * 5
    mixed = MixedDataset(labelled, pseudo, share=0.3, seed=2)
    items = [mixed[i] for i in range(len(mixed))]
    from_pseudo = [bool(item["image"].any()) for item in items]
    assert len(mixed) == 400 and 0.22 < np.mean(from_pseudo) < 0.38
    assert all(item["mask"].all() for item, p in zip(items, from_pseudo, strict=True) if p)
    again = MixedDataset(labelled, pseudo, share=0.3, seed=2)  # a resumed run: the same stream
    assert [bool(again[i]["image"].any()) for i in range(400)] == from_pseudo
    for bad in (0, 1):
        with pytest.raises(RckdError, match="between 0 and 1"):
            MixedDataset(labelled, pseudo, share=bad)


def test_train_teacher_learns_from_unlabeled_tissue_answered_by_a_teacher(tmp_path):
    from napari_rckd.models import load_checkpoint

    data = _synthetic_source(tmp_path / "data")
    slide = shared_path("slides/cmu-1-small-region.svs")
    recipe = TeacherRecipe(
        steps=2, tile_size=64, batch_size=4, workers=0, val_fraction=0.34,
        pseudo_teacher="classical", pseudo_share=0.5, pseudo_tiles=3,
    )  # fmt: skip
    result = train_teacher(data, tmp_path / "run", recipe, unlabeled=[slide])
    _, metadata = load_checkpoint(result.best_checkpoint)
    provenance = metadata["provenance"]
    assert provenance["unlabeled"] == [slide.name] and provenance["pseudo_tiles"] == 3
    assert provenance["pseudo_teacher"].startswith("classical")
    assert provenance["pseudo_share"] == 0.5 and provenance["steps"] == 2  # the recipe's own
    assert set(provenance["data_sha256"]) == set(
        provenance["train_images"] + provenance["val_images"]
    )
    assert provenance["unlabeled_sha256"] == {slide.name: sha256_prefix(slide)}
    assert len(list((tmp_path / "run" / "teacher-cache").rglob("*.npz"))) == 3  # answered once


def test_train_teacher_command_refuses_a_bad_pseudo_share(capsys):
    from napari_rckd.cli import main

    with pytest.raises(SystemExit):
        main(["train-teacher", "data", "--out", "run", "--pseudo-share", "1.5"])
    assert "--pseudo-share: must be between 0 and 1" in capsys.readouterr().err
    assert main(["train-teacher", "data", "--out", "run", "--pseudo-tiles", "9"]) != 0
    assert "--pseudo-tiles only apply with --unlabeled" in capsys.readouterr().err
