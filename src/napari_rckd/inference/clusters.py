"""Where a cohort runs: ``--cluster`` names a Dask distributed cluster, opened here.

* ``none`` — no cluster: the slides run one after another in this process.
* ``local`` or ``local:N`` — a ``LocalCluster`` of N worker processes on this machine, one slide
  at a time each, the CPU threads split between them; on a machine with GPUs one worker per GPU
  (dask-cuda's ``LocalCUDACluster`` when installed, else ``CUDA_VISIBLE_DEVICES`` per worker).
* ``tcp://HOST:PORT`` — the scheduler of a cluster that already runs.
* ``jobqueue:FILE.yaml`` — a dask-jobqueue cluster (Slurm, PBS, SGE, LSF) from the user's YAML:
  ``kind: slurm`` plus the cluster's own keyword arguments (cores, memory, queue, ...).

Dask does the scheduling, the load balancing and the retries; this module only opens the
cluster and turns what can go wrong before any work into one sentence. No Qt.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from napari_rckd.errors import RckdError

log = logging.getLogger(__name__)

JOBQUEUE_KINDS = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
}
CONNECT_TIMEOUT_S = 10  # how long an existing scheduler has to answer
CPU_THREADS_PER_WORKER = 4  # `local` without N on a CPU: one worker per this many cores
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CLUSTER_HELP = "none, local, local:N, tcp://HOST:PORT or jobqueue:FILE.yaml"


def check_spec(spec: str) -> str:
    """``spec`` when it names a kind of cluster, else one sentence (before anything starts)."""
    kind, _, rest = spec.partition(":")
    kind = kind.lower()
    if spec.lower() in ("none", "local") or (kind in ("tcp", "tls") and rest.startswith("//")):
        return spec
    if kind == "local" and rest.isdigit() and int(rest) > 0:
        return spec
    if kind == "jobqueue" and rest:
        jobqueue_settings(rest)  # a bad YAML is told before any work
        return spec
    raise RckdError(f"--cluster {spec} is not a cluster; use {CLUSTER_HELP}.")


@contextmanager
def open_client(spec: str, workers: int | None = None) -> Iterator[object | None]:
    """A ``distributed.Client`` for ``spec`` (``None`` for ``none``), closed afterwards with
    the cluster this opened (an existing scheduler is left running)."""
    spec = check_spec(spec)
    if spec.lower() == "none":
        yield None
        return
    try:
        from distributed import Client
    except ImportError as error:
        raise RckdError(
            f"--cluster {spec} needs Dask distributed; pip install distributed (or "
            "napari-rckd[cluster])."
        ) from error
    if not log.isEnabledFor(logging.DEBUG):  # Dask's own INFO lines would drown ours
        logging.getLogger("distributed").setLevel(logging.WARNING)
    kind = spec.split(":", 1)[0].lower()
    if kind in ("tcp", "tls"):
        client = _connect(Client, spec)
        try:
            yield client
        finally:
            client.close()
        return
    cluster = (
        _jobqueue_cluster(spec.split(":", 1)[1], workers)
        if kind == "jobqueue"
        else _local_cluster(spec, workers)
    )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def dashboard(client) -> str:
    """Where Dask's dashboard of ``client``'s cluster is served (it needs bokeh)."""
    import importlib.util

    if importlib.util.find_spec("bokeh") is None:
        return "not served here (pip install bokeh for Dask's dashboard)"
    return client.dashboard_link


def _connect(client_class, address: str):
    try:
        return client_class(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as error:
        raise RckdError(
            f"could not reach the Dask scheduler at {address} within {CONNECT_TIMEOUT_S} s "
            f"({type(error).__name__}); start it (`dask scheduler`) or check the address."
        ) from error


def local_workers(spec: str, workers: int | None = None) -> tuple[int, int, int]:
    """(workers, threads per worker, GPUs) of ``local``/``local:N`` on this machine."""
    gpus = _gpu_count()
    cores = os.cpu_count() or 1
    if ":" in spec:
        count = int(spec.split(":", 1)[1])
    elif workers:
        count = workers
    else:
        count = gpus or max(1, cores // CPU_THREADS_PER_WORKER)
    return count, max(1, cores // count), gpus


def _local_cluster(spec: str, workers: int | None):
    from distributed import LocalCluster

    count, threads, gpus = local_workers(spec, workers)
    # One task (a slide) at a time per worker; its torch threads are the worker's share of
    # the cores (distributed itself sets these variables to 1 in every worker it starts).
    from napari_rckd.inference.cohort_slide import THREADS_VARIABLE

    env = {name: str(threads) for name in (*THREAD_VARIABLES, THREADS_VARIABLE)}
    if gpus:
        return _gpu_cluster(min(count, gpus), env)
    log.info("LocalCluster: %d worker processes, %d threads each", count, threads)
    return LocalCluster(
        n_workers=count, threads_per_worker=1, processes=True, env=env, dashboard_address=":0"
    )


def _gpu_cluster(count: int, env: dict):
    """One worker per GPU: dask-cuda when installed, else each worker sees only its GPU."""
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        from distributed import SpecCluster

        return SpecCluster(**gpu_worker_specs(count, env), asynchronous=False)
    visible = ",".join(str(i) for i in range(count))
    return LocalCUDACluster(
        CUDA_VISIBLE_DEVICES=visible, threads_per_worker=1, env=env, dashboard_address=":0"
    )


def gpu_worker_specs(count: int, env: dict) -> dict:
    """`SpecCluster` arguments: ``count`` nannies, worker i with ``CUDA_VISIBLE_DEVICES=i``."""
    from distributed import Nanny, Scheduler

    workers = {
        f"gpu-{i}": {
            "cls": Nanny,
            "options": {"nthreads": 1, "env": {**env, "CUDA_VISIBLE_DEVICES": str(i)}},
        }
        for i in range(count)
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    return dict(scheduler=scheduler, workers=workers)


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def jobqueue_settings(path: str | Path) -> tuple[str, dict]:
    """(dask-jobqueue class name, its keyword arguments) from the user's YAML file."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise RckdError(f"--cluster jobqueue:{path}: no such file; give a YAML file that exists.")
    try:
        settings = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise RckdError(
            f"--cluster jobqueue:{path} is not valid YAML{line}; fix it (see docs/cohorts.md "
            "for an example)."
        ) from error
    if not isinstance(settings, dict) or str(settings.get("kind", "")).lower() not in (
        JOBQUEUE_KINDS
    ):
        raise RckdError(
            f"--cluster jobqueue:{path} must be a mapping whose `kind` is one of "
            f"{', '.join(JOBQUEUE_KINDS)}, plus the cluster's arguments (cores, memory, ...)."
        )
    settings = dict(settings)
    return JOBQUEUE_KINDS[str(settings.pop("kind")).lower()], settings


def jobqueue_cluster(path: str | Path):
    """The dask-jobqueue cluster the YAML describes, with no job submitted yet."""
    name, settings = jobqueue_settings(path)
    try:
        import dask_jobqueue
    except ImportError as error:
        raise RckdError(
            f"--cluster jobqueue:{path} needs dask-jobqueue; pip install dask-jobqueue."
        ) from error
    try:
        return getattr(dask_jobqueue, name)(**settings)
    except (TypeError, ValueError) as error:
        why = str(error).splitlines()[0].rstrip(". ")  # its first line names the argument
        raise RckdError(
            f"--cluster jobqueue:{path}: dask-jobqueue's {name} refused these settings "
            f"({why}); fix the YAML."
        ) from error


def _jobqueue_cluster(path: str, workers: int | None):
    cluster = jobqueue_cluster(path)
    cluster.scale(workers or 1)  # jobs are submitted here; they join as the queue allows
    log.info("dask-jobqueue: asked for %d workers", workers or 1)
    return cluster
