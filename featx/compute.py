"""Compute: where and how wide a verb runs, never what it computes.

One value, built once at a front door (the command line's --n-jobs, --cluster*, --batch-size and --quiet; a
pipeline; a notebook) and handed to extract, compare, tune and predict, which ask it for their parallelism, their
Dask cluster and their progress bar. Nothing here changes a number: the same fits run one at a time, on every
core or on a SLURM cluster give the same results.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from featx.errors import FeatxError


@dataclass(frozen=True, kw_only=True)
class Compute:
    """How wide and where to run.

    workers : fits (compare's rows and folds, tune's selection splits) in parallel on this many joblib workers,
        each on one core (-1: every core; 1: one at a time in this process, each fit on every core).
    cluster : run on Dask workers instead: a featx.distributed spec ("local:N", "tcp://HOST:PORT", "slurm[:N]") or
        a dask.distributed Client of the caller's; cluster_config : its options (a dict or a TOML/YAML file);
        cluster_timeout : seconds a SLURM cluster may go without a worker (default featx.distributed's).
    batch_size : images per forward pass (extract, predict); with views, model inputs (images x views).
    progress : progress bars on stderr (a plain line now and then when it is not a terminal).
    reuse : compare's folds fit their transforms once, solve wide linear models in the row space (the same
        optimum, fewer operations) and share an exact SVM's kernel; False fits every fold's Pipeline on the original
        columns (the reference). Either way every fold starts cold.
    """

    workers: int | None = -1
    cluster: object = None
    cluster_config: object = None
    cluster_timeout: float | None = None
    batch_size: int = 32
    progress: bool = True
    reuse: bool = True

    def __post_init__(self):
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise FeatxError(f"--batch-size {self.batch_size} must be at least 1")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)):
            raise FeatxError(f"--n-jobs {self.workers!r} must be a whole number (-1: every core)")

    @property
    def parallel(self) -> int | None:
        """joblib's n_jobs for the fits: every worker of a cluster, else `workers`."""
        return -1 if self.cluster is not None else self.workers

    def require(self) -> None:
        """Before any work: one line if the cluster cannot be used (Dask missing, a bad spec or SLURM config)."""
        if self.cluster is not None:
            from featx import distributed

            distributed.require_dask(self.cluster, self.cluster_config)

    def client(self, cache, log=None):
        """A context yielding a dask.distributed Client for the cluster (None without one); SLURM job logs go to
        <cache root>/slurm-logs unless the config names a log_directory."""
        if self.cluster is None:
            return nullcontext()
        from featx import distributed

        return distributed.connect(
            self.cluster,
            self.cluster_config,
            timeout=self.cluster_timeout,
            log_dir=_log_dir(cache),
            log=log,
        )

    def joblib(self, cache, *, scatter=(), log=None):
        """A context in which joblib.Parallel runs on the cluster's workers (`scatter`: large arguments sent to each
        worker once); without a cluster, joblib's own processes."""
        if self.cluster is None:
            return nullcontext()
        from featx import distributed

        return distributed.joblib_backend(
            self.cluster,
            scatter=scatter,
            config=self.cluster_config,
            timeout=self.cluster_timeout,
            log_dir=_log_dir(cache),
            log=log,
        )


def _log_dir(cache):
    """<cache root>/slurm-logs, where sbatch writes the jobs' logs: checked to be no link out of the cache."""
    from featx.cache import safepath

    return safepath.check_write(cache.root, cache.root / "slurm-logs")
