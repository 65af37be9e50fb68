"""Pause, don't kill: the ASHA / Hyperband schedule, its claims, and sweeps that pause and
promote trials from their checkpoints (``hydra/sweeper/fidelity``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import torch
from omegaconf import DictConfig
from optuna.trial import TrialState

from nemo_rl_hpo import trial
from nemo_rl_hpo.fidelity import FidelityError, FidelitySettings, Scheduler, records_from
from nemo_rl_hpo.fidelity._claims import Claims
from nemo_rl_hpo.fidelity._sampler import model_rung, view_trials
from nemo_rl_hpo.fidelity.segment import CONTEXT_KEY
from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep.storage import open_storage
from tests.conftest import TINY
from tests.sweeplib import APPS, REPO, kill9_and_resume, load, run_app

# ------------------------------------------------------------------------------ schedule


def test_rungs_are_geometric_and_end_at_max_resource() -> None:
    s = FidelitySettings(min_resource=10, max_resource=110, reduction_factor=3)
    assert s.rungs(0) == [10, 30, 90, 110]
    assert s.rungs(1) == [30, 90, 110]
    assert s.max_brackets == 4
    with pytest.raises(FidelityError, match="min_resource=200 must be at least 1 and below"):
        FidelitySettings(min_resource=200, max_resource=110)


def test_promotes_best_of_the_top_third_highest_rung_first() -> None:
    sched = Scheduler(FidelitySettings(10, 90, 3))
    recs = records_from(
        [
            (0, 0, {10: 0.5}, "paused"),
            (1, 0, {10: 0.3}, "paused"),
            (2, 0, {10: 0.9}, "paused"),
            (3, 0, {10: 0.1, 30: 0.2}, "paused"),
            (4, 0, {10: 0.2, 30: 0.1}, "running"),
            (5, 0, {10: 0.05, 30: 0.4}, "paused"),
        ]
    )
    # Rung 30 holds 3: its top 1 (trial 4) already runs on. Rung 10 holds 6: its top 2 (5, 3)
    # went on already, so trial 1, third, must wait: nothing to promote.
    assert sched.promotions(recs) == []
    # Three more arrive at rung 10, all worse than trial 1: the top 3 of 9 now include it.
    recs += records_from([(6, 0, {10: 0.7}, "paused"), (7, 0, {10: 0.8}, "paused")])
    recs += records_from([(8, 0, {10: 0.6}, "paused")])
    recs[4].values[30] = 0.1  # trial 4 ran on and is now paused at 90? no: still at 30
    assert [(p.key, p.rung, p.target) for p in sched.promotions(recs)] == []
    recs[4].status = "paused"
    recs[4].values[90] = 0.05  # trial 4 reached 90 (max): not promotable any more
    recs[4].status = "done"
    # Rung 30 is ranked 4, 3, 5: its top 1 is done, so rung 30 promotes nobody; rung 10 still
    # has 9 trials, top 3 = 5, 3, 4 (all went on).
    assert sched.promotions(recs) == []
    recs += records_from([(9, 0, {10: 0.95}, "paused"), (10, 0, {10: 0.97}, "paused")])
    recs += records_from([(11, 0, {10: 0.99}, "paused")])
    # 12 at rung 10: top 4 = 5, 3, 4, 1: trial 1 is promoted to rung 30.
    assert [(p.key, p.rung, p.target) for p in sched.promotions(recs)] == [(1, 10, 30)]
    recs += records_from([(12, 0, {10: 0.01, 30: 0.3, 90: 0.3}, "done")])
    recs += records_from([(13, 0, {10: 0.02, 30: 0.35}, "paused")])
    recs += records_from([(14, 0, {10: 0.03, 30: 0.45}, "paused")])
    # Rung 30 now holds 6 (top 2: 4 and 3): trial 3 goes first, from the higher rung.
    assert [p.key for p in sched.promotions(recs)][0] == 3


def test_trials_that_can_never_be_promoted_are_finished_only_when_nothing_can_arrive() -> None:
    sched = Scheduler(FidelitySettings(10, 90, 3))
    recs = records_from(
        [(0, 0, {10: 0.5}, "paused"), (1, 0, {10: 0.3}, "running"), (2, 0, {10: 0.9}, "paused")]
    )
    assert sched.finished(recs, more_coming=True) == []
    # Nothing runs below rung 10 and no configuration is left: 0 and 2 can never go on.
    assert sched.finished(recs, more_coming=False) == [0, 2]
    below = records_from([(3, 0, {}, "running")])
    assert sched.finished(recs + below, more_coming=False) == []


def test_stopping_mode_judges_on_arrival() -> None:
    sched = Scheduler(FidelitySettings(10, 90, 3, mode="stopping"))
    first = records_from([(0, 0, {10: 0.5}, "paused")])
    assert [p.key for p in sched.promotions(first)] == [0]  # the first one leads: goes on
    worse = first[:1] + records_from([(1, 0, {10: 0.9}, "paused")])
    worse[0].status = "running"
    assert sched.promotions(worse) == []
    assert sched.finished(worse, more_coming=True) == [1]  # stopped for good at once


def test_past_the_disk_cap_the_paused_trials_least_likely_promoted_end_first() -> None:
    sched = Scheduler(FidelitySettings(3, 27, 3))
    # Seven configurations reached step 3 (loss, lower is better); #6 went on and paused at 9.
    recs = records_from(
        [(k, 0, {3: 0.1 * (k + 1)}, "paused") for k in range(6)]
        + [(6, 0, {3: 0.05, 9: 0.5}, "paused")]
    )
    sizes = {k: 100 for k in range(7)}
    assert sched.evictions(recs, sizes, cap=700, more_coming=True) == []  # within the cap
    # Rung 3's top ⌊7/3⌋ = 2 are #6 and #0; #0 may be promoted now and is never evicted.
    # The rest of rung 3 goes first, worst first, before the trial that reached step 9.
    assert sched.evictions(recs, sizes, cap=250, more_coming=True) == [5, 4, 3, 2, 1]
    assert sched.evictions(recs, sizes, cap=50, more_coming=True) == [5, 4, 3, 2, 1, 6]


def test_hyperband_brackets_share_configurations_as_hyperband_does() -> None:
    s = FidelitySettings(10, 90, 3, brackets=3)
    sched = Scheduler(s)
    cycle = [sched.bracket_of(i) for i in range(len(sched._cycle))]
    # Hyperband with s_max = 2: 9, 5 and 3 configurations for brackets starting at 10, 30, 90
    assert (cycle.count(0), cycle.count(1), cycle.count(2)) == (9, 5, 3)
    assert [sched.first_target(b) for b in range(3)] == [10, 30, 90]
    # brackets are interleaved, not run one after another
    assert set(cycle[:6]) == {0, 1, 2}


# -------------------------------------------------------------------- claims and sampler


@pytest.mark.parametrize("kind", ["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_sweepers_never_take_the_same_paused_trial(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    """Several sweepers on one PostgreSQL or journal study (SQLite is the one-sweeper default:
    it ignores the row lock Optuna's claim relies on)."""
    name = f"s{uuid.uuid4().hex[:8]}"
    opened: list[object] = []
    if kind == "postgres":
        url = request.getfixturevalue("postgres_url")

        def storage() -> object:
            opened.append(open_storage(url))
            return opened[-1]
    else:
        path = str(tmp_path / "journal.log")

        def storage() -> object:
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))

    optuna.create_study(study_name=name, storage=storage())
    Claims(storage(), name, create=True)
    for n in range(12):
        Claims(storage(), name).offer(n, 10)
    Claims(storage(), name).offer(0, 10)  # a requeued job offers again: still one claim
    won: list[tuple[int, int]] = []
    lock = threading.Lock()

    def sweeper(i: int) -> None:
        claims = Claims(storage(), name)  # each its own connection, like another process
        for n in range(12):
            if claims.take(n, 10, f"sweeper {i}"):
                with lock:
                    won.append((i, n))

    threads = [threading.Thread(target=sweeper, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(n for _, n in won) == list(range(12))  # each exactly once
    assert Claims(storage(), name).open_offers() == set()
    for st in opened:  # each sweeper's connections, closed as a process's would be
        st.engine.dispose()  # type: ignore[attr-defined]


def _trial(number: int, rungs: dict[int, float], state: TrialState) -> optuna.trial.FrozenTrial:
    t = optuna.trial.create_trial(
        params={"x": float(number)},
        distributions={"x": optuna.distributions.FloatDistribution(0, 100)},
        value=None if state != TrialState.COMPLETE else list(rungs.values())[-1],
        state=state,
        user_attrs={records.FIDELITY_RUNGS: [{"step": s, "value": v} for s, v in rungs.items()]},
    )
    t.number = number
    return t


def test_sampler_sees_each_configuration_once_at_the_highest_rung_with_enough_values() -> None:
    trials = [
        _trial(0, {10: 1.0, 30: 0.5, 90: 0.2}, TrialState.COMPLETE),
        _trial(1, {10: 0.9, 30: 0.6}, TrialState.PRUNED),
        _trial(2, {10: 0.8, 30: 0.7}, TrialState.RUNNING),  # running its next segment
        _trial(3, {10: 2.0}, TrialState.PRUNED),
    ]
    assert model_rung(trials, 3) == 30
    view = view_trials(trials, 3)
    assert [(t.number, t.state, t.value) for t in view] == [
        (0, TrialState.COMPLETE, 0.5),
        (1, TrialState.COMPLETE, 0.6),
        (2, TrialState.COMPLETE, 0.7),
    ]
    assert model_rung(trials, 5) is None
    assert [t.number for t in view_trials(trials, 5)] == [2]  # only what runs: random draws


# ------------------------------------------------------ exactness of a paused-then-promoted trial


def _segment_context(ckpt: Path, target: int, top: int) -> str:
    """The trial context the fidelity proposer gives one segment (FidelityProposer._context)."""
    seg = {"target": target, "max": top, "launched": 0.0}
    return json.dumps({"steps": target, "checkpoint_dir": str(ckpt), CONTEXT_KEY: seg})


def _no_time(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k != "train_time_s"}


def test_supervised_trial_paused_at_rungs_computes_the_uninterrupted_run(
    compose_trial: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nemo_rl_hpo.training import train

    # Dropout and the plateau scheduler: RNG, batch order and the scheduler's memory of
    # validation losses must all come back from the rung's checkpoint.
    cfg = compose_trial(
        *TINY, "max_steps=12", "eval_interval=2", "dropout=0.1", "scheduler=plateau"
    )
    whole = train(cfg)  # outside a sweep: checkpoints in the (temporary) working dir
    ckpt = tmp_path / "segments"
    for target in (2, 6, 12):  # min_resource=2, η=3: rungs 2, 6, then max_resource
        monkeypatch.setenv(trial.ENV_TRIAL, _segment_context(ckpt, target, 12))
        part = train(cfg)
        assert part["step"] == target
    assert _no_time(part) == _no_time(whole)


def test_grpo_trial_paused_at_rungs_computes_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omegaconf import OmegaConf

    from nemo_rl_hpo.training.grpo import default_config
    from nemo_rl_hpo.training.grpo.entry import train_grpo
    from tests.test_grpo import SMALL

    cfg = OmegaConf.merge(
        default_config(), OmegaConf.from_dotlist([*SMALL, "checkpointing.keep_top_k=1"])
    )
    monkeypatch.setenv(trial.ENV_TRIAL, json.dumps({"checkpoint_dir": str(tmp_path / "whole")}))
    whole = train_grpo(cfg)  # type: ignore[arg-type]
    ckpt = tmp_path / "segments"
    for target in (2, 6):  # rung 2, then max_resource (grpo.max_num_steps=6)
        monkeypatch.setenv(trial.ENV_TRIAL, _segment_context(ckpt, target, 6))
        part = train_grpo(cfg)  # type: ignore[arg-type]
        assert part["step"] == target
    assert _no_time(part) == _no_time(whole)


# --------------------------------------------------------------------------------- sweeps

FIDELITY_APP = APPS / "fidelity"


def _rungs(t: optuna.trial.FrozenTrial) -> list[int]:
    return [int(r["step"]) for r in t.user_attrs.get(records.FIDELITY_RUNGS, [])]


@pytest.mark.e2e
def test_a_rung_off_the_validation_steps_is_one_line_before_any_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    out = run_app(
        FIDELITY_APP,
        f"hydra.sweep.dir={sweep}",
        "hydra/sweeper/fidelity=asha",
        "hydra.sweeper.fidelity.min_resource=4",
        check=False,
    )
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if "fidelity" in ln]
    assert lines == [
        "hydra.sweeper.fidelity: a rung falls on step 4, where the trial does not validate "
        "(every 3 steps); make min_resource a multiple of 3 (min_resource=4, "
        "reduction_factor=3)."
    ], out.stderr
    assert not (sweep / "optuna.db").exists()


def _plan_of(*overrides: str) -> object:
    """What ``python train.py -m <overrides>`` would schedule: the checked plan (or None),
    and the sampler the auto rule picks with it, from the composed config, before any job."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import hydra_plugins.nemo_rl_hpo._resolvers  # noqa: F401  (the n_jobs resolver)
    from hydra_plugins.nemo_rl_hpo import _fidelity
    from hydra_plugins.nemo_rl_hpo._samplers import make_sampler
    from hydra_plugins.nemo_rl_hpo._settings import OptunaSettings, PBTSettings
    from nemo_rl_hpo.search.space import SearchSpace

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=False)
    assert isinstance(sweeper, dict)
    sweeper["n_jobs"] = 2
    if "pbt_sweeper" in str(sweeper["_target_"]):
        return PBTSettings.from_config(OmegaConf.create(sweeper))
    s = OptunaSettings.from_config(OmegaConf.create(sweeper))
    task = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
    plan = _fidelity.plan(s, task, 3)
    sampler = make_sampler(
        s.sampler,
        SearchSpace([]),
        n_trials=20,
        n_jobs=2,
        n_objectives=len(s.directions),
        custom_space=False,
        fidelity=plan is not None,
    )
    return plan, type(sampler).__name__


def test_the_embedded_trials_pause_by_default_and_yield_to_an_explicit_pruner_or_pbt() -> None:
    """Both trials select fidelity=auto: ASHA with random proposals, the search that ranked
    first on both curve tables. A pruner, several objectives or PBT decide instead without
    an extra override; an explicit fidelity beside a pruner or under PBT is one error line."""
    from hydra_plugins.nemo_rl_hpo._settings import SweepConfigError

    for trial_name, step_key, rungs in (
        ("supervised", "max_steps", [50, 150, 400]),
        ("grpo", "grpo.max_num_steps", [10, 30, 90, 110]),
    ):
        plan, sampler = _plan_of(f"trial={trial_name}")  # type: ignore[misc]
        assert plan is not None and plan.step_key == step_key, trial_name
        assert plan.settings.rungs() == rungs and plan.settings.reduction_factor == 3
        assert sampler == "RandomSampler"
        # an explicit sampler is kept under the default schedule
        plan, sampler = _plan_of(f"trial={trial_name}", "hydra/sweeper/sampler=tpe")  # type: ignore[misc]
        assert plan is not None and sampler == "TPESampler"
        # every trial full length: the auto sampler's own rule again (TPE on these spaces)
        plan, sampler = _plan_of(f"trial={trial_name}", "~hydra/sweeper/fidelity")  # type: ignore[misc]
        assert plan is None and sampler != "RandomSampler"
        plan, _ = _plan_of(f"trial={trial_name}", "hydra/sweeper/pruner=median")  # type: ignore[misc]
        assert plan is None
        # PBT composes and schedules its own members
        assert type(_plan_of(f"trial={trial_name}", "hydra/sweeper=pbt")).__name__ == "PBTSettings"
    plan, sampler = _plan_of("hydra/sweeper=optuna_mo")  # type: ignore[misc]
    assert plan is None and sampler == "NSGAIISampler"
    with pytest.raises(SweepConfigError, match="leave hydra/sweeper/pruner at nop"):
        _plan_of("hydra/sweeper/fidelity=asha", "hydra/sweeper/pruner=median")
    with pytest.raises(SweepConfigError, match="PBT schedules its members itself"):
        _plan_of("hydra/sweeper=pbt", "hydra/sweeper/fidelity=asha")
    with pytest.raises(SweepConfigError, match=r"max_paused_gb must be a number of GB, 0 or"):
        _plan_of("hydra.sweeper.fidelity.max_paused_gb=-1")


@pytest.mark.e2e
@pytest.mark.slow
def test_asha_pauses_promotes_from_the_checkpoint_and_best_reached_max(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_app(
        FIDELITY_APP,
        f"hydra.sweep.dir={sweep}",
        "hydra/sweeper/fidelity=asha",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.write_report=false",
    )
    study = load(sweep, "app")
    trials = study.trials
    assert len(trials) == 9  # one Optuna trial per configuration, however many segments
    promoted = [t for t in trials if len(_rungs(t)) > 1]
    assert promoted, "no trial was paused and later promoted"
    for t in promoted:
        assert t.user_attrs[records.FIDELITY_PAUSED_S] > 0
        assert sorted(t.intermediate_values) == list(range(3, _rungs(t)[-1] + 1, 3))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete and all(_rungs(t) == [3, 9, 27] for t in complete)
    for t in complete:
        # Each segment resumed from the rung's checkpoint: every step trained exactly once.
        steps = (Path(t.user_attrs[records.FIDELITY_CHECKPOINT]) / "steps.log").read_text()
        assert [int(s) for s in steps.split()] == list(range(1, 28))
    assert study.best_trial.user_attrs[records.FIDELITY_END] == "max_resource"
    # The recorded curve of a promoted trial continues from its rung, never from step 0.
    best = study.best_trial
    by_number = {t.number: t for t in trials}
    assert sorted(best.intermediate_values) == list(range(3, 28, 3))
    # best shows the rung history; the results file holds every trial's segments.
    cli = subprocess.run(
        [sys.executable, "-m", "nemo_rl_hpo.cli", "best", str(sweep)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"# trial {best.number}: loss=" in cli.stderr
    assert "# rungs: step 3: " in cli.stderr and " -> step 27: " in cli.stderr
    saved = json.loads((sweep / "optimization_results.json").read_text())
    for rec in saved["trials"]:
        fid = rec["fidelity"]
        assert [r["step"] for r in fid["rungs"]] == _rungs(by_number[rec["number"]])
        assert all({"step", "value", "job"} <= set(r) for r in fid["rungs"])
        assert fid["paused_s"] >= 0
    # The report's summary shows the schedule and every trial's segments.
    from nemo_rl_hpo.report.context import Ctx
    from nemo_rl_hpo.report.page import _summary_html
    from nemo_rl_hpo.report.trials import SweepInfo, complete_trials

    page = _summary_html(Ctx(study, trials, complete_trials(trials), SweepInfo.from_study(study)))
    assert "Pause and promote (asha)" in page and "rungs [3, 9, 27] of max_steps" in page
    assert f"<tr><td>{best.number}</td><td>3: " in page and "max_resource</td>" in page
    # Retired trials ended PRUNED at their rung, their checkpoints freed.
    for t in trials:
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        if t.state == TrialState.PRUNED:
            assert t.user_attrs[records.FIDELITY_END].startswith("not promoted at")
            assert not Path(t.user_attrs[records.FIDELITY_CHECKPOINT]).exists()


@pytest.mark.e2e
def test_max_paused_gb_ends_paused_trials_instead_of_holding_their_checkpoints(
    tmp_path: Path,
) -> None:
    sweep = tmp_path / "sweep"
    run_app(
        FIDELITY_APP,
        f"hydra.sweep.dir={sweep}",
        "hydra/sweeper/fidelity=asha",
        "hydra.sweeper.fidelity.max_paused_gb=0",  # nothing may wait on disk
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.write_report=false",
    )
    study = load(sweep, "app")
    evicted = [
        t
        for t in study.trials
        if str(t.user_attrs.get(records.FIDELITY_END, "")).endswith("(max_paused_gb)")
    ]
    assert evicted, [t.user_attrs.get(records.FIDELITY_END) for t in study.trials]
    for t in evicted:
        assert t.state == TrialState.PRUNED
        assert not Path(t.user_attrs[records.FIDELITY_CHECKPOINT]).exists()
    # A trial that could be promoted was kept and promoted: the sweep still ends at max.
    assert study.best_trial.user_attrs[records.FIDELITY_END] == "max_resource"
    assert _rungs(study.best_trial)[-1] == 27
    assert all(t.state.is_finished() for t in study.trials)


@pytest.mark.e2e
@pytest.mark.slow
def test_local_launcher_runs_each_segment_as_its_own_process(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_app(
        FIDELITY_APP,
        f"hydra.sweep.dir={sweep}",
        "hydra/launcher=local",  # submitit_local: a new process per segment
        "hydra.sweeper.n_jobs=2",
        "hydra/sweeper/fidelity=asha",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.write_report=false",
        "max_steps=9",  # rungs 3, then 9
    )
    trials = load(sweep, "app").trials
    (best,) = [t for t in trials if t.state == TrialState.COMPLETE]
    jobs = [s["job"] for s in best.user_attrs[records.FIDELITY_RUNGS]]
    assert len(jobs) == 2 and jobs[0] != jobs[1]  # two processes (host:pid), one per segment
    ckpt = Path(best.user_attrs[records.FIDELITY_CHECKPOINT])
    assert (ckpt / "segments.log").read_text().split("\n")[:-1] == ["0 3", "3 9"]


@pytest.mark.e2e
@pytest.mark.slow
def test_with_repeats_a_rung_value_aggregates_the_seeds(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_app(
        FIDELITY_APP,
        f"hydra.sweep.dir={sweep}",
        "hydra/launcher=pool",
        "hydra/sweeper/fidelity=asha",
        "hydra.sweeper.repeats=2",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=4",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.write_report=false",
        "max_steps=9",  # rungs 3, then 9
    )
    trials = load(sweep, "app").trials
    assert len(trials) == 4
    promoted = [t for t in trials if len(_rungs(t)) > 1]
    assert promoted
    for t in trials:
        for seg in t.user_attrs[records.FIDELITY_RUNGS]:
            # each seed's own curve at the rung; the rung value is their mean
            at = [t.user_attrs[f"repeat:{i}:curves"]["loss"][str(seg["step"])] for i in (0, 1)]
            assert seg["value"] == pytest.approx(sum(at) / 2)
    for t in promoted:
        for i in (0, 1):  # each seed resumed from its own checkpoint
            ckpt = Path(t.user_attrs[records.FIDELITY_CHECKPOINT]) / f"seed_{i}"
            steps = (ckpt / "steps.log").read_text().split()
            assert [int(s) for s in steps] == list(range(1, _rungs(t)[-1] + 1))


@pytest.mark.e2e
@pytest.mark.slow
def test_kill9_while_trials_are_paused_resumes_the_schedule(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        sys.executable,
        str(FIDELITY_APP / "app.py"),
        "-m",
        f"hydra.sweep.dir={sweep}",
        "hydra/sweeper/fidelity=asha",
        "hydra.sweeper.sampler.seed=1",
        "hydra.sweeper.retry_failed=1",
        "hydra.sweeper.write_report=false",
        "step_sleep=0.05",
    ]
    paused_at_kill: list[int] = []
    shown: list[str] = []

    def two_paused_one_running() -> bool:
        if not (sweep / "optuna.db").exists():
            return False
        trials = load(sweep, "app").trials
        paused = [t.number for t in trials if records.is_paused(t)]
        running = [t for t in trials if t.state == TrialState.RUNNING and not records.is_paused(t)]
        if len(paused) >= 2 and running:
            paused_at_kill[:] = paused
            shown.append(
                subprocess.run(
                    [sys.executable, "-m", "nemo_rl_hpo.cli", "status", str(sweep)],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "COLUMNS": "200"},
                ).stdout
            )
            return True
        return False

    out = kill9_and_resume(args, FIDELITY_APP, tmp_path / "first.log", two_paused_one_running)
    # status, while they were paused: each one, and the disk their checkpoints hold.
    assert re.search(r"\d+ paused, their checkpoints hold [1-9][\d.]* (B|KiB)", shown[0]), shown
    assert re.search(r"paused trials \(\d+\)", shown[0]), shown  # its table (counts move on)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    trials = load(sweep, "app").trials
    assert all(t.state != TrialState.RUNNING for t in trials)  # nothing left hanging
    by_number = {t.number: t for t in trials}
    for n in paused_at_kill:
        # Still promotable after the restart: each went on, or was retired by the schedule.
        # (One the sweeper promoted just before the kill lost its segment with it: paused
        # again at its rung, not failed.)
        t = by_number[n]
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED), t.user_attrs
        end = t.user_attrs[records.FIDELITY_END]
        assert end == "max_resource" or end.startswith("not promoted at")
    # A first segment the kill interrupted: failed as an orphan, its configuration run again.
    failed = [t for t in trials if t.state == TrialState.FAIL]
    for f in failed:
        assert "orphaned" in f.user_attrs["fail_reason"]
        assert not _rungs(f)  # a trial that had reached a rung is never failed for the kill
        assert [t.params for t in trials if t.user_attrs.get("retry_of") == f.number] == [f.params]
    # Nothing ran twice: each rung recorded once per trial, each completed trial trained every
    # step once, and 9 configurations were decided.
    for t in trials:
        assert _rungs(t) == sorted(set(_rungs(t)))
    for t in trials:
        if t.state == TrialState.COMPLETE:
            steps = (Path(t.user_attrs[records.FIDELITY_CHECKPOINT]) / "steps.log").read_text()
            assert [int(s) for s in steps.split()] == list(range(1, 28))
    assert len([t for t in trials if t.state != TrialState.FAIL]) == 9
    assert "promoted: resumes at step" in out.stdout + out.stderr


# ---------------------------------------------------------------------------------- Slurm
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
    "hydra.launcher.gpus_per_node=null",
]


def _journal(sweep: Path, name: str) -> optuna.Study:
    backend = optuna.storages.journal.JournalFileBackend(str(sweep / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))


@pytest.mark.slurm
@pytest.mark.e2e
@pytest.mark.slow
def test_on_slurm_each_segment_is_its_own_job_resuming_from_the_checkpoint(
    tmp_path: Path,
) -> None:
    sweep = tmp_path / "sweep"
    run_app(
        FIDELITY_APP,
        f"hydra.sweep.dir={sweep}",
        *SLURM,
        "hydra/sweeper/fidelity=asha",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.write_report=false",
        "max_steps=9",  # rungs 3, then 9
        timeout=600,
    )
    study = _journal(sweep, "app")
    promoted = [t for t in study.trials if len(_rungs(t)) > 1]
    assert promoted
    for t in promoted:
        jobs = [r["job"] for r in t.user_attrs[records.FIDELITY_RUNGS]]
        # Each segment was a Slurm job of its own (numeric Slurm ids, all different)...
        assert all(j.isdigit() for j in jobs) and len(set(jobs)) == len(jobs), jobs
        steps = (Path(t.user_attrs[records.FIDELITY_CHECKPOINT]) / "steps.log").read_text()
        # ...and the later one resumed from the rung's checkpoint: each step trained once.
        assert [int(s) for s in steps.split()] == list(range(1, 10))
    assert study.best_trial.user_attrs[records.FIDELITY_END] == "max_resource"


@pytest.mark.slurm
@pytest.mark.e2e
@pytest.mark.slow
def test_command_through_ray_sub_resumes_at_the_rung_plus_one(tmp_path: Path) -> None:
    from tests.test_nemo_rl import _exp_dirs, _grpo_sweep, _scalars

    _grpo_sweep(
        tmp_path,
        "hydra/sweeper/fidelity=asha",
        "hydra.sweeper.fidelity.validation_period=2",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=2",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=2",
        "grpo.max_num_steps=6",  # rungs 2, then 6
        "command.extra_args=['grpo.val_period=2','sft.max_num_steps=40','task.validation_size=64']",
    )
    study = load(tmp_path, "run_command")
    (best,) = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert _rungs(best) == [2, 6]
    first, second = best.user_attrs[records.FIDELITY_RUNGS]
    # Each segment was its own ray.sub job...
    assert first["command_jobs"] != second["command_jobs"]
    exp1, exp2 = _exp_dirs(Path(best.user_attrs["job_dir"]))
    # ...and the promoted one started from step_2: its first logged step is the rung + 1.
    assert sorted(_scalars(exp1)["train/loss"]) == [1, 2]
    assert sorted(_scalars(exp2)["train/loss"]) == [3, 4, 5, 6]
    assert sorted(best.intermediate_values) == [2, 4, 6]
    ckpt = Path(best.user_attrs[records.FIDELITY_CHECKPOINT])
    assert "step_6" in {p.name for p in ckpt.iterdir()}


# ----------------------------------------------------------------- the repository's trials
TRAIN = REPO / "train.py"


def _promoted_curve_continues(t: optuna.trial.FrozenTrial, metric: str, period: int) -> None:
    """The trial's recorded curve has every validation once, across its segments' rungs."""
    rungs = _rungs(t)
    curve = sorted(int(s) for s in t.user_attrs[records.CURVES][metric])
    assert curve == list(range(period, rungs[-1] + 1, period)), (rungs, curve)
    segments = t.user_attrs[records.FIDELITY_RUNGS]
    assert segments[1]["started"] >= segments[0]["ended"]  # the later segment came after


@pytest.mark.e2e
@pytest.mark.slow
def test_supervised_trial_on_pool_pauses_and_promotes(tmp_path: Path) -> None:
    # No fidelity override: the supervised trial's default -m sweep pauses and promotes.
    run_app(
        TRAIN,
        f"hydra.sweep.dir={tmp_path}",
        "hydra/launcher=pool",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.write_report=false",
        "~search",
        "learning_rate=tag(log, interval(1e-3, 3e-2))",
        "max_steps=30",  # rungs 10, then 30
        "eval_interval=10",
        "checkpoint_interval=0",
        "precision=fp32",
        cwd=REPO,
        timeout=900,
    )
    study = load(tmp_path, "train")
    promoted = [t for t in study.trials if len(_rungs(t)) > 1]
    assert promoted
    for t in promoted:
        _promoted_curve_continues(t, "val_loss", 10)
    best = study.best_trial
    assert _rungs(best) == [10, 30]
    assert best.user_attrs[records.FIDELITY_END] == "max_resource"
    saved = torch.load(
        Path(best.user_attrs[records.FIDELITY_CHECKPOINT]) / "last.pt", weights_only=True
    )
    assert saved["step"] == 30


@pytest.fixture(scope="module")
def grpo_pool_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A live GRPO sweep on pool with 2 workers (the slow part, shared by two tests), with
    the trial's default schedule: no fidelity override."""
    sweep_dir = tmp_path_factory.mktemp("grpo_pool")
    run_app(
        TRAIN,
        "trial=grpo",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra/launcher=pool",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.write_report=false",
        "grpo.max_num_steps=12",  # rungs 4, then 12
        "grpo.val_period=4",
        "grpo.num_prompts_per_step=4",
        "sft.max_num_steps=5",
        "task.validation_size=32",
        cwd=REPO,
        timeout=900,
    )
    return sweep_dir


@pytest.mark.e2e
@pytest.mark.slow
def test_grpo_trial_pauses_and_promotes(grpo_pool_sweep: Path) -> None:
    study = load(grpo_pool_sweep, "train")
    promoted = [t for t in study.trials if len(_rungs(t)) > 1]
    assert promoted
    for t in promoted:
        _promoted_curve_continues(t, "val_reward", 4)
    best = study.best_trial
    assert _rungs(best) == [4, 12]
    ckpt = Path(best.user_attrs[records.FIDELITY_CHECKPOINT])
    assert [p.name for p in ckpt.iterdir() if p.name.startswith("step_")] == ["step_12"]


@pytest.mark.e2e
@pytest.mark.slow
def test_the_simulator_replays_the_live_grpo_sweep_decision_by_decision(
    grpo_pool_sweep: Path,
) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import curves
    import replay_check

    curves.main(["build", "--from-sweep", str(grpo_pool_sweep)])  # each configuration's curve
    with curves.Composer() as composer:
        _, live, sims, _ = replay_check.replay(
            grpo_pool_sweep, grpo_pool_sweep / "curves.jsonl.gz", composer
        )
    cmp = replay_check.compare(live, replay_check.sim_decisions(sims["live clock"]))
    # Rule: given the live order of job ends, bench/simulate.py (the sweep's sampler, seed and
    # fidelity settings through the real proposer) pauses, promotes and ends every trial as
    # the live sweeper did, at the rung values the live jobs reported (the table's, to 1e-6),
    # and launches the segments in the same order.
    assert cmp["agree"] == cmp["trials"] == 4, cmp["rows"]
    assert cmp["max_value_diff"] <= 1e-6, cmp["rows"]
    assert cmp["same_launch_order"], (cmp["live_launches"], cmp["sim_launches"])


def test_when_nothing_more_can_arrive_the_leader_runs_on_to_max_resource() -> None:
    sched = Scheduler(FidelitySettings(10, 90, 3))
    # Two trials at rung 30: ⌊2/3⌋ = 0 promotes nobody while configurations may still come...
    recs = records_from(
        [
            (0, 0, {10: 0.5, 30: 0.4}, "paused"),
            (1, 0, {10: 0.3, 30: 0.2}, "paused"),
            (2, 0, {10: 0.9}, "done"),
            (3, 0, {10: 0.8}, "done"),
            (4, 0, {10: 0.7}, "done"),
            (5, 0, {10: 0.6}, "done"),
        ]
    )
    assert sched.promotions(recs, more_coming=True) == []
    # ...but once none will, the best at the highest rung goes on, so the sweep has a result.
    assert [(p.key, p.target) for p in sched.promotions(recs, more_coming=False)] == [(1, 90)]
    assert sched.finished(recs, more_coming=False) == [0]


@pytest.mark.e2e
def test_hyperband_brackets_start_trials_at_their_own_first_rung(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_app(
        FIDELITY_APP,
        f"hydra.sweep.dir={sweep}",
        "hydra/sweeper/fidelity=hyperband",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.write_report=false",
        "max_steps=9",  # brackets: rungs 3, 9 (5 of 8 configurations) and 9 alone (3 of 8)
    )
    trials = load(sweep, "app").trials
    brackets = {t.number: t.user_attrs[records.FIDELITY_BRACKET] for t in trials}
    assert sorted(brackets.values()) == [0, 0, 0, 0, 0, 1, 1, 1]
    for t in trials:
        first = _rungs(t)[0]
        assert first == (3 if brackets[t.number] == 0 else 9)
        if brackets[t.number] == 1:  # the no-stopping bracket runs straight to max_resource
            assert t.state == TrialState.COMPLETE and len(_rungs(t)) == 1


@pytest.mark.e2e
@pytest.mark.slow
def test_command_through_the_standin_paused_and_promoted_computes_the_uninterrupted_run(
    tmp_path: Path,
) -> None:
    from tests.test_nemo_rl import APP, STANDIN, _exp_dirs, _scalars

    sweep = tmp_path / "sweep"
    run_app(
        APP,
        "nemo_rl=sft",  # its step key (sft.max_num_steps) and val period come from the preset
        f"hydra.sweep.dir={sweep}",
        "hydra/sweeper/fidelity=asha",
        "hydra.sweeper.n_trials=3",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.write_report=false",
        "sft.max_num_steps=30",  # rungs 10, then 30
        "command.poll_interval_s=0.5",
        cwd=REPO,
        env={"NEMO_RL_DIR": str(STANDIN), "NEMO_RL_RUN": sys.executable},
    )
    study = load(sweep, "run_command")
    (best,) = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert _rungs(best) == [10, 30]
    exp1, exp2 = _exp_dirs(Path(best.user_attrs["job_dir"]))
    # The promoted segment resumed from step_10: its first logged step is the rung + 1.
    assert min(_scalars(exp2)["train/loss"]) == 11
    assert sorted(_scalars(exp1)["train/loss"]) == list(range(1, 11))
    # The same command in fresh dirs, uninterrupted (the config the last segment ran with).
    alone = tmp_path / "alone"
    subprocess.run(
        [
            sys.executable,
            "examples/run_sft.py",
            "--config",
            str(exp2 / "config.yaml"),
            f"logger.log_dir={alone / 'logs'}",
            f"checkpointing.checkpoint_dir={alone / 'ckpt'}",
        ],
        cwd=STANDIN,
        check=True,
        capture_output=True,
        env={k: v for k, v in os.environ.items() if k != trial.ENV_TRIAL},
    )
    (solo,) = sorted((alone / "logs").glob("exp_*"))
    uninterrupted = _scalars(solo)["validation/val_loss"]
    assert best.value == uninterrupted[30]
    segmented = {**_scalars(exp1)["validation/val_loss"], **_scalars(exp2)["validation/val_loss"]}
    assert segmented == uninterrupted


def test_a_promoted_segment_orphaned_with_its_sweeper_is_paused_again_not_failed(
    tmp_path: Path,
) -> None:
    from nemo_rl_hpo.fidelity import FidelityProposer
    from nemo_rl_hpo.fidelity.segment import end
    from nemo_rl_hpo.search.grammar import parse_params
    from nemo_rl_hpo.search.space import SearchSpace
    from nemo_rl_hpo.sweep.core import AsyncSweep, LaunchOutcome, SweepSettings
    from nemo_rl_hpo.sweep.proposer import OptunaProposer

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}", study_name="s")
    space = SearchSpace(
        parse_params({"x": "interval(0.0, 1.0)"}, []), {}, {}, lambda k: True, ["x"]
    )

    def sweeper() -> FidelityProposer:  # a sweeper's proposer, as a (re)started sweep builds it
        sched = Scheduler(FidelitySettings(3, 9, 3))
        return FidelityProposer(OptunaProposer(study, space, 1), sched, tmp_path / "ckpt")

    first = sweeper()
    p = first.ask()
    assert p is not None and p.context["steps"] == 3
    end(study, study._storage.get_trial(p.trial._trial_id), 0.5, p.context[CONTEXT_KEY])
    promoted = first.ask()  # the only configuration: the leader goes on to max_resource
    assert promoted is not None and promoted.context["steps"] == 9
    # The sweeper dies while that segment runs; its job dies with it (basic or local launcher).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner = {"host": os.uname().nodename, "pid": dead.pid, "token": "gone"}
    study._storage.set_trial_system_attr(p.trial._trial_id, records.SYS_OWNER, owner)
    study._storage.set_trial_user_attr(p.trial._trial_id, records.OVERRIDES, p.overrides)

    def launch(_: object) -> LaunchOutcome:
        return LaunchOutcome(ok=True)

    restarted = sweeper()
    loop = AsyncSweep(study, restarted, launch, SweepSettings(n_trials=1), lambda t: False)
    assert loop.recover() == []
    t = study._storage.get_trial(p.trial._trial_id)
    assert t.state == TrialState.RUNNING and records.is_paused(t)  # paused at 3 again
    assert t.system_attrs[records.SYS_PAUSED]["step"] == 3
    assert not sweeper().rescue(t)  # a second sweeper cannot take it back twice
    again = restarted.ask()
    assert again is not None and again.number == p.number and again.context["steps"] == 9
    assert sweeper().ask() is None  # ...nor promote it a second time


@pytest.mark.parametrize("max_resource", [27, 9])
def test_a_segment_killed_after_recording_its_rung_is_paused_there_not_failed(
    tmp_path: Path, max_resource: int
) -> None:
    """The kill -9 test's rare case: the job recorded its new rung's value, then died with its
    sweeper before pausing there (or, at max_resource, before telling COMPLETE)."""
    from nemo_rl_hpo.fidelity import FidelityProposer
    from nemo_rl_hpo.fidelity.segment import end
    from nemo_rl_hpo.search.grammar import parse_params
    from nemo_rl_hpo.search.space import SearchSpace
    from nemo_rl_hpo.sweep.core import AsyncSweep, LaunchOutcome, SweepSettings
    from nemo_rl_hpo.sweep.proposer import OptunaProposer

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}", study_name="s")
    space = SearchSpace(
        parse_params({"x": "interval(0.0, 1.0)"}, []), {}, {}, lambda k: True, ["x"]
    )

    def sweeper() -> FidelityProposer:
        sched = Scheduler(FidelitySettings(3, max_resource, 3))
        return FidelityProposer(OptunaProposer(study, space, 1), sched, tmp_path / "ckpt")

    first = sweeper()
    p = first.ask()
    assert p is not None
    end(study, study._storage.get_trial(p.trial._trial_id), 0.5, p.context[CONTEXT_KEY])
    promoted = first.ask()
    assert promoted is not None and promoted.context["steps"] == 9
    # The segment's end wrote its rung-9 record, then the process was killed (no pause, no tell).
    storage = study._storage
    rungs = storage.get_trial(p.trial._trial_id).user_attrs[records.FIDELITY_RUNGS]
    storage.set_trial_user_attr(
        p.trial._trial_id, records.FIDELITY_RUNGS, [*rungs, {**rungs[0], "step": 9, "value": 0.4}]
    )
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner = {"host": os.uname().nodename, "pid": dead.pid, "token": "gone"}
    storage.set_trial_system_attr(p.trial._trial_id, records.SYS_OWNER, owner)
    storage.set_trial_user_attr(p.trial._trial_id, records.OVERRIDES, p.overrides)

    def launch(_: object) -> LaunchOutcome:
        return LaunchOutcome(ok=True)

    restarted = sweeper()
    loop = AsyncSweep(study, restarted, launch, SweepSettings(n_trials=1), lambda t: False)
    assert loop.recover() == []
    t = storage.get_trial(p.trial._trial_id)
    if max_resource == 9:
        assert t.state == TrialState.COMPLETE and t.value == 0.4
        return
    assert t.state == TrialState.RUNNING and t.system_attrs[records.SYS_PAUSED]["step"] == 9
    assert not sweeper().rescue(t)  # once
    again = restarted.ask()  # promoted on from step 9, its recorded rung
    assert again is not None and again.number == p.number and again.context["steps"] == 27


def test_a_pause_whose_sweeper_died_mid_decision_is_decided_again_once(tmp_path: Path) -> None:
    """A sweeper killed between taking a paused trial's claim and promoting it leaves the
    trial paused with its claim taken. A later sweeper re-opens that pause once the claim is
    older than any live decision could be (not before), promotes it, and nobody does twice."""
    from nemo_rl_hpo.fidelity import FidelityProposer
    from nemo_rl_hpo.fidelity.segment import end
    from nemo_rl_hpo.search.grammar import parse_params
    from nemo_rl_hpo.search.space import SearchSpace
    from nemo_rl_hpo.sweep.proposer import OptunaProposer

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}", study_name="s")
    space = SearchSpace(
        parse_params({"x": "interval(0.0, 1.0)"}, []), {}, {}, lambda k: True, ["x"]
    )

    def sweeper(after_s: float = 900.0) -> FidelityProposer:
        sched = Scheduler(FidelitySettings(3, 9, 3))
        return FidelityProposer(
            OptunaProposer(study, space, 1), sched, tmp_path / "ckpt", undecided_after_s=after_s
        )

    first = sweeper()
    p = first.ask()
    assert p is not None
    end(study, study._storage.get_trial(p.trial._trial_id), 0.5, p.context[CONTEXT_KEY])
    # The first sweeper takes the pause's claim to promote it, and dies before it does.
    assert first.claims.take(p.number, 3, "promote", 0)
    t = study._storage.get_trial(p.trial._trial_id)
    assert records.is_paused(t)
    # A sweeper restarted at once leaves it alone: the claim's owner may still be deciding.
    assert sweeper().ask() is None
    assert records.is_paused(study._storage.get_trial(p.trial._trial_id))
    # Once the claim is older than any live decision could take, the pause is decided again.
    late = sweeper(after_s=0.0)
    promoted = late.ask()
    assert promoted is not None and promoted.number == p.number
    assert promoted.context["steps"] == 9
    t = study._storage.get_trial(p.trial._trial_id)
    assert t.state == TrialState.RUNNING and not records.is_paused(t)
    assert sweeper(after_s=0.0).ask() is None  # promoted once, by one sweeper


@pytest.mark.e2e
@pytest.mark.slow
def test_two_sweepers_on_one_journal_study_promote_each_pause_once(tmp_path: Path) -> None:
    journal = tmp_path / "study.journal"
    args = [
        sys.executable,
        str(FIDELITY_APP / "app.py"),
        "-m",
        "hydra/sweeper/fidelity=asha",
        f"hydra.sweeper.storage=journal://{journal}",
        "hydra.sweeper.study_name=shared",
        "hydra.sweeper.n_trials=9",
        "hydra.sweeper.write_report=false",
        "step_sleep=0.02",
    ]
    procs = [
        subprocess.Popen(
            [*args, f"hydra.sweep.dir={tmp_path / f'sweeper{i}'}"],
            cwd=FIDELITY_APP,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    decided = [t for t in trials if t.state != TrialState.FAIL]
    assert len(decided) == 9  # the budget is shared, each configuration one trial
    assert any(len(_rungs(t)) > 1 for t in decided)  # some were paused and promoted
    for t in decided:
        assert _rungs(t) == sorted(set(_rungs(t)))  # no rung ran twice
        if t.state == TrialState.COMPLETE:
            ckpt = Path(t.user_attrs[records.FIDELITY_CHECKPOINT])
            steps = (ckpt / "steps.log").read_text()
            assert [int(s) for s in steps.split()] == list(range(1, 28))
            # whichever sweeper promoted it, each segment resumed where the last one ended
            chain = [0, *_rungs(t)]
            assert (ckpt / "segments.log").read_text().split("\n")[:-1] == [
                f"{a} {b}" for a, b in zip(chain, chain[1:], strict=False)
            ]
    # Both sweepers promoted: the promotions were shared, each taken by one of them only.
    promoted_by = [o.count("promoted: resumes at step") for o in outs]
    assert sum(promoted_by) == sum(len(_rungs(t)) - 1 for t in decided)


@pytest.mark.e2e
def test_stopping_mode_stops_a_trial_for_good_when_it_arrives_behind(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_app(
        FIDELITY_APP,
        f"hydra.sweep.dir={sweep}",
        "hydra/sweeper/fidelity=asha",
        "hydra.sweeper.fidelity.mode=stopping",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.write_report=false",
        "max_steps=9",  # rungs 3, then 9
    )
    trials = load(sweep, "app").trials
    for t in trials:
        end = t.user_attrs[records.FIDELITY_END]
        if t.state == TrialState.PRUNED:  # judged once on arrival, never promoted later
            assert end == "stopped at 3" and _rungs(t) == [3]
        else:
            assert t.state == TrialState.COMPLETE and _rungs(t) == [3, 9]
    # The first trial leads its rung on arrival, so it goes on (as Optuna's SHA pruner).
    assert min(trials, key=lambda t: t.number).state == TrialState.COMPLETE
    assert any(t.state == TrialState.PRUNED for t in trials)
