"""Helpers for end-to-end sweeper tests: run an app as a user would, read the study back."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna

REPO = Path(__file__).resolve().parents[1]
APPS = REPO / "tests" / "apps"


def run_app(
    app: str | Path,
    *args: str,
    cwd: Path | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``python <app>/app.py -m <args>`` (or train.py) in a subprocess, output merged."""
    script = Path(app)
    if not script.suffix:
        script = APPS / str(app) / "app.py"
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, str(script), "-m", *args],
        cwd=str(cwd or script.parent),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\n"
            f"STDERR:\n{proc.stderr[-4000:]}"
        )
    return proc


def sacct_runs(job_id: str, fields: str) -> list[list[str]]:
    """sacct's rows for every run of a job (``--duplicates``), asked by the test itself."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "--duplicates", "-o", fields, "-j", job_id],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def load(sweep_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def states(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def kill9_and_resume(
    args: list[str], cwd: Path, log_path: Path, ready: Callable[[], bool], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Start a sweep, SIGKILL it once ``ready()``, then run the resume command it printed.

    ``timeout`` is patience only (how long the first sweep may take to get ready on a loaded
    2-core machine: 120 s ran out at load average ~30), not a rule under test."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        wait_for(ready, timeout)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    first = log_path.read_text()
    match = re.search(r"Resume this sweep with: (.+)", first)
    assert match, first
    return subprocess.run(
        match.group(1).strip(), shell=True, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def wait_for(
    cond: Callable[[], bool], timeout: float, what: str = "condition", every: float = 0.2
) -> None:
    """Poll ``cond`` (a study that does not exist yet counts as False) until it holds."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            if cond():
                return
        except Exception:
            pass
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def optuna_dashboard(storage: str, log_path: Path, timeout: float = 60) -> Iterator[str]:
    """Run the real ``optuna-dashboard`` (a dev dependency) on ``storage``; yield its base URL
    once ``/api/studies`` answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    exe = Path(sys.executable).parent / "optuna-dashboard"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(exe), storage, "--port", str(port), "--host", "127.0.0.1"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                get_json(f"{base}/api/studies")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    f"optuna-dashboard did not answer within {timeout:.0f} s: "
                    + log_path.read_text()[-2000:]
                )
                time.sleep(0.3)
        yield base
    finally:
        proc.kill()
        proc.wait(timeout=10)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())
