"""What a user sees when a sweep ends: the summary block; objective names in optuna-dashboard."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from nemo_rl_hpo.report.summary import SUMMARY_NAME
from tests.sweeplib import APPS, get_json, load, optuna_dashboard, run_app

pytestmark = pytest.mark.e2e


def _block(log: str) -> list[str]:
    """The summary block's lines from a sweep's log (after Hydra's logging prefix)."""
    lines = [ln.split("[HYDRA] ", 1)[-1] for ln in log.splitlines()]
    start = max(i for i, ln in enumerate(lines) if ln.startswith("Sweep summary:"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("====="))
    return lines[start:end]


def test_single_objective_sweep_ends_with_best_configuration_and_command(tmp_path: Path) -> None:
    proc = run_app(
        "toy", f"hydra.sweep.dir={tmp_path}", "hydra.sweeper.n_trials=4", "mode=dict",
        "hydra.sweeper.objectives=[loss]", "hydra.sweeper.write_report=false",
    )  # fmt: skip
    study = load(tmp_path, "app")
    best = study.best_trial
    block = _block(proc.stdout + proc.stderr)
    # Rule: the block names the best value, its trial, its overrides, the reproduce command and
    # the counts by state; it is also in the sweep dir.
    assert block[0] == "Sweep summary: study 'app'  (4 COMPLETE)"
    assert block[1] == f"best: loss={best.value:.6g} (minimize), trial {best.number}"
    x, y = best.params["x"], best.params["y"]
    assert block[2].startswith("  configuration: ") and f"y={y}" in block[2]
    assert f"x={x}" in block[2]
    assert block[3].startswith("  reproduce: python app.py ") and block[3].endswith(
        block[2].removeprefix("  configuration: ")
    )
    written = (tmp_path / SUMMARY_NAME).read_text().splitlines()
    assert written[1:5] == block[:4]
    # Rule: the summary precedes only the sweep's last line.
    tail = proc.stdout.strip().splitlines()  # Hydra logs to stdout; Optuna to stderr
    assert "Sweep done: 4 COMPLETE" in tail[-1]


def test_multi_objective_and_pbt_sweeps_end_with_their_summary(tmp_path: Path) -> None:
    proc = run_app(
        "multi", f"hydra.sweep.dir={tmp_path / 'mo'}", "hydra.sweeper.n_trials=6",
        "hydra.sweeper.write_report=false",
    )  # fmt: skip
    study = load(tmp_path / "mo", "multi-objective")
    block = _block(proc.stdout + proc.stderr)
    front = study.best_trials
    # Rule: multi-objective: the front's size, then per objective its best member.
    assert (
        block[1] == f"Pareto front: {len(front)} trial(s) over value_0 (minimize), value_1 "
        "(minimize)"
    )
    best0 = min(front, key=lambda t: (t.values[0], t.number))
    assert block[2].startswith(f"  best value_0: trial {best0.number} (")
    assert any(ln.startswith("  best value_1: trial ") for ln in block)

    app = APPS / "pbt_toy" / "app.py"
    pbt = run_app(app, f"hydra.sweep.dir={tmp_path / 'pbt'}", "hydra.sweeper.num_rounds=2")
    block = _block(pbt.stdout + pbt.stderr)
    results = json.loads((tmp_path / "pbt" / "optimization_results.json").read_text())
    # Rule: PBT: the best member's final round and where its schedule is.
    member = results["pbt"]["best_member"]
    assert block[1].startswith(f"best member: {member}, ")
    assert any("schedule" in ln for ln in block)


def test_optuna_dashboard_shows_the_objective_names(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'studies.db'}"
    common = [f"hydra.sweeper.storage={db}", "hydra.sweeper.n_trials=2", "mode=dict",
              "hydra.sweeper.write_report=false"]  # fmt: skip
    run_app("toy", f"hydra.sweep.dir={tmp_path / 'one'}", "hydra.sweeper.study_name=one",
            "hydra.sweeper.objectives=[loss]", *common)  # fmt: skip
    run_app("toy", f"hydra.sweep.dir={tmp_path / 'two'}", "hydra.sweeper.study_name=two",
            "hydra.sweeper.objectives=[loss,other]",
            "hydra.sweeper.direction=[minimize,minimize]", *common)  # fmt: skip
    with optuna_dashboard(db, tmp_path / "dashboard.log") as url:
        ids = {
            s["study_name"]: s["study_id"]
            for s in get_json(f"{url}/api/studies")["study_summaries"]
        }
        # Rule: the dashboard labels each objective with the study's metric names, for one
        # objective and for several (not "Objective 0").
        assert get_json(f"{url}/api/studies/{ids['one']}")["objective_names"] == ["loss"]
        assert get_json(f"{url}/api/studies/{ids['two']}")["objective_names"] == ["loss", "other"]
    assert optuna.load_study(study_name="two", storage=db).metric_names == ["loss", "other"]
