"""The ``nemo-rl-hpo`` command, run in a subprocess exactly as a user types it."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests import report_fixtures as rf
from tests.sweeplib import get_json, optuna_dashboard

pytestmark = pytest.mark.e2e

SCRIPT = Path(sys.executable).parent / "nemo-rl-hpo"


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nemo_rl_hpo.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def so_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("so")
    rf.single_objective(d)
    return d


@pytest.fixture(scope="module")
def mo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mo")
    rf.multi_objective(d)
    return d


def _study(d: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{d / 'optuna.db'}")


def test_console_script_is_installed_and_has_help() -> None:
    proc = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    for command in ("report", "status", "best", "export", "list"):
        assert command in proc.stdout


@pytest.mark.parametrize("command", ["report", "status", "best", "export", "list"])
def test_every_command_has_help(command: str) -> None:
    proc = cli(command, "--help")
    assert proc.returncode == 0
    assert "SWEEP_DIR" in proc.stdout and "--storage" in proc.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["nope"],
        ["best"],
        ["report", "/no/such/sweep/dir"],
        ["status", "{so}", "--watch", "-1"],
        ["status", "{so}", "--watch", "soon"],
        ["status", "{so}", "--iterations", "2"],
        ["export", "{so}", "--bogus"],
        ["best", "{so}", "--objective", "accuracy"],
        ["best", "{so}", "--study", "missing"],
        ["list", "--storage", "sqlite:////no/such/optuna.db"],
        ["list", "--storage", "not a url"],
        ["status", "{empty}"],
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    args: list[str], so_dir: Path, tmp_path: Path
) -> None:
    proc = cli(*[a.format(so=so_dir, empty=tmp_path) for a in args])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    # One line saying what is wrong, no usage block, no traceback.
    assert proc.stderr.strip() and "\n" not in proc.stderr.strip(), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_a_password_is_never_printed(tmp_path: Path) -> None:
    proc = cli("list", "--storage", "postgresql://alice:s3cret@127.0.0.1:1/optuna")
    assert proc.returncode == 2
    assert "s3cret" not in proc.stderr + proc.stdout and "alice:***@" in proc.stderr


def test_best_prints_the_reproduce_command(so_dir: Path, tmp_path: Path) -> None:
    best = _study(so_dir, "so").best_trial
    proc = cli("best", str(so_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # stdout is exactly the command (so `$(nemo-rl-hpo best DIR)` runs it); the value on stderr.
    # A fixed override is in both the sweep's base and the trial's overrides: printed once.
    sampled = [o for o in best.user_attrs["overrides"] if o != "trainer.max_steps=50"]
    assert proc.stdout == shlex.join(rf.COMMAND + rf.BASE + sampled) + "\n"
    assert shlex.split(proc.stdout).count("trainer.max_steps=50") == 1
    assert f"# trial {best.number}: val_loss=" in proc.stderr


def test_best_from_another_directory_first_changes_to_the_sweeps(tmp_path: Path) -> None:
    # The app path (train.py) is relative to where the sweep started; printed from elsewhere,
    # the command goes there first, so pasting it works from any directory.
    start = tmp_path / "project dir"
    start.mkdir()
    rf.single_objective(tmp_path / "sweep")
    study = _study(tmp_path / "sweep", "so")
    study.set_user_attr("nemo_rl_hpo:cwd", str(start))
    here = cli("best", str(tmp_path / "sweep"), cwd=start).stdout
    elsewhere = cli("best", str(tmp_path / "sweep"), cwd=tmp_path).stdout
    assert here.startswith("python train.py ")
    assert elsewhere == f"cd {shlex.quote(str(start))} && {here}"


def test_best_multi_objective_lists_the_pareto_front(mo_dir: Path) -> None:
    study = _study(mo_dir, "mo")
    proc = cli("best", str(mo_dir))
    assert proc.returncode == 0, proc.stderr
    commands = [ln for ln in proc.stdout.splitlines() if ln.startswith("python train.py")]
    comments = [ln for ln in proc.stdout.splitlines() if ln.startswith("# trial")]
    assert len(commands) == len(comments) == len(study.best_trials)
    proc = cli("best", str(mo_dir), "--objective", "train_time_s")
    fastest = min(study.trials, key=lambda t: t.values[1])
    assert proc.stdout == shlex.join(rf.COMMAND + rf.BASE + fastest.user_attrs["overrides"]) + "\n"


def test_best_of_a_plain_study_prints_its_params(tmp_path: Path) -> None:
    study = rf.plain(tmp_path)
    proc = cli("best", str(tmp_path))  # found through optuna.db alone
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [f"{k}={v}" for k, v in study.best_trial.params.items()]
    assert "no app command" in proc.stderr


def test_best_before_any_result_says_so(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s")
    study.ask()
    proc = cli("best", str(tmp_path))
    assert proc.returncode == 1 and "no complete trial yet" in proc.stderr


def test_status_shows_counts_best_and_running_trials(so_dir: Path) -> None:
    study = _study(so_dir, "so")
    proc = cli("status", str(so_dir))
    assert proc.returncode == 0, proc.stderr
    assert "COMPLETE=19" in proc.stdout and "PRUNED=3" in proc.stdout and "RUNNING=1" in proc.stdout
    assert f"trial {study.best_trial.number}: val_loss=" in proc.stdout
    running = next(t for t in study.trials if t.state.name == "RUNNING")
    # The running trial appears with its Slurm job id.
    assert running.user_attrs["slurm_job_id"] in proc.stdout


def test_status_of_a_finished_sweep_says_nothing_runs(mo_dir: Path) -> None:
    proc = cli("status", str(mo_dir))
    assert proc.returncode == 0, proc.stderr
    assert "RUNNING" not in proc.stdout
    assert re.search(r"running\s+none", proc.stdout), proc.stdout
    assert "┏" not in proc.stdout  # no empty table


def test_status_watch_refreshes_and_stops(so_dir: Path) -> None:
    proc = cli("status", str(so_dir), "--watch", "0.2", "--iterations", "2")
    assert proc.returncode == 0, proc.stderr
    assert "running trials" in proc.stdout


def test_export_writes_every_trial(so_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "trials.csv"
    proc = cli("export", str(so_dir), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    study = _study(so_dir, "so")
    assert len(rows) == len(study.trials)
    by_number = {int(r["number"]): r for r in rows}
    best = study.best_trial
    row = by_number[best.number]
    assert float(row["value:val_loss"]) == pytest.approx(best.value)
    assert float(row["metric:val_loss"]) == pytest.approx(best.user_attrs["metric:val_loss"])
    assert row["job_dir"] == best.user_attrs["job_dir"] and row["state"] == "COMPLETE"
    # Conditional params: present exactly in the rows whose optimizer owns them.
    for r in rows:
        assert (r["param:optimizer.momentum"] != "") == (r["param:optimizer"] == "sgd")
    assert {r["state"] for r in rows} == {"COMPLETE", "PRUNED", "FAIL", "RUNNING"}
    stdout = cli("export", str(so_dir)).stdout
    assert len(list(csv.reader(io.StringIO(stdout)))) == len(rows) + 1


def test_list_shows_every_study(tmp_path: Path) -> None:
    rf.single_objective(tmp_path, n=8, name="first")
    rf.single_objective(tmp_path, n=12, name="second")
    (tmp_path / "sweep.json").unlink()  # only the storage tells which studies exist
    proc = cli("list", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "first" in proc.stdout and "second" in proc.stdout
    # Two studies in one storage: other commands ask which one.
    proc = cli("status", str(tmp_path))
    assert proc.returncode == 2 and "--study" in proc.stderr
    assert cli("status", str(tmp_path), "--study", "second").returncode == 0


def test_report_from_a_sweep_dir_and_from_a_storage(so_dir: Path, tmp_path: Path) -> None:
    proc = cli("report", str(so_dir))
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == so_dir / "report" / "index.html"
    assert (so_dir / "report" / "history.png").is_file()
    out = tmp_path / "elsewhere"
    url = f"sqlite:///{so_dir / 'optuna.db'}"
    proc = cli("report", "--storage", url, "--study", "so", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "index.html").is_file()


def test_sweep_json_with_a_relative_storage_works_from_any_cwd(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun" / "day" / "time"
    rf.single_objective(sweep, n=6, name="rel")
    # What the sweeper writes when started from tmp_path with the default storage.
    (sweep / "sweep.json").write_text(
        json.dumps({"study_name": "rel", "storage": "sqlite:///multirun/day/time/optuna.db"})
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert cli("status", str(sweep), cwd=elsewhere).returncode == 0
    assert cli("status", "multirun/day/time", cwd=tmp_path).returncode == 0


def test_optuna_dashboard_opens_the_sweep_storage(so_dir: Path, tmp_path: Path) -> None:
    """docs/report.md tells users to run optuna-dashboard on the sweep's storage: it serves it."""
    with optuna_dashboard(f"sqlite:///{so_dir / 'optuna.db'}", tmp_path / "dashboard.log") as url:
        body = get_json(f"{url}/api/studies")
    names = [s["study_name"] for s in body["study_summaries"]]
    assert names == ["so"]
