"""`finetune --task nuclei`: a tiny fine-tune of the shipped csat on synthetic corrections runs end
to end, the default start is `builtin`, records its provenance and held-out scores, and the new model works live; the replay
share is honoured; bad corrections and options are refused in one sentence; real nuclei
folders train too."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_rckd.errors import RckdError
from napari_rckd.io.corrections import CorrectionsFolder

TINY = dict(steps=2, batch_size=2, tile_size=64, replay_tiles=4, device="cpu")


def synthetic_corrections(tmp_path, regions=3, size=96, context=True):
    """A fake slide file and ``regions`` corrected regions of dark discs on pink."""
    slide = tmp_path / "case.svs"
    slide.write_bytes(b"fake slide bytes")
    folder = CorrectionsFolder(slide)
    rng = np.random.default_rng(1)
    for _ in range(regions):
        image = np.full((size, size, 3), (230, 180, 210), np.uint8)
        labels = np.zeros((size, size), np.int32)
        yy, xx = np.mgrid[:size, :size]
        for k in range(1, 6):
            cy, cx = rng.integers(10, size - 10, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
            labels[disc] = k
            image[disc] = (90, 40, 140)
        around = np.full((size * 2, size * 2, 3), 60, np.uint8) if context else None
        folder.save(image, labels, 0.5, bounds=dict(y=0, x=0, height=size, width=size),
                    model="test", answer=np.zeros_like(labels), context=around)  # fmt: skip
    return folder.folder


def test_a_tiny_fine_tune_end_to_end(tmp_path):
    from napari_rckd.inference.analysis import build_sources
    from napari_rckd.models.weights import read_weights
    from napari_rckd.teachers import get_teacher
    from napari_rckd.training.nuclei_finetune import REPLAY_SHARE, NucleiRecipe, finetune_nuclei

    corrections = synthetic_corrections(tmp_path)
    result = finetune_nuclei([corrections], tmp_path / "run", NucleiRecipe(init="csat", **TINY))
    assert result.fit.status == "completed" and result.model.name == "last.safetensors"
    assert result.spec == str(result.model)
    _, metadata = read_weights(result.model)
    provenance = metadata["provenance"]
    assert provenance["stage"] == "nuclei-finetune" and provenance["start"]["given"] == "csat"
    assert provenance["replay_share"] == REPLAY_SHARE and "context crops" in provenance["replay"]
    assert len(provenance["regions"]) == 2 and len(provenance["held_out"]) == 1
    assert len(provenance["regions"][0]["labels_sha256_16"]) == 16
    assert provenance["encoder"] == "frozen"
    assert "left out slide case.svs" in (tmp_path / "run" / "run.log").read_text()
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())
    assert set(scores["before"]) == {"dice", "aji", "pq"} and len(scores["regions"]) == 1
    assert provenance["held_out_scores"]["after"] == scores["after"]
    assert "before → after" in (tmp_path / "run" / "run.log").read_text()
    # usable wherever a nuclei model is named: as a teacher and as the live nuclei source
    teacher = get_teacher(result.spec)
    assert teacher.mpp == 0.5 and teacher.use_boundary
    (source,) = build_sources(nuclei=result.spec)
    out = source.predict(np.full((1, 64, 64, 3), 200, np.uint8))
    assert out[0]["nuclei_labels"].shape == (64, 64)


def test_the_default_start_is_builtin_and_keeps_its_classical_half(tmp_path):
    """Unless told, a fine-tune starts from `builtin` (held out, the most exact model after
    corrections, docs/correct.md): `learned`'s weights train and the new model, at their 0.25
    µm/px, still averages the classical detector in."""
    from napari_rckd.teachers import get_teacher
    from napari_rckd.training.nuclei_finetune import NucleiRecipe, finetune_nuclei

    corrections = synthetic_corrections(tmp_path, regions=2)
    result = finetune_nuclei([corrections], tmp_path / "run", NucleiRecipe(**TINY))
    assert result.fit.status == "completed"
    assert result.spec == f"{result.model}+classical"
    model = get_teacher(result.spec)
    assert model.mpp == 0.25 and model.prior is not None


def test_the_replay_share_is_honoured(tmp_path):
    from napari_rckd.teachers import get_teacher
    from napari_rckd.training.data.corrections import find_corrections, training_data

    images, context = find_corrections([synthetic_corrections(tmp_path)])
    assert len(images) == 3 and len(context) == 3
    teacher = get_teacher("otsu")
    crops = dict(size=64, mpp=0.5, count=8, seed=0)
    for share in (0.0, 0.25, 0.6):
        data, used, note = training_data(
            images, context, [], [], teacher, share, crops, 400, tmp_path / "cache"
        )
        dark = [float(data[i]["image"].mean()) < 0.45 for i in range(len(data))]
        replayed = np.mean(dark)  # the context crops are dark grey, the corrected regions pink
        assert used == share and abs(replayed - share) < 0.07, (share, replayed, note)
    _, used, note = training_data(images, [], [], [], teacher, 0.3, crops, 10, tmp_path / "c")
    assert used == 0 and "corrections alone" in note


def test_cli_and_refusals(tmp_path, capsys):
    from napari_rckd.cli import main

    corrections = synthetic_corrections(tmp_path, regions=1, context=False)
    code = main(["finetune", str(corrections), "--task", "nuclei", "--out", str(tmp_path / "r"),
                 "--steps", "1", "--batch-size", "2", "--tile-size", "64", "--device", "cpu",
                 "--replay", "0.5", "--no-slide-replay"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "nuclei model:" in printed and (tmp_path / "r/last.safetensors").is_file()
    log = (tmp_path / "r" / "run.log").read_text()
    assert "corrections alone" in log and "none: fewer than two regions" in log

    def refused(*argv):
        assert main(["finetune", *argv, "--task", "nuclei", "--out", str(tmp_path / "x")]) != 0
        return capsys.readouterr().err

    assert "neither csat, learned" in refused(str(corrections), "--init", "resnet")
    assert "classical has no weights" in refused(str(corrections), "--init", "classical")
    assert "--masks does not apply" in refused(str(corrections), "--masks", str(corrections))
    assert "needs CORRECTIONS" in refused()
    label = next(corrections.rglob("*_label.tif"))
    label.write_bytes(b"")
    message = refused(str(corrections))
    assert str(label) in message and "is empty" in message


def test_refusals_name_the_file(tmp_path):
    import tifffile

    from napari_rckd.training.data.corrections import find_corrections

    folder = tmp_path / "set"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    tifffile.imwrite(folder / "a_label.tif", np.zeros((16, 16), np.uint16))
    (folder / "manifest.csv").write_text("path,mpp\na.tif,0.5\n")
    with pytest.raises(RckdError, match="a_label.tif: the labels are 16×16 px"):
        find_corrections([folder])
    (folder / "manifest.csv").write_text("path,mpp\n")
    with pytest.raises(RckdError, match="resolution of .*a.tif is unknown"):
        find_corrections([folder])


def test_real_nuclei_folder_trains(tmp_path, shared_data):
    """A labelled source of the shared data read in place (mpp from its manifest)."""
    from napari_rckd.training.nuclei_finetune import NucleiRecipe, finetune_nuclei

    recipe = NucleiRecipe(init="csat", holdout_share=0.5, **TINY)
    result = finetune_nuclei([shared_data / "nuclei" / "cryonuseg"], tmp_path / "run", recipe)
    assert result.fit.status == "completed"
    assert result.scores["regions"] and 0 < result.scores["before"]["dice"] <= 1


@pytest.mark.parametrize(
    ("after_aji", "words"),
    [(0.70, "better"), (0.61, "about the same"), (0.50, "worse on your held-out corrections")],
)
def test_the_held_out_verdict_says_what_to_do(after_aji, words):
    from napari_rckd.training.nuclei_finetune import scores_line

    scores = {
        "regions": ["a.png"],
        "before": {"dice": 0.8, "aji": 0.60, "pq": 0.5},
        "after": {"dice": 0.8, "aji": after_aji, "pq": 0.5},
    }
    assert words in scores_line(scores)
