"""Dask as featx's scale-out engine: which cluster to use, tasks whose results come back in order, joblib sweeps.

A cluster spec names where work runs:

* ``local:N`` -- N worker processes on this machine (one thread each);
* ``tcp://HOST:PORT`` -- a running Dask scheduler (``dask scheduler`` plus ``dask worker`` on other machines);
* ``slurm`` or ``slurm:N`` -- N SLURM jobs (default 1) started through dask-jobqueue's SLURMCluster, configured by a
  ``--cluster-config`` TOML or YAML file of SLURMCluster keyword arguments (cores, memory, walltime, queue, account,
  job_extra_directives such as ``--gres=gpu:1``).

Dask and dask-jobqueue are optional (``pip install "featx[dask]"``). This module imports nothing of featx's
pipeline stages: the extractor and the experiments hand it plain functions and data.
"""

from __future__ import annotations

import json
import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

from featx.errors import FeatxError, RunFailed

INSTALL_HINT = 'pip install "featx[dask]"'
SPEC_HELP = "local:N, tcp://HOST:PORT or slurm[:N]"


def require_dask(cluster=None) -> None:
    """One line naming the package to install (instead of an ImportError traceback), or the spec's mistake;
    called before any work starts, so that neither ends a run minutes in."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise FeatxError(f"--cluster needs Dask, which is not installed; run: {INSTALL_HINT}") from None
    if isinstance(cluster, str):
        parse_spec(cluster)


def parse_spec(spec: str) -> tuple[str, str | int]:
    """'local:2' -> ('local', 2); 'tcp://h:8786' -> ('address', 'tcp://h:8786'); 'slurm' -> ('slurm', 1)."""
    kind, _, count = spec.partition(":")
    if kind in ("tcp", "tls", "ucx", "inproc"):
        return "address", spec
    if spec == "slurm":
        return "slurm", 1
    if kind in ("local", "slurm") and count.isdigit() and int(count) > 0:
        return kind, int(count)
    raise FeatxError(f"bad --cluster '{spec}'; write {SPEC_HELP}, e.g. local:2")


def read_config(path) -> dict:
    """Cluster keyword arguments from a TOML (.toml) or YAML (.yaml/.yml) file: a table of SLURMCluster options."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise FeatxError(f"cannot read --cluster-config {path} ({exc.strerror}); check the path") from None
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise FeatxError(f"--cluster-config {path} must end in .toml, .yaml or .yml")
    try:
        config = _parse_toml(text) if path.suffix == ".toml" else _parse_yaml(text)
    except Exception as exc:  # noqa: BLE001  TOMLDecodeError, YAMLError: a syntax error in the user's file
        raise FeatxError(f"--cluster-config {path} is not valid: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise FeatxError(f"--cluster-config {path} must hold a table of cluster options, e.g. cores = 8")
    return config


def _parse_toml(text: str):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def _parse_yaml(text: str):
    import yaml  # a dependency of dask

    return yaml.safe_load(text) or {}


@contextmanager
def connect(cluster, config=None):
    """Yield a dask.distributed Client for `cluster` (a spec string or a Client of the caller's, kept open).

    config : dict or path of cluster keyword arguments (for local: and slurm clusters). A cluster featx starts
    here is shut down on exit, the SLURM jobs with it.
    """
    require_dask()
    from distributed import Client

    if isinstance(cluster, Client):
        yield cluster
        return
    kind, value = parse_spec(cluster)
    options = read_config(config) if isinstance(config, (str, Path)) else dict(config or {})
    if kind == "address":
        if options:
            raise FeatxError("--cluster-config applies to local: and slurm clusters; configure a running scheduler's "
                             "workers where you start them")
        try:
            client = Client(value)
        except OSError as exc:
            raise FeatxError(f"cannot reach the Dask scheduler at {value} ({exc}); start one with `dask scheduler` "
                             "(and `dask worker` on the workers) or check the address") from None
        with client:
            yield client
        return
    with _start_cluster(kind, value, options) as started, Client(started) as client:
        yield client


def _start_cluster(kind: str, n: int, options: dict):
    if kind == "local":
        from distributed import LocalCluster

        factory = LocalCluster
        defaults = {"n_workers": n, "threads_per_worker": 1, "processes": True, "dashboard_address": None,
                    "silence_logs": logging.ERROR}
    else:
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise FeatxError(f"--cluster slurm needs dask-jobqueue, which is not installed; run: {INSTALL_HINT}") from None
        if shutil.which("sbatch") is None:
            raise FeatxError("--cluster slurm needs the SLURM command sbatch, which is not on PATH; run featx on a "
                             "SLURM login node, or use --cluster local:N")
        factory, defaults = SLURMCluster, {}
    try:
        cluster = factory(**{**defaults, **options})
    except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: a worker failed to start, its reason inside
        while exc.__cause__ is not None:
            exc = exc.__cause__
        raise FeatxError(f"could not start the {kind} cluster with options {json.dumps(options, default=str)} ({exc}); "
                         f"check --cluster-config against the {factory.__module__.split('.')[0]}.{factory.__name__} "
                         "documentation") from None
    if kind == "slurm":
        cluster.scale(jobs=n)
    return cluster


def n_workers(client) -> int:
    """Workers connected now (at least 1: SLURM jobs may still be queued, and tasks wait for them)."""
    return max(1, len(client.scheduler_info().get("workers", {})))


def ordered_results(client, fn, tasks: list[tuple], per_worker: int = 2):
    """Yield fn(*task) for each task, in task order, while Dask runs up to `per_worker` per worker at once.

    Results that finish early wait in a buffer; submitted plus buffered tasks never exceed `per_worker` times
    the workers connected (counted again as tasks finish: SLURM jobs join over time), so memory stays bounded
    whatever the order of completion. A worker that dies mid-task is replaced by its
    nanny and the scheduler reruns the task elsewhere (up to distributed.scheduler.allowed-failures times).
    An exception raised by fn is raised here; the tasks still queued are cancelled.
    """
    from distributed import as_completed

    todo = iter(enumerate(tasks))
    running, ready, following = {}, {}, 0
    pending = as_completed()

    def submit_more():
        limit = per_worker * n_workers(client)
        while len(running) + len(ready) < limit and (item := next(todo, None)) is not None:
            future = client.submit(fn, *item[1], pure=False)
            running[future] = item[0]
            pending.add(future)

    try:
        submit_more()
        for future in pending:
            ready[running.pop(future)] = _result(future, tasks)
            while following in ready:
                yield ready.pop(following)
                following += 1
            submit_more()
    finally:
        client.cancel(list(running))


def _result(future, tasks):
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        raise RunFailed("Dask workers died repeatedly while running one shard (out of memory?); committed rows are "
                        "kept: give workers more memory (--cluster-config) and re-run the same command to resume") from None


@contextmanager
def joblib_backend(cluster, scatter=(), config=None):
    """Run joblib.Parallel calls inside on the cluster's workers (joblib's Dask backend).

    scatter : large arguments (the feature matrix) sent to every worker once; a task argument that *is* one of
    these objects travels as a reference to the worker's copy instead of being pickled per task.
    """
    import joblib

    with connect(cluster, config) as client:
        with joblib.parallel_config(backend="dask", scatter=list(scatter), wait_for_workers_timeout=600):
            yield client
