"""`napari-rckd` command line: one subcommand per module, imported only when run.

Each command module defines ``add_arguments(parser)`` and ``run(args) -> int``; its
heavy imports (torch, napari) live inside ``run`` so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from napari_rckd import __version__
from napari_rckd.errors import RckdError

# name -> (module, one-line help). Keep in the order a new user meets them.
COMMANDS: dict[str, tuple[str, str]] = {
    "view": (
        "napari_rckd.commands.view",
        "open napari with a slide (or the sample) and the plugin docked",
    ),
    "info": (
        "napari_rckd.commands.info",
        "print a slide's levels, tiles, mpp, vendor and associated images",
    ),
    "pretrain": (
        "napari_rckd.commands.pretrain",
        "RCKD stage 1: distil a nuclei teacher into a student on unlabeled slides",
    ),
    "finetune": (
        "napari_rckd.commands.finetune",
        "RCKD stage 2: fine-tune a student on labelled tiles, regions or masks",
    ),
    "train-teacher": (
        "napari_rckd.commands.train_teacher",
        "train the learned nuclei teacher on labelled nuclei images",
    ),
    "evaluate": (
        "napari_rckd.commands.evaluate",
        "measure teachers and models against ground truth",
    ),
    "predict": (
        "napari_rckd.commands.predict",
        "nuclei, subtype and cancer-region results over whole slides, with exports",
    ),
    "demo": (
        "napari_rckd.commands.demo",
        "the whole workflow on the sample slide, with a screenshot per step",
    ),
    "bench": ("napari_rckd.bench", "measure speed and memory (read, models, train, infer)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-rckd",
        description="Whole-slide pathology analysis with CSAT models and RCKD distillation.",
    )
    parser.add_argument("--version", action="version", version=f"napari-rckd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(
            name, help=help_text, description=(module.__doc__ or help_text).strip()
        )
        module.add_arguments(command_parser)
        add_global_flags(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def add_global_flags(parser: argparse.ArgumentParser) -> None:
    """-v after the subcommand too (`napari-rckd evaluate nuclei ... -v`), at every level.

    SUPPRESS keeps a subcommand that was not given -v from resetting the top-level one.
    """
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages"
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                add_global_flags(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except RckdError as error:
        print(f"napari-rckd {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"napari-rckd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
