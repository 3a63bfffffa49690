"""Every command line the README, docs/*.md and the commands' --help show is what the CLI
accepts: each parses with the parser `napari-rckd` itself builds, and the cheap ones (`info`,
and `predict` with the classical nuclei detector as the toy-size setting) run for real on a
crop of a real slide. A failure names the document and the line."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from conftest import shared_path
from documented_commands import DocCommand, documented_commands, help_commands
from napari_rckd.cli import COMMANDS, build_parser, main

PARSER = build_parser()
IN_DOCS = documented_commands()
IN_HELP = help_commands(PARSER)
# A placeholder no toy stand-in replaces (RUN/stage1/best.safetensors, SUB.safetensors, ...).
UNRESOLVED = re.compile(r"(^|/)[A-Z][A-Z0-9_]*(\.[a-z.]+)?(/|$)")


def parse(doc: DocCommand):
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            return PARSER.parse_args(list(doc.argv))
    except SystemExit:
        why = (errors.getvalue().strip().splitlines() or ["exited"])[-1]
        pytest.fail(f"{doc.where}: `{doc.text}` is refused by the CLI: {why}")


def test_the_docs_show_every_command():
    assert len(IN_DOCS) >= 50, "the collector found too few command lines; is it broken?"
    shown = {doc.command for doc in IN_DOCS}
    assert set(COMMANDS) <= shown, f"no documented example of {sorted(set(COMMANDS) - shown)}"
    # the synopsis notation was read as a user reads it
    readme = {doc.argv for doc in IN_DOCS if doc.file == "README.md"}
    assert ("finetune", "DATA", "--out", "DIR") in readme
    assert ("predict", "SLIDE", "--out", "DIR") in readme  # `SLIDE\|FOLDER` in the table


@pytest.mark.parametrize("doc", IN_DOCS, ids=[doc.where for doc in IN_DOCS])
def test_documented_command_parses(doc):
    args = parse(doc)
    assert args.command == doc.command


@pytest.mark.parametrize("doc", IN_HELP, ids=[f"{d.file}:{d.line}" for d in IN_HELP])
def test_help_example_parses(doc):
    args = parse(doc)
    assert args.command == doc.command


def test_a_refused_command_names_the_document_and_line():
    doc = DocCommand("docs/x.md", 7, "napari-rckd finetune DATA", ("finetune", "DATA"))
    with pytest.raises(pytest.fail.Exception, match=r"docs/x\.md:7: .* --out"):
        parse(doc)


@pytest.fixture(scope="module")
def crop_slide(tmp_path_factory):
    """A 768² crop of real tissue (CMU-1-Small-Region), an OME-TIFF that records 0.499 µm/px,
    alone in its folder (the FOLDER of `predict FOLDER`)."""
    import tifffile

    from napari_rckd.io import open_slide

    with open_slide(shared_path("slides/cmu-1-small-region.svs")) as slide:
        pixels = slide.read_region(0, 1000, 800, 768, 768)
    path = tmp_path_factory.mktemp("slides") / "crop.tif"
    size = {"PhysicalSizeX": 0.499, "PhysicalSizeY": 0.499}
    size |= {"PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}
    tifffile.imwrite(
        path, pixels, tile=(256, 256), compression="jpeg", photometric="rgb", ome=True,
        metadata={"axes": "YXS", **size},
    )  # fmt: skip
    return path


def runnable(command: str, stand_ins: dict[str, str]) -> list[tuple[DocCommand, list[str]]]:
    """Documented ``command`` lines with their placeholders replaced by ``stand_ins``; lines
    that need anything else (a checkpoint, a run folder) are left out."""
    found = []
    for doc in IN_DOCS:
        if doc.command != command:
            continue
        argv = [stand_ins.get(token, token) for token in doc.argv]
        if not any(UNRESOLVED.search(token) for token in argv):
            found.append((doc, argv))
    return found


def test_documented_info_commands_run(crop_slide, capsys):
    examples = runnable("info", {"SLIDE": str(crop_slide)})
    assert examples, "no documented info command could run"
    for doc, argv in examples:
        assert main(argv) == 0, f"{doc.where}: `{doc.text}` failed: {capsys.readouterr().err}"
        out = capsys.readouterr().out
        assert "768 x 768" in out and "height x width" in out, doc.where


def test_documented_predict_commands_run(crop_slide, tmp_path, capsys):
    out = tmp_path / "out"
    stand_ins = {"SLIDE": str(crop_slide), "FOLDER": str(crop_slide.parent), "DIR": str(out)}
    # cohort lines name a scheduler, a cluster or a slide list of a lab: parsed above, not run here
    examples = [(d, a) for d, a in runnable("predict", stand_ins) if "--cluster" not in a]
    assert len(examples) >= 3, "the documented predict commands could not be run"
    for doc, argv in examples:
        # toy size: the classical detector instead of the default network (the last --nuclei wins)
        code = main([*argv, "--nuclei", "classical", "--overwrite"])
        assert code == 0, f"{doc.where}: `{doc.text}` failed: {capsys.readouterr().err}"
        assert (out / "crop.zarr").is_dir(), doc.where
        assert (out / "crop.nuclei.geojson").stat().st_size > 100, doc.where
