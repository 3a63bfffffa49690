"""Reader fuzz: mutate tiny seed TIFFs, run each input isolated, count hangs, crashes, raw errors.

Each input is a seed (`fuzz_inputs.py`) with one bit flip, overwrite, truncation or
duplication, exercised in a forked child with a deadline and a memory cap
(`fuzz_sandbox.py`). The promise is 0 hangs, 0 crashes and 0 raw (non-`RckdError`)
exceptions; "refused" and "damaged" are the clear sentences a user should get instead.
Inputs that break the promise are kept with ``--keep`` to reproduce them.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

FINE = ("ok", "refused", "damaged")
FAILURES = ("hang", "crash", "raw")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=10_000, help="mutated inputs to run")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the mutations")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds before a hang")
    parser.add_argument("--memory-mb", type=int, default=2048, help="memory cap of each input")
    parser.add_argument("--keep", metavar="DIR", help="copy hanging, crashing or raw inputs here")


def run(args: argparse.Namespace) -> int:
    from napari_rckd.report import report

    started = time.perf_counter()
    counts, examples = fuzz(args.n, args.seed, args.timeout, args.memory_mb, args.keep)
    elapsed = time.perf_counter() - started
    rows = [{"outcome": name, "inputs": counts.get(name, 0)} for name in (*FINE, *FAILURES)]
    report(
        f"Reader fuzz: {args.n} mutated TIFFs (seed {args.seed})",
        rows,
        args.json,
        json_extra={"examples": examples},
        seconds=round(elapsed, 1),
    )
    for line in examples:
        print(line)
    return 1 if any(counts.get(name) for name in FAILURES) else 0


def fuzz(
    n: int, seed: int, timeout: float, memory_mb: int, keep: str | None = None
) -> tuple[Counter, list[str]]:
    """Outcome counts over ``n`` inputs, and one line per input that broke the promise."""
    import napari_rckd.io.tiff  # noqa: F401  (imported once here, not in every child)
    from napari_rckd.bench.fuzz_inputs import mutate, write_seeds
    from napari_rckd.bench.fuzz_sandbox import memory_cap, run_isolated

    logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # it logs every damaged tag it meets
    rng = np.random.default_rng(seed)
    counts, examples = Counter(), []
    cap = memory_cap(memory_mb * 2**20)
    with tempfile.TemporaryDirectory(prefix="rckd-fuzz-") as tmp:
        seeds = write_seeds(Path(tmp) / "seeds")
        for index in range(n):
            source = seeds[index % len(seeds)]
            kind, data = mutate(source, rng)
            path = Path(tmp) / f"{index:05d}-{kind}-{source.name}"
            path.write_bytes(data)
            outcome = run_isolated(path, timeout, cap)
            category = outcome.split(":")[0]
            counts[category] += 1
            if category in FAILURES:
                examples.append(f"{path.name}: {outcome}")
                logger.warning("%s: %s", path.name, outcome)
                if keep:
                    Path(keep).mkdir(parents=True, exist_ok=True)
                    (Path(keep) / path.name).write_bytes(data)
            path.unlink()
    return counts, examples
