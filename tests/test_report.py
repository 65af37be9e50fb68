"""Results files and the offline report, on studies shaped like our sweeper's.

The studies come from tests/report_fixtures.py.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.study import StudyDirection
from PIL import Image

from nemo_rl_hpo.report import build_report, write_results
from nemo_rl_hpo.report.context import Ctx
from nemo_rl_hpo.report.figures import reference_point
from nemo_rl_hpo.report.importance import (
    DISAGREE_BELOW,
    RELIABLE_MIN_TRIALS,
    Agreement,
    agreement,
    compute_importances,
)
from nemo_rl_hpo.report.trials import SweepInfo, complete_trials, parse_overrides, pbt_summary
from tests import report_fixtures as rf

START = dt.datetime(2026, 11, 28, 12, 0, 0)
CONFIG = {"storage": "postgresql://alice:s3cret@db.example/optuna", "n_trials": 24}

# Files every report of a single-objective study with intermediate values holds.
SO_PLOTS = [
    "history",
    "anytime",
    "importance_ped_anova",
    "importance_fanova",
    "parallel_coordinate",
    "slice",
    "contour",
    "intermediate_values",
]


def _write(study: optuna.Study, sweep_dir: Path, finished: bool = True) -> dict:
    return write_results(
        study,
        sweep_dir,
        sweep_config=CONFIG,
        started_at=START,
        finished_at=START + dt.timedelta(hours=1) if finished else None,
    )


@pytest.fixture(scope="module")
def so(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, Path]:
    d = tmp_path_factory.mktemp("so")
    study = rf.single_objective(d)
    _write(study, d)
    build_report(study, d / "report")
    return study, d


@pytest.fixture(scope="module")
def mo(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, Path]:
    d = tmp_path_factory.mktemp("mo")
    study = rf.multi_objective(d)
    _write(study, d)
    build_report(study, d / "report")
    return study, d


@pytest.fixture(scope="module")
def pbt(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, Path]:
    d = tmp_path_factory.mktemp("pbt")
    study = rf.pbt(d)
    _write(study, d)
    build_report(study, d / "report")
    return study, d


def _assert_real_png(path: Path) -> None:
    img = Image.open(path)
    img.load()
    # A plot at 100 dpi from a >= 6.4 x 3 inch figure: anything smaller is a broken render.
    assert img.width >= 600 and img.height >= 300, (path.name, img.size)
    # Not a blank canvas: pixels vary.
    assert np.asarray(img.convert("L"), dtype=float).std() > 5.0, path.name


def _assert_offline_html(path: Path) -> str:
    text = path.read_text()
    # The figure itself is in the file ...
    assert "Plotly.newPlot(" in text, path.name
    # ... and plotly.js is loaded from beside it, never from a CDN or any URL: the one script
    # src is a bare relative name, and that file in the report dir is plotly.js itself.
    srcs = re.findall(r"<script[^>]+src=\"([^\"]+)\"", text)
    assert srcs == ["plotly.min.js"], (path.name, srcs)
    js = (path.parent / srcs[0]).read_text()
    assert "plotly.js v" in js and len(js) > 3_000_000, path.name
    return text


# ---------------------------------------------------------------- results files


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["optimizer=sgd", "optimizer.momentum=0.9"],
            {"optimizer": "sgd", "optimizer.momentum": 0.9},
        ),
        (["batch_size=8", "learning_rate=1e-4"], {"batch_size": 8, "learning_rate": 1e-4}),
        (["+w=0.5", "++z=true", "n=null"], {"+w": 0.5, "++z": True, "n": None}),
        (["~dropout", "name='a b'", "xs=[1,2]"], {"name": "a b", "xs": [1, 2]}),
    ],
)
def test_overrides_parse_to_hydra_typed_params(overrides: list[str], expected: dict) -> None:
    # Hydra keys (with +/++) and the value types the app receives; deletions carry no value.
    assert parse_overrides(overrides) == expected


def test_single_objective_yaml_has_exactly_upstream_keys(so: tuple[optuna.Study, Path]) -> None:
    study, d = so
    data = yaml.safe_load((d / "optimization_results.yaml").read_text())
    # hydra-optuna-sweeper's _serialize_results writes these three keys, in this order.
    assert list(data) == ["name", "best_params", "best_value"]
    assert data["name"] == "optuna"
    best = study.best_trial
    assert data["best_value"] == pytest.approx(best.value)
    # best_params are the Hydra overrides of the best trial, conditional keys included.
    assert data["best_params"] == parse_overrides(best.user_attrs["overrides"])


def test_multi_objective_yaml_lists_the_pareto_front(mo: tuple[optuna.Study, Path]) -> None:
    study, d = mo
    data = yaml.safe_load((d / "optimization_results.yaml").read_text())
    assert list(data) == ["name", "solutions"]
    assert all(list(s) == ["params", "values"] for s in data["solutions"])
    # The solutions are Optuna's own Pareto front, nothing more or less.
    got = sorted(tuple(s["values"]) for s in data["solutions"])
    assert got == sorted(tuple(t.values) for t in study.best_trials)
    assert 1 < len(got) < len(study.trials)


def test_results_json_summarizes_the_sweep(so: tuple[optuna.Study, Path]) -> None:
    study, d = so
    text = (d / "optimization_results.json").read_text()
    data = json.loads(text)
    # The password of any URL in the sweep config never reaches the disk.
    assert "s3cret" not in text
    assert data["sweep_config"]["storage"] == "postgresql://alice:***@db.example/optuna"
    assert data["counts"] == {"RUNNING": 1, "COMPLETE": 19, "PRUNED": 3, "FAIL": 1, "WAITING": 0}
    assert data["study_name"] == "so" and data["objectives"] == ["val_loss"]
    assert data["sampler"] == "TPESampler" and data["directions"] == ["minimize"]
    assert data["started_at"] == START.isoformat() and data["finished"] is True
    best = study.best_trial
    # The reproduce command is the app command + fixed overrides + the trial's sampled overrides
    # (the fixed ones it also recorded are not repeated).
    sampled = [o for o in best.user_attrs["overrides"] if o not in rf.BASE]
    assert data["best"]["command"] == shlex.join(rf.COMMAND + rf.BASE + sampled)
    assert data["best"]["number"] == best.number
    pruned = [t for t in data["trials"] if t["state"] == "PRUNED"]
    # Learning curves of pruned trials are kept: intermediate values and the curves attr.
    assert pruned and all(len(t["intermediate_values"]) == 3 for t in pruned)
    assert all(t["curves"]["val_loss"] for t in pruned)
    assert len(data["trials"]) == len(study.trials)


def test_results_before_any_trial_completes(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s")
    study.ask()  # one RUNNING trial, nothing finished
    data = _write(study, tmp_path, finished=False)
    upstream = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    # Same keys as upstream even with no result yet; values say "none yet".
    assert upstream == {"name": "optuna", "best_params": {}, "best_value": None}
    assert data["best"] is None and data["counts"]["RUNNING"] == 1 and data["finished"] is False
    mo = optuna.create_study(directions=["minimize", "maximize"])
    _write(mo, tmp_path / "mo", finished=False)
    assert yaml.safe_load((tmp_path / "mo" / "optimization_results.yaml").read_text()) == {
        "name": "optuna",
        "solutions": [],
    }


def test_plain_study_uses_optuna_params(tmp_path: Path) -> None:
    study = rf.plain(tmp_path)
    data = _write(study, tmp_path)
    # Without the sweeper's attributes, params are Optuna's and the command is the overrides.
    assert data["best"]["params"] == study.best_trial.params
    assert data["best"]["command"].split()[0].startswith("x=")
    assert data["objectives"] == ["value"]


def test_pbt_results_hold_the_best_members_schedule(pbt: tuple[optuna.Study, Path]) -> None:
    study, d = pbt
    data = json.loads((d / "optimization_results.json").read_text())["pbt"]
    last = [t for t in study.trials if t.user_attrs["pbt:round"] == 2]
    best_last = min(last, key=lambda t: t.value)
    assert data["final_value"] == pytest.approx(best_last.value)
    assert data["best_member"] == best_last.user_attrs["pbt:member"]
    # One entry per round, and each round's member is the parent the next round exploited.
    assert [s["round"] for s in data["schedule"]] == [0, 1, 2]
    for prev, nxt in zip(data["schedule"][:-1], data["schedule"][1:], strict=True):
        assert prev["member"] == (nxt["parent"] if nxt["parent"] is not None else nxt["member"])
    assert data["schedule"][-1]["params"] == best_last.user_attrs["pbt:params"]


def test_pbt_summary_without_finished_rounds_is_none() -> None:
    assert pbt_summary([], StudyDirection.MINIMIZE) is None


def test_reference_point_is_worse_than_every_point() -> None:
    ref = reference_point(
        [[1.0, 10.0], [2.0, 5.0]], [StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE]
    )
    # 10 % of the range beyond the worst value, on each objective's bad side.
    assert ref == pytest.approx([2.1, 4.5])


# ---------------------------------------------------------------- report


def test_single_objective_report_files_are_real(so: tuple[optuna.Study, Path]) -> None:
    study, d = so
    out = d / "report"
    for stem in SO_PLOTS:
        _assert_offline_html(out / f"{stem}.html")
        _assert_real_png(out / f"{stem}.png")
    history = (out / "history.html").read_text()
    # The figure data is in the file: the best value is one of the plotted points.
    assert repr(study.best_value) in history
    index = _assert_offline_html(out / "index.html")
    # index.html embeds every plot and shows the summary: best trial, counts, the command.
    assert index.count("Plotly.newPlot(") == len(SO_PLOTS)
    sampled = [o for o in study.best_trial.user_attrs["overrides"] if o not in rf.BASE]
    assert shlex.join(rf.COMMAND + rf.BASE + sampled) in index
    assert "COMPLETE" in index and "PRUNED" in index and "Top importances" in index
    assert "Skipped" not in index
    # The cost: totals and a per-trial table (trial 3: 90 s x 2 GPUs = 0.05 GPU-hours).
    assert "Cost (GPU-hours" in index and "<td>0.05</td>" in index


def test_multi_objective_report_has_pareto_and_hypervolume(mo: tuple[optuna.Study, Path]) -> None:
    _, d = mo
    out = d / "report"
    for stem in ["pareto_front", "hypervolume_history", "history_val_loss", "history_train_time_s"]:
        _assert_offline_html(out / f"{stem}.html")
        _assert_real_png(out / f"{stem}.png")
    index = (out / "index.html").read_text()
    assert "Pareto front" in index
    # No trial reported intermediate values: that plot is skipped with a note, not an error.
    assert not (out / "intermediate_values.png").exists()
    assert "Skipped: no trial reported intermediate values" in index


def test_pbt_report_has_lineage_and_schedules(pbt: tuple[optuna.Study, Path]) -> None:
    _, d = pbt
    out = d / "report"
    for stem in ["pbt_lineage", "pbt_schedules", "history", "intermediate_values"]:
        _assert_offline_html(out / f"{stem}.html")
        _assert_real_png(out / f"{stem}.png")
    index = (out / "index.html").read_text()
    assert "PBT: best member's schedule" in index and "exploited from" in index
    # One searched parameter: importance and contour cannot be drawn, and say why.
    assert "needs at least 2 searched parameters (have 1)" in index
    assert not (out / "contour.png").exists()


@pytest.mark.parametrize("n_complete", [0, 1])
def test_report_of_a_barely_started_study_does_not_crash(tmp_path: Path, n_complete: int) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s")
    for _ in range(n_complete):
        t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(t, 0.5)
    study.ask()  # running
    index = build_report(study, tmp_path / "report")
    text = index.read_text()
    assert "Skipped" in text and "importance" in text.lower()
    assert ("No complete trial yet" in text) == (n_complete == 0)


def test_sparse_conditional_parameter_is_a_note_not_console_warnings(tmp_path: Path) -> None:
    # SGD's momentum exists in one trial of eight: PED-ANOVA warns per such parameter. The report
    # of a small sweep says it once, on the importance plot, and prints nothing.
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s")
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    opt = optuna.distributions.CategoricalDistribution(["adam", "sgd"])
    momentum = optuna.distributions.FloatDistribution(0.8, 0.99)
    for i in range(8):
        params: dict[str, object] = {"lr": 10 ** (-4 + 3 * i / 7), "optimizer": "adam"}
        dists: dict[str, optuna.distributions.BaseDistribution] = {"lr": lr, "optimizer": opt}
        if i == 0:
            params.update(optimizer="sgd", momentum=0.9)
            dists["momentum"] = momentum
        value = (float(params["lr"]) - 0.01) ** 2 + 0.1 * i  # type: ignore[arg-type]
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
    assert sum("momentum" in t.params for t in study.trials if t.value is not None) == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = build_report(study, tmp_path / "report").read_text()
    assert not [w for w in caught if "regimes" in str(w.message)], [str(w.message) for w in caught]
    assert "may be inaccurate for momentum" in index


def test_flat_parameter_of_a_tiny_sweep_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two trials, y fixed at one value: every plot of y has a flat axis. matplotlib and Optuna's
    # contour used to print a warning per plot at the end of the sweep; the plots stay drawn.
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s")
    x = optuna.distributions.FloatDistribution(0.0, 3.0)
    y = optuna.distributions.IntDistribution(-5, 5)
    for i, xv in enumerate((0.07, 2.9)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": xv, "y": 1}, distributions={"x": x, "y": y}, value=xv + i
            )
        )
    before = optuna.logging.get_verbosity()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_report(study, tmp_path / "report")
    assert not [w for w in caught if "identical" in str(w.message)], [
        str(w.message) for w in caught
    ]
    assert "unique value length" not in capsys.readouterr().err
    assert optuna.logging.get_verbosity() == before  # the caller's Optuna logging is restored
    assert (tmp_path / "report" / "contour.png").exists()


def _graded_study(n: int) -> optuna.Study:
    """value = 10 x + 3 y + z on random points: x matters most, then y, then z."""
    rng = random.Random(0)
    dist = optuna.distributions.FloatDistribution(0.0, 1.0)
    study = optuna.create_study()
    for _ in range(n):
        p = {k: rng.random() for k in ("x", "y", "z")}
        study.add_trial(
            optuna.trial.create_trial(
                params=p,
                distributions=dict.fromkeys(p, dist),
                value=10 * p["x"] + 3 * p["y"] + p["z"],
            )
        )
    return study


def test_importances_say_how_many_trials_they_rest_on_and_when_to_distrust_them(
    tmp_path: Path,
) -> None:
    index = build_report(_graded_study(20), tmp_path / "report").read_text()
    # Rule: the page shows the trial count and the estimators' agreement; under the measured
    # threshold (bench/importance_stability.py) the tables are marked "not yet reliable".
    head = "rank correlation fANOVA vs PED-ANOVA"
    row = index.split(head, 1)[1].split("</table>", 1)[0]
    assert "<td>20</td>" in row and "not yet reliable" in row
    assert "not yet reliable: these rest on 20 complete trials" in index
    # On 20 trials PED-ANOVA ranks z first (the truth: x, then y, then z) while fANOVA ranks x
    # first: the page says they disagree, next to the tables.
    assert "<td>x / z</td>" in row
    assert "the estimators disagree" in index and "PED-ANOVA z" in index
    # Rule: with enough trials both find x first, agree, and nothing is flagged.
    study = _graded_study(RELIABLE_MIN_TRIALS)
    trials = study.get_trials()
    ctx = Ctx(study, trials, complete_trials(trials), SweepInfo.from_study(study))
    compute_importances(ctx)
    (a,) = agreement(ctx)
    assert a.tops == ("x", "x") and a.rho is not None and a.rho > DISAGREE_BELOW
    assert a.notes() == []


@pytest.mark.parametrize(
    ("rho", "tops", "warned"),
    [
        (0.9, ("lr", "lr"), False),  # same top, similar ranking
        (DISAGREE_BELOW - 0.01, ("lr", "lr"), True),  # same top, rankings below it unrelated
        (0.8, ("lr", "ent_coef"), True),  # different top parameter: the 30-trial sweep
        (None, None, False),  # one estimator missing: nothing to compare
    ],
)
def test_strong_disagreement_is_said_next_to_the_tables(
    rho: float | None, tops: tuple[str, str] | None, warned: bool
) -> None:
    a = Agreement("val_reward", RELIABLE_MIN_TRIALS, rho, tops)
    # Rule: a rank correlation below DISAGREE_BELOW, or different top parameters, is a warning.
    assert any("the estimators disagree" in n for n in a.notes()) == warned
