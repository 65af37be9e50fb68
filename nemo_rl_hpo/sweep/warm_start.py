"""Warm start: reuse what an earlier study learned.

``enqueue`` runs the earlier study's top-k configurations first (their values are re-measured
under the new settings); ``prior`` copies its finished trials into the new study as observations,
so the sampler's model starts informed without spending a single trial. Either happens once per
source study, so a resumed sweep does not repeat it.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nemo_rl_hpo.errors import ParamError
from nemo_rl_hpo.search.space import SearchSpace
from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep.storage import StorageError, mask, open_storage

log = logging.getLogger(__name__)


class WarmStartError(ParamError, ValueError):
    """A warm start that cannot be done; names the parameter (mode, top_k, study_name)."""


def warm_start(
    study: optuna.Study,
    space: SearchSpace,
    *,
    storage: str | None,
    study_name: str,
    top_k: int = 5,
    mode: str = "enqueue",
) -> int:
    """Enqueue or copy trials of ``study_name``; returns how many were added."""
    if mode not in ("enqueue", "prior"):
        raise WarmStartError(f"mode must be 'enqueue' or 'prior', but got {mode!r}.", "mode")
    if top_k < 1:
        raise WarmStartError(f"top_k must be at least 1, but got {top_k}.", "top_k")
    try:
        source_storage = open_storage(storage) if storage else study._storage
        source = optuna.load_study(study_name=study_name, storage=source_storage)
    except (KeyError, StorageError) as e:
        raise WarmStartError(
            f"cannot load study {study_name!r} from {mask(storage) or 'this sweep storage'} ({e})."
        ) from None
    if source._study_id == study._study_id and source_storage is study._storage:
        raise WarmStartError("study_name names this very study.", "study_name")
    mark = f"{records.STUDY_WARM_STARTED_PREFIX}{study_name}"
    if study.user_attrs.get(mark):
        return 0
    done = [t for t in source.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(source.directions) == 1:
        sign = 1.0 if source.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
        done.sort(key=lambda t: sign * float(t.value))  # type: ignore[arg-type]
    else:
        best = {t.number for t in source.best_trials}
        done.sort(key=lambda t: t.number not in best)
    dists = space.distributions
    added = 0
    if mode == "enqueue":
        for t in done[:top_k]:
            params = _compatible(t, dists, warn=True)
            study.enqueue_trial(
                params,
                user_attrs={records.WARM_START_FROM: f"{study_name}#{t.number}"},
                skip_if_exists=True,
            )
            added += 1
    else:
        if len(source.directions) != len(study.directions):
            raise WarmStartError(
                "mode=prior needs the same number of objectives as the earlier study; use "
                "mode=enqueue.",
                "mode",
            )
        for t in done:
            params = _compatible(t, dists, warn=False)
            if len(params) != len(t.params):
                continue  # an observation outside the new space would mislead the model
            study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions={k: dists[k] for k in params},
                    values=t.values,
                    user_attrs={
                        records.WARM_START_FROM: f"{study_name}#{t.number}",
                        records.WARM_START_PRIOR: True,
                    },
                )
            )
            added += 1
    study.set_user_attr(mark, True)
    log.info("warm start: %s %d trial(s) of study %r", mode, added, study_name)
    return added


def _compatible(
    t: FrozenTrial, dists: dict[str, optuna.distributions.BaseDistribution], *, warn: bool
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in t.params.items():
        dist = dists.get(key)
        ok = dist is not None
        if ok:
            try:
                ok = dist._contains(dist.to_internal_repr(value))  # type: ignore[union-attr]
            except (ValueError, TypeError):
                ok = False
        if ok:
            params[key] = value
        elif warn:
            log.warning(
                "warm start: %s=%r of trial %d is not in the new search space; dropped",
                key,
                value,
                t.number,
            )
    return params
