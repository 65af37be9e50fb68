"""Shared helpers of the benchmarks: the upstream virtualenv, machine facts, statistics, JSON out.

Every benchmark compares contenders side by side in one run, interleaved (A, B, A, B, ...), on a
shared machine: quote medians and ratios, never a single timing.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "_work"
RESULTS = BENCH / "results"
UPSTREAM_VENV = WORK / "upstream-venv"
# hydra-optuna-sweeper 1.3.0 pins optuna<3; its RDB storage needs SQLAlchemy 1.x to start at all.
UPSTREAM_SPECS = [
    "optuna==2.10.1",
    "sqlalchemy<2",
    "hydra-core==1.3.2",
    "hydra-optuna-sweeper==1.3.0",
    "hydra-submitit-launcher==1.2.0",
    "hydra-joblib-launcher==1.2.0",
]


def upstream_python() -> Path:
    """Python of the virtualenv holding hydra-optuna-sweeper 1.3.0 (created on first use)."""
    py = UPSTREAM_VENV / "bin" / "python"
    marker = UPSTREAM_VENV / ".specs"
    if py.exists() and marker.exists() and marker.read_text() == "\n".join(UPSTREAM_SPECS):
        return py
    print(f"creating {UPSTREAM_VENV} with {' '.join(UPSTREAM_SPECS)} ...", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(UPSTREAM_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *UPSTREAM_SPECS], check=True)
    marker.write_text("\n".join(UPSTREAM_SPECS))
    return py


def ours_python() -> Path:
    """The Python running this script: the project's venv with nemo-rl-hpo installed."""
    return Path(sys.executable)


def machine() -> dict[str, Any]:
    """Facts to print next to every number (the machine is shared: load matters)."""
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "git": _git_head(),
    }


def _git_head() -> str:
    """Commit of the code under test (+ "dirty" when the working tree differs)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "nemo_rl_hpo",
                "hydra_plugins",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' (dirty)' if dirty else ''}"


def versions(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        "for p in ['optuna', 'hydra-core', 'sqlalchemy', 'hydra-optuna-sweeper', "
        "'hydra-submitit-launcher', 'nemo-rl-hpo']:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    # cwd outside the repo: "-c" puts cwd on sys.path, and the repo holds nemo_rl_hpo itself.
    WORK.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True, cwd=WORK
    )
    result: dict[str, str] = json.loads(out.stdout)
    return result


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def iqr(xs: Sequence[float]) -> tuple[float, float]:
    """(25th, 75th) percentile; with fewer than 2 values both ends are the value."""
    if not xs:
        return (float("nan"), float("nan"))
    if len(xs) == 1:
        return (float(xs[0]), float(xs[0]))
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return (float(q[0]), float(q[2]))


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def clean_env() -> dict[str, str]:
    """The environment for child sweeps: no inherited trial context, one thread per library."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEMO_RL_HPO_")}
    env.update(
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", HYDRA_FULL_ERROR="1"
    )
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return env
