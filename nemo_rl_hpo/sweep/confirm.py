"""Confirmation on test seeds: the top configurations re-run on seeds the search never saw.

A sweep's best value is the maximum of many noisy draws, so it is biased upward, and the
configuration that reached it first is not necessarily the best one (Eimer, Lindauer, Raileanu,
ICML 2023: tune on some seeds, report on others). With ``confirm.top_k > 0``, when the search
ends the ``top_k`` best configurations that completed the full length re-run on ``seeds`` test
seeds (``first_seed``, ``first_seed + 1``, ... disjoint from every tuning seed), each a job of
its own through the sweep's launcher; the sweep's pick is the configuration with the best
**test mean**.

Where the results live, and why there:

- **Not as Optuna trials.** Every sampler reads the study's trials (TPE and GP the COMPLETE
  ones, the grid sampler every finished one, constant liar the RUNNING ones), and ``n_trials``,
  ``best``, the report and the importances count them. A confirmation is none of that: it is
  recorded as **study user attributes**, which no sampler, pruner or budget reads, in the same
  study (one storage, one place to look, resumable with it).
- **Written by the job itself**, like a trial's result (``sweep/job.py``): ``confirm:<trial>:
  <seed>:job`` when it starts (host, pid, Slurm id: what ``liveness.job_alive`` asks), and
  ``confirm:<trial>:<seed>`` = ``{seed, state, value, metrics, reason}`` when it ends. A sweeper
  that dies loses nothing; a resumed one skips every COMPLETE record, waits for a job that still
  runs, and re-runs only what failed or never ran.
- ``nemo_rl_hpo:confirm`` (the sweeper): the settings, the candidates and why they are these.

The pick logic is a plain function (:func:`choose`) that a benchmark can call on its own
numbers; :func:`read_confirmation` applies it to a study for ``best``, ``status``, the results
JSON, the report and the end-of-sweep summary.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nemo_rl_hpo.errors import ParamError
from nemo_rl_hpo.sweep import records

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)

CONTEXT_KEY = "confirm"  # in a confirmation job's trial context: {trial, index, seed, seed_key}
POLL_S = 1.0


class ConfirmConfigError(ParamError, ValueError):
    """A bad ``confirm`` setting: one line naming the key, before any job."""

    default_params = ("confirm",)


@dataclass(frozen=True)
class Confirm:
    """``confirm``: how many configurations, on how many test seeds."""

    # No defaults here: they are written once, in the sweeper's schema (config.ConfirmConfig).
    top_k: int  # configurations to confirm; 0: no confirmation stage
    seeds: int  # test seeds per configuration
    seed_key: str  # the app's config key that takes the seed
    first_seed: int  # test seeds are first_seed, first_seed + 1, ...
    overrides: tuple[str, ...]  # test-only settings, e.g. data.split=test

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], default_seed_key: str) -> Confirm:
        """Check every key (``raw`` holds all of them); ``seed_key`` null: ``default_seed_key``."""
        raw = dict(raw)
        where = "confirm"
        keys = {"top_k", "seeds", "seed_key", "first_seed", "overrides"}
        if set(raw) != keys:
            odd = sorted(set(raw) ^ keys)[0]
            raise ConfirmConfigError(
                f"{where}: key {odd!r} is unknown or missing; its keys are top_k, seeds, "
                "seed_key, first_seed, overrides."
            )
        top_k, seeds, first = raw["top_k"], raw["seeds"], raw["first_seed"]
        for name, value, least in (
            ("top_k", top_k, 0),
            ("seeds", seeds, 1),
            ("first_seed", first, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfirmConfigError(
                    f"{where}.{name} must be a whole number of at least {least}, but got {value!r}."
                )
        seed_key = raw["seed_key"] or default_seed_key
        if not isinstance(seed_key, str):
            raise ConfirmConfigError(
                f"{where}.seed_key must name the config key that takes the seed, got {seed_key!r}."
            )
        overrides = raw.get("overrides") or []
        if isinstance(overrides, str) or not all(
            isinstance(o, str) and "=" in o for o in overrides
        ):
            raise ConfirmConfigError(
                f"{where}.overrides must be a list of key=value overrides (e.g. "
                f"[data.split=test]), but got {overrides!r}."
            )
        return cls(int(top_k), int(seeds), seed_key, int(first), tuple(str(o) for o in overrides))

    @property
    def active(self) -> bool:
        return self.top_k > 0

    def test_seeds(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def check_disjoint(self, tuning_seeds: Sequence[int]) -> None:
        """The test seeds share none with the tuning seeds (else the test is no test)."""
        shared = sorted(set(self.test_seeds()) & {int(s) for s in tuning_seeds})
        if shared:
            raise ConfirmConfigError(
                f"confirm.first_seed={self.first_seed}: test seed(s) "
                f"{shared} were also tuning seeds ({self.seed_key}); raise first_seed above "
                f"{max(int(s) for s in tuning_seeds)}."
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "top_k": self.top_k,
            "seeds": self.seeds,
            "seed_key": self.seed_key,
            "first_seed": self.first_seed,
            "overrides": list(self.overrides),
        }


# ------------------------------------------------------------------------- the pick
def mean_ci95(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the half-width of its 95 % t-interval (None with fewer than 2 values)."""
    from scipy.stats import t as student_t

    xs = [float(v) for v in values]
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return mean, None
    sd = statistics.stdev(xs)
    return mean, float(student_t.ppf(0.975, len(xs) - 1) * sd / math.sqrt(len(xs)))


@dataclass(frozen=True)
class Choice:
    """What :func:`choose` decided: the winner and each candidate's rank before and after."""

    winner: int | None  # index into the candidates (None: no candidate has a test value)
    rank_before: list[int]  # 1 = best tuning value (ties share the better rank)
    rank_after: list[int | None]  # 1 = best test mean; None: no test value


def choose(tuning: Sequence[float], tests: Sequence[Sequence[float]], maximize: bool) -> Choice:
    """Pick the candidate with the best test mean; ties on it go to the better tuning value.

    ``tuning[i]``: candidate i's value in the search; ``tests[i]``: its values on the test seeds
    (possibly fewer than asked, if some failed; empty: not confirmed). The order of the
    candidates (the order in which the search found them) never decides.
    """
    sign = -1.0 if maximize else 1.0

    def ranks(keys: Sequence[float | None]) -> list[int | None]:
        return [
            None if k is None else 1 + sum(1 for o in keys if o is not None and o < k) for k in keys
        ]

    before = ranks([sign * float(v) for v in tuning])
    means = [sign * statistics.fmean(v) if v else None for v in tests]
    after = ranks(means)
    scored = [i for i, m in enumerate(means) if m is not None]
    if not scored:
        return Choice(None, [int(r) for r in before if r is not None], after)
    winner = min(scored, key=lambda i: (means[i], sign * float(tuning[i])))
    return Choice(winner, [int(r) for r in before if r is not None], after)


def candidates(
    trials: Sequence[FrozenTrial], maximize: bool, top_k: int
) -> tuple[list[FrozenTrial], str | None]:
    """The ``top_k`` best configurations that completed the full length, and a note.

    COMPLETE trials only (a pruned or paused trial never ran the length the test runs); one
    per configuration (its first trial); every configuration tied with the k-th on the tuning
    value joins, so that confirmation, not discovery order, breaks the tie.
    """
    from optuna.trial import TrialState

    from nemo_rl_hpo.report.trials import trial_overrides

    seen: set[tuple[str, ...]] = set()
    done: list[FrozenTrial] = []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state != TrialState.COMPLETE or not t.values or not math.isfinite(t.values[0]):
            continue
        if records.PBT_MEMBER in t.user_attrs:
            continue
        end = t.user_attrs.get(records.FIDELITY_END)
        if end is not None and not str(end).startswith("max_resource"):
            continue  # multi-fidelity: stopped at a lower rung, never ran the full length
        config = tuple(sorted(trial_overrides(t)))
        if config in seen:
            continue
        seen.add(config)
        done.append(t)
    sign = -1.0 if maximize else 1.0
    done.sort(key=lambda t: (sign * t.values[0], t.number))
    if len(done) <= top_k:
        note = None
        if len(done) < top_k:
            note = (
                f"only {len(done)} configuration(s) completed the full length (top_k={top_k}): "
                "confirming all of them"
            )
        return done, note
    kth = done[top_k - 1].values[0]
    chosen = [t for i, t in enumerate(done) if i < top_k or t.values[0] == kth]
    note = None
    if len(chosen) > top_k:
        note = (
            f"{len(chosen) - top_k + 1} configurations tie at the {top_k}th tuning value "
            f"{kth:.6g}: confirming all {len(chosen)}"
        )
    return chosen, note


# ------------------------------------------------------------------------ records
def key(number: int, seed: int) -> str:
    return f"{records.CONFIRM_PREFIX}{number}:{seed}"


def start_key(number: int, seed: int) -> str:
    return key(number, seed) + ":job"


def _result(attrs: Mapping[str, Any], number: int, seed: int) -> dict[str, Any] | None:
    r = attrs.get(key(number, seed))
    return r if isinstance(r, dict) else None


# ------------------------------------------------------------------------- sweeper side
@dataclass(frozen=True)
class ConfirmJob:
    number: int  # the configuration's trial
    index: int  # which test seed (0-based)
    seed: int
    overrides: list[str]


@dataclass
class ConfirmSummary:
    launched: int = 0
    skipped: int = 0  # COMPLETE before this run (a resumed stage)
    waited: int = 0  # a live job of an earlier sweeper, waited for
    failed: list[str] = field(default_factory=list)


LaunchConfirm = Callable[[ConfirmJob, dict[str, Any]], tuple[bool, str | None]]


def record_plan(
    study: optuna.Study,
    conf: Confirm,
    chosen: Sequence[FrozenTrial],
    note: str | None,
    tuning_seeds: Sequence[int],
) -> None:
    """What the stage tests, on the study, before its first job (readers need no config)."""
    study.set_user_attr(
        records.STUDY_CONFIRM,
        {
            **conf.as_dict(),
            "candidates": [t.number for t in chosen],
            "note": note,
            "tuning_seeds": list(tuning_seeds),
            "test_seeds": conf.test_seeds(),
        },
    )


def run_stage(
    study: optuna.Study,
    conf: Confirm,
    chosen: Sequence[FrozenTrial],
    overrides_of: Callable[[FrozenTrial], list[str]],
    launch: LaunchConfirm,
    n_jobs: int,
    is_job_alive: Callable[[Mapping[str, Any]], bool],
) -> ConfirmSummary:
    """Run every confirmation job not yet COMPLETE, ``n_jobs`` at a time.

    ``launch(job, context)`` runs one job through the launcher (blocking) and says whether the
    launcher saw it succeed; the job records its own result. A job that ended without a record
    is recorded FAIL here with the launcher's reason.
    """
    summary = ConfirmSummary()
    attrs = study.user_attrs
    todo: list[ConfirmJob] = []
    watch: list[ConfirmJob] = []
    for t in chosen:
        for i, seed in enumerate(conf.test_seeds()):
            ovs = [*overrides_of(t), *conf.overrides, f"{conf.seed_key}={seed}"]
            job = ConfirmJob(t.number, i, seed, ovs)
            done = _result(attrs, t.number, seed)
            if done is not None and done.get("state") == "COMPLETE":
                summary.skipped += 1
                continue
            started = attrs.get(start_key(t.number, seed))
            if done is None and isinstance(started, dict) and is_job_alive(started):
                watch.append(job)  # a dead sweeper's job still runs: it records itself
                continue
            todo.append(job)
    lock = threading.Lock()

    def wait_for(job: ConfirmJob) -> None:
        while True:
            now = study.user_attrs
            if _result(now, job.number, job.seed) is not None:
                return
            started = now.get(start_key(job.number, job.seed))
            if not (isinstance(started, dict) and is_job_alive(started)):
                time.sleep(2.0)  # it may be writing its result right now
                if _result(study.user_attrs, job.number, job.seed) is None:
                    _record_lost(study, job, "its job ended without recording a result")
                return
            time.sleep(POLL_S)

    def one(job: ConfirmJob) -> None:
        ctx = {CONTEXT_KEY: {"trial": job.number, "index": job.index, "seed": job.seed,
                             "seed_key": conf.seed_key}}  # fmt: skip
        try:
            ok, error = launch(job, ctx)
        except Exception as e:  # noqa: BLE001 - a launcher error is this job's failure
            ok, error = False, f"{type(e).__name__}: {e}"
        result = _result(study.user_attrs, job.number, job.seed)
        if result is None:
            reason = error or "the job ended without recording a result (killed?)"
            _record_lost(study, job, reason)
            result = {"state": "FAIL", "reason": reason}
        if result.get("state") != "COMPLETE":
            with lock:
                summary.failed.append(
                    f"trial {job.number} {conf.seed_key}={job.seed}: {result.get('reason', '?')}"
                )
        elif not ok:
            log.debug("confirmation %s recorded COMPLETE; launcher said %s", job, error)

    if todo or watch:
        log.info(
            "confirmation: %d configuration(s) x %d test seed(s) (%s=%d..%d): %d job(s) to run%s",
            len(chosen),
            conf.seeds,
            conf.seed_key,
            conf.first_seed,
            conf.first_seed + conf.seeds - 1,
            len(todo),
            f", {summary.skipped} done before" if summary.skipped else "",
        )
    with ThreadPoolExecutor(max_workers=max(1, n_jobs), thread_name_prefix="confirm") as pool:
        futures = [pool.submit(wait_for, j) for j in watch]
        summary.waited = len(watch)
        futures += [pool.submit(one, j) for j in todo]
        summary.launched = len(todo)
        for f in futures:
            f.result()
    return summary


def _record_lost(study: optuna.Study, job: ConfirmJob, reason: str) -> None:
    try:
        study.set_user_attr(
            key(job.number, job.seed),
            {"seed": job.seed, "state": "FAIL", "value": None, "metrics": {},
             "reason": reason[: records.FAIL_REASON_MAX_CHARS]},
        )  # fmt: skip
    except Exception as e:  # storage hiccup: the next resume re-runs it
        log.warning("could not record confirmation %s: %s", job, e)


# ------------------------------------------------------------------------------ job side
def job_of(context: Mapping[str, Any]) -> dict[str, Any] | None:
    """This job's confirmation (trial, index, seed, seed_key), if it is one."""
    c = context.get(CONTEXT_KEY)
    return c if isinstance(c, dict) and "trial" in c and "seed" in c else None


def on_job_start(study: optuna.Study, job: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
    """Where this confirmation runs (what a resumed sweeper asks to know if it still runs)."""
    study.set_user_attr(
        start_key(int(job["trial"]), int(job["seed"])),
        {**attrs, "seed": job["seed"], "started": time.time()},
    )


def on_job_end(
    study: optuna.Study,
    job: Mapping[str, Any],
    completed: bool,
    value: Any,
    context: Mapping[str, Any],
) -> str:
    """Record how this confirmation ended; returns its state (COMPLETE or FAIL)."""
    from nemo_rl_hpo.sweep.objectives import ObjectiveError, numeric_metrics, objective_values

    started = study.user_attrs.get(start_key(int(job["trial"]), int(job["seed"])))
    record: dict[str, Any] = {"seed": job["seed"], "value": None, "metrics": {}}
    if isinstance(started, dict) and "started" in started:  # what it cost, for the budget
        record["wall_s"] = round(time.time() - float(started["started"]), 3)
    if completed:
        record["metrics"] = dict(numeric_metrics(value))
        try:
            values = objective_values(
                value, len(study.directions), context.get("objectives") or None,
                context.get("weights"),
            )  # fmt: skip
            record.update(state="COMPLETE", value=float(values[0]))
        except ObjectiveError as e:
            record.update(state="FAIL", reason=str(e)[: records.FAIL_REASON_MAX_CHARS])
    else:
        reason = f"{type(value).__name__}: {value}"
        record.update(state="FAIL", reason=reason[: records.FAIL_REASON_MAX_CHARS])
    study.set_user_attr(key(int(job["trial"]), int(job["seed"])), record)
    return str(record["state"])


# ------------------------------------------------------------------------------ readers
@dataclass(frozen=True)
class Confirmed:
    """One confirmed configuration, as ``best``, ``status``, the results and the report show it."""

    trial: FrozenTrial
    tuning_value: float
    values: list[float]  # its COMPLETE test seeds' values, in seed order
    seeds: list[int]
    failed: list[dict[str, Any]]  # its failed test seeds' records
    rank_before: int
    rank_after: int | None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def ci95(self) -> float | None:
        return mean_ci95(self.values)[1] if self.values else None

    def mean_text(self) -> str:
        if self.mean is None:
            return "-"
        half = self.ci95
        return f"{self.mean:.6g}" + (f" ± {half:.3g}" if half is not None else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.trial.number,
            "tuning_value": self.tuning_value,
            "test_values": dict(zip(self.seeds, self.values, strict=True)),
            "test_mean": self.mean,
            "test_ci95": self.ci95,
            "n_test_seeds": self.n,
            "failed_seeds": self.failed,
            "rank_before": self.rank_before,
            "rank_after": self.rank_after,
        }


@dataclass(frozen=True)
class Confirmation:
    settings: dict[str, Any]
    rows: list[Confirmed]  # in order of the tuning value
    pick: Confirmed | None
    note: str | None
    missing: int  # test jobs without a COMPLETE record (not run yet, running, failed)

    @property
    def optimism(self) -> float | None:
        """The winner's tuning value minus its test mean (the winner's curse)."""
        if self.pick is None or self.pick.mean is None:
            return None
        return self.pick.tuning_value - self.pick.mean

    def as_dict(self) -> dict[str, Any]:
        return {
            "settings": {k: v for k, v in self.settings.items() if k != "note"},
            "note": self.note,
            "configurations": [r.as_dict() for r in self.rows],
            "pick": None if self.pick is None else self.pick.trial.number,
            "pick_test_mean": None if self.pick is None else self.pick.mean,
            "pick_test_ci95": None if self.pick is None else self.pick.ci95,
            "optimism": self.optimism,
            "missing_jobs": self.missing,
        }


def jobs_spent(study: optuna.Study) -> dict[str, Any]:
    """Confirmation jobs recorded and their wall seconds (spent outside the search budget)."""
    ends = [
        v
        for k, v in study.user_attrs.items()
        if k.startswith(records.CONFIRM_PREFIX) and not k.endswith(":job") and isinstance(v, dict)
    ]
    return {
        "jobs": len(ends),
        "complete": sum(1 for v in ends if v.get("state") == "COMPLETE"),
        "wall_s": round(sum(float(v.get("wall_s") or 0.0) for v in ends), 3),
    }


def read_confirmation(
    study: optuna.Study, trials: Sequence[FrozenTrial] | None = None
) -> Confirmation | None:
    """The study's confirmation stage (None if it never ran one)."""
    from optuna.study import StudyDirection

    attrs = study.user_attrs
    settings = attrs.get(records.STUDY_CONFIRM)
    if not isinstance(settings, dict) or len(study.directions) != 1:
        return None
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    by_number = {t.number: t for t in trials}
    chosen = [by_number[n] for n in settings.get("candidates", []) if n in by_number]
    seeds = list(
        range(int(settings["first_seed"]), int(settings["first_seed"]) + int(settings["seeds"]))
    )
    tests: list[list[float]] = []
    failed: list[list[dict[str, Any]]] = []
    missing = 0
    for t in chosen:
        vals, bad = [], []
        for s in seeds:
            r = _result(attrs, t.number, s)
            if r is not None and r.get("state") == "COMPLETE" and r.get("value") is not None:
                vals.append(float(r["value"]))
            else:
                missing += 1
                if r is not None:
                    bad.append(r)
        tests.append(vals)
        failed.append(bad)
    maximize = study.directions[0] == StudyDirection.MAXIMIZE
    tuning = [float(t.values[0]) for t in chosen]
    choice = choose(tuning, tests, maximize)
    rows = []
    for i, t in enumerate(chosen):
        ok_seeds = [s for s in seeds if (r := _result(attrs, t.number, s)) is not None
                    and r.get("state") == "COMPLETE" and r.get("value") is not None]  # fmt: skip
        rows.append(
            Confirmed(
                t,
                tuning[i],
                tests[i],
                ok_seeds,
                failed[i],
                choice.rank_before[i],
                choice.rank_after[i],
            )  # fmt: skip
        )
    pick = rows[choice.winner] if choice.winner is not None else None
    return Confirmation(settings, rows, pick, settings.get("note"), missing)
