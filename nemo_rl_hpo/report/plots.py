"""The study report: each plot as an offline HTML (plotly, JS embedded) and a PNG (matplotlib).

    nemo-rl-hpo report multirun/2026-11-28/12-00-00     # -> <sweep dir>/report/index.html

Everything works from a snapshot of the study taken at the start, so a report drawn while trials
run is consistent; a plot that cannot be drawn yet (too few trials, one parameter) is skipped
with a note in ``index.html``, never an exception. Costs are bounded for large studies: fANOVA
sees at most ``MAX_IMPORTANCE_TRIALS`` random complete trials with capped trees, and learning
curves are drawn as one line collection per state instead of one artist per trial.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import logging
import math
import random
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nemo_rl_hpo.report import _io
from nemo_rl_hpo.report.trials import (
    SweepInfo,
    best_trial,
    complete_trials,
    counts_by_state,
    jsonable,
    pareto_trials,
    pbt_rows,
    pbt_summary,
    reproduce_command,
    trial_params,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from matplotlib.figure import Figure as MplFigure

log = logging.getLogger(__name__)

# fANOVA's forest costs ~1.3 s for 1,000 trials x 16 trees of depth 8 on one core here; its
# ranking on 1,000 random complete trials matched the one on all 4,000 of the benchmark study.
MAX_IMPORTANCE_TRIALS = 1000
FANOVA_TREES = 16
FANOVA_DEPTH = 8
MAX_PLOT_PARAMS = 8  # slice and parallel coordinates show the most important parameters
MAX_PARETO_ROWS = 50  # rows of the Pareto table in index.html (the JSON has all)

EVALUATORS = ("ped_anova", "fanova")


class SkipPlot(Exception):
    """A plot that cannot be drawn from the trials so far; the message says why."""


@dataclass
class PlotEntry:
    stem: str
    title: str
    fig: go.Figure | None = None
    note: str | None = None
    files: list[str] = field(default_factory=list)


@dataclass
class _Ctx:
    study: optuna.Study  # in-memory snapshot
    trials: list[FrozenTrial]
    done: list[FrozenTrial]
    info: SweepInfo
    importances: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    importance_notes: dict[str, str] = field(default_factory=dict)
    top_params: list[str] = field(default_factory=list)
    shared_params: list[str] = field(default_factory=list)  # in every complete trial

    def target(self, i: int) -> Callable[[FrozenTrial], float] | None:
        if not self.info.multi_objective:
            return None
        return lambda t: t.values[i]


def _snapshot(study: optuna.Study, trials: list[FrozenTrial]) -> optuna.Study:
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


def _param_order(done: Sequence[FrozenTrial]) -> tuple[list[str], list[str]]:
    """(all params in first-seen order, those present in every complete trial)."""
    seen: dict[str, int] = {}
    for t in done:
        for k in t.params:
            seen[k] = seen.get(k, 0) + 1
    return list(seen), [k for k, n in seen.items() if n == len(done)]


SPARSE = re.compile(r"regimes for parameter `([^`]+)` have less than")


def _compute_importances(ctx: _Ctx) -> None:
    """PED-ANOVA on every complete trial, fANOVA on a capped random subsample, per objective."""
    all_params, _ = _param_order(ctx.done)
    reason = None
    if len(ctx.done) < 2:
        reason = f"needs at least 2 complete trials (have {len(ctx.done)})"
    elif len(all_params) < 2:
        reason = f"needs at least 2 searched parameters (have {len(all_params)})"
    if reason is not None:
        for name in EVALUATORS:
            ctx.importance_notes[name] = reason
        return
    sub = ctx.study
    if len(ctx.done) > MAX_IMPORTANCE_TRIALS:
        sample = random.Random(0).sample(ctx.done, MAX_IMPORTANCE_TRIALS)
        sub = optuna.create_study(directions=ctx.study.directions)
        sub.add_trials(sorted(sample, key=lambda t: t.number))
        ctx.importance_notes["fanova"] = (
            f"fANOVA on a random {MAX_IMPORTANCE_TRIALS} of {len(ctx.done)} complete trials, "
            f"{FANOVA_TREES} trees of depth {FANOVA_DEPTH}"
        )
    for name in EVALUATORS:
        evaluator: optuna.importance.BaseImportanceEvaluator
        if name == "fanova":
            evaluator = optuna.importance.FanovaImportanceEvaluator(
                n_trees=FANOVA_TREES, max_depth=FANOVA_DEPTH, seed=0
            )
        else:
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        per_objective: dict[str, dict[str, float]] = {}
        sparse: set[str] = set()
        try:
            for i, obj in enumerate(ctx.info.objectives):
                target = ctx.target(i)
                if target is not None and name == "ped_anova":
                    target = _lower_is_better(ctx.study.directions[i], i)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    # PED-ANOVA warns that a custom target must be lower-is-better: it is.
                    warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator")
                    imp = optuna.importance.get_param_importances(
                        sub if name == "fanova" else ctx.study, evaluator=evaluator, target=target
                    )
                # "Some regimes for parameter `x` have less than 2 trials": a note on the plot,
                # not a console warning per parameter at the end of every small sweep.
                sparse |= {m.group(1) for w in caught if (m := SPARSE.search(str(w.message)))}
                per_objective[obj] = {k: float(v) for k, v in imp.items()}
        except Exception as e:  # optuna raises several types for degenerate data
            ctx.importance_notes[name] = f"could not be computed: {e}"
            continue
        ctx.importances[name] = per_objective
        if sparse:
            note = (
                "may be inaccurate for " + ", ".join(sorted(sparse)) + ": some of their values "
                "(regimes) have fewer than 2 trials"
            )
            earlier = ctx.importance_notes.get(name)
            ctx.importance_notes[name] = f"{earlier}; {note}" if earlier else note


def _lower_is_better(direction: StudyDirection, i: int) -> Callable[[FrozenTrial], float]:
    if direction == StudyDirection.MAXIMIZE:
        return lambda t: -t.values[i]
    return lambda t: t.values[i]


def _rank_params(ctx: _Ctx) -> None:
    all_params, shared = _param_order(ctx.done)
    first = ctx.info.objectives[0]
    ranking: dict[str, float] = {}
    for name in ("fanova", "ped_anova"):
        if name in ctx.importances and ctx.importances[name].get(first):
            ranking = ctx.importances[name][first]
            break
    order = sorted(all_params, key=lambda k: -ranking.get(k, -1.0))
    ctx.top_params = order
    ctx.shared_params = [k for k in order if k in shared]


# ---------------------------------------------------------------- figure builders


def _first_axes_figure(ax: Any) -> MplFigure:
    import numpy as np

    fig: MplFigure = np.ravel(np.asarray(ax, dtype=object))[0].figure
    return fig


def _history(ctx: _Ctx, i: int) -> tuple[go.Figure, MplFigure]:
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as mvis

    if not ctx.done:
        raise SkipPlot("no complete trial yet")
    name = ctx.info.objectives[i]
    fig = vis.plot_optimization_history(ctx.study, target=ctx.target(i), target_name=name)
    ax = mvis.plot_optimization_history(ctx.study, target=ctx.target(i), target_name=name)
    return fig, _first_axes_figure(ax)


def _importance(ctx: _Ctx, evaluator: str) -> tuple[go.Figure, MplFigure]:
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    if evaluator not in ctx.importances:
        raise SkipPlot(ctx.importance_notes.get(evaluator, "not computed"))
    per_obj = ctx.importances[evaluator]
    first = next(iter(per_obj.values()))
    params = sorted({p for d in per_obj.values() for p in d}, key=lambda p: first.get(p, 0.0))
    fig = go.Figure()
    mfig = Figure(figsize=(7.0, max(3.0, 0.45 * len(params) + 1.5)), dpi=100)
    ax = mfig.add_subplot()
    height = 0.8 / max(1, len(per_obj))
    for j, (obj, imp) in enumerate(per_obj.items()):
        xs = [imp.get(p, 0.0) for p in params]
        fig.add_trace(go.Bar(x=xs, y=params, orientation="h", name=obj))
        ax.barh([k + j * height for k in range(len(params))], xs, height=height, label=obj)
    label = "PED-ANOVA" if evaluator == "ped_anova" else "fANOVA"
    fig.update_layout(
        title=f"Hyperparameter importance ({label})",
        xaxis_title="importance",
        barmode="group",
        showlegend=len(per_obj) > 1,
    )
    ax.set_yticks([k + height * (len(per_obj) - 1) / 2 for k in range(len(params))], params)
    ax.set_xlabel("importance")
    ax.set_title(f"Hyperparameter importance ({label})")
    if len(per_obj) > 1:
        ax.legend()
    mfig.tight_layout()
    return fig, mfig


def _parallel(ctx: _Ctx) -> tuple[go.Figure, MplFigure]:
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as mvis

    if not ctx.done:
        raise SkipPlot("no complete trial yet")
    params = (ctx.shared_params or ctx.top_params)[:MAX_PLOT_PARAMS]
    if not params:
        raise SkipPlot("no searched parameter")
    name = ctx.info.objectives[0]
    fig = vis.plot_parallel_coordinate(ctx.study, params, target=ctx.target(0), target_name=name)
    ax = mvis.plot_parallel_coordinate(ctx.study, params, target=ctx.target(0), target_name=name)
    return fig, _first_axes_figure(ax)


def _slice(ctx: _Ctx) -> tuple[go.Figure, MplFigure]:
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as mvis

    if not ctx.done:
        raise SkipPlot("no complete trial yet")
    params = ctx.top_params[:MAX_PLOT_PARAMS]
    if not params:
        raise SkipPlot("no searched parameter")
    name = ctx.info.objectives[0]
    fig = vis.plot_slice(ctx.study, params, target=ctx.target(0), target_name=name)
    ax = mvis.plot_slice(ctx.study, params, target=ctx.target(0), target_name=name)
    return fig, _first_axes_figure(ax)


def _contour(ctx: _Ctx) -> tuple[go.Figure, MplFigure]:
    import optuna.visualization.matplotlib as mvis

    if len(ctx.done) < 2:
        raise SkipPlot(f"needs at least 2 complete trials (have {len(ctx.done)})")
    params = ctx.shared_params[:2]
    if len(params) < 2:
        raise SkipPlot("needs two parameters present in every complete trial")
    name = ctx.info.objectives[0]
    fig = _contour_plotly(ctx.done, params[0], params[1], name)
    ax = mvis.plot_contour(ctx.study, params, target=ctx.target(0), target_name=name)
    return fig, _first_axes_figure(ax)


def _grid_axis(trials: Sequence[FrozenTrial], param: str) -> tuple[Any, Any, dict[str, Any]]:
    """(trial coordinates, grid coordinates, plotly axis settings) for one parameter."""
    import numpy as np
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dist = trials[0].distributions[param]
    raw = [t.params[param] for t in trials]
    if isinstance(dist, CategoricalDistribution):
        labels = [str(c) for c in dist.choices]
        coords = np.array([labels.index(str(v)) for v in raw], dtype=float)
        axis = {"tickmode": "array", "tickvals": list(range(len(labels))), "ticktext": labels}
        return coords, np.arange(len(labels), dtype=float), axis
    log = isinstance(dist, (FloatDistribution, IntDistribution)) and dist.log
    coords = np.log10(np.array(raw, dtype=float)) if log else np.array(raw, dtype=float)
    grid = np.linspace(coords.min(), coords.max(), CONTOUR_POINTS)
    return coords, grid, {"type": "log"} if log else {}


CONTOUR_POINTS = 100  # grid points per axis, as Optuna's matplotlib contour


def _contour_plotly(trials: Sequence[FrozenTrial], xp: str, yp: str, target_name: str) -> go.Figure:
    """Contour on a fixed grid: Optuna's plotly contour makes a unique-x by unique-y matrix,
    which for 5,000 trials is 25 M cells (a 200 MB HTML file)."""
    import numpy as np
    import plotly.graph_objects as go
    from scipy.interpolate import griddata

    cx, gx, ax_x = _grid_axis(trials, xp)
    cy, gy, ax_y = _grid_axis(trials, yp)
    z = np.array([t.values[0] for t in trials], dtype=float)
    points: dict[tuple[float, float], list[float]] = {}
    for x, y, v in zip(cx, cy, z, strict=True):
        points.setdefault((float(x), float(y)), []).append(float(v))
    xy = np.array(list(points))
    zv = np.array([np.mean(v) for v in points.values()])
    mx, my = np.meshgrid(gx, gy)
    zi = np.full(mx.shape, np.nan)
    if len(xy) >= 3 and len(set(xy[:, 0])) > 1 and len(set(xy[:, 1])) > 1:
        try:
            zi = griddata(xy, zv, (mx, my), method="linear")
        except Exception:  # qhull rejects degenerate (e.g. collinear) layouts
            log.debug("contour: linear interpolation failed; using nearest", exc_info=True)
    holes = np.isnan(zi)
    if holes.any():
        zi[holes] = griddata(xy, zv, (mx[holes], my[holes]), method="nearest")
    unlog_x = 10**gx if ax_x.get("type") == "log" else gx
    unlog_y = 10**gy if ax_y.get("type") == "log" else gy
    px = 10**cx if ax_x.get("type") == "log" else cx
    py = 10**cy if ax_y.get("type") == "log" else cy
    fig = go.Figure(
        [
            go.Contour(
                x=unlog_x.tolist(),
                y=unlog_y.tolist(),
                z=zi.tolist(),
                colorscale="Blues",
                reversescale=True,
                colorbar={"title": {"text": target_name}},
                hoverinfo="skip",
            ),
            go.Scattergl(
                x=px.tolist(),
                y=py.tolist(),
                mode="markers",
                marker={
                    "color": "black",
                    "size": 4 if len(trials) < 500 else 2,
                    "opacity": 1.0 if len(trials) < 500 else 0.5,
                },
                text=[f"trial {t.number}: {target_name}={t.values[0]:.6g}" for t in trials],
                hoverinfo="text",
                showlegend=False,
            ),
        ]
    )
    fig.update_layout(title=f"Contour: {xp} x {yp}", xaxis_title=xp, yaxis_title=yp)
    fig.update_xaxes(**ax_x)
    fig.update_yaxes(**ax_y)
    return fig


def _intermediate(ctx: _Ctx) -> tuple[go.Figure, MplFigure]:
    """Learning curves, one trace per state (a trace per trial is slow beyond a few hundred)."""
    import plotly.graph_objects as go
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    with_curves = [t for t in ctx.trials if t.intermediate_values]
    if not with_curves:
        raise SkipPlot("no trial reported intermediate values")
    colors = {"COMPLETE": "#1f77b4", "PRUNED": "#d62728", "RUNNING": "#2ca02c", "FAIL": "#7f7f7f"}
    fig = go.Figure()
    mfig = Figure(figsize=(8.0, 5.0), dpi=100)
    ax = mfig.add_subplot()
    for state in colors:
        group = [t for t in with_curves if t.state.name == state]
        if not group:
            continue
        xs: list[float | None] = []
        ys: list[float | None] = []
        text: list[str | None] = []
        segments = []
        for t in group:
            pts = sorted((s, v) for s, v in t.intermediate_values.items() if math.isfinite(v))
            xs += [p[0] for p in pts] + [None]
            ys += [p[1] for p in pts] + [None]
            text += [f"trial {t.number}"] * len(pts) + [None]
            segments.append(pts)
        fig.add_trace(
            go.Scattergl(
                x=xs,
                y=ys,
                text=text,
                mode="lines+markers" if len(group) < 50 else "lines",
                name=f"{state.lower()} ({len(group)})",
                line={"color": colors[state], "width": 1},
                opacity=0.6,
                hovertemplate="%{text}<br>step %{x}<br>%{y}<extra></extra>",
            )
        )
        alpha = 0.8 if len(group) < 50 else 0.25
        ax.add_collection(
            LineCollection(segments, colors=colors[state], linewidths=0.8, alpha=alpha, label=state)
        )
    ax.autoscale()
    ax.set_xlabel("step")
    ax.set_ylabel("intermediate value")
    ax.set_title("Intermediate values (learning curves)")
    ax.legend()
    fig.update_layout(
        title="Intermediate values (learning curves)",
        xaxis_title="step",
        yaxis_title="intermediate value",
    )
    mfig.tight_layout()
    return fig, mfig


def reference_point(
    values: Sequence[Sequence[float]], directions: Sequence[StudyDirection]
) -> list[float]:
    """A point just worse than every observed value: the worst value plus 10 % of the range."""
    ref = []
    for i, d in enumerate(directions):
        col = [v[i] for v in values]
        lo, hi = min(col), max(col)
        pad = 0.1 * (hi - lo) or 0.1 * abs(hi) or 1.0
        ref.append(lo - pad if d == StudyDirection.MAXIMIZE else hi + pad)
    return ref


def _pareto(ctx: _Ctx) -> tuple[go.Figure, MplFigure]:
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as mvis

    n = len(ctx.info.objectives)
    if n > 3:
        raise SkipPlot(f"a Pareto plot shows 2 or 3 objectives (this study has {n})")
    if not ctx.done:
        raise SkipPlot("no complete trial yet")
    fig = vis.plot_pareto_front(ctx.study, target_names=ctx.info.objectives)
    ax = mvis.plot_pareto_front(ctx.study, target_names=ctx.info.objectives)
    return fig, _first_axes_figure(ax)


def _hypervolume(ctx: _Ctx) -> tuple[go.Figure, MplFigure]:
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as mvis

    if not ctx.done:
        raise SkipPlot("no complete trial yet")
    ref = reference_point([t.values for t in ctx.done], ctx.study.directions)
    fig = vis.plot_hypervolume_history(ctx.study, ref)
    ax = mvis.plot_hypervolume_history(ctx.study, ref)
    ref_text = ", ".join(f"{n}={r:.4g}" for n, r in zip(ctx.info.objectives, ref, strict=True))
    fig.update_layout(title=f"Hypervolume history (reference point {ref_text})")
    return fig, _first_axes_figure(ax)


def _pbt_lineage(ctx: _Ctx) -> tuple[go.Figure, MplFigure]:
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    rows = [t for t in pbt_rows(ctx.trials) if t.values]
    if not rows:
        raise SkipPlot("no finished PBT round yet")
    pos = {
        (int(t.user_attrs["pbt:member"]), int(t.user_attrs.get("pbt:round", 0))): t for t in rows
    }
    summary = pbt_summary(ctx.trials, ctx.study.directions[0])
    best_path = {(s["member"], s["round"]) for s in (summary or {}).get("schedule", [])}
    fig = go.Figure()
    mfig = Figure(figsize=(8.0, 5.0), dpi=100)
    ax = mfig.add_subplot()
    for (member, rnd), t in sorted(pos.items()):
        parent = t.user_attrs.get("pbt:parent")
        src = (int(parent) if parent is not None else member, rnd - 1)
        if src not in pos:
            continue
        on_best = (member, rnd) in best_path and src in best_path
        exploit = parent is not None and int(parent) != member
        color = "#d62728" if on_best else ("#ff7f0e" if exploit else "#bbbbbb")
        width = 3 if on_best else 1.5 if exploit else 1
        fig.add_trace(
            go.Scatter(
                x=[src[1], rnd],
                y=[src[0], member],
                mode="lines",
                line={"color": color, "width": width, "dash": "solid" if not exploit else "dot"},
                hoverinfo="skip",
                showlegend=False,
            )
        )
        ax.plot([src[1], rnd], [src[0], member], color=color, lw=width, ls=":" if exploit else "-")
    keys = sorted(pos)
    vals = [pos[k].values[0] for k in keys]
    fig.add_trace(
        go.Scatter(
            x=[k[1] for k in keys],
            y=[k[0] for k in keys],
            mode="markers",
            marker={"color": vals, "colorscale": "Viridis", "size": 10, "showscale": True},
            text=[
                f"trial {pos[k].number}: member {k[0]}, round {k[1]}, value {pos[k].values[0]:.4g}"
                for k in keys
            ],
            hoverinfo="text",
            showlegend=False,
        )
    )
    sc = ax.scatter([k[1] for k in keys], [k[0] for k in keys], c=vals, cmap="viridis", zorder=3)
    mfig.colorbar(sc, ax=ax, label=ctx.info.objectives[0])
    title = "PBT lineage (dotted: exploit; red: the best member's ancestry)"
    fig.update_layout(title=title, xaxis_title="round", yaxis_title="member")
    ax.set_xlabel("round")
    ax.set_ylabel("member")
    ax.set_title(title, fontsize=10)
    mfig.tight_layout()
    return fig, mfig


def _log_scaled(values: Sequence[Any]) -> bool:
    """Positive numbers spanning more than 20x read better on a log axis (learning rates)."""
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return bool(nums) and min(nums) > 0 and max(nums) / min(nums) > 20


def _pbt_schedules(ctx: _Ctx) -> tuple[go.Figure, MplFigure]:
    from matplotlib.figure import Figure
    from plotly.subplots import make_subplots

    rows = pbt_rows(ctx.trials)
    if not rows:
        raise SkipPlot("no PBT round yet")
    names: list[str] = []
    for t in rows:
        for k in t.user_attrs.get("pbt:params") or {}:
            if k not in names:
                names.append(k)
    if not names:
        raise SkipPlot("no trial recorded pbt:params")
    summary = pbt_summary(ctx.trials, ctx.study.directions[0])
    best = summary["schedule"] if summary else []
    members = sorted({int(t.user_attrs["pbt:member"]) for t in rows})
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, subplot_titles=names)
    mfig = Figure(figsize=(8.0, 2.2 * len(names) + 1.0), dpi=100)
    axes = mfig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for j, name in enumerate(names):
        ax = axes[j]
        for m in members:
            pts = sorted(
                (
                    int(t.user_attrs.get("pbt:round", 0)),
                    (t.user_attrs.get("pbt:params") or {}).get(name),
                )
                for t in rows
                if int(t.user_attrs["pbt:member"]) == m
            )
            pts = [p for p in pts if p[1] is not None]
            fig.add_scatter(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                mode="lines+markers",
                name=f"member {m}",
                legendgroup=f"m{m}",
                showlegend=j == 0,
                line={"width": 1, "color": "#999999"},
                row=j + 1,
                col=1,
            )
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#999999", lw=1, marker=".")
        bx = [s["round"] for s in best if name in s["params"]]
        by = [s["params"][name] for s in best if name in s["params"]]
        fig.add_scatter(
            x=bx,
            y=by,
            mode="lines+markers",
            name="best member's schedule",
            legendgroup="best",
            showlegend=j == 0,
            line={"width": 3, "color": "#d62728"},
            row=j + 1,
            col=1,
        )
        ax.plot(bx, by, color="#d62728", lw=2.5, marker="o", label="best schedule")
        ax.set_ylabel(name, fontsize=8)
        if _log_scaled([(t.user_attrs.get("pbt:params") or {}).get(name) for t in rows]):
            ax.set_yscale("log")
            fig.update_yaxes(type="log", row=j + 1, col=1)
    axes[-1].set_xlabel("round")
    axes[0].legend(fontsize=8)
    mfig.suptitle("PBT hyperparameter schedules (red: the best member's)")
    fig.update_layout(title="PBT hyperparameter schedules", height=260 * len(names) + 120)
    mfig.tight_layout()
    return fig, mfig


# ---------------------------------------------------------------- writing


def _save(entry: PlotEntry, build: Callable[[], tuple[go.Figure, MplFigure]], out: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        fig, mfig = build()
    except SkipPlot as e:
        entry.note = str(e)
        return
    except Exception as e:  # a plot must never take the report down with it
        log.warning("report: %s skipped: %s: %s", entry.stem, type(e).__name__, e)
        entry.note = f"could not be drawn: {type(e).__name__}: {e}"
        plt.close("all")
        return
    entry.fig = fig
    _io.write_text(out / f"{entry.stem}.html", fig.to_html(include_plotlyjs=True, full_html=True))
    buf = io.BytesIO()
    mfig.savefig(buf, format="png", dpi=100)
    plt.close("all")
    _io.write_bytes(out / f"{entry.stem}.png", buf.getvalue())
    entry.files = [f"{entry.stem}.html", f"{entry.stem}.png"]


def _plan(ctx: _Ctx) -> list[tuple[PlotEntry, Callable[[], tuple[go.Figure, MplFigure]]]]:
    plan: list[tuple[PlotEntry, Callable[[], tuple[go.Figure, MplFigure]]]] = []
    for i, name in enumerate(ctx.info.objectives):
        stem = "history" if not ctx.info.multi_objective else f"history_{_slug(name)}"
        plan.append((PlotEntry(stem, f"Optimization history: {name}"), _bind(_history, ctx, i)))
    plan += [
        (
            PlotEntry("importance_ped_anova", "Importance (PED-ANOVA)"),
            lambda: _importance(ctx, "ped_anova"),
        ),
        (PlotEntry("importance_fanova", "Importance (fANOVA)"), lambda: _importance(ctx, "fanova")),
        (PlotEntry("parallel_coordinate", "Parallel coordinates"), lambda: _parallel(ctx)),
        (PlotEntry("slice", "Slice"), lambda: _slice(ctx)),
        (
            PlotEntry("contour", "Contour of the two most important parameters"),
            lambda: _contour(ctx),
        ),
        (PlotEntry("intermediate_values", "Intermediate values"), lambda: _intermediate(ctx)),
    ]
    if ctx.info.multi_objective:
        plan += [
            (PlotEntry("pareto_front", "Pareto front"), lambda: _pareto(ctx)),
            (PlotEntry("hypervolume_history", "Hypervolume history"), lambda: _hypervolume(ctx)),
        ]
    if ctx.info.kind == "pbt" or pbt_rows(ctx.trials):
        plan += [
            (PlotEntry("pbt_lineage", "PBT lineage"), lambda: _pbt_lineage(ctx)),
            (PlotEntry("pbt_schedules", "PBT schedules"), lambda: _pbt_schedules(ctx)),
        ]
    return plan


def _bind(
    fn: Callable[[_Ctx, int], tuple[go.Figure, MplFigure]], ctx: _Ctx, i: int
) -> Callable[[], tuple[go.Figure, MplFigure]]:
    return lambda: fn(ctx, i)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


@contextlib.contextmanager
def _restored_verbosity(verbosity: int) -> Iterator[None]:
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def build_report(study: optuna.Study, out_dir: str | Path) -> Path:
    """Write every plot (HTML + PNG) and ``index.html`` into ``out_dir``; return index.html."""
    import matplotlib

    matplotlib.use("Agg")
    # matplotlib logs at INFO for every categorical axis whose labels look numeric (batch_size)
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    trials = study.get_trials(deepcopy=False)
    timings["load_trials"] = time.perf_counter() - t0
    verbosity = optuna.logging.get_verbosity()
    with warnings.catch_warnings(), _restored_verbosity(verbosity):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # A parameter with one distinct value (a 2-trial sweep, a fixed choice) gives a flat
        # axis: matplotlib warns per plot and Optuna's contour logs "[W] Param ... unique value
        # length is less than 2". The plots are still right; the console stays quiet.
        warnings.filterwarnings("ignore", "Attempting to set identical", UserWarning)
        optuna.logging.set_verbosity(max(verbosity, optuna.logging.ERROR))
        tick = time.perf_counter()
        snap = _snapshot(study, trials)
        info = SweepInfo.from_study(study)
        ctx = _Ctx(study=snap, trials=trials, done=complete_trials(trials), info=info)
        timings["snapshot"] = time.perf_counter() - tick
        tick = time.perf_counter()
        _compute_importances(ctx)
        _rank_params(ctx)
        timings["importance"] = time.perf_counter() - tick
        entries = []
        for entry, build in _plan(ctx):
            tick = time.perf_counter()
            _save(entry, build, out)
            timings[entry.stem] = time.perf_counter() - tick
            entries.append(entry)
    tick = time.perf_counter()
    index = out / "index.html"
    _io.write_text(index, _index_html(ctx, entries))
    timings["index"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - t0
    _io.write_text(out / "timings.json", json.dumps({k: round(v, 3) for k, v in timings.items()}))
    log.info("report: %s (%.1f s)", index, timings["total"])
    return index


# ---------------------------------------------------------------- index.html

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f3f3f3}pre{background:#f6f6f6;padding:.6em;
white-space:pre-wrap;word-break:break-all}.note{color:#8a6d3b;background:#fcf8e3;padding:.4em}
section{border-top:1px solid #ddd;margin-top:1.2em}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{_e(_fmt(c))}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _summary_html(ctx: _Ctx) -> str:
    info = ctx.info
    parts = [
        _table(
            [
                ("study", info.study_name),
                ("kind", info.kind),
                ("sampler", info.sampler or "-"),
                (
                    "objectives",
                    ", ".join(
                        f"{o} ({d})" for o, d in zip(info.objectives, info.directions, strict=True)
                    ),
                ),
                ("storage", info.storage or "-"),
                ("sweep dir", info.sweep_dir or "-"),
                ("trials", len(ctx.trials)),
            ]
        ),
        "<h2>Trials by state</h2>",
        _table([(k, v) for k, v in counts_by_state(ctx.trials).items() if v], ["state", "count"]),
    ]
    if not info.multi_objective:
        best = best_trial(ctx.trials, ctx.study.directions)
        parts.append("<h2>Best trial</h2>")
        if best is None:
            parts.append('<p class="note">No complete trial yet.</p>')
        else:
            parts.append(_table([("trial", best.number), (info.objectives[0], best.value)]))
            parts.append(_table(list(trial_params(best).items()), ["parameter", "value"]))
            parts.append(f"<p>Reproduce:</p><pre>{_e(reproduce_command(info, best))}</pre>")
    else:
        front = pareto_trials(ctx.trials, ctx.study.directions)
        parts.append(f"<h2>Pareto front ({len(front)} trials)</h2>")
        rows = [[t.number, *t.values, reproduce_command(info, t)] for t in front[:MAX_PARETO_ROWS]]
        parts.append(
            _table(rows, ["trial", *info.objectives, "reproduce"])
            if rows
            else '<p class="note">No complete trial yet.</p>'
        )
    if info.kind == "pbt" or pbt_rows(ctx.trials):
        summary = pbt_summary(ctx.trials, ctx.study.directions[0])
        parts.append("<h2>PBT: best member's schedule</h2>")
        if summary is None:
            parts.append('<p class="note">No finished round yet.</p>')
        else:
            parts.append(
                f"<p>member {summary['best_member']}, final value {_fmt(summary['final_value'])} "
                f"(round {summary['final_round']}, trial {summary['final_trial']})</p>"
            )
            parts.append(
                _table(
                    [
                        (
                            s["round"],
                            s["member"],
                            s["parent"] if s["parent"] is not None else "-",
                            json.dumps(jsonable(s["params"])),
                            s["value"],
                        )
                        for s in summary["schedule"]
                    ],
                    ["round", "member", "exploited from", "params", "value"],
                )
            )
    parts.append("<h2>Top importances</h2>")
    for name in EVALUATORS:
        label = "PED-ANOVA" if name == "ped_anova" else "fANOVA"
        note = ctx.importance_notes.get(name)
        if name in ctx.importances:
            for obj, imp in ctx.importances[name].items():
                top = sorted(imp.items(), key=lambda kv: -kv[1])[:5]
                parts.append(
                    f"<p>{_e(label)} ({_e(obj)})</p>" + _table(top, ["parameter", "importance"])
                )
        if note:
            parts.append(f'<p class="note">{_e(label)}: {_e(note)}</p>')
    return "\n".join(parts)


def _index_html(ctx: _Ctx, entries: list[PlotEntry]) -> str:
    import plotly.offline

    body = [f"<h1>Study {_e(ctx.info.study_name)}</h1>", _summary_html(ctx), "<h2>Plots</h2>"]
    for entry in entries:
        body.append(f'<section id="{_e(entry.stem)}"><h3>{_e(entry.title)}</h3>')
        if entry.fig is not None:
            body.append(
                entry.fig.to_html(
                    full_html=False, include_plotlyjs=False, div_id=f"fig-{entry.stem}"
                )
            )
            links = " · ".join(f'<a href="{_e(f)}">{_e(f)}</a>' for f in entry.files)
            body.append(f"<p>{links}</p>")
        else:
            body.append(f'<p class="note">Skipped: {_e(entry.note)}</p>')
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(ctx.info.study_name)} - nemo-rl-hpo report</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head><body>\n'
        + "\n".join(body)
        + "\n</body></html>\n"
    )
