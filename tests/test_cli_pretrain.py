"""`napari-rckd pretrain` on a real slide: a student checkpoint that is a nuclei teacher, resume,
and one clear sentence (exit code 2) for each kind of bad input, with nothing trained lost."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from napari_rckd.cli import main

TINY = ["--backbone", "resnet18", "--tile-size", "64", "--tiles", "8", "--val-tiles", "2",
        "--batch-size", "4", "--device", "cpu", "--workers", "0"]  # fmt: skip


def error_of(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A two-step stage-1 run on the CMU slide, shared by the tests below."""
    slide = shared_path("slides/cmu-1-small-region.svs")
    out = tmp_path_factory.mktemp("stage1")
    assert main(["pretrain", str(slide), "--out", str(out), "--steps", "2", *TINY]) == 0
    return slide, out


def test_pretrain_writes_a_dense_student_that_works_as_a_teacher(stage1):
    from napari_rckd.models import load_checkpoint
    from napari_rckd.teachers import get_teacher

    _, out = stage1
    model, metadata = load_checkpoint(out / "best.safetensors")
    assert model.config.task == "dense" and model.config.num_outputs == 1
    assert model.config.backbone == "resnet18" and model.config.input_mpp == 0.5
    provenance = metadata["provenance"]
    assert provenance["stage"] == "rckd-stage1" and provenance["step"] == provenance["best_step"]
    assert provenance["slides"] == ["cmu-1-small-region.svs"] and provenance["tiles"] == 8
    assert provenance["teacher"] == get_teacher("builtin").identity and provenance["steps"] == 2
    assert list(provenance["data_sha256"]) == ["cmu-1-small-region.svs"]
    assert provenance["augment"] == "light"  # the recipe's default jitter, recorded
    assert provenance["targets"] == "probability"  # and what the student copies
    assert (out / "last.state.pt").is_file()
    # 8 training + 2 validation tiles answered once each by the teacher
    assert len(list((out / "teacher-cache").rglob("*.npz"))) == 10

    teacher = get_teacher(out / "best.safetensors")
    tile = np.full((64, 64, 3), 200, np.uint8)
    output = teacher.predict(tile, 0.5)
    assert output.prob.shape == (64, 64) and 0 <= output.prob.min() <= output.prob.max() <= 1


def test_rerun_without_resume_is_refused_and_resume_continues(stage1, capsys):
    slide, out = stage1
    before = (out / "best.safetensors").read_bytes()
    code = main(["pretrain", str(slide), "--out", str(out), "--steps", "3", *TINY])
    assert code == 2
    assert "--resume" in error_of(capsys)
    assert (out / "best.safetensors").read_bytes() == before

    assert main(["pretrain", str(slide), "--out", str(out), "--steps", "3", "--resume", *TINY]) == 0
    assert "completed at step 3" in capsys.readouterr().out


@pytest.mark.parametrize("augment", ["strong", "stain"])
def test_augment_choice_trains_and_is_recorded_and_a_bad_name_is_refused(tmp_path, capsys, augment):
    from napari_rckd.models import load_checkpoint

    slide, out = shared_path("slides/cmu-1-small-region.svs"), tmp_path / augment
    argv = ["pretrain", str(slide), "--out", str(out), "--steps", "1", "--teacher", "classical"]
    assert main([*argv, "--augment", augment, *TINY]) == 0
    assert load_checkpoint(out / "best.safetensors")[1]["provenance"]["augment"] == augment

    with pytest.raises(SystemExit):
        main([*argv[:3], str(tmp_path / "other"), "--augment", "heavy", *TINY])
    assert "--augment: invalid choice: 'heavy'" in capsys.readouterr().err

    from napari_rckd.errors import RckdError
    from napari_rckd.training.recipes.stage1 import Stage1Recipe, pretrain

    with pytest.raises(RckdError, match="--augment 'heavy' is not one of light, strong, stain"):
        pretrain(slide, tmp_path / "api", Stage1Recipe(augment="heavy", steps=1))
    assert not (tmp_path / "api").exists()


def test_decision_targets_train_and_are_recorded_and_a_bad_name_is_refused(tmp_path, capsys):
    from napari_rckd.errors import RckdError
    from napari_rckd.models import load_checkpoint
    from napari_rckd.training.recipes.stage1 import Stage1Recipe, pretrain

    slide, out = shared_path("slides/cmu-1-small-region.svs"), tmp_path / "decision"
    argv = ["pretrain", str(slide), "--out", str(out), "--steps", "1", "--teacher", "classical"]
    assert main([*argv, "--targets", "decision", *TINY]) == 0
    assert load_checkpoint(out / "best.safetensors")[1]["provenance"]["targets"] == "decision"

    with pytest.raises(SystemExit):
        main([*argv[:3], str(tmp_path / "other"), "--targets", "labels", *TINY])
    assert "--targets: invalid choice: 'labels'" in capsys.readouterr().err
    with pytest.raises(RckdError, match="--targets 'labels' is not one of probability, decision"):
        pretrain(slide, tmp_path / "api", Stage1Recipe(targets="labels", steps=1))
    assert not (tmp_path / "api").exists()


def test_slide_without_mpp_needs_slide_mpp(tmp_path, capsys):
    slide = shared_path("slides/tcga-cr-7395-jp2k.svs")
    code = main(["pretrain", str(slide), "--out", str(tmp_path / "run"), "--steps", "1", *TINY])
    assert code == 2
    message = error_of(capsys)
    assert "tcga-cr-7395-jp2k.svs" in message and "--slide-mpp" in message
    assert not (tmp_path / "run").exists()


def test_no_tissue_is_one_sentence(tmp_path, capsys):
    blank = shared_path("tiles/tissue-vs-background/background/almost-white-1.png")
    args = ["pretrain", str(blank), "--out", str(tmp_path / "run"), "--slide-mpp", "0.5"]
    assert main([*args, "--steps", "1", *TINY]) == 2
    message = error_of(capsys)
    assert "tissue" in message and "almost-white-1.png" in message
    assert not list(tmp_path.rglob("*.safetensors"))


def test_folder_without_slides(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no slides here")
    assert main(["pretrain", str(tmp_path), "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    assert "contains no slide images" in error_of(capsys)


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "torchrun" in text and "--slide-mpp" in text


def test_ctrl_c_asks_the_run_to_stop_and_a_second_one_aborts():
    import os
    import signal

    from napari_rckd.commands.pretrain import stop_on_signals

    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.is_set()  # fit checkpoints and returns "cancelled" at the next step
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == before  # the caller's handler is back


def test_init_starts_the_student_from_csat_and_grows_a_detail_decoder(tmp_path, capsys):
    """--init csat --decoder detail: every weight of the shipped student is where the run
    started (the refiner alone is new), and the checkpoint says where it came from."""
    import torch

    from napari_rckd.models import load_checkpoint
    from napari_rckd.models.shipped import shipped_weights
    from napari_rckd.models.weights import read_weights

    slide = shared_path("slides/cmu-1-small-region.svs")
    out = tmp_path / "run"
    tiny = [a for a in TINY if a not in ("--backbone", "resnet18")]
    args = ["pretrain", str(slide), "--out", str(out), "--teacher", "classical", "--init", "csat"]
    assert main([*args, "--decoder", "detail", "--steps", "1", "--lr", "1e-9", *tiny]) == 2
    assert "add --boundaries" in error_of(capsys)  # csat has a contour output; so must the run
    assert main([*args, "--mpp", "0.25", "--boundaries", "--steps", "1", *tiny]) == 2
    assert "--mpp 0.5" in error_of(capsys)
    flags = ["--decoder", "detail", "--boundaries", "--steps", "1", "--lr", "1e-9"]
    assert main([*args, *flags, *tiny]) == 0
    model, metadata = load_checkpoint(out / "last.safetensors")
    assert model.config.decoder == "detail"
    assert metadata["provenance"]["init"]["path"] == "csat"
    shipped, _ = read_weights(shipped_weights("csat"))
    state = model.state_dict()
    assert set(state) - set(shipped) == {k for k in state if k.startswith("detail.")}
    for name in shipped:  # one step at lr 1e-9: still the shipped weights (fp16 there)
        torch.testing.assert_close(state[name], shipped[name].float(), atol=1e-3, rtol=0)
    told = (out / "run.log").read_text()
    assert "start weights: the shipped RCKD-CSAT student 'csat'" in told
