"""What the sampler learns from in a multi-fidelity study: one rung, as BOHB does.

Values at different rungs are not comparable (a loss at step 50 is not a loss at step 400), and
a configuration must count once however many segments it ran. So the sampler sees the study
through :class:`RungView`: every configuration that reached rung ``r`` appears once, COMPLETE
with its value at ``r``, where ``r`` is the highest rung that at least ``min_observations``
configurations reached (BOHB, Falkner et al. 2018: the model is fit on the largest budget with
enough observations, ``d + 1`` for ``d`` parameters by default). Segments running right now
stay RUNNING (so constant liar still spreads parallel proposals); everything else is left out.
Until any rung has enough observations the sampler sees no finished trial and draws at random,
as TPE does before ``n_startup_trials``.

Chosen over the alternatives: Optuna's default (PRUNED trials ranked by their last step, as TPE
does for stopping pruners) would mix values of different rungs and, with paused trials RUNNING,
never see the promising ones; fitting on ``max_resource`` only leaves the model empty for most
of a sweep, since few configurations get there.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from nemo_rl_hpo.sweep import records


def rung_values(t: FrozenTrial) -> dict[int, float]:
    return {int(r["step"]): float(r["value"]) for r in t.user_attrs.get(records.FIDELITY_RUNGS, [])}


def model_rung(trials: Sequence[FrozenTrial], min_observations: int) -> int | None:
    """The highest rung step that ``min_observations`` configurations reached (None: none)."""
    counts: dict[int, int] = {}
    for t in trials:
        for step in rung_values(t):
            counts[step] = counts.get(step, 0) + 1
    enough = [step for step, n in counts.items() if n >= min_observations]
    return max(enough, default=None)


def view_trials(trials: Sequence[FrozenTrial], min_observations: int) -> list[FrozenTrial]:
    """The study's trials as the sampler should see them (see the module docstring)."""
    rung = model_rung(trials, min_observations)
    out = []
    for t in trials:
        values = rung_values(t)
        if rung is not None and rung in values and t.state != TrialState.FAIL:
            out.append(_as_complete(t, values[rung]))
        elif t.state == TrialState.RUNNING and not records.is_paused(t):
            out.append(t)
    return out


def _as_complete(t: FrozenTrial, value: float) -> FrozenTrial:
    return FrozenTrial(
        number=t.number,
        state=TrialState.COMPLETE,
        value=value,
        datetime_start=t.datetime_start,
        datetime_complete=t.datetime_complete or t.datetime_start,
        params=t.params,
        distributions=t.distributions,
        user_attrs=t.user_attrs,
        system_attrs=t.system_attrs,
        intermediate_values={},
        trial_id=t._trial_id,
    )


class RungView:
    """The study, except that its trials are :func:`view_trials` (everything else delegated)."""

    def __init__(self, study: optuna.Study, min_observations: int) -> None:
        self._study = study
        self._min = min_observations

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        trials = view_trials(
            self._study._get_trials(deepcopy=False, use_cache=use_cache), self._min
        )
        return [t for t in trials if states is None or t.state in states]

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


class RungSampler(BaseSampler):
    """Any Optuna sampler, fitted on one rung of a multi-fidelity study (:class:`RungView`)."""

    def __init__(self, base: BaseSampler, min_observations: int) -> None:
        self.base = base
        self.min_observations = max(1, int(min_observations))

    def _view(self, study: optuna.Study) -> Any:
        return RungView(study, self.min_observations)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(self._view(study), trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.base.sample_relative(self._view(study), trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.base.sample_independent(
            self._view(study), trial, param_name, param_distribution
        )

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
