"""Run the test suite under the variations a real machine brings, one at a time, and print pass/fail and wall time.

    python3 tests/variations.py                       # every variation, the whole suite each (hours on 2 cores)
    python3 tests/variations.py --only threads-1      # one variation (repeat --only for several)
    python3 tests/variations.py --only openblas-prescott+threads-4   # two variations together, in one run
    python3 tests/variations.py --list                # the variations, their environment and pytest arguments
    python3 tests/variations.py --only isa-sse41 -- tests/test_classifiers_tail.py -k one_step   # pytest arguments after --
    python3 tests/variations.py --log logs/           # each run's pytest output in logs/NAME.log, as it comes

A numerical assertion in this suite states where its tolerance comes from (float32 round-off times the size of
a reduction, an optimizer's step bound, a solver's tolerance), so that it holds on any CPU; these variations
change exactly what differs between machines, on this one: oneDNN on or off, the CPU instructions oneDNN may use
(an older or other vendor's CPU), OpenBLAS's kernels, the number of threads each library splits its sums over,
one process or several, and the tests' order. docs/testing.md lists the runs made and their times.

Before each run a probe, in the variation's own environment, prints what took effect (TensorFlow's intra-op
threads as featx sets them, OpenBLAS's core type and threads and OpenMP's threads from threadpoolctl, the ISA
oneDNN dispatched to), so a variable that a library ignores shows instead of passing silently. Exit status: 0 if
every run passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _threads(n: int) -> dict[str, str]:
    """Every thread pool the suite's arithmetic runs on: featx's TensorFlow intra-op pool (featx.runtime reads
    FEATX_THREADS; TensorFlow's own default reads TF_NUM_INTRAOP_THREADS, for tests that start TensorFlow
    without featx), OpenBLAS's (numpy, scipy) and OpenMP's (scikit-learn)."""
    value = str(n)
    return {
        "FEATX_THREADS": value,
        "TF_NUM_INTRAOP_THREADS": value,
        "OPENBLAS_NUM_THREADS": value,
        "OMP_NUM_THREADS": value,
    }


# name: (what it imitates, environment, pytest arguments). `default` is README's command as CI runs it.
VARIATIONS: dict[str, tuple[str, dict[str, str], list[str]]] = {
    "default": ("README's command: xdist workers, oneDNN on, every core", {}, []),
    "onednn-off": ("TensorFlow's own kernels instead of oneDNN's", {"TF_ENABLE_ONEDNN_OPTS": "0"}, []),
    "threads-1": ("one thread for every library (a 1-core machine or container)", _threads(1), []),
    "threads-4": ("four threads for every library (sums split four ways)", _threads(4), []),
    "openblas-prescott": (
        "OpenBLAS's generic SSE kernels (numpy's and scipy's BLAS as on an old or unknown CPU)",
        {"OPENBLAS_CORETYPE": "Prescott"},
        [],
    ),
    "openblas-haswell": ("OpenBLAS's AVX2 kernels (an Intel Haswell-class CPU)", {"OPENBLAS_CORETYPE": "Haswell"}, []),
    "isa-avx2": ("oneDNN's AVX2 kernels (a CPU without AVX-512)", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, []),
    "isa-sse41": ("oneDNN's SSE4.1 kernels (the oldest x86-64 path)", {"ONEDNN_MAX_CPU_ISA": "SSE41"}, []),
    "one-process": ("every test in one process (no xdist workers)", {}, ["-n", "0"]),
    "random-order": (
        "tests shuffled within and across files (pytest-randomly, fixed seed; conftest still starts the long files)",
        {},
        ["-p", "randomly", "--randomly-seed=35"],
    ),
}

PROBE = r"""
import json, os
from threadpoolctl import threadpool_info
from featx import runtime
import tensorflow as tf
runtime.configure_tensorflow()
x = tf.random.stateless_normal((1, 16, 16, 8), seed=(0, 0))
tf.nn.conv2d(x, tf.ones((3, 3, 8, 8)), 1, "SAME").numpy()
pools = {f"{p['internal_api']} ({os.path.basename(p['filepath']).split('-')[0]})": p['num_threads'] for p in threadpool_info()}
arch = sorted({p.get('architecture') for p in threadpool_info() if p['internal_api'] == 'openblas'})
print(json.dumps({"tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                  "openblas_core": arch, "threads": pools}))
"""


def probe(env: dict[str, str]) -> str:
    """What took effect in this environment: TensorFlow's intra-op threads after featx configured them, OpenBLAS's
    core type, every BLAS/OpenMP pool's threads, the ISA oneDNN may use and the kernel a convolution ran on
    (oneDNN's verbose log; with TF_ENABLE_ONEDNN_OPTS=0 TensorFlow's matrix products still call oneDNN's gemm)."""
    run = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**env, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if run.returncode != 0:
        return f"probe failed: {run.stderr.strip().splitlines()[-1:]}"
    lines = run.stdout.splitlines()
    isa = [line.split("isa:", 1)[1].strip() for line in lines if "isa:" in line]
    conv = [line.split(",")[6] for line in lines if ",exec,cpu,convolution," in line]
    convolution = f"oneDNN's {conv[0]}" if conv else "TensorFlow's own (Eigen)"
    return f"{lines[-1]}; oneDNN ISA: {isa[0] if isa else 'none'}; a convolution ran on {convolution}"


def combined(name: str) -> tuple[str, dict[str, str], list[str]]:
    """A variation, or several joined by "+" run together: their environments and pytest arguments merged.

    Raises ValueError naming an unknown part, or two parts that set one variable to different values."""
    about, env, pytest_args = [], {}, []
    for part in name.split("+"):
        if part not in VARIATIONS:
            raise ValueError(f"invalid choice: {part!r} (choose from {', '.join(VARIATIONS)}, joined by '+')")
        part_about, part_env, part_args = VARIATIONS[part]
        clash = [key for key, value in part_env.items() if env.get(key, value) != value]
        if clash:
            raise ValueError(f"{name!r} sets {clash[0]} twice, to different values: run those variations apart")
        about.append(part_about)
        env.update(part_env)
        pytest_args += part_args
    return "; ".join(about), env, pytest_args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME[+NAME...]",
        help="run this variation, or several joined by '+' in one run (repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="print the variations and exit")
    parser.add_argument("--no-probe", action="store_true", help="skip the probe of what took effect")
    parser.add_argument("--log", metavar="DIR", help="write each run's pytest output to DIR/NAME.log as it comes")
    args = parser.parse_args(argv)
    names = args.only or list(VARIATIONS)
    try:
        chosen = {name: combined(name) for name in names}
    except ValueError as refused:
        parser.error(str(refused))
    if args.list:
        for name in names:
            about, env, pytest_args = chosen[name]
            settings = " ".join([*(f"{k}={v}" for k, v in env.items()), *pytest_args]) or "(as README runs it)"
            print(f"{name:18} {settings}\n{'':18} {about}")
        return 0
    if any("randomly" in a for n in names for a in chosen[n][2]) and not importlib.util.find_spec("pytest_randomly"):
        parser.error("random-order needs pytest-randomly: pip install -e '.[test]'")
    results = []
    for name in names:
        about, changes, pytest_args = chosen[name]
        env = {**os.environ, **changes}
        print(f"== {name}: {about}", flush=True)
        if not args.no_probe:
            print(f"   took effect: {probe(env)}", flush=True)
        command = [sys.executable, "-m", "pytest", "-q", *pytest_args, *extra]
        print(f"   {' '.join(f'{k}={v}' for k, v in changes.items())} {' '.join(command[1:])}".rstrip(), flush=True)
        began = time.monotonic()
        lines = []
        with (
            open(Path(args.log) / f"{name}.log", "w") if args.log else contextlib.nullcontext() as log,
            subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            ) as run,
        ):
            for line in run.stdout:  # pytest's own output, as it comes, into the log
                lines.append(line.rstrip("\n"))
                if log:
                    log.write(line)
                    log.flush()
        seconds = time.monotonic() - began
        tail = [line for line in lines if line.strip()][-1:] or ["(no output)"]
        failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
        verdict = "pass" if run.returncode == 0 else f"FAIL (exit {run.returncode})"
        print(f"   {verdict} in {seconds / 60:.1f} min: {tail[0].strip('= ')}", flush=True)
        for line in failed:
            print(f"   {line}", flush=True)
        results.append((name, verdict, seconds, tail[0].strip("= ")))
    print("\nvariation           result      wall time   tests")
    for name, verdict, seconds, summary in results:
        print(f"{name:18}  {verdict.split(' ')[0]:10}  {int(seconds // 60):3d} min {int(seconds % 60):2d} s  {summary}")
    return 0 if all(verdict == "pass" for _, verdict, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
