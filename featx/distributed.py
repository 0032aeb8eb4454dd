"""Dask as featx's scale-out engine: which cluster to use, tasks whose results come back in order, joblib sweeps.

A cluster spec names where work runs:

* ``local:N`` -- N worker processes on this machine (one thread each);
* ``tcp://HOST:PORT`` -- a running Dask scheduler (``dask scheduler`` plus ``dask worker`` on other machines);
* ``slurm`` or ``slurm:N`` -- N SLURM jobs (default 1) started through dask-jobqueue's SLURMCluster, configured by a
  ``--cluster-config`` TOML or YAML file (SLURM_KEYS: partition, account, qos, walltime, memory, cores, gpus, gres,
  job_name, job_extra_directives, log_directory, job_script_prologue, ...). Each job runs one Dask worker with this
  process's Python (and PYTHONPATH); its logs land in one folder (default <cache>/slurm-logs), never the working
  folder. A job SLURM rejects is one line naming the setting; one that never starts stops the run after
  --cluster-timeout seconds; a job that ends mid-run (scancel, walltime) is replaced; the jobs are cancelled
  when featx exits (normally, on an error, Ctrl-C or SIGTERM).

Dask and dask-jobqueue are optional (``pip install "featx[dask]"``). This module imports nothing of featx's
pipeline stages: the extractor and the experiments hand it plain functions and data.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

from featx.errors import FeatxError, RunFailed

INSTALL_HINT = 'pip install "featx[dask]"'
SPEC_HELP = "local:N, tcp://HOST:PORT or slurm[:N]"
DEFAULT_TIMEOUT = 300.0  # seconds a cluster may go without any worker (queued jobs) before the run stops
POLL = 2.0  # seconds between looks at the SLURM jobs while waiting for results

# --cluster-config keys for --cluster slurm: what each sets. featx's own names (partition, qos, gpus, gres) become
# dask-jobqueue SLURMCluster arguments; the others are SLURMCluster's own.
SLURM_KEYS = {
    "partition": "sbatch -p (also accepted as dask-jobqueue's name, queue)",
    "queue": "the same as partition",
    "account": "sbatch -A",
    "qos": "sbatch --qos",
    "walltime": 'sbatch -t, the job\'s time limit, e.g. "04:00:00" (a job that reaches it is replaced)',
    "memory": 'sbatch --mem and the worker\'s memory limit, e.g. "16GB" (default 4GB)',
    "cores": "sbatch --cpus-per-task and the worker's threads (default 1)",
    "processes": "Dask worker processes per job (default 1)",
    "gpus": 'sbatch --gpus, e.g. 1 or "a100:1"',
    "gres": 'sbatch --gres, e.g. "gpu:1"',
    "job_name": "sbatch -J (default dask-worker)",
    "job_extra_directives": 'more #SBATCH lines, e.g. ["--constraint=v100"]',
    "log_directory": "folder of the worker jobs' .out/.err logs (default <cache>/slurm-logs)",
    "job_script_prologue": 'shell lines run before the worker starts, e.g. ["source ~/venv/bin/activate"]',
    "local_directory": "the worker's scratch folder on the node",
    "python": "the worker's Python (default this one)",
    "interface": 'network interface of the workers, e.g. "ib0"',
    "scheduler_options": 'the scheduler\'s options, e.g. {interface = "ib0"} when compute nodes cannot reach the '
    "login node's default address",
    "death_timeout": "seconds a worker waits for a vanished client before its job ends (default 60)",
    "worker_extra_args": "more dask worker arguments",
    "job_cpu": "sbatch --cpus-per-task when it differs from cores",
    "job_mem": "sbatch --mem when it differs from memory",
    "job_directives_skip": '#SBATCH lines to leave out, e.g. ["--mem"] where the site forbids it',
}
SLURM_DEFAULTS = {"cores": 1, "processes": 1, "memory": "4GB", "job_name": "dask-worker"}


def require_dask(cluster=None, config=None) -> None:
    """One line naming the package to install (instead of an ImportError traceback), or the spec's or the
    SLURM config's mistake; called before any work starts, so that none ends a run minutes in."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise FeatxError(f"--cluster needs Dask, which is not installed; run: {INSTALL_HINT}") from None
    if isinstance(cluster, str) and parse_spec(cluster)[0] == "slurm" and config is not None:  # a bad spec: raised
        slurm_options(read_config(config) if isinstance(config, (str, Path)) else dict(config), log_dir=".")


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


def slurm_options(config: dict, log_dir=None) -> dict:
    """dask-jobqueue SLURMCluster keyword arguments for a --cluster-config table of SLURM_KEYS.

    log_dir : the jobs' log folder unless the table names one (default: <featx's default cache>/slurm-logs).
    The worker runs this process's Python with its PYTHONPATH (written into the job script: a site's sbatch
    may not pass the environment on).
    """
    unknown = [key for key in config if key not in SLURM_KEYS]
    if unknown:
        raise FeatxError(
            f"unknown --cluster-config key '{unknown[0]}' for --cluster slurm; accepted: {', '.join(SLURM_KEYS)}"
        )
    options = {**SLURM_DEFAULTS, "python": sys.executable, **config}
    if "partition" in options:
        if "queue" in config:
            raise FeatxError("--cluster-config sets both partition and queue; keep one (they are the same setting)")
        options["queue"] = options.pop("partition")
    extra = list(_strings(options.pop("job_extra_directives", []), "job_extra_directives"))
    for key, flag in (("qos", "--qos"), ("gpus", "--gpus"), ("gres", "--gres")):
        if key in options:
            extra.append(f"{flag}={options.pop(key)}")
    prologue = list(_strings(options.pop("job_script_prologue", []), "job_script_prologue"))
    if os.environ.get("PYTHONPATH"):
        prologue.insert(0, f"export PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])}")
    options["job_script_prologue"] = prologue
    # The logs: never sbatch's default, the working folder. The -o/-e lines are written here, quoted, rather
    # than by dask-jobqueue, whose unquoted path breaks at a space (a cache under "My Documents").
    logs = options.pop("log_directory", None) or (log_dir if log_dir is not None else _default_cache() / "slurm-logs")
    logs = Path(logs).expanduser().absolute()
    if '"' in str(logs) or "\n" in str(logs):
        raise FeatxError(
            f"the SLURM log folder {str(logs)!r} holds a quote or newline, which an #SBATCH line cannot "
            "hold; set log_directory in --cluster-config to another folder"
        )
    stem = f"{logs}/{options.get('job_name') or 'dask-worker'}-%j"
    options["job_extra_directives"] = [f'-o "{stem}.out"', f'-e "{stem}.err"', *extra]
    options["scheduler_options"] = {"dashboard_address": ":0", **options.get("scheduler_options", {})}
    return options


def _default_cache() -> Path:
    from featx.cache.store import Cache

    return Cache().root


def _strings(value, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise FeatxError(f'--cluster-config {key} must be a list of strings, e.g. {key} = ["..."]')
    return list(value)


@contextmanager
def connect(cluster, config=None, *, timeout: float | None = None, log_dir=None, log=None):
    """Yield a dask.distributed Client for `cluster` (a spec string or a Client of the caller's, kept open).

    config : dict or path of cluster keyword arguments (for local: and slurm clusters). A cluster featx starts
    here is shut down on exit, the SLURM jobs with it (SIGTERM, like Ctrl-C, then unwinds instead of killing).
    timeout : seconds (default DEFAULT_TIMEOUT) a SLURM cluster may have no worker -- its jobs queued or
    replaced -- before the run stops with one line naming the job's state. log_dir : the SLURM jobs' log
    folder (unless config names one); log : called with each message line (jobs submitted, logs, replacements).
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
            raise FeatxError(
                "--cluster-config applies to local: and slurm clusters; configure a running scheduler's "
                "workers where you start them"
            )
        try:
            client = Client(value)
        except OSError as exc:
            raise FeatxError(
                f"cannot reach the Dask scheduler at {value} ({exc}); start one with `dask scheduler` "
                "(and `dask worker` on the workers) or check the address"
            ) from None
        with client:
            yield client
        return
    if kind == "local":
        with _start_cluster(kind, value, options) as started, Client(started) as client:
            yield client
        return
    log = log or (lambda *_: None)
    timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    with _sigterm_unwinds():
        options = slurm_options(options, log_dir)
        started = _start_cluster(kind, value, options)
        try:
            with Client(started) as client:
                jobs = SlurmJobs(started, client, value, options["processes"], timeout, log_folder(options), log)
                _WATCHES[client] = jobs
                jobs.start()
                yield client
        finally:
            started.close()  # scancel of every job; also when the client could not start


_WATCHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Client -> SlurmJobs of the cluster featx started


@contextmanager
def _sigterm_unwinds():
    """While SLURM jobs run for this process, SIGTERM (kill, a batch system ending the client) unwinds like
    Ctrl-C so that the jobs are cancelled; the previous handler is back afterwards. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _start_cluster(kind: str, n: int, options: dict):
    if kind == "local":
        from distributed import LocalCluster

        factory = LocalCluster
        defaults = {
            "n_workers": n,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
            # no dashboard; the scheduler's HTTP server (health checks) on a free port, not 8787, which another
            # Dask may hold (Dask then warns on stderr)
            "scheduler_kwargs": {"dashboard": False, "dashboard_address": ":0"},
            "silence_logs": logging.CRITICAL,  # featx says what went wrong (a Ctrl-C: one line, no worker log)
            "preload": [__name__],  # dask_setup: the workers leave Ctrl-C to featx
        }
    else:
        previous = signal.getsignal(signal.SIGINT)
        try:
            from dask_jobqueue import SLURMCluster  # its runner module sets SIGINT to sys.exit() on import
        except ImportError:
            raise FeatxError(
                f"--cluster slurm needs dask-jobqueue, which is not installed; run: {INSTALL_HINT}"
            ) from None
        finally:
            if threading.current_thread() is threading.main_thread() and previous is not None:
                signal.signal(signal.SIGINT, previous)  # Ctrl-C stays the caller's (featx: unwind, cancel the jobs)
        if shutil.which("sbatch") is None:
            raise FeatxError(
                "--cluster slurm needs the SLURM command sbatch, which is not on PATH; run featx on a "
                "SLURM login node, or use --cluster local:N"
            )
        factory, defaults = SLURMCluster, {"silence_logs": logging.CRITICAL}  # featx says what went wrong
    try:
        cluster = factory(**{**defaults, **options})
    except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: a worker failed to start, its reason inside
        while exc.__cause__ is not None:
            exc = exc.__cause__
        raise FeatxError(
            f"could not start the {kind} cluster with options {json.dumps(options, default=str)} ({exc}); "
            f"check --cluster-config against the {factory.__module__.split('.')[0]}.{factory.__name__} "
            "documentation"
        ) from None
    if kind == "slurm":
        try:
            log_folder(options).mkdir(parents=True, exist_ok=True)
            _check_submittable(cluster, options)
        except BaseException:
            cluster.close()
            raise
    return cluster


def dask_setup(worker) -> None:
    """Dask preload of the worker processes of a local cluster featx starts (preload=[this module]). A Ctrl-C at
    the terminal goes to the whole process group: the worker ignores it, leaving it to featx, which stops the
    workers as it unwinds (no worker prints a KeyboardInterrupt traceback). Runs in the worker's main thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def log_folder(options: dict) -> Path:
    """The folder of the SLURM jobs' logs, from the -o line slurm_options wrote first."""
    return Path(options["job_extra_directives"][0][4:-1]).parent


# sbatch's words for a rejected job -> the --cluster-config settings that ask for it
REJECTIONS = [
    ("partition", ("partition",)),
    ("account", ("account",)),
    ("qos", ("qos",)),
    ("gres", ("gpus", "gres")),
    ("time limit", ("walltime",)),
    ("memory", ("memory", "cores", "gpus")),
    ("node configuration", ("memory", "cores", "gpus")),
    ("cpu", ("cores",)),
]


def _check_submittable(cluster, options: dict) -> None:
    """`sbatch --test-only` on the worker job script: a job SLURM would reject (unknown partition, more memory
    or cores than any node has, an invalid GPU request) is one line naming the setting, before any job runs."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="featx-job-") as script:
        script.write(cluster.job_script())
        script.flush()
        proc = subprocess.run(["sbatch", "--test-only", script.name], capture_output=True, text=True, timeout=60)
    if proc.returncode == 0:
        return
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    said = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else f"exit {proc.returncode}")
    said = said.replace("sbatch: error: ", "")
    text = " ".join(lines).lower()
    keys = next((keys for word, keys in REJECTIONS if word in text), ())
    shown = {"partition": options.get("queue")}
    settings = (
        ", ".join(
            f"{key} = {json.dumps(shown.get(key, options.get(key)))}"
            for key in keys
            if shown.get(key, options.get(key)) is not None
        )
        or "the job's settings"
    )
    raise FeatxError(
        f"SLURM rejects the worker job: {said} ({settings}); fix --cluster-config (sinfo lists the "
        "partitions and their nodes' CPUs and memory)"
    )


ACTIVE = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
}
# squeue's pending reasons -> the --cluster-config setting that likely keeps a job from starting
REASONS = [
    ("Partition", "partition"),
    ("QOS", "qos"),
    ("Assoc", "account"),
    ("Account", "account"),
    ("TimeLimit", "walltime"),
    ("BeginTime", "job_extra_directives"),
    ("ReqNodeNotAvail", "memory, cores or gpus"),
    ("Resources", "memory, cores or gpus, or the cluster is busy"),
    ("Priority", "queued behind other jobs"),
    ("Held", "the job is held"),
]


def squeue(job_ids) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} of these SLURM jobs; a job SLURM has forgotten (ended long ago) is absent."""
    job_ids = [j for j in job_ids if j]
    if not job_ids:
        return {}
    try:
        proc = subprocess.run(
            ["squeue", "-h", "--states=all", "-j", ",".join(job_ids), "-o", "%i|%T|%r"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.count("|") == 2]
    return {job: (state, reason) for job, state, reason in rows}


class SlurmJobs:
    """The SLURM jobs of a cluster featx started: submits them, waits for the first worker (bounded), replaces
    jobs that end mid-run, and stops a run that has had no worker for `timeout` seconds, in one line."""

    def __init__(self, cluster, client, n: int, per_job: int, timeout: float, log_dir: Path, log):
        self.cluster, self.client, self.n, self.per_job, self.timeout, self.log = (
            cluster,
            client,
            n,
            per_job,
            timeout,
            log,
        )
        self.log_dir = log_dir
        self.connected: set[str] = set()  # worker names seen connected, ever
        self.reported: set[str] = set()  # job ids already logged as submitted
        self.replaced = 0
        self.last_worker = self.last_check = time.monotonic()

    def job_ids(self) -> dict[str, str]:
        """{worker name: job id} of the jobs submitted so far."""
        return {name: job.job_id for name, job in list(self.cluster.workers.items()) if getattr(job, "job_id", None)}

    def start(self) -> None:
        began = time.monotonic()
        self.cluster.scale(jobs=self.n)
        while not self.client.scheduler_info().get("workers"):
            self._stop_if_hopeless(time.monotonic() - began)
            time.sleep(0.5)
        self._see()
        waited = time.monotonic() - began
        self.log(
            f"SLURM: {len(self.job_ids())} job(s) submitted ({', '.join(sorted(self.job_ids().values()))}), "
            f"first worker connected after {waited:.1f} s; worker logs in {self.log_dir}"
        )

    def _see(self) -> int:
        workers = self.client.scheduler_info().get("workers", {})
        self.connected.update(str(w.get("name")) for w in workers.values())
        if workers:
            self.last_worker = time.monotonic()
        return len(workers)

    def _stop_if_hopeless(self, waited: float) -> None:
        """While no worker is connected: a job that ended before its worker connected, or no worker for
        `timeout` seconds, stops the run with the job's state, reason and log."""
        ids = self.job_ids()
        states = squeue(ids.values())
        for name, job in ids.items():
            state, reason = states.get(job, ("ENDED", ""))
            if state not in ACTIVE and name not in self.connected:
                raise RunFailed(
                    f"SLURM job {job} ended ({state}) before its Dask worker connected: {self._log_tail(job)}; "
                    f"fix --cluster-config (job_script_prologue, python) and re-run"
                )
        if waited > self.timeout:
            if not ids:
                raise RunFailed(
                    f"no SLURM job of this run is queued or running after {self.timeout:g} s without a Dask "
                    f"worker (--cluster-timeout); worker logs in {self.log_dir}; re-run to resume"
                )
            job, state, reason = next((job, *states.get(job, ("ENDED", ""))) for job in ids.values())
            hint = next((setting for word, setting in REASONS if word.lower() in reason.lower()), "")
            why = (
                f"{state}, reason {reason}" + (f": check {hint}" if hint else "")
                if reason and reason != "None"
                else state
            )
            raise RunFailed(
                f"no SLURM job started a Dask worker within {self.timeout:g} s (--cluster-timeout): job {job} "
                f"is {why}; fix --cluster-config or raise --cluster-timeout; worker logs in {self.log_dir}"
            )

    def _log_tail(self, job: str) -> str:
        """The last line of the job's stderr log (where a failing worker says why)."""
        for path in sorted(self.log_dir.glob(f"*-{job}.err")):
            lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
            if lines:
                return f"'{lines[-1][:300]}' (log {path})"
        return f"see its log in {self.log_dir}"

    def check(self) -> None:
        """Called while waiting for results: replaces jobs that ended after their worker connected (scancel,
        walltime), and stops the run when no worker has been connected for `timeout` seconds."""
        now = time.monotonic()
        if now - self.last_check < POLL:
            return
        self.last_check = now
        if self._see() >= self.n * self.per_job:
            return
        ids = self.job_ids()
        states = squeue(ids.values())
        ended = {name: job for name, job in ids.items() if states.get(job, ("ENDED",))[0] not in ACTIVE}
        if ended:
            self.log(
                f"SLURM: job(s) {', '.join(ended.values())} ended "
                f"({', '.join(states.get(j, ('ENDED',))[0] for j in ended.values())}); submitting replacements"
            )
        self.cluster.loop.add_callback(self._replace, list(ended))  # also reopens jobs Dask itself gave up on
        new = set(ids.values()) - self.reported - set(ended.values())
        if new and self.reported:
            self.log(f"SLURM: job(s) {', '.join(sorted(new))} submitted")
        self.reported |= set(ids.values())
        if not self._see():
            self._stop_if_hopeless(now - self.last_worker)

    def _replace(self, names: list[str]) -> None:
        """In the cluster's event loop: the ended jobs' specs give way to new ones (new names: Dask would reuse
        a freed name and see nothing to do), which scale then submits while it cancels the old ones."""
        for name in names:
            if self.cluster.worker_spec.pop(name, None) is not None:
                self.replaced += 1
                self.cluster.worker_spec[f"{self.cluster.name}-r{self.replaced}"] = self.cluster.new_spec
        self.cluster.scale(jobs=self.n)


def shared(client, value):
    """A future of `value` for many tasks: sent once, fetched by each worker that needs it. A task result, not
    scattered data, so the scheduler recomputes it when every worker holding it is gone (a SLURM job cancelled,
    its replacement joining) instead of cancelling the tasks that need it."""
    return client.submit(_identity, value, pure=False)


def _identity(value):
    return value


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
    from distributed import wait

    todo = iter(enumerate(tasks))
    running, ready, following = {}, {}, 0
    jobs = _WATCHES.get(client)

    def submit_more():
        limit = per_worker * n_workers(client)
        while len(running) + len(ready) < limit and (item := next(todo, None)) is not None:
            future = client.submit(fn, *item[1], pure=False)
            running[future] = item[0]

    try:
        submit_more()
        while running:
            try:
                done = wait(list(running), timeout=POLL if jobs else None, return_when="FIRST_COMPLETED").done
            except (TimeoutError, asyncio.TimeoutError):  # the same class from Python 3.11 on
                done = set()
            if jobs is not None:
                jobs.check()
            for future in sorted(done, key=running.get):
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
        raise RunFailed(
            "Dask workers died repeatedly while running one shard (out of memory?); committed rows are "
            "kept: give workers more memory (--cluster-config) and re-run the same command to resume"
        ) from None


@contextmanager
def joblib_backend(cluster, scatter=(), config=None, *, timeout: float | None = None, log_dir=None, log=None):
    """Run joblib.Parallel calls inside on the cluster's workers (joblib's Dask backend).

    scatter : large arguments (the feature matrix) sent to every worker once; a task argument that *is* one of
    these objects travels as a reference to the worker's copy instead of being pickled per task.
    timeout, log_dir, log : as in connect.
    """
    import joblib

    with connect(cluster, config, timeout=timeout, log_dir=log_dir, log=log) as client:
        wait = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        with joblib.parallel_config(backend="dask", scatter=list(scatter), wait_for_workers_timeout=wait):
            yield client
