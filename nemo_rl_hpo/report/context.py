"""What every report plot is drawn from: one snapshot of the study and what is known about it.

The snapshot is taken once, so a report drawn while trials run is consistent, and a plot that
cannot be drawn yet raises :class:`SkipPlot` with the reason for ``index.html``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import optuna
from optuna.trial import FrozenTrial, TrialState

from nemo_rl_hpo.report.trials import SweepInfo
from nemo_rl_hpo.sweep import cost

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from matplotlib.figure import Figure as MplFigure

# A figure builder's result: the interactive figure and its static (PNG) twin.
Figures: TypeAlias = tuple["go.Figure", "MplFigure"]


class SkipPlot(Exception):
    """A plot that cannot be drawn from the trials so far; the message says why."""


@dataclass
class PlotEntry:
    """One plot of the report: drawn (``fig``, ``files``) or skipped (``note``)."""

    stem: str
    title: str
    fig: go.Figure | None = None
    note: str | None = None
    files: list[str] = field(default_factory=list)


@dataclass
class Ctx:
    """The snapshot every plot reads, plus the importances computed once for all of them."""

    study: optuna.Study  # in-memory snapshot
    trials: list[FrozenTrial]
    done: list[FrozenTrial]
    info: SweepInfo
    importances: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    importance_notes: dict[str, str] = field(default_factory=dict)
    top_params: list[str] = field(default_factory=list)
    shared_params: list[str] = field(default_factory=list)  # in every complete trial
    costs: dict[int, cost.Totals] = field(default_factory=dict)  # each trial's, by number

    def target(self, i: int) -> Callable[[FrozenTrial], float] | None:
        if not self.info.multi_objective:
            return None
        return lambda t: t.values[i]


def snapshot(study: optuna.Study, trials: list[FrozenTrial]) -> optuna.Study:
    """An in-memory copy: every plot sees the same trials, and no plot re-reads the database."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory"
    try:
        snap = optuna.create_study(
            storage=optuna.storages.InMemoryStorage(),
            directions=study.directions,
            sampler=optuna.samplers.RandomSampler(seed=0),
            study_name=study.study_name,
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    snap.add_trials([t for t in trials if t.state != TrialState.WAITING])
    return snap


def param_order(done: Sequence[FrozenTrial]) -> tuple[list[str], list[str]]:
    """(all params in first-seen order, those present in every complete trial)."""
    seen: dict[str, int] = {}
    for t in done:
        for k in t.params:
            seen[k] = seen.get(k, 0) + 1
    return list(seen), [k for k, n in seen.items() if n == len(done)]


def first_axes_figure(ax: Any) -> MplFigure:
    """The figure behind what Optuna's matplotlib plots return (one axes or an array of them)."""
    import numpy as np

    fig: MplFigure = np.ravel(np.asarray(ax, dtype=object))[0].figure
    return fig
