"""Bad sweeper input: one clear line naming the key and the fix, before any job starts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.sweeplib import run_app

pytestmark = pytest.mark.e2e

CASES = [
    ("malformed interval", ["x=interval(1.0)"], "override 'x=interval(1.0)'"),
    ("reversed interval", ["x=interval(3.0, 1.0)"], "lower bound above"),
    ("log from zero", ["x=tag(log, interval(0.0, 1.0))"], "positive lower bound"),
    ("unknown sampler", ["hydra/sweeper/sampler=tpee"], "hydra/sweeper/sampler"),
    ("unknown pruner", ["hydra/sweeper/pruner=medain"], "hydra/sweeper/pruner"),
    ("n_jobs < 1", ["hydra.sweeper.n_jobs=0"], "n_jobs must be at least 1"),
    ("n_trials < 1", ["hydra.sweeper.n_trials=0"], "n_trials must be at least 1"),
    ("negative n_trials", ["hydra.sweeper.n_trials=-3"], "n_trials must be at least 1, but got -3"),
    ("n_trials not a number", ["hydra.sweeper.n_trials=abc"], "could not be converted to Integer"),
    # Hydra's own errors for the command line (before the sweeper runs): the key line first.
    ("unknown launcher", ["hydra/launcher=slrum"], "Could not find 'hydra/launcher/slrum'"),
    ("typo'd group", ["optt=b"], "Key 'optt' is not in struct"),
    ("negative timeout", ["hydra.sweeper.timeout=-5"], "timeout must be a positive"),
    ("failure rate > 1", ["hydra.sweeper.max_failure_rate=1.5"], "max_failure_rate must be in"),
    ("bad direction", ["hydra.sweeper.direction=minimise"], "'minimise' is not a direction"),
    (
        "objectives vs directions",
        ["hydra.sweeper.objectives=[loss]", "hydra.sweeper.direction=[minimize,minimize]"],
        "give one objective per direction",
    ),
    (
        "conditional key in no option",
        ["opt=choice(a,b)", "opt.beta=interval(0.1,0.9)"],
        "'beta' exists in no option of group 'opt'",
    ),
    ("unknown key", ["xx=interval(0.0,1.0)"], "did you mean 'x'"),
    ("unknown option", ["opt=choice(a,z)"], "unknown option 'z'"),
    (
        "unreachable storage",
        ["hydra.sweeper.storage=postgresql://u:s3cret@127.0.0.1:1/db"],
        "cannot be opened",
    ),
    ("not a storage url", ["hydra.sweeper.storage=nowhere"], "is not a storage URL"),
    (
        "custom space not importable",
        ["hydra.sweeper.custom_search_space=nope.fn"],
        "cannot be imported",
    ),
    ("retry_failed < 0", ["hydra.sweeper.retry_failed=-1"], "retry_failed must be 0 or more"),
    ("motpe removed", ["hydra/sweeper/sampler=motpe"], "MOTPESampler was removed"),
]


@pytest.mark.parametrize(("name", "args", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_before_any_job(
    tmp_path: Path, name: str, args: list[str], message: str
) -> None:
    proc = run_app("toy", f"hydra.sweep.dir={tmp_path}", *args, check=False, timeout=120)
    assert proc.returncode != 0
    err = proc.stderr
    assert message in err, err
    # Rule: no traceback, and the message sits on one line.
    assert "Traceback" not in err
    assert any(message in line for line in err.splitlines())
    # Rule: no job was launched.
    assert not any(p.name.isdigit() for p in tmp_path.iterdir()) if tmp_path.exists() else True
    # Rule: a password never shows.
    assert "s3cret" not in err + proc.stdout


REPO = Path(__file__).resolve().parents[1]

# The default trial names its validation in hydra.sweeper.check: a range some trial cannot run
# with fails before the first job, naming the key and the end that fails.
RANGE_CASES = [
    (
        "range past a bound",
        ["warmup_ratio=interval(0.0, 2.0)"],
        "hydra.sweeper.params.warmup_ratio: the range reaches warmup_ratio=2.0, where a trial "
        "would fail nemo_rl_hpo.training.config.validate: warmup_ratio must be in [0, 1)",
    ),
    (
        "conditional key past a bound",
        ["optimizer.momentum=interval(0.5, 1.5)"],
        "optimizer.momentum=1.5 (with optimizer=sgd), where a trial would fail",
    ),
    (
        "first choice rejected",
        ["batch_size=choice(0, 32)"],
        "the range reaches batch_size=0, where a trial would fail",
    ),
    (
        "fixed value no trial can run with",
        ["max_steps=0"],
        "every trial of this sweep would fail hydra.sweeper.check=",
    ),
    (
        "interaction of fixed and searched keys",
        ["warmup_steps=int(interval(0, 30))", "max_steps=20"],
        "the range reaches warmup_steps=30",
    ),
    ("check not importable", ["hydra.sweeper.check=nope.fn"], "hydra.sweeper.check='nope.fn'"),
    (
        "PBT clips to a float range's exact end",
        ["hydra/sweeper=pbt", "search=pbt", "dropout=interval(0.0, 1.0)"],
        "hydra.sweeper.params.dropout: the range reaches dropout=1.0, where a trial would fail",
    ),
]


@pytest.mark.parametrize(("name", "args", "message"), RANGE_CASES, ids=[c[0] for c in RANGE_CASES])
def test_range_the_app_rejects_fails_before_any_job(
    tmp_path: Path, name: str, args: list[str], message: str
) -> None:
    proc = run_app(REPO / "train.py", f"hydra.sweep.dir={tmp_path}", *args, check=False)
    assert proc.returncode != 0
    assert any(message in line for line in proc.stderr.splitlines()), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "0").exists()  # no trial ran
    assert not (tmp_path / "optuna.db").exists()  # no study was created either


def test_exact_end_of_a_float_range_is_not_rejected(tmp_path: Path) -> None:
    """dropout < 1, but interval(0, 1) draws 1.0 with probability 0: the sweep runs."""
    run_app(
        REPO / "train.py",
        f"hydra.sweep.dir={tmp_path}",
        "dropout=interval(0.0, 1.0)",
        "~search",
        "hydra.sweeper.n_trials=1",
        "max_steps=2",
        "eval_interval=1",
        "precision=fp32",
    )
    assert (tmp_path / "0").exists()


def test_objective_not_returned_stops_at_first_trial(tmp_path: Path) -> None:
    proc = run_app(
        "toy",
        f"hydra.sweep.dir={tmp_path}",
        "mode=dict",
        "hydra.sweeper.objectives=[acc]",
        check=False,
    )
    assert proc.returncode != 0
    assert "metric 'acc' was not returned by the task" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_direction_count_mismatch_stops_at_first_trial(tmp_path: Path) -> None:
    proc = run_app(
        "toy",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.direction=[minimize,minimize]",
        check=False,
    )
    assert proc.returncode != 0
    assert "has 2 direction(s) but the task gave 1 value(s)" in proc.stderr


def test_plugin_discovered_from_outside_the_repo(tmp_path: Path) -> None:
    """Editable installs can hide hydra_plugins; discovery must work from any directory."""
    code = textwrap.dedent(
        """
        from hydra.core.plugins import Plugins
        from hydra.plugins.sweeper import Sweeper
        from hydra.plugins.search_path_plugin import SearchPathPlugin
        names = [p.__module__ + "." + p.__name__ for p in Plugins.instance().discover(Sweeper)]
        print("\\n".join(names))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "hydra_plugins.nemo_rl_hpo.optuna_sweeper.OptunaSweeper" in out


def test_own_app_outside_repo_finds_sweeper_and_groups(tmp_path: Path) -> None:
    (tmp_path / "my_app.py").write_text(
        textwrap.dedent(
            """
            import hydra

            @hydra.main(version_base="1.3", config_path=None, config_name=None)
            def main(cfg):
                return (cfg.get("a", 0.0) - 0.3) ** 2

            if __name__ == "__main__":
                main()
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [
            sys.executable,
            "my_app.py",
            "-m",
            "hydra/sweeper=optuna",
            "hydra/sweeper/sampler=random",
            "hydra/sweeper/pruner=median",
            "hydra.sweeper.n_trials=3",
            "+a=interval(0.0,1.0)",
            f"hydra.sweep.dir={tmp_path / 's'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 COMPLETE" in proc.stdout + proc.stderr
