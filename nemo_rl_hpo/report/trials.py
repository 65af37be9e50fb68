"""What a study says about a sweep: its attributes, each trial's Hydra params and reproduce command.

The sweeper records the app command, fixed overrides and each trial's overrides as user
attributes; everything that reports on a study (results files, plots, the CLI) reads them through
this module, and falls back to Optuna's own fields for a plain study without them.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep.storage import mask

METRIC_PREFIX = records.METRIC_PREFIX
STATES = [s.name for s in TrialState]


@dataclass(frozen=True)
class SweepInfo:
    """The sweep-level attributes the sweeper stores on the study (all optional)."""

    study_name: str
    directions: list[str]
    objectives: list[str]
    command: list[str]
    base_overrides: list[str]
    kind: str
    sampler: str | None
    sweep_dir: str | None
    storage: str | None
    cwd: str | None = None  # where the sweep was started: the command's paths are relative to it
    fidelity: dict[str, Any] | None = None  # hydra/sweeper/fidelity's schedule (STUDY_FIDELITY)

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1

    @classmethod
    def from_study(cls, study: optuna.Study) -> SweepInfo:
        attrs = study.user_attrs
        directions = [d.name.lower() for d in study.directions]
        return cls(
            study_name=study.study_name,
            directions=directions,
            objectives=objective_names(study),
            command=[str(a) for a in attrs.get(records.STUDY_COMMAND) or []],
            base_overrides=[str(a) for a in attrs.get(records.STUDY_BASE_OVERRIDES) or []],
            kind=str(attrs.get(records.STUDY_KIND) or records.KIND_OPTUNA),
            sampler=_opt_str(attrs.get(records.STUDY_SAMPLER)),
            sweep_dir=_opt_str(attrs.get(records.STUDY_SWEEP_DIR)),
            storage=mask(_opt_str(attrs.get(records.STUDY_STORAGE))),
            cwd=_opt_str(attrs.get(records.STUDY_CWD)),
            fidelity=attrs.get(records.STUDY_FIDELITY) or None,
        )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def objective_names(study: optuna.Study) -> list[str]:
    """One name per direction: the sweeper's objectives, Optuna's metric names, or value/value_i."""
    n = len(study.directions)
    names = study.user_attrs.get(records.STUDY_OBJECTIVES)
    if isinstance(names, list) and len(names) == n:
        return [str(x) for x in names]
    if study.metric_names is not None and len(study.metric_names) == n:
        return list(study.metric_names)
    return ["value"] if n == 1 else [f"value_{i}" for i in range(n)]


def parse_value(text: str) -> Any:
    """A Hydra override value as the app receives it: int, float, bool, null, list or string."""
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "null":
        return None
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    if t[:1] in "[{":
        import yaml

        try:
            return yaml.safe_load(t)
        except yaml.YAMLError:
            return t
    return t


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["optimizer=sgd", "+w=0.5"]`` -> ``{"optimizer": "sgd", "+w": 0.5}`` (deletions skipped).

    Keys keep Hydra's ``+``/``++`` prefix, as hydra-optuna-sweeper's ``best_params`` do for
    parameters a ``custom_search_space`` adds.
    """
    params: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if not sep or key.startswith("~"):
            continue
        params[key] = parse_value(value)
    return params


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def trial_overrides(trial: FrozenTrial) -> list[str]:
    """The trial's Hydra overrides, or ``key=value`` of its Optuna params for a plain study."""
    overrides = trial.user_attrs.get(records.OVERRIDES)
    if isinstance(overrides, list):
        return [str(o) for o in overrides]
    return [f"{k}={_format_value(v)}" for k, v in trial.params.items()]


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's parameters under their Hydra keys (conditional ones included)."""
    overrides = trial.user_attrs.get(records.OVERRIDES)
    if isinstance(overrides, list):
        return parse_overrides(overrides)
    return dict(trial.params)


def reproduce_argv(info: SweepInfo, trial: FrozenTrial) -> list[str]:
    """command + fixed overrides + this trial's overrides (just the overrides without a command).

    The sweeper records a trial's fixed overrides along with its sampled ones; each is printed
    once, so the command reads as the user would type it.
    """
    base = list(info.base_overrides)
    return [*info.command, *base, *(o for o in trial_overrides(trial) if o not in base)]


def reproduce_command(info: SweepInfo, trial: FrozenTrial, here: str | None = None) -> str:
    """The reproduce command as a shell line; run from ``here``, it first changes to the sweep's
    start directory when that is elsewhere (the app path and Hydra's outputs are relative to it).
    """
    line = shlex.join(reproduce_argv(info, trial))
    if here is not None and info.cwd and info.command and not _same_dir(here, info.cwd):
        return f"cd {shlex.quote(info.cwd)} && {line}"
    return line


def _same_dir(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def trial_metrics(trial: FrozenTrial) -> dict[str, Any]:
    n = len(METRIC_PREFIX)
    return {k[n:]: v for k, v in trial.user_attrs.items() if k.startswith(METRIC_PREFIX)}


def counts_by_state(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    return records.count_states(trials)


def duration_s(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def elapsed_s(trial: FrozenTrial, now: dt.datetime | None = None) -> float | None:
    """Seconds since a running trial started (Optuna stores naive local times)."""
    if trial.datetime_start is None:
        return None
    return ((now or dt.datetime.now()) - trial.datetime_start).total_seconds()


def _finite(values: Sequence[float] | None) -> bool:
    return values is not None and all(math.isfinite(v) for v in values)


def complete_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE and _finite(t.values)]


def best_trial(
    trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection], objective: int = 0
) -> FrozenTrial | None:
    """The best complete trial on one objective (the first one completed wins ties)."""
    done = complete_trials(trials)
    if not done:
        return None
    sign = -1.0 if directions[objective] == StudyDirection.MAXIMIZE else 1.0
    return min(done, key=lambda t: (sign * t.values[objective], t.number))


def pareto_trials(
    trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]
) -> list[FrozenTrial]:
    """Complete trials no other complete trial dominates (ordered by trial number)."""
    signs = [-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in directions]
    done = sorted(
        complete_trials(trials), key=lambda t: [s * v for s, v in zip(signs, t.values, strict=True)]
    )
    front: list[FrozenTrial] = []
    for t in done:  # lexicographic order: a dominator always comes before what it dominates
        v = [s * x for s, x in zip(signs, t.values, strict=True)]
        dominated = False
        for f in front:
            w = [s * x for s, x in zip(signs, f.values, strict=True)]
            if all(a <= b for a, b in zip(w, v, strict=True)) and w != v:
                dominated = True
                break
        if not dominated:
            front.append(t)
    return sorted(front, key=lambda t: t.number)


def pbt_summary(trials: Sequence[FrozenTrial], direction: StudyDirection) -> dict[str, Any] | None:
    """The best member at the last round with a complete trial, and its schedule back to round 0.

    A trial is one member's round; ``pbt:parent`` names the member whose checkpoint it started
    from (exploit), so the schedule follows the parent at each exploit, as the weights did.
    """
    done = [t for t in complete_trials(trials) if records.PBT_MEMBER in t.user_attrs]
    if not done:
        return None
    last_round = max(int(t.user_attrs.get(records.PBT_ROUND, 0)) for t in done)
    final = best_trial(
        [t for t in done if t.user_attrs.get(records.PBT_ROUND, 0) == last_round], [direction]
    )
    if final is None:
        return None
    by_key: dict[tuple[int, int], FrozenTrial] = {}
    for t in trials:
        if records.PBT_MEMBER not in t.user_attrs:
            continue
        key = (int(t.user_attrs[records.PBT_MEMBER]), int(t.user_attrs.get(records.PBT_ROUND, 0)))
        if key not in by_key or t.state == TrialState.COMPLETE:
            by_key[key] = t
    schedule: list[dict[str, Any]] = []
    member = int(final.user_attrs[records.PBT_MEMBER])
    for rnd in range(last_round, -1, -1):
        seg = by_key.get((member, rnd))
        if seg is None:
            break
        t = seg
        parent = t.user_attrs.get(records.PBT_PARENT)
        schedule.append(
            {
                "round": rnd,
                "member": member,
                "trial": t.number,
                "parent": parent,
                "params": dict(t.user_attrs.get(records.PBT_PARAMS) or trial_params(t)),
                "value": t.values[0] if t.values else None,
            }
        )
        if parent is not None:
            member = int(parent)
    schedule.reverse()
    return {
        "best_member": int(final.user_attrs[records.PBT_MEMBER]),
        "final_round": last_round,
        "final_value": final.values[0],
        "final_trial": final.number,
        "schedule": schedule,
    }


def pbt_rows(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if records.PBT_MEMBER in t.user_attrs]


def jsonable(obj: Any) -> Any:
    """Plain JSON types: NaN/inf -> None, numpy scalars -> Python, datetimes -> ISO strings."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    if hasattr(obj, "item"):  # numpy scalar
        return jsonable(obj.item())
    return str(obj)
