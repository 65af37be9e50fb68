"""The study's figures: history, slice, parallel coordinates, contour, learning curves, Pareto.

Each builder takes the report's :class:`~nemo_rl_hpo.report.context.Ctx` and returns the plotly
figure and its matplotlib twin, or raises ``SkipPlot`` saying why it cannot be drawn yet. Costs
are bounded for large studies: the contour is interpolated on a fixed grid and the learning
curves are one trace (one line collection) per state, not one per trial.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from nemo_rl_hpo.report.context import Ctx, Figures, SkipPlot, first_axes_figure

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger(__name__)

MAX_PLOT_PARAMS = 8  # slice and parallel coordinates show the most important parameters


def history_figure(ctx: Ctx, i: int) -> Figures:
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as mvis

    if not ctx.done:
        raise SkipPlot("no complete trial yet")
    name = ctx.info.objectives[i]
    fig = vis.plot_optimization_history(ctx.study, target=ctx.target(i), target_name=name)
    ax = mvis.plot_optimization_history(ctx.study, target=ctx.target(i), target_name=name)
    return fig, first_axes_figure(ax)


def parallel_figure(ctx: Ctx) -> Figures:
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as mvis

    # Parameters every complete trial has: Optuna's plot leaves out a trial lacking one.
    params = ctx.shared_params or ctx.top_params
    return _optuna_pair(ctx, params, vis.plot_parallel_coordinate, mvis.plot_parallel_coordinate)


def slice_figure(ctx: Ctx) -> Figures:
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as mvis

    return _optuna_pair(ctx, ctx.top_params, vis.plot_slice, mvis.plot_slice)


def _optuna_pair(
    ctx: Ctx, ranked: list[str], plotly_plot: Callable[..., Any], mpl_plot: Callable[..., Any]
) -> Figures:
    """Optuna's plotly and matplotlib plot of the most important of the ``ranked`` parameters."""
    if not ctx.done:
        raise SkipPlot("no complete trial yet")
    params = ranked[:MAX_PLOT_PARAMS]
    if not params:
        raise SkipPlot("no searched parameter")
    kwargs = {"target": ctx.target(0), "target_name": ctx.info.objectives[0]}
    return plotly_plot(ctx.study, params, **kwargs), first_axes_figure(
        mpl_plot(ctx.study, params, **kwargs)
    )


def contour_figure(ctx: Ctx) -> Figures:
    import optuna.visualization.matplotlib as mvis

    if len(ctx.done) < 2:
        raise SkipPlot(f"needs at least 2 complete trials (have {len(ctx.done)})")
    params = ctx.shared_params[:2]
    if len(params) < 2:
        raise SkipPlot("needs two parameters present in every complete trial")
    name = ctx.info.objectives[0]
    fig = _contour_plotly(ctx.done, params[0], params[1], name)
    ax = mvis.plot_contour(ctx.study, params, target=ctx.target(0), target_name=name)
    return fig, first_axes_figure(ax)


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


def intermediate_figure(ctx: Ctx) -> Figures:
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


def pareto_figure(ctx: Ctx) -> Figures:
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as mvis

    n = len(ctx.info.objectives)
    if n > 3:
        raise SkipPlot(f"a Pareto plot shows 2 or 3 objectives (this study has {n})")
    if not ctx.done:
        raise SkipPlot("no complete trial yet")
    fig = vis.plot_pareto_front(ctx.study, target_names=ctx.info.objectives)
    ax = mvis.plot_pareto_front(ctx.study, target_names=ctx.info.objectives)
    return fig, first_axes_figure(ax)


def hypervolume_figure(ctx: Ctx) -> Figures:
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as mvis

    if not ctx.done:
        raise SkipPlot("no complete trial yet")
    ref = reference_point([t.values for t in ctx.done], ctx.study.directions)
    fig = vis.plot_hypervolume_history(ctx.study, ref)
    ax = mvis.plot_hypervolume_history(ctx.study, ref)
    ref_text = ", ".join(f"{n}={r:.4g}" for n, r in zip(ctx.info.objectives, ref, strict=True))
    fig.update_layout(title=f"Hypervolume history (reference point {ref_text})")
    return fig, first_axes_figure(ax)
