"""Seed repeats: a configuration runs as n seed jobs, its Optuna value the seeds' aggregate.

Unit tests drive the job-side rules on an in-memory study (what each seed job calls through
``nemo_rl_hpo.trial`` and ``sweep/job.py``); the e2e tests run ``tests/apps/seeded`` as a user
would, with ``hydra.sweeper.repeats=3``.
"""

from __future__ import annotations

import json
import statistics
import threading
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nemo_rl_hpo.errors import named
from nemo_rl_hpo.sweep import records, repeats
from tests.sweeplib import load, run_app, states


def _seed(i: int, n: int = 3, aggregate: str = "mean") -> dict[str, object]:
    return {"index": i, "seed": i, "n": n, "aggregate": aggregate, "seed_key": "seed"}


def _study(pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    return optuna.create_study(pruner=pruner or optuna.pruners.NopPruner())


CTX = {"objectives": ["loss"]}


# ------------------------------------------------------------------------------ settings
def test_settings_are_checked_with_one_line_naming_the_key() -> None:
    assert repeats.Repeats.from_config(3, "seed", "median").configurations_in_flight(4) == 2
    # As the Hydra sweeper shows them (the library names its parameters: repeats, ...).
    with pytest.raises(repeats.RepeatConfigError) as e:
        repeats.Repeats.from_config(0)
    assert named(e.value, "hydra.sweeper.").startswith("hydra.sweeper.repeats must be 1 or more")
    with pytest.raises(repeats.RepeatConfigError) as e:
        repeats.Repeats.from_config(2, "seed", "average")
    assert named(e.value, "hydra.sweeper.").startswith("hydra.sweeper.aggregate must be one of")
    with pytest.raises(repeats.RepeatConfigError) as e:
        repeats.Repeats.from_config(2, "")
    assert named(e.value, "hydra.sweeper.").startswith("hydra.sweeper.seed_key")


# ------------------------------------------------------------------------------ job side
@pytest.mark.parametrize("aggregate", ["mean", "median", "min", "max"])
def test_the_seed_ending_last_tells_the_aggregate_of_every_seed(aggregate: str) -> None:
    study = _study()
    trial = study.ask()
    losses = [0.9, 0.2, 0.4]
    for i in (2, 0):  # any order
        state = repeats.on_seed_end(
            study, trial._trial_id, _seed(i, aggregate=aggregate), True, {"loss": losses[i]}, CTX
        )
        # Rule: the configuration stays RUNNING while a seed is still out.
        assert state is None and study.trials[0].state == TrialState.RUNNING
    repeats.on_seed_end(
        study, trial._trial_id, _seed(1, aggregate=aggregate), True, {"loss": losses[1]}, CTX
    )
    t = study.trials[0]
    want = {"mean": statistics.fmean, "median": statistics.median, "min": min, "max": max}
    # Rule: the trial's value is the aggregate of its seeds' own recorded values.
    assert t.state == TrialState.COMPLETE
    assert t.value == pytest.approx(
        want[aggregate]([r["values"][0] for r in repeats.seed_records(t)])
    )
    assert [r["seed"] for r in repeats.seed_records(t)] == [0, 1, 2]
    assert t.user_attrs["metric:loss"] == pytest.approx(t.value)


def test_a_failing_seed_fails_the_configuration_with_its_reason() -> None:
    study = _study()
    trial = study.ask()
    repeats.on_seed_end(study, trial._trial_id, _seed(0), True, {"loss": 0.1}, CTX)
    state = repeats.on_seed_end(
        study, trial._trial_id, _seed(1), False, RuntimeError("diverged"), CTX
    )
    t = study.trials[0]
    assert state == TrialState.FAIL and t.state == TrialState.FAIL
    assert t.user_attrs[records.FAIL_REASON] == "seed 1 (seed=1): RuntimeError: diverged"
    # Rule: the other seeds are told to stop (their should_prune answers yes).
    assert repeats.should_prune(optuna.Trial(study, trial._trial_id), _seed(2))


def test_pruning_judges_the_aggregate_and_stops_every_seed() -> None:
    study = _study(optuna.pruners.ThresholdPruner(upper=1.0))
    trial = study.ask()
    handle = optuna.Trial(study, trial._trial_id)
    repeats.report(handle, _seed(0), 0, {"loss": 0.4}, "loss")
    repeats.report(handle, _seed(1), 0, {"loss": 1.4}, "loss")
    # Rule: the intermediate value at a step is the aggregate of the seeds that reported it.
    assert study.trials[0].intermediate_values == {0: pytest.approx(0.9)}
    assert not repeats.should_prune(handle, _seed(1))  # mean 0.9 is under the threshold
    repeats.report(handle, _seed(2), 0, {"loss": 1.6}, "loss")
    assert study.trials[0].intermediate_values == {0: pytest.approx(3.4 / 3)}
    assert repeats.should_prune(handle, _seed(2))
    # Rule: once pruned, every seed is told to stop, and the configuration ends PRUNED.
    assert repeats.should_prune(handle, _seed(0))
    for i in range(3):
        repeats.on_seed_end(study, trial._trial_id, _seed(i), True, {"loss": 1.0}, CTX)
    assert study.trials[0].state == TrialState.PRUNED
    assert {r["state"] for r in repeats.seed_records(study.trials[0])} == {"PRUNED"}
    assert "repeat:1:curves" in study.trials[0].user_attrs


def test_seeds_launch_side_by_side_each_with_its_seed_and_own_dir() -> None:
    study = _study()
    trial = study.ask()
    seen: list[tuple[list[str], dict[str, object]]] = []
    both_in = threading.Barrier(3, timeout=5)

    def launch_one(ovs: list[str], ctx: dict[str, object], i: int) -> tuple[bool, str | None]:
        both_in.wait()  # all three at once: they run side by side
        seen.append((ovs, ctx))
        return (i != 2, None if i != 2 else "JobDied: killed")

    ok, error = repeats.launch_seeds(
        repeats.Repeats(3), study, trial, ["x=1"], launch_one, "${hydra.job.num}"
    )
    assert not ok and error == "seed 2 (seed=2): JobDied: killed"
    by_seed = {ctx["repeat"]["seed"]: ovs for ovs, ctx in seen}  # type: ignore[index]
    assert by_seed[1] == ["x=1", "seed=1", "hydra.sweep.subdir='${hydra.job.num}/seed_1'"]
    # Rule: a seed whose job died fails the configuration at once, naming the seed.
    assert study.trials[0].state == TrialState.FAIL
    assert study.trials[0].user_attrs[records.FAIL_REASON].startswith("seed 2 (seed=2)")


# ------------------------------------------------------------------------------------ e2e
SEEDED = ["hydra/launcher=pool", "hydra.sweeper.write_report=false", "hydra.sweeper.repeats=3"]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_four_configurations_by_three_seeds_are_twelve_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_app(
        "seeded",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=3",
        "hydra.sweeper.sampler.seed=0",
        *SEEDED,
    )
    study = load(tmp_path, "app")
    assert states(study) == {"COMPLETE": 4}  # the study holds configurations, not seed jobs
    assert study.user_attrs[records.STUDY_REPEATS] == {
        "n": 3,
        "seed_key": "seed",
        "aggregate": "mean",
    }
    dirs = set()
    for t in study.trials:
        seeds = repeats.seed_records(t)
        assert [r["seed"] for r in seeds] == [0, 1, 2]
        # Rule: the configuration's value is the mean of its seeds' own recorded values...
        assert t.value == pytest.approx(statistics.fmean(r["values"][0] for r in seeds))
        # ... which differ (the noise depends on the seed), so the seeds really ran apart.
        assert len({r["values"][0] for r in seeds}) == 3
        for i in range(3):
            job = t.user_attrs[f"repeat:{i}:job"]
            assert (Path(job["job_dir"]) / "seed.txt").read_text().split()[0] == str(i)
            dirs.add(job["job_dir"])
    assert len(dirs) == 12  # 4 configurations x 3 seeds, each seed job in its own dir
    # Rule: best prints the best configuration's seeds; status, report and results its spread.
    from nemo_rl_hpo import cli

    best = study.best_trial
    seeds = repeats.seed_records(best)
    assert cli.main(["best", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    seeds_line = next(ln for ln in err.splitlines() if ln.startswith("# seeds: "))
    assert [f"seed={r['seed']}" for r in seeds] == [
        part.split(":")[0]
        for part in seeds_line.removeprefix("# seeds: ").split("; ")[0].split(", ")
    ]
    spread = repeats.spread(best)
    assert spread is not None and spread in err
    assert cli.main(["status", str(tmp_path)]) == 0
    assert spread in " ".join(capsys.readouterr().out.split())  # rich may wrap the line
    results = json.loads((tmp_path / "optimization_results.json").read_text())
    assert results["best"]["spread"] == spread
    assert [r["seed"] for r in results["best"]["seeds"]] == [0, 1, 2]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_failing_or_killed_seed_fails_its_configuration_with_the_reason(tmp_path: Path) -> None:
    run_app(
        "seeded",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=3",
        "hydra.sweeper.sampler.seed=1",
        "hydra.sweeper.max_failure_rate=1.0",
        "fail_seed=1",
        "kill_seed=2",
        "fail_above=0.5",  # x in [-2, 3]: configurations above 0.5 lose seed 1 (or seed 2)
        *SEEDED,
    )
    study = load(tmp_path, "app")
    bad = [t for t in study.trials if t.params["x"] > 0.5]
    good = [t for t in study.trials if t.params["x"] <= 0.5]
    assert bad and good, "sampler seed 1 proposes x on both sides of 0.5"
    for t in bad:
        reason = t.user_attrs[records.FAIL_REASON]
        assert t.state == TrialState.FAIL
        # Rule: the reason names the seed; seed 1 raises before seed 2 is killed, usually, but
        # either may be first on a busy machine.
        assert reason.startswith(
            ("seed 1 (seed=1): RuntimeError: seed 1 diverged", "seed 2 (seed=2)")
        )
    assert all(t.state == TrialState.COMPLETE for t in good)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_pruned_configuration_stops_all_its_seeds(tmp_path: Path) -> None:
    run_app(
        "seeded",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.n_jobs=3",  # one configuration at a time: each is judged on the ones before
        "hydra.sweeper.sampler.seed=2",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "steps=12",
        "step_sleep=0.05",
        "noise=0.0",
        *SEEDED,
    )
    study = load(tmp_path, "app")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, states(study)
    for t in pruned:
        seeds = repeats.seed_records(t)
        assert len(seeds) == 3
        # Rule: every seed of a pruned configuration stopped early and is recorded PRUNED.
        assert all(r["state"] == "PRUNED" for r in seeds)
        assert all(r["metrics"]["steps"] < 12 for r in seeds), seeds
