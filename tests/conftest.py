"""Shared fixtures: compose the default trial's config as a user's command line would."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nemo_rl_hpo import trial

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"

# Overrides that shrink the default trial to well under a second.
TINY = [
    "max_steps=6",
    "warmup_steps=2",
    "eval_interval=3",
    "checkpoint_interval=3",
    "task.train_size=256",
    "task.validation_size=64",
    "task.test_size=64",
]


@pytest.fixture
def compose_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., DictConfig]:
    """``compose_trial(*overrides)``: the default trial's config, outside any sweep.

    The working dir is a fresh temporary one, so checkpoints (written to the working dir outside
    Hydra) never leak between tests.
    """
    monkeypatch.chdir(tmp_path)
    for name in dir(trial):
        if name.startswith("ENV_"):
            monkeypatch.delenv(getattr(trial, name), raising=False)

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=list(overrides))

    return _compose


# --- real services, started on demand -------------------------------------------------------
# `python -m pytest` on a fresh machine (as root) starts what the selected tests need: the
# single-node Slurm of slurm/start.sh (with 4 fake GPUs) for tests marked `slurm`, the
# throw-away PostgreSQL of ci/postgres.sh for tests marked `postgres`. Both stay up afterwards
# (a second run reuses them); stop them with slurm/stop.sh and ci/postgres.sh stop.


def _source_env(path: Path) -> None:
    """Apply the `export NAME=value` lines of a service's env.sh to this process."""
    import shlex

    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export ") :].partition("=")
            os.environ[name] = shlex.split(value)[0] if value else ""


def _start(*cmd: str, what: str, timeout: float = 600) -> None:
    proc = subprocess.run(
        ["bash", *cmd], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"could not start {what} ({' '.join(cmd)}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """A running local Slurm (installed and started if needed); returns its SLURM_CONF."""
    state = Path(os.environ.get("NEMO_SLURM_DIR", "/tmp/nemo-rl-hpo-slurm"))
    _start("slurm/install.sh", what="the Slurm packages")
    _start("slurm/start.sh", "--gpus", "4", what="the local Slurm cluster")
    _source_env(state / "env.sh")
    return os.environ["SLURM_CONF"]


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A throw-away PostgreSQL on localhost (installed and started if needed)."""
    state = Path(os.environ.get("NEMO_PG_DIR", "/tmp/nemo-rl-hpo-pg"))
    _start("ci/postgres.sh", "start", what="PostgreSQL")
    _source_env(state / "env.sh")
    return os.environ["NEMO_RL_HPO_TEST_PG_URL"]


@pytest.fixture(autouse=True)
def _services_for_markers(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("slurm") is not None:
        request.getfixturevalue("slurm_cluster")
    if request.node.get_closest_marker("postgres") is not None:
        request.getfixturevalue("postgres_url")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep each phase's report on the item (``item.rep_call.failed``): fixtures that keep
    evidence of a failed test (e.g. test_faults_slurm's cluster logs) read it at teardown."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep
