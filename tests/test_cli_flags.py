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
