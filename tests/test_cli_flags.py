"""Global flags work before and after the subcommand, at every level of it."""

from __future__ import annotations

import pytest

from napari_rckd.cli import build_parser


@pytest.mark.parametrize(
    "argv, verbose",
    [
        (["-v", "info", "s.svs"], True),
        (["info", "s.svs", "-v"], True),
        (["evaluate", "nuclei", "--data", "d", "-v"], True),
        (["evaluate", "-v", "tiles", "c.safetensors", "--data", "d"], True),
        (["-v", "evaluate", "nuclei", "--data", "d"], True),  # not reset by the subcommand
        (["evaluate", "nuclei", "--data", "d"], False),
    ],
)
def test_verbose_anywhere(argv, verbose):
    assert build_parser().parse_args(argv).verbose is verbose


@pytest.mark.parametrize(
    "command, default", [("pretrain", "PRETRAIN_STEPS"), ("finetune", "FINETUNE_STEPS")]
)
def test_training_length_defaults_when_not_given_and_is_kept_when_given(command, default, capsys):
    from napari_rckd import defaults
    from napari_rckd.commands.pretrain import default_budget

    parser = build_parser()
    args = parser.parse_args([command, "data", "--out", "run"])
    default_budget(args)
    assert args.steps == getattr(defaults, default) and args.epochs is None
    args = parser.parse_args([command, "data", "--out", "run", "--epochs", "3"])
    default_budget(args)
    assert args.steps is None and args.epochs == 3
    args = parser.parse_args([command, "data", "--out", "run", "--steps", "7"])
    default_budget(args)
    assert args.steps == 7
    with pytest.raises(SystemExit):
        parser.parse_args([command, "data", "--out", "run", "--steps", "7", "--epochs", "1"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    assert f"(default {getattr(defaults, default)}:" in " ".join(capsys.readouterr().out.split())
