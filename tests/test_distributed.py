"""featx on Dask: extraction sharded over real worker processes, killed workers and clients, sweeps, configs.

Every extraction here is a real `featx extract` process over real ELPV images (plus one truncated JPEG),
compared bit for bit with the uninterrupted single-process run. The test process itself never builds a
backbone: it hosts Dask clusters, reads HDF5 files and runs the sweeps.
"""

from __future__ import annotations

import json
import os
import re
import shutil
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
from helpers import FEATX, assert_same_layers, background_reference, committed_rows, extract_command, user_lines

N_GOOD, BATCH = 47, 4  # 48 rows: 6 shards of 8 images on 2 workers
LAYERS = "block_2_add,block_6_project_BN,block_16_project_BN"
SCALING_OUT = Path(__file__).resolve().parents[1] / "docs" / "scaling-out.md"


def extract_args(data: Path, cache_dir: Path, *extra: str) -> list[str]:
    return extract_command(data, cache_dir, LAYERS, BATCH, "--quiet", *extra)


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A CSV manifest over real ELPV images of 4 classes with one truncated JPEG among them."""
    root = tmp_path_factory.mktemp("dask_data")
    rows = imagegen.copy_elpv_images(root, N_GOOD)
    imagegen.save_truncated_jpeg(root / "truncated.jpg", imagegen.photo())
    rows.insert(21, ("truncated.jpg", rows[2][1]))
    csv = root / "images.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    return csv


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory):
    """The uninterrupted single-process run, in a `featx` process started in the background."""
    cache_dir = tmp_path_factory.mktemp("dask_reference")
    yield from background_reference(extract_args(manifest, cache_dir), cache_dir)


def assert_same_cache(reference, cache_dir: Path) -> None:
    other = featx.Cache(cache_dir).open(None)
    assert other.key == reference.key and other.layers == reference.layers and len(reference.layers) == 3
    assert other.errors == reference.errors and list(reference.errors) == ["truncated.jpg"]
    assert_same_layers(reference, other, N_GOOD + 1)


def wait_for_commit(cache_dir: Path, proc: subprocess.Popen, timeout: float = 300) -> int:
    deadline = time.monotonic() + timeout
    while (rows := committed_rows(cache_dir)) == 0:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no shard committed in time"
        time.sleep(0.02)
    return rows


@pytest.mark.slow
def test_local_cluster_of_two_processes_matches_one_process_bit_for_bit(manifest, reference, tmp_path):
    proc = run(extract_args(manifest, tmp_path, "--cluster", "local:2"))
    assert "skipped 1 bad file(s)" in proc.stdout and "truncated.jpg" in proc.stdout
    assert_same_cache(reference(), tmp_path)
    assert not list(tmp_path.glob("*/work"))  # the pass is finished and its log removed


@pytest.mark.slow
def test_worker_killed_mid_run_is_replaced_and_the_cache_is_bit_identical(manifest, reference, tmp_path):
    """A scheduler with 2 nanny-supervised worker processes; `featx extract --cluster tcp://...` runs on it;
    one worker is SIGKILLed by pid after the first shard is committed. Its nanny starts a new worker, the
    scheduler reruns the lost shard, and the run completes with the same bits."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        proc = subprocess.Popen(
            extract_args(manifest, tmp_path, "--cluster", cluster.scheduler_address),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            rows_at_kill = wait_for_commit(tmp_path, proc)
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            out, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err[-3000:]
        assert rows_at_kill < N_GOOD + 1, "the run had finished before the kill"
        client.wait_for_workers(2, timeout=120)
        assert victim not in client.run(os.getpid).values()  # the nanny replaced the killed process
    assert_same_cache(reference(), tmp_path)


@pytest.mark.slow
def test_client_killed_then_resumed_single_process_is_bit_identical(manifest, reference, tmp_path):
    """The client (the only writer) is SIGKILLed after a commit; its worker processes die with its process
    group; the same command without --cluster resumes from the committed rows."""
    proc = subprocess.Popen(
        extract_args(manifest, tmp_path, "--cluster", "local:2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_commit(tmp_path, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the LocalCluster's worker processes, orphaned by the kill
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    resumed = run(extract_args(manifest, tmp_path))
    [line] = [line for line in resumed.stdout.splitlines() if line.startswith("resuming")]
    done = int(re.search(r"at image (\d+)/", line)[1])
    assert 0 < done < N_GOOD + 1 and done % BATCH == 0
    assert_same_cache(reference(), tmp_path)


def test_cluster_without_dask_installed_says_what_to_install(manifest, tmp_path):
    """Dask made unimportable in a real featx process (as if not installed): one line, exit 2, nothing written."""
    code = (
        "import sys; sys.modules['dask'] = sys.modules['distributed'] = None; "
        "from featx.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *extract_args(manifest, tmp_path, "--cluster", "local:2")[len(FEATX) :]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert user_lines(proc.stderr) == [
        'error: --cluster needs Dask, which is not installed; run: pip install "featx[dask]"'
    ]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "spec, parsed",
    [
        ("local:2", ("local", 2)),
        ("slurm", ("slurm", 1)),
        ("slurm:4", ("slurm", 4)),
        ("tcp://10.0.0.5:8786", ("address", "tcp://10.0.0.5:8786")),
    ],
)
def test_cluster_specs(spec, parsed):
    assert distributed.parse_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["local", "local:0", "local:two", "slurm:", "kubernetes:3", "8786"])
def test_bad_cluster_spec_is_one_line(spec):
    with pytest.raises(FeatxError, match=r"bad --cluster .*local:N, tcp://HOST:PORT or slurm\[:N\]"):
        distributed.parse_spec(spec)


def docs_block(marker: str) -> str:
    """The fenced code block of docs/scaling-out.md that follows the line containing `marker`."""
    text = SCALING_OUT.read_text().split(marker, 1)[1]
    return text.split("```", 2)[1].split("\n", 1)[1]


def test_docs_slurm_config_builds_a_gpu_job_script(tmp_path):
    """The documentation's --cluster-config example, read as featx reads it, is a valid dask-jobqueue SLURMCluster
    whose job script asks for everything it sets; no job is submitted (scale is never called)."""
    from dask_jobqueue import SLURMCluster

    path = tmp_path / "slurm.toml"
    path.write_text(docs_block("slurm.toml:"))
    config = distributed.read_config(path)
    yaml_path = tmp_path / "slurm.yaml"
    yaml_path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))
    assert distributed.read_config(yaml_path) == config
    with SLURMCluster(**distributed.slurm_options(config)) as cluster:
        script = cluster.job_script()
    logs = f"{config['log_directory']}/{config['job_name']}-%j"
    for line in [
        f"-p {config['partition']}",
        f"-A {config['account']}",
        f"--qos={config['qos']}",
        f"-t {config['walltime']}",
        f"--gpus={config['gpus']}",
        f"-J {config['job_name']}",
        f"--cpus-per-task={config['cores']}",
        "--mem=30G",
        f'-o "{logs}.out"',
        f'-e "{logs}.err"',
        *config["job_extra_directives"],
    ]:
        assert f"#SBATCH {line}\n" in script, line
    assert config["job_script_prologue"][0] in script
    assert f"{sys.executable} -m distributed.cli.dask_worker" in script  # the worker runs this Python


def test_every_slurm_key_is_a_slurmcluster_argument_or_featx_own():
    import inspect

    from dask_jobqueue import SLURMCluster
    from dask_jobqueue.core import Job
    from dask_jobqueue.slurm import SLURMJob

    accepted = {name for f in (SLURMCluster, SLURMJob, Job) for name in inspect.signature(f).parameters}
    assert set(distributed.SLURM_KEYS) - accepted == {"partition", "qos", "gpus", "gres"}


@pytest.mark.parametrize(
    "config, message",
    [
        (
            {"partiton": "gpu"},
            "unknown --cluster-config key 'partiton' for --cluster slurm; accepted: partition, queue, ",
        ),
        ({"partition": "a", "queue": "b"}, "sets both partition and queue"),
        ({"job_extra_directives": [1]}, "job_extra_directives must be a list of strings"),
    ],
)
def test_bad_slurm_config_is_one_line_naming_the_key(config, message):
    with pytest.raises(FeatxError, match=re.escape(message)) as raised:
        distributed.slurm_options(config)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("c.toml", "cores = [", "is not valid"),
        ("c.yaml", "cores: [1,", "is not valid"),
        ("c.yaml", "- 1\n- 2\n", "must hold a table"),
        ("c.ini", "cores = 1", "must end in .toml, .yaml or .yml"),
    ],
)
def test_bad_cluster_config_is_one_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(FeatxError, match=message) as raised:
        distributed.read_config(tmp_path / name)
    assert "\n" not in str(raised.value)


@pytest.mark.slow
def test_distributed_compare_gives_the_local_table(reference):
    """The same sweep on 2 Dask worker processes (feature matrix scattered once) and in this process: the same
    scores, and every fit logged in the same runs log."""
    entry = reference()
    sweep = {
        "layer_sets": ["block_16_project_BN", "block_2_add,block_6_project_BN"],
        "classifiers": "rf,logreg",
        "grid": {"n_estimators": [5, 20]},
        "seed": 3,
    }
    layer_sets = sweep.pop("layer_sets")
    specs = featx.compare_specs(sweep.pop("classifiers"), **sweep)
    cache = featx.Cache(entry.path.parent)
    local = featx.compare(entry.name, layer_sets, specs, cache=cache, log=None).table
    remote = featx.compare(
        entry.name, layer_sets, specs, cache=cache, compute=featx.Compute(cluster="local:2"), log=None
    ).table
    scores = [
        "layers",
        "classifier",
        "params",
        "n_features",
        "val_accuracy",
        "val_f1_macro",
        "test_accuracy",
        "test_f1_macro",
    ]
    assert len(local) == 8  # 2 subsets x 2 classifiers x 2 grid points, and the majority and stratified baselines
    assert local[scores].equals(remote[scores])
    assert set(local["run_id"]).isdisjoint(remote["run_id"])
    assert set(remote["run_id"]) | set(local["run_id"]) <= set(featx.list_runs(entry.path.parent)["run_id"])


def test_unreachable_scheduler_and_missing_sbatch_are_one_line(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    import dask
    import distributed as dask_distributed  # noqa: F401  registers the distributed.* config keys

    with (
        dask.config.set({"distributed.comm.timeouts.connect": "2s"}),
        pytest.raises(FeatxError, match=rf"cannot reach the Dask scheduler at tcp://127.0.0.1:{port} .*dask scheduler"),
    ):
        with distributed.connect(f"tcp://127.0.0.1:{port}"):
            pass
    if shutil.which("sbatch") is None:
        with pytest.raises(FeatxError, match="needs the SLURM command sbatch"):
            with distributed.connect("slurm:2"):
                pass
    with pytest.raises(
        FeatxError, match=r"could not start the local cluster .*no_such_option.*distributed.LocalCluster documentation"
    ):
        with distributed.connect("local:1", {"no_such_option": 1}):
            pass


def test_bad_cluster_spec_stops_extract_before_any_work(manifest, tmp_path):
    proc = subprocess.run(
        extract_args(manifest, tmp_path, "--cluster", "local:0"), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2
    assert user_lines(proc.stderr) == [
        "error: bad --cluster 'local:0'; write local:N, tcp://HOST:PORT or slurm[:N], e.g. local:2"
    ]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_unknown_slurm_config_key_stops_extract_before_any_work(manifest, tmp_path):
    config = tmp_path / "slurm.toml"
    config.write_text('partition = "gpu"\nwall_time = "01:00:00"\n')
    proc = subprocess.run(
        extract_args(manifest, tmp_path / "cache", "--cluster", "slurm:2", "--cluster-config", str(config)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    [line] = user_lines(proc.stderr)
    assert line.startswith("error: unknown --cluster-config key 'wall_time' for --cluster slurm; accepted: partition, ")
    assert "walltime" in line and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_ctrl_c_of_a_cluster_extract_is_featx_line_alone(manifest, tmp_path):
    """Ctrl-C as a terminal sends it, to the whole process group, mid-pass of `extract --views flip --cluster
    local:1`: only featx's `interrupted` line (no worker's KeyboardInterrupt traceback, no TensorFlow log line of
    the worker's import, no Dask log), exit 130, and no worker process left behind."""
    proc = subprocess.Popen(
        extract_args(manifest, tmp_path, "--views", "flip", "--cluster", "local:1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground command
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},  # a user's shell sets none
    )
    try:
        wait_for_commit(tmp_path, proc)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        deadline = time.monotonic() + 30
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _group_alive(proc.pid)
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and err == f"{featx.errors.INTERRUPTED}\n", err[-3000:]
    assert not left, "a worker process outlived featx"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
