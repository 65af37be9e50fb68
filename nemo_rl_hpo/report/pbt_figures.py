"""Population-based training figures: who exploited whom, and each hyperparameter's schedule.

Drawn from the ``pbt:*`` attributes a PBT sweep records on every round's trial (member, round,
parent, params); the best member's ancestry and schedule are drawn in red.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nemo_rl_hpo.report.context import Ctx, Figures, SkipPlot
from nemo_rl_hpo.report.trials import pbt_rows, pbt_summary
from nemo_rl_hpo.sweep import records


def lineage_figure(ctx: Ctx) -> Figures:
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    rows = [t for t in pbt_rows(ctx.trials) if t.values]
    if not rows:
        raise SkipPlot("no finished PBT round yet")
    pos = {
        (int(t.user_attrs[records.PBT_MEMBER]), int(t.user_attrs.get(records.PBT_ROUND, 0))): t
        for t in rows
    }
    summary = pbt_summary(ctx.trials, ctx.study.directions[0])
    best_path = {(s["member"], s["round"]) for s in (summary or {}).get("schedule", [])}
    fig = go.Figure()
    mfig = Figure(figsize=(8.0, 5.0), dpi=100)
    ax = mfig.add_subplot()
    for (member, rnd), t in sorted(pos.items()):
        parent = t.user_attrs.get(records.PBT_PARENT)
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


def schedules_figure(ctx: Ctx) -> Figures:
    from matplotlib.figure import Figure
    from plotly.subplots import make_subplots

    rows = pbt_rows(ctx.trials)
    if not rows:
        raise SkipPlot("no PBT round yet")
    names: list[str] = []
    for t in rows:
        for k in t.user_attrs.get(records.PBT_PARAMS) or {}:
            if k not in names:
                names.append(k)
    if not names:
        raise SkipPlot("no trial recorded pbt:params")
    summary = pbt_summary(ctx.trials, ctx.study.directions[0])
    best = summary["schedule"] if summary else []
    members = sorted({int(t.user_attrs[records.PBT_MEMBER]) for t in rows})
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, subplot_titles=names)
    mfig = Figure(figsize=(8.0, 2.2 * len(names) + 1.0), dpi=100)
    axes = mfig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for j, name in enumerate(names):
        ax = axes[j]
        for m in members:
            pts = sorted(
                (
                    int(t.user_attrs.get(records.PBT_ROUND, 0)),
                    (t.user_attrs.get(records.PBT_PARAMS) or {}).get(name),
                )
                for t in rows
                if int(t.user_attrs[records.PBT_MEMBER]) == m
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
        if _log_scaled([(t.user_attrs.get(records.PBT_PARAMS) or {}).get(name) for t in rows]):
            ax.set_yscale("log")
            fig.update_yaxes(type="log", row=j + 1, col=1)
    axes[-1].set_xlabel("round")
    axes[0].legend(fontsize=8)
    mfig.suptitle("PBT hyperparameter schedules (red: the best member's)")
    fig.update_layout(title="PBT hyperparameter schedules", height=260 * len(names) + 120)
    mfig.tight_layout()
    return fig, mfig
