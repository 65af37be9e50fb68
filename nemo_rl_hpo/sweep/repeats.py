"""Seed repeats: one configuration = ``repeats`` jobs with different seeds, one Optuna trial.

RL rewards are noisy: a configuration that wins on one seed often loses on the next. With
``hydra.sweeper.repeats: n`` each configuration the sampler proposes runs as n jobs, job ``i``
with ``<seed_key>=i`` (the same seeds 0..n-1 for every configuration, so configurations are
compared on equal draws). All n jobs record into the configuration's one Optuna trial, each
under its own keys (``repeat:<i>``...), so concurrent jobs never overwrite each other:

- **value**: the trial is told ``aggregate`` (mean | median | min | max) of its seeds' values,
  per objective, by whichever seed job ends last; the sampler and ``best`` see only that.
- **failure**: a seed that fails fails the configuration at once, its reason prefixed with the
  seed (``seed 2 (seed=2): RuntimeError: ...``); the other seeds stop at their next
  ``should_prune()`` (a finished trial answers yes).
- **pruning**: each seed reports its prune metric at a step; the trial's intermediate value at
  that step is the aggregate over the seeds that have reported that step *so far* (rewritten
  as lagging seeds get there), and the study's pruner judges that. So a configuration is pruned
  on its seeds together, never on one unlucky seed alone once the others caught up; seeds
  ahead of the rest are judged on the seeds that reached their step. A pruned configuration
  stops all of its seeds (each one's ``should_prune()`` answers yes from then on).
- **records**: ``repeat:<i>`` = {seed, state, values, metrics, reason} once seed i ended;
  ``repeat:<i>:curves`` its learning curves, ``repeat:<i>:reports`` its prune-metric reports,
  ``repeat:<i>:job`` where it ran (host, pid, dir, devices, SLURM id).

The sweeper side (:func:`launch_seeds`) launches the n jobs side by side, as slots allow; the
job side (:func:`report`, :func:`should_prune`, :func:`on_seed_end`) is called by
``nemo_rl_hpo.trial`` and ``sweep/job.py`` when the trial context names a seed (``"repeat"``).
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nemo_rl_hpo.sweep import records

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": statistics.fmean,
    "median": statistics.median,
    "min": min,
    "max": max,
}
CONTEXT_KEY = "repeat"  # in the trial context: {"index", "seed", "n", "aggregate", "seed_key"}


class RepeatConfigError(ValueError):
    """Bad ``repeats``/``seed_key``/``aggregate``: one line naming the key, before any job."""


@dataclass(frozen=True)
class Repeats:
    """How many seeds each configuration runs, which config key takes the seed, and how the
    seeds' values become the configuration's value."""

    n: int = 1
    seed_key: str = "seed"
    aggregate: str = "mean"

    @classmethod
    def from_config(cls, repeats: Any, seed_key: Any = "seed", aggregate: Any = "mean") -> Repeats:
        if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
            raise RepeatConfigError(
                f"hydra.sweeper.repeats must be 1 or more seeds per configuration, but got "
                f"{repeats!r}."
            )
        if not isinstance(seed_key, str) or not seed_key:
            raise RepeatConfigError(
                f"hydra.sweeper.seed_key must name the config key that takes the seed "
                f"(e.g. seed), but got {seed_key!r}."
            )
        if aggregate not in AGGREGATES:
            raise RepeatConfigError(
                f"hydra.sweeper.aggregate must be one of {', '.join(AGGREGATES)}, but got "
                f"{aggregate!r}."
            )
        return cls(repeats, seed_key, str(aggregate))

    @property
    def active(self) -> bool:
        return self.n > 1

    def seeds(self) -> list[int]:
        return list(range(self.n))

    def configurations_in_flight(self, n_jobs: int) -> int:
        """Configurations the loop keeps running so that about ``n_jobs`` seed jobs run."""
        return max(1, math.ceil(n_jobs / self.n))

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "seed_key": self.seed_key, "aggregate": self.aggregate}


def combine(aggregate: str, values: Sequence[float]) -> float:
    return float(AGGREGATES[aggregate]([float(v) for v in values]))


# ------------------------------------------------------------------------- sweeper side
LaunchOne = Callable[[list[str], dict[str, Any], int], tuple[bool, str | None]]


def launch_seeds(
    repeats: Repeats,
    study: optuna.Study,
    trial: optuna.Trial,
    overrides: Sequence[str],
    launch_one: LaunchOne,
    subdir: str | None,
    parallel: bool = True,
) -> tuple[bool, str | None]:
    """Run the configuration's seed jobs (side by side unless ``parallel`` is False).

    ``launch_one(overrides, context, seed_index)`` launches one job and returns (ok, error).
    ``subdir``: the app's ``hydra.sweep.subdir`` (unresolved); each seed's job dir is a
    ``seed_<s>`` folder below it, so seeds never share checkpoints. A seed whose job died
    without telling fails the configuration at once (the others then stop at their next
    ``should_prune()``). Returns (ok, the first error).
    """
    errors: list[str] = []
    lock = threading.Lock()

    def one(i: int, seed: int) -> None:
        ovs = [*overrides, f"{repeats.seed_key}={seed}"]
        if subdir is not None:
            ovs.append(f"hydra.sweep.subdir='{subdir}/seed_{seed}'")
        ctx = {CONTEXT_KEY: {"index": i, "seed": seed, **repeats.as_dict()}}
        try:
            ok, error = launch_one(ovs, ctx, i)
        except Exception as e:  # noqa: BLE001 - a launcher error is this seed's failure
            ok, error = False, f"{type(e).__name__}: {e}"
        if ok:
            return
        reason = f"seed {i} ({repeats.seed_key}={seed}): {error or 'the job failed'}"
        with lock:
            errors.append(reason)
        try:
            if records.fail_trial(study, trial, reason):
                log.warning("trial %d FAIL: %s", trial.number, reason)
        except Exception as e:  # storage hiccup: the loop fails it when all seeds returned
            log.debug("could not fail trial %d: %s", trial.number, e)

    seeds = list(enumerate(repeats.seeds()))
    if not parallel:
        for i, seed in seeds:
            one(i, seed)
    else:
        threads = [
            threading.Thread(target=one, args=(i, s), name=f"seed-{trial.number}-{i}")
            for i, s in seeds
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return (not errors, errors[0] if errors else None)


# ----------------------------------------------------------------------------- job side
def seed_of(context: Mapping[str, Any]) -> dict[str, Any] | None:
    """This job's seed (index, seed, n, aggregate, seed_key) when it is one of a repeat."""
    rep = context.get(CONTEXT_KEY)
    return rep if isinstance(rep, dict) and "index" in rep else None


def key(index: int, what: str | None = None) -> str:
    return f"{records.REPEAT_PREFIX}{index}" + (f":{what}" if what else "")


def on_seed_start(
    storage: Any, trial_id: int, seed: Mapping[str, Any], attrs: dict[str, Any]
) -> None:
    """Where this seed runs, under its own key (the trial's plain job keys hold the last seed's)."""
    storage.set_trial_user_attr(
        trial_id, key(int(seed["index"]), "job"), {**attrs, "seed": seed["seed"]}
    )


def report(
    trial: optuna.Trial,
    seed: Mapping[str, Any],
    step: int,
    metrics: float | Mapping[str, float],
    prune_metric: str | None,
) -> None:
    """Record one seed's metrics at ``step``; rewrite the trial's aggregate at that step."""
    if isinstance(metrics, Mapping):
        values = {str(k): float(v) for k, v in metrics.items() if _is_number(v)}
        prune_key = prune_metric if prune_metric in values else next(iter(values), None)
    else:
        prune_key = prune_metric or "value"
        values = {prune_key: float(metrics)}
    storage = trial.storage
    i = int(seed["index"])
    frozen = storage.get_trial(trial._trial_id)
    if frozen.state.is_finished():
        return
    attrs = frozen.user_attrs
    curves = dict(attrs.get(key(i, "curves"), {}))
    for name, v in values.items():
        curves.setdefault(name, {})[str(step)] = v
    storage.set_trial_user_attr(trial._trial_id, key(i, "curves"), curves)
    value = values.get(prune_key) if prune_key is not None else None
    if value is None or not math.isfinite(value) or len(trial.study.directions) > 1:
        return
    mine = dict(attrs.get(key(i, "reports"), {}))
    mine[str(step)] = value
    storage.set_trial_user_attr(trial._trial_id, key(i, "reports"), mine)
    attrs = storage.get_trial(trial._trial_id).user_attrs  # the other seeds' latest reports
    at_step = [
        float(r[str(step)])
        for j in range(int(seed["n"]))
        if str(step) in (r := (mine if j == i else attrs.get(key(j, "reports"), {})))
    ]
    storage.set_trial_intermediate_value(
        trial._trial_id, step, combine(str(seed["aggregate"]), at_step)
    )
    storage.set_trial_user_attr(trial._trial_id, records.LAST_STEP, int(step))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def should_prune(trial: optuna.Trial, seed: Mapping[str, Any]) -> bool:
    """Yes once the configuration is pruned or finished (a sibling failed); else ask the
    pruner about the configuration's aggregate curve."""
    storage = trial.storage
    frozen = storage.get_trial(trial._trial_id)
    if frozen.state.is_finished() or records.PRUNED_AT_STEP in frozen.user_attrs:
        return True
    if len(trial.study.directions) > 1:
        return False
    if not trial.study.pruner.prune(trial.study, frozen):
        return False
    storage.set_trial_user_attr(trial._trial_id, records.PRUNED_AT_STEP, frozen.last_step)
    log.info("trial %d pruned at step %s (seed %s)", trial.number, frozen.last_step, seed["seed"])
    return True


def on_seed_end(
    study: optuna.Study,
    trial_id: int,
    seed: Mapping[str, Any],
    completed: bool,
    value: Any,
    context: Mapping[str, Any],
) -> TrialState | None:
    """Record how this seed ended; the seed that completes the set tells the trial.

    ``value``: the task's return, or the exception it raised. Returns the trial's state once
    told (or failed), else None: other seeds still run.
    """
    import optuna
    from optuna.trial import TrialState

    from nemo_rl_hpo.sweep.objectives import ObjectiveError, numeric_metrics, objective_values

    storage = study._storage
    frozen = storage.get_trial(trial_id)
    if frozen.state.is_finished():
        return frozen.state
    values: list[float] | None = None
    metrics: dict[str, float] = {}
    reason: str | None = None
    if completed:
        metrics = dict(numeric_metrics(value))
        state = "COMPLETE"
        if records.PRUNED_AT_STEP in frozen.user_attrs:
            state = "PRUNED"  # it stopped because the configuration was pruned
        try:
            values = objective_values(
                value,
                len(study.directions),
                context.get("objectives") or None,
                context.get("weights"),
            )
        except ObjectiveError as e:
            if state == "COMPLETE":
                state, reason = "FAIL", str(e)
    elif isinstance(value, optuna.TrialPruned):
        state = "PRUNED"
    else:
        state, reason = "FAIL", f"{type(value).__name__}: {value}"
    from nemo_rl_hpo.fidelity import _segment

    segment = _segment.segment_of(context)
    i, n, agg = int(seed["index"]), int(seed["n"]), str(seed["aggregate"])
    record = {"seed": seed["seed"], "state": state, "values": values, "metrics": metrics}
    if segment is not None:  # seeds of one segment: an earlier segment's records do not count
        record["segment"] = int(segment["target"])
    if reason:
        record["reason"] = reason[: records.FAIL_REASON_MAX_CHARS]
    storage.set_trial_user_attr(trial_id, key(i), record)
    if state == "FAIL":
        why = f"seed {i} ({seed['seed_key']}={seed['seed']}): {reason}"
        records.fail_trial(study, frozen, why)
        return TrialState.FAIL
    # Written before read: of two seeds ending together, at least the later sees both.
    frozen = storage.get_trial(trial_id)
    got = [frozen.user_attrs.get(key(j)) for j in range(n)]
    done: list[dict[str, Any]] = [r for r in got if isinstance(r, dict)]
    if segment is not None:
        done = [r for r in done if r.get("segment") == int(segment["target"])]
    if len(done) < n:
        return None
    for name in set.intersection(*(set(r.get("metrics") or {}) for r in done)):
        storage.set_trial_user_attr(
            trial_id, records.METRIC_PREFIX + name, combine(agg, [r["metrics"][name] for r in done])
        )
    try:
        if records.PRUNED_AT_STEP in frozen.user_attrs or any(r["state"] == "PRUNED" for r in done):
            study.tell(frozen.number, state=TrialState.PRUNED, skip_if_finished=True)
            return TrialState.PRUNED
        told = [combine(agg, [r["values"][k] for r in done]) for k in range(len(done[0]["values"]))]
        if segment is not None:  # the configuration's segment ended: pause at its rung or finish
            ended = _segment.end(study, storage.get_trial(trial_id), told[0], segment)
            if ended == "paused":
                return None
            if ended == "short":
                study.tell(frozen.number, state=TrialState.PRUNED, skip_if_finished=True)
                return TrialState.PRUNED
        study.tell(frozen.number, told, skip_if_finished=True)
    except Exception as e:  # e.g. the driver failed it meanwhile
        log.warning("could not record trial %d: %s", frozen.number, e)
        return None
    return TrialState.COMPLETE


# ------------------------------------------------------------------------------ readers
def seed_records(trial: FrozenTrial) -> list[dict[str, Any]]:
    """The ended seeds of a trial (index order), for reports, ``best`` and ``status``."""
    out = []
    for k, v in trial.user_attrs.items():
        if k.startswith(records.REPEAT_PREFIX) and k.count(":") == 1 and isinstance(v, dict):
            out.append({"index": int(k.split(":")[1]), **v})
    return sorted(out, key=lambda r: r["index"])


def spread(trial: FrozenTrial) -> str | None:
    """``0.48 .. 0.57 (sd 0.04, 3 seeds)``: the first objective's spread, None without seeds."""
    vals = [r["values"][0] for r in seed_records(trial) if r.get("values")]
    if not vals:
        return None
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{min(vals):.6g} .. {max(vals):.6g} (sd {sd:.3g}, {len(vals)} seeds)"
