"""Every `napari-rckd ...` command line the README, docs/*.md and the napari hub description
show, as argv lists.

Command lines come from shell code blocks (fenced with no language, bash, sh, shell or
console) and from inline code spans. A line counts when a shell segment (split at ``&&``,
``;`` and ``|``) starts with ``napari-rckd`` (``.venv/bin/napari-rckd`` too) or runs
``-m napari_rckd.cli`` (``torchrun``, ``python``) or wraps ``napari-rckd`` (``xvfb-run``).
Synopsis notation is read the way a user reads it: ``[--flag VALUE]`` is given, ``A|B`` takes
its first alternative, ``SLIDES...`` is one slide, and a trailing ``# comment`` is dropped.
An inline span that only names a command (`napari-rckd bench train`: lowercase words) or
elides its arguments (``...``) is prose, not a command line.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
SEPARATORS = {"&&", "||", ";", "|"}
LAUNCHERS = {"torchrun", "python", "python3", "xvfb-run", "env", "time"}
# Placeholders that stand for numbers (a path placeholder such as SLIDE parses as it is).
NUMBERS = {"MPP": "0.5", "N": "2", "W": "2"}


@dataclass(frozen=True)
class DocCommand:
    file: str  # relative to the repository root
    line: int
    text: str  # as the reader sees it
    argv: tuple[str, ...]  # what follows `napari-rckd`

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def command(self) -> str:
        return self.argv[0] if self.argv else ""


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] + [
        ROOT / ".napari-hub" / "DESCRIPTION.md"
    ]


def documented_commands() -> list[DocCommand]:
    commands = []
    for path in doc_files():
        name = path.relative_to(ROOT).as_posix()
        for number, text, inline in _candidate_lines(path.read_text(encoding="utf-8")):
            argv = command_argv(text, inline)
            if argv is not None:
                commands.append(DocCommand(name, number, text.strip(), tuple(argv)))
    return commands


def help_commands(parser) -> list[DocCommand]:
    """The example command lines in the epilogs (the end of --help) of ``parser``'s
    subcommands; ``file`` is ``napari-rckd NAME --help`` and ``line`` the epilog's line."""
    import argparse

    commands = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, sub in action.choices.items():
            lines = (sub.epilog or "").replace("\\\n", " ").splitlines()
            for number, line in enumerate(lines, 1):
                argv = command_argv(line)
                if argv is not None:
                    where = f"napari-rckd {name} --help"
                    commands.append(DocCommand(where, number, line.strip(), tuple(argv)))
    return commands


def _candidate_lines(text: str):
    """(line number, text, inline?) of shell-block lines (joined at a trailing backslash) and
    of inline code spans outside blocks."""
    lines = text.splitlines()
    fence, shell, index = None, False, 0
    while index < len(lines):
        line, number = lines[index], index + 1
        opening = re.match(r"\s*(```+|~~~+)\s*(\S*)", line)
        if opening and (fence is None or opening.group(1).startswith(fence)):
            if fence is None:
                fence, shell = opening.group(1), opening.group(2).lower() in SHELL_BLOCKS
            else:
                fence = None
        elif fence is not None:
            if shell and "napari" in line:
                while line.rstrip().endswith("\\") and index + 1 < len(lines):
                    index += 1
                    line = line.rstrip()[:-1] + " " + lines[index].strip()
                yield number, line, False
        else:
            for span in re.findall(r"`((?:napari-rckd|torchrun|python3? -m) [^`]+)`", line):
                yield number, span, True
        index += 1


def command_argv(text: str, inline: bool = False) -> list[str] | None:
    """The arguments after `napari-rckd` in ``text``, or None when it runs no command."""
    text = text.replace("\\|", "|").replace("[", " ").replace("]", " ")
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:
        return None
    segments, current = [], []
    for token in tokens:
        if token in SEPARATORS:
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    for segment in segments:
        rest = _after_program(segment)
        if rest is None:
            continue
        argv = [_value(token) for token in rest]
        if inline and (all(re.fullmatch(r"[a-z][a-z-]*", t) for t in argv) or "..." in rest):
            return None  # prose naming a command, or a synopsis that elides its arguments
        return argv
    return None


def _after_program(segment: list[str]) -> list[str] | None:
    words = [w for w in segment if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w)]
    if not words:
        return None
    if words[0].rsplit("/", 1)[-1] == "napari-rckd":
        return words[1:]
    if words[0].rsplit("/", 1)[-1] in LAUNCHERS:
        for index, word in enumerate(words):
            if word == "napari_rckd.cli" and words[index - 1] == "-m":
                return words[index + 1 :]
            if word.rsplit("/", 1)[-1] == "napari-rckd":
                return words[index + 1 :]
    return None


def _value(token: str) -> str:
    if "|" in token:
        token = token.split("|")[0]  # A|B: the first alternative
    if token.endswith("...") and len(token) > 3:
        token = token[:-3]  # SLIDES...: one of them
    return NUMBERS.get(token, token)
