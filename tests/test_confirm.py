"""The confirmation stage: the top configurations re-run on test seeds, the pick by test mean."""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from nemo_rl_hpo.sweep import confirm
from tests.sweeplib import APPS, kill9_and_resume, load, run_app

SEEDED = APPS / "seeded"


# ---------------------------------------------------------------------------- the pick
def test_the_test_mean_picks_and_breaks_ties_at_the_ceiling_not_discovery_order() -> None:
    # Three configurations tie at the objective's ceiling 1.0 (maximize); the third found is
    # the best on test seeds. Rule: the pick is the best test mean, whatever the order found.
    choice = confirm.choose(
        [1.0, 1.0, 1.0, 0.9], [[0.5, 0.6], [0.7, 0.6], [0.9, 0.8], [0.95]], True
    )
    assert choice.winner == 3  # the best test mean wins even below the tied tuning values
    assert choice.rank_before == [1, 1, 1, 4] and choice.rank_after == [4, 3, 2, 1]
    tied = confirm.choose([1.0, 1.0, 1.0], [[0.5, 0.6], [0.7, 0.6], [0.9, 0.8]], True)
    assert tied.winner == 2
    # Rule: equal test means go to the better tuning value (minimize: lower).
    assert confirm.choose([0.3, 0.2], [[1.0], [1.0]], False).winner == 1
    # Rule: a configuration without a test value never wins.
    assert confirm.choose([0.1, 0.2], [[], [5.0]], False).winner == 1


def test_the_interval_is_student_t_95_percent() -> None:
    mean, half = confirm.mean_ci95([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, df=2) = 4.3027: half-width 4.3027 / sqrt(3) = 2.4841
    assert mean == 2.0 and half == pytest.approx(2.4841, abs=1e-4)
    assert confirm.mean_ci95([1.5]) == (1.5, None)


def _trial(
    number: int, value: float | None, state: TrialState = TrialState.COMPLETE
) -> FrozenTrial:
    t = create_trial(
        params={"x": float(number)},
        distributions={"x": FloatDistribution(0, 100)},
        value=value if state == TrialState.COMPLETE else None,
        state=state,
        user_attrs={"overrides": [f"x={number}"]},
    )
    t.number = number
    return t


def test_candidates_completed_full_length_with_ties_and_too_few_said() -> None:
    trials = [
        _trial(0, 0.5),
        _trial(1, None, TrialState.PRUNED),  # stopped early: never a candidate
        _trial(2, 0.2),
        _trial(3, 0.2),  # tied with trial 2 at the 1st place
        _trial(4, 0.9),
    ]
    chosen, note = confirm.candidates(trials, False, 1)
    # Rule: a tie at the k-th tuning value brings in every tied configuration, said in a note.
    assert [t.number for t in chosen] == [2, 3] and note and "tie" in note
    chosen, note = confirm.candidates(trials, False, 6)
    # Rule: fewer complete configurations than top_k: all of them, and it says so.
    assert [t.number for t in chosen] == [2, 3, 0, 4]
    assert note and "only 4 configuration(s) completed the full length" in note


def test_settings_are_checked_with_one_line_naming_the_key() -> None:
    ok = {"top_k": 2, "seeds": 3, "seed_key": None, "first_seed": 1000, "overrides": []}
    assert confirm.Confirm.from_config(ok, "grpo.seed").seed_key == "grpo.seed"
    for bad, key in [({"seeds": 0}, "confirm.seeds"), ({"top_k": -1}, "confirm.top_k"),
                     ({"overrides": "data.split=test"}, "confirm.overrides")]:  # fmt: skip
        with pytest.raises(confirm.ConfirmConfigError, match=key):
            confirm.Confirm.from_config({**ok, **bad}, "seed")
    # Rule: test seeds that were tuning seeds are refused, naming first_seed.
    c = confirm.Confirm.from_config({**ok, "first_seed": 1}, "seed")
    with pytest.raises(confirm.ConfirmConfigError, match="first_seed=1: test seed"):
        c.check_disjoint([0, 1, 2])


# ---------------------------------------------------------------------------- end to end
def _expected(x: float, seed: int, noise: float = 0.5) -> float:
    """The seeded app's value (tests/apps/seeded/app.py), recomputed."""
    rng = random.Random(f"{seed}-{x}")
    return (x - 1.0) ** 2 + noise * rng.uniform(-1.0, 1.0)


@pytest.mark.e2e
def test_eight_trial_sweep_confirms_top_two_on_three_test_seeds(tmp_path: Path) -> None:
    run_app(
        "seeded", f"hydra.sweep.dir={tmp_path}", "hydra.sweeper.n_trials=8",
        "hydra.sweeper.confirm.top_k=2", "hydra.sweeper.confirm.seeds=3",
        "hydra.sweeper.write_report=false",
    )  # fmt: skip
    study = load(tmp_path, "app")
    trials = study.get_trials()
    # Rule: the budget counts 8 search trials; the sampler's study holds nothing else (a
    # confirmation is a study attribute, never a trial any sampler reads).
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    assert not any(k.startswith("confirm:") for t in trials for k in t.user_attrs)
    records = {k: v for k, v in study.user_attrs.items() if k.startswith("confirm:")}
    results = json.loads((tmp_path / "optimization_results.json").read_text())
    conf = results["confirmation"]
    assert results["reproducibility"]["budget"]["trials_counted"] == 8
    # Rule: 6 jobs ran, on seeds 1000..1002, disjoint from the tuning seed (the app's seed: 0).
    ends = {k: v for k, v in records.items() if not k.endswith(":job")}
    assert len(ends) == 6 and all(v["state"] == "COMPLETE" for v in ends.values())
    assert sorted({v["seed"] for v in ends.values()}) == [1000, 1001, 1002]
    assert conf["settings"]["tuning_seeds"] == [0]
    best_two = sorted(trials, key=lambda t: t.value)[:2]
    assert [c["number"] for c in conf["configurations"]] == [t.number for t in best_two]
    for c, t in zip(conf["configurations"], best_two, strict=True):
        x = t.params["x"]
        # Rule: each job recorded its own value (what the app returns on that seed), and the
        # test mean is the mean of those records.
        mine = [records[f"confirm:{t.number}:{s}"]["value"] for s in (1000, 1001, 1002)]
        assert mine == [pytest.approx(_expected(x, s)) for s in (1000, 1001, 1002)]
        assert c["test_mean"] == pytest.approx(statistics.fmean(mine))
        assert c["tuning_value"] == pytest.approx(_expected(x, 0))
        for s in (1000, 1001, 1002):  # each job in its own dir, run once, with its seed
            job_dir = tmp_path / "confirm" / str(t.number) / f"seed_{s}"
            assert (job_dir / "runs.log").read_text().split()[1] == str(s)
    # Rule: each confirmation job's cost is recorded (the study's totals and budget count it).
    costs = [
        k
        for k in study._storage.get_study_system_attrs(study._study_id)
        if k.startswith("nemo_rl_hpo:cost:") and ":confirm-" in k
    ]
    assert len(costs) == 6
    pick = min(conf["configurations"], key=lambda c: c["test_mean"])
    assert conf["pick"] == pick["number"]
    assert conf["optimism"] == pytest.approx(pick["tuning_value"] - pick["test_mean"])
    # Rule: the end-of-sweep summary leads with the confirmed pick and its test mean.
    summary = (tmp_path / "summary.txt").read_text()
    assert f"confirmed pick: trial {pick['number']}, test loss={pick['test_mean']:.6g}" in summary
    # Rule: `best` prints the command of the confirmed pick.
    best = subprocess.run(
        [sys.executable, "-m", "nemo_rl_hpo.cli", "best", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    x = study.trials[pick["number"]].params["x"]
    assert best.stdout.strip().endswith(f"x={x}")
    assert "<- pick" in best.stderr and "test mean" in best.stderr


@pytest.mark.e2e
def test_confirm_command_on_a_sweep_made_without_the_stage_and_resumable(tmp_path: Path) -> None:
    run_app("seeded", f"hydra.sweep.dir={tmp_path}", "hydra.sweeper.n_trials=3",
            "hydra.sweeper.write_report=false")  # fmt: skip
    study = load(tmp_path, "app")
    assert not any(k.startswith("confirm:") for k in study.user_attrs)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nemo_rl_hpo.cli", "confirm", str(tmp_path), *args],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    out = cli("--top-k", "2", "--seeds", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    study = load(tmp_path, "app")
    # Rule: no new search trial; 2 x 2 confirmation jobs recorded.
    assert len(study.trials) == 3
    ends = [k for k in study.user_attrs if k.startswith("confirm:") and not k.endswith(":job")]
    assert len(ends) == 4
    logs = sorted((tmp_path / "confirm").glob("*/seed_*/runs.log"))
    assert len(logs) == 4
    # Rule: run again, the stage re-runs nothing that is done.
    again = cli()
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(p.read_text().count("\n") == 1 for p in logs)
    assert "job(s) to run" not in again.stdout + again.stderr


@pytest.mark.e2e
def test_killed_mid_confirmation_then_resumed_runs_no_confirmation_twice(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        sys.executable, str(SEEDED / "app.py"), "-m", f"hydra.sweep.dir={sweep}",
        "hydra/launcher=local", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.confirm.top_k=2", "hydra.sweeper.confirm.seeds=2",
        "hydra.sweeper.write_report=false", "steps=8",
        # Test-only settings: the search is quick, each confirmation job takes seconds.
        'hydra.sweeper.confirm.overrides=["step_sleep=0.4"]',
    ]  # fmt: skip

    def one_done_one_running() -> bool:
        attrs = load(sweep, "app").user_attrs
        started = {
            k[: -len(":job")] for k in attrs if k.startswith("confirm:") and k.endswith(":job")
        }
        ended = {k for k in attrs if k.startswith("confirm:") and not k.endswith(":job")}
        return bool(ended) and bool(started - ended)

    out = kill9_and_resume(args, SEEDED, tmp_path / "first.log", one_done_one_running, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    study = load(sweep, "app")
    ends = {k: v for k, v in study.user_attrs.items()
            if k.startswith("confirm:") and not k.endswith(":job")}  # fmt: skip
    # Rule: every confirmation ends COMPLETE, and each job started exactly once: the done ones
    # were skipped, the one running when the sweeper died was waited for, not launched again.
    assert len(ends) == 4 and all(v["state"] == "COMPLETE" for v in ends.values())
    logs = sorted((sweep / "confirm").glob("*/seed_*/runs.log"))
    assert len(logs) == 4
    assert [p.read_text().count("\n") for p in logs] == [1, 1, 1, 1]
    assert len(study.trials) == 2


def test_grpo_test_split_holds_out_other_prompts_and_leaves_validation_as_it_was() -> None:
    import torch

    from nemo_rl_hpo.training.grpo.task import DigitsTask

    val = DigitsTask().validation()
    test = DigitsTask(split="test").validation()
    # Rule: as many test prompts as validation prompts, none of them a validation prompt.
    assert test[0].shape == val[0].shape
    assert not {tuple(r) for r in val[0].tolist()} & {tuple(r) for r in test[0].tolist()}
    # Rule: the default (validation) prompts are unchanged: the seed's first draw.
    first = DigitsTask().sample(256, torch.Generator().manual_seed(1234))
    assert torch.equal(val[0], first[0])
    with pytest.raises(ValueError, match="task.split must be one of validation, test"):
        DigitsTask(split="train")


def test_confirm_command_says_what_to_do_for_a_study_without_an_app_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import optuna

    from nemo_rl_hpo.cli import main

    url = f"sqlite:///{tmp_path / 'plain.db'}"
    study = optuna.create_study(storage=url, study_name="plain")
    study.add_trial(_trial(0, 0.5))
    # Rule: a plain Optuna study (no app recorded) gets one line naming what to run instead.
    assert main(["confirm", "--storage", url, "--study", "plain"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "records no app command" in err[0]
    assert "hydra.sweeper.confirm.top_k=K" in err[0]
