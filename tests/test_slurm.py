"""featx on a real single-node SLURM cluster: sbatch jobs running Dask workers, faults, configuration.

The session fixture `slurm` starts munged, slurmctld and slurmd with tests/slurm/start.sh (installing
slurm-wlm and munge with apt-get when missing; needs root) and stops them afterwards. Where the cluster cannot
start, every test here fails with start.sh's one line (CI must not skip this tier silently). Every extraction
is a real `featx extract` process over real ELPV images whose Dask workers are real SLURM jobs, compared bit
for bit with a single-process run; `squeue` is asked after each run that no job outlived featx.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import featx
from featx import distributed
from featx.errors import FeatxError

import imagegen
from helpers import (
    FEATX,
    assert_same_layers,
    background_reference,
    committed_rows,
    extract_command,
    unwrapped,
    user_lines,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
N_IMAGES, BATCH = 120, 4  # 4 shards of 32 images on one worker: a kill after the first commit lands mid-run
LAYERS = "block_6_project_BN,block_16_project_BN"
_START_FAILURE: list[str] = []


class Slurm:
    """The running test cluster: its folder (slurm.conf, logs) and squeue."""

    def __init__(self, folder: Path):
        self.folder = folder

    def jobs(self) -> list[tuple[str, str, str]]:
        """(job id, state, name) of every job squeue lists now (pending, running, completing)."""
        out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%j"], capture_output=True, text=True, check=True).stdout
        return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]

    def assert_no_jobs_left(self) -> None:
        """No job pending or running once featx has exited; cancelled ones leave squeue within seconds."""
        assert not [j for j in self.jobs() if j[1] in ("PENDING", "RUNNING", "CONFIGURING")], self.jobs()
        deadline = time.monotonic() + 30
        while self.jobs():
            assert time.monotonic() < deadline, f"jobs still listed by squeue: {self.jobs()}"
            time.sleep(0.2)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A single-node SLURM cluster for the session; SLURM_CONF points at it while the tests run."""
    if _START_FAILURE:
        pytest.fail(_START_FAILURE[0], pytrace=False)
    folder = tmp_path_factory.mktemp("slurm")
    try:
        proc = subprocess.run(
            [str(HERE / "slurm" / "start.sh"), str(folder)], capture_output=True, text=True, timeout=900
        )
        failure = None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["start.sh failed"])[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = f"cannot start the test SLURM cluster: {exc}"
    if failure:
        _START_FAILURE.append(failure)
        pytest.fail(failure, pytrace=False)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = proc.stdout.strip().splitlines()[-1].split("=", 1)[1]
    try:
        yield Slurm(folder)
    finally:
        subprocess.run([str(HERE / "slurm" / "stop.sh"), str(folder)], capture_output=True, timeout=120)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slurm_data")
    rows = imagegen.copy_elpv_images(root, N_IMAGES)
    csv = root / "images.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    return csv


def extract_args(data: Path, cache_dir: Path, *extra: str) -> list[str]:
    return extract_command(data, cache_dir, LAYERS, BATCH, *extra)


def config(tmp_path: Path, **settings) -> Path:
    """A --cluster-config TOML: one core and 3 GB per job (two jobs fit the 2-core test node) plus settings."""
    path = tmp_path / "slurm.toml"
    values = {"partition": "debug", "cores": 1, "memory": "3GB", **settings}
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    return path


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """The single-process extraction, started in the background while the cluster starts."""
    cache_dir = tmp_path_factory.mktemp("slurm_reference")
    yield from background_reference(extract_args(images, cache_dir, "--quiet"), cache_dir)


def assert_same_cache(reference, cache_dir: Path) -> None:
    other = featx.Cache(cache_dir).open(None)
    assert other.key == reference.key and other.layers == reference.layers == LAYERS.split(",")
    assert_same_layers(reference, other, N_IMAGES)


def run(args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def job_logs(folder: Path) -> dict[str, list[Path]]:
    """{job id: its log files} in a SLURM log folder (dask-jobqueue names them <job name>-<id>.out/.err)."""
    logs: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*-*.*")):
        logs.setdefault(path.stem.rsplit("-", 1)[1], []).append(path)
    return logs


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert proc.poll() is None, f"featx exited before {what}: " + proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)
    return value


def job_ids(line: str) -> list[str]:
    """The job ids in featx's "SLURM: N job(s) submitted (ID, ID), ..." line."""
    return re.search(r"submitted \(([\d, ]+)\)", line)[1].split(", ")


def first_worker(proc: subprocess.Popen) -> list[str]:
    """Read featx's stdout up to its line saying the first worker connected; the ids of the jobs it submitted."""
    lines = []
    while not (line := proc.stdout.readline()).startswith("SLURM:"):
        lines.append(line)
        assert line, "featx ended before a worker connected: " + "".join(lines) + proc.communicate()[1][-3000:]
    assert "first worker connected" in line, line
    return job_ids(line)


def test_extract_on_two_slurm_jobs_is_bit_identical_and_cleans_up(slurm, images, reference, tmp_path, monkeypatch):
    """featx extract --cluster slurm:2: two real sbatch jobs, one progress bar to the last image, the cache
    bit-identical to one process, the job logs in <cache>/slurm-logs (named in the output), nothing in the
    working folder, and no job left in squeue."""
    cache_dir, work = tmp_path / "cache", tmp_path / "work"
    monkeypatch.setenv("FEATX_PROGRESS_INTERVAL", "1")  # a progress line every second into the job's log
    proc = run(extract_args(images, cache_dir, "--cluster", "slurm:2", "--cluster-config", str(config(tmp_path))), work)
    logs = cache_dir / "slurm-logs"
    [line] = [line for line in proc.stdout.splitlines() if line.startswith("SLURM:")]
    assert re.match(
        r"SLURM: 2 job\(s\) submitted \(\d+, \d+\), first worker connected after \d+\.\d s; "
        rf"worker logs in {re.escape(str(logs))}$",
        line,
    ), line
    started = set(job_logs(logs))  # a job still pending when the other finished the pass is cancelled unstarted
    assert started and started <= set(job_ids(line)), (started, line)
    # progress across the jobs: lines into this log (not a terminal), ending with the last image
    assert re.search(
        rf"^extract mobilenet_v2 on \d worker\(s\): {N_IMAGES}/{N_IMAGES} img \(100%\)", proc.stderr, re.M
    ), proc.stderr
    assert not list(work.iterdir()), "featx or its jobs wrote into the working folder"
    slurm.assert_no_jobs_left()
    assert_same_cache(reference(), cache_dir)


def test_real_jobs_honour_the_cluster_config(slurm, tmp_path):
    """Partition, cores, memory, job name, log folder and the environment prologue, as a running job sees them;
    the worker runs this Python and this featx (PYTHONPATH carried into the job)."""
    logs = tmp_path / "job logs"
    path = config(
        tmp_path,
        memory="768MB",
        job_name="featx-cfg",
        log_directory=str(logs),
        job_script_prologue=["export FEATX_PROLOGUE=activated"],
    )
    messages = []

    def seen():
        keys = (
            "SLURM_JOB_PARTITION",
            "SLURM_CPUS_PER_TASK",
            "SLURM_MEM_PER_NODE",
            "SLURM_JOB_NAME",
            "SLURM_JOB_ID",
            "FEATX_PROLOGUE",
        )
        return sys.executable, featx.__file__, {key: os.environ.get(key) for key in keys}

    with distributed.connect("slurm", path, log_dir=tmp_path / "unused", log=messages.append) as client:
        [(python, module, env)] = client.run(seen).values()
        assert [j[2] for j in slurm.jobs()] == ["featx-cfg"]
        assert "#SBATCH --mem=733M" in client.cluster.job_script()  # 768 MB (10^6 bytes) in MiB, rounded up
    assert (python, module) == (sys.executable, featx.__file__)
    assert env == {
        "SLURM_JOB_PARTITION": "debug",
        "SLURM_CPUS_PER_TASK": "1",
        "SLURM_MEM_PER_NODE": "733",
        "SLURM_JOB_NAME": "featx-cfg",
        "SLURM_JOB_ID": env["SLURM_JOB_ID"],
        "FEATX_PROLOGUE": "activated",
    }
    assert sorted(job_logs(logs)) == [env["SLURM_JOB_ID"]] and not (tmp_path / "unused").exists()
    assert str(logs) in messages[0]
    slurm.assert_no_jobs_left()


@pytest.mark.parametrize(
    "settings, named", [({"partition": "nosuch"}, 'partition = "nosuch"'), ({"memory": "4000GB"}, 'memory = "4000GB"')]
)
def test_a_job_slurm_rejects_is_one_line_naming_the_setting(slurm, tmp_path, settings, named):
    with pytest.raises(FeatxError) as raised:
        with distributed.connect("slurm:2", config(tmp_path, **settings), log_dir=tmp_path):
            pass
    message = str(raised.value)
    assert message.startswith("SLURM rejects the worker job: ") and named in message and "\n" not in message
    assert not slurm.jobs()


def test_a_job_that_never_starts_stops_the_run_after_the_cluster_timeout(slurm, reference, tmp_path):
    """A partition that is down: the job pends forever; `featx tune --cluster slurm` waits --cluster-timeout
    seconds, then stops with one line naming the job's state and the setting, and cancels the job."""
    entry = reference()
    proc = subprocess.run(
        [
            *FEATX,
            "tune",
            entry.name,
            "--cache-dir",
            str(entry.path.parent),
            "--cluster",
            "slurm",
            "--cluster-config",
            str(config(tmp_path, partition="down")),
            "--cluster-timeout",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    [line] = user_lines(proc.stderr)
    assert re.match(
        r"error: no SLURM job started a Dask worker within 4 s \(--cluster-timeout\): job \d+ is PENDING, "
        r"reason PartitionDown: check partition; fix --cluster-config or raise --cluster-timeout",
        line,
    ), line
    slurm.assert_no_jobs_left()


def test_scancel_of_the_worker_job_mid_extract_is_replaced_and_bit_identical(slurm, images, reference, tmp_path):
    """The only worker job is cancelled with scancel while its worker runs the first shard: featx submits a
    replacement job, finishes on it, and the cache is bit-identical."""
    cache_dir = tmp_path / "cache"
    proc = subprocess.Popen(
        extract_args(images, cache_dir, "--quiet", "--cluster", "slurm:1", "--cluster-config", str(config(tmp_path))),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        [job] = first_worker(proc)
        assert committed_rows(cache_dir) < N_IMAGES
        subprocess.run(["scancel", job], check=True)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert f"SLURM: job(s) {job} ended (CANCELLED); submitting replacements" in out, out
    assert len(job_logs(cache_dir / "slurm-logs")) == 2
    slurm.assert_no_jobs_left()
    assert_same_cache(reference(), cache_dir)


def test_client_killed_mid_run_resumes_bit_identically_and_its_job_ends(slurm, images, reference, tmp_path):
    """The client (the only writer) is SIGKILLed after its first commit: its job, whose worker loses the
    scheduler, ends by itself (death_timeout); the same command without --cluster resumes from the committed
    rows (one process here: the SLURM part of resuming is the scancel test's)."""
    cache_dir = tmp_path / "cache"
    args = extract_args(images, cache_dir, "--quiet")
    proc = subprocess.Popen(
        [*args, "--cluster", "slurm:1", "--cluster-config", str(config(tmp_path, death_timeout=5))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        wait_until(lambda: committed_rows(cache_dir), proc, "the first commit")
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    done = committed_rows(cache_dir)
    assert 0 < done < N_IMAGES, "the run had finished before the kill"
    resumed = run(args, tmp_path)
    assert f"resuming interrupted extraction of 2 layer(s) at image {done}/{N_IMAGES}" in resumed.stdout
    deadline = time.monotonic() + 60
    while slurm.jobs():  # the killed client's job, which nobody cancelled
        assert time.monotonic() < deadline, f"the killed client's job did not end by itself: {slurm.jobs()}"
        time.sleep(0.5)
    assert_same_cache(reference(), cache_dir)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_extract_cancels_its_jobs(slurm, images, tmp_path, signum):
    """Ctrl-C (SIGINT) or SIGTERM while the worker job runs: featx says it was interrupted, exits 130 and no
    job of it is left in squeue."""
    cache_dir = tmp_path / "cache"
    proc = subprocess.Popen(
        extract_args(images, cache_dir, "--quiet", "--cluster", "slurm:2", "--cluster-config", str(config(tmp_path))),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        first_worker(proc)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert user_lines(err)[-1] == "interrupted; committed work is kept and the same command resumes it"
    slurm.assert_no_jobs_left()


def test_compare_and_tune_on_slurm_give_the_one_process_table_and_choice(slurm, reference, tmp_path):
    """compare on a SLURM job (the feature matrix scattered once) and `featx tune --cluster slurm`: the same
    scores and the same chosen parameters as in one process."""
    entry = reference()
    sweep = {
        "layer_sets": ["block_16_project_BN", "block_6_project_BN,block_16_project_BN"],
        "classifiers": "rf,logreg",
        "grid": {"n_estimators": [5, 20]},
        "seed": 3,
    }
    layer_sets = sweep.pop("layer_sets")
    specs = featx.compare_specs(sweep.pop("classifiers"), **sweep)
    cache = featx.Cache(entry.path.parent)
    local = featx.compare(entry.name, layer_sets, specs, cache=cache, log=None).table
    remote = featx.compare(
        entry.name,
        layer_sets,
        specs,
        cache=cache,
        compute=featx.Compute(cluster="slurm", cluster_config=config(tmp_path)),
        log=None,
    ).table
    scores = ["layers", "classifier", "params", "n_features", "val_accuracy", "val_f1_macro", "test_accuracy"]
    assert len(local) == 8 and local[scores].equals(remote[scores])
    tune = [
        *FEATX,
        "tune",
        entry.name,
        "--cache-dir",
        str(entry.path.parent),
        "--clf",
        "logreg",
        "--cv",
        "3",
        "--layers",
        "block_16_project_BN",
    ]
    one = run(tune, tmp_path / "one").stdout
    on_slurm = run([*tune, "--cluster", "slurm", "--cluster-config", str(config(tmp_path))], tmp_path / "two").stdout
    choice = [
        re.sub(r"^selected: \S+ ", "", unwrapped(out).strip().splitlines()[-1]) for out in (one, on_slurm)
    ]  # less the run id
    assert choice[0] == choice[1] and choice[0].startswith("logreg C=")
    assert "SLURM: 1 job(s) submitted" in on_slurm
    slurm.assert_no_jobs_left()
