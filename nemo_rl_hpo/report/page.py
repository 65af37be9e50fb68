"""The report's HTML: one page per plot, ``index.html`` with every plot under a summary.

plotly.js (~4.8 MB) is written once per report dir as ``plotly.min.js`` and every page loads it
by a relative path, as plotly's ``include_plotlyjs="directory"`` does: the report still opens
offline (from a cluster's file system, or copied as a folder), and a 20-trial report is a few MB
instead of one plotly.js per page. The PNGs are the single-file alternative.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nemo_rl_hpo.fidelity import history
from nemo_rl_hpo.report import cost_figures, files
from nemo_rl_hpo.report.context import Ctx, PlotEntry
from nemo_rl_hpo.report.importance import EVALUATORS, LABELS, agreement
from nemo_rl_hpo.report.trials import (
    best_trial,
    counts_by_state,
    jsonable,
    pareto_trials,
    pbt_rows,
    pbt_summary,
    reproduce_command,
    trial_params,
)
from nemo_rl_hpo.sweep import confirm, cost, records, repeats

if TYPE_CHECKING:
    import plotly.graph_objects as go

# The name plotly's include_plotlyjs="directory" gives the bundle; pages load it from beside them.
PLOTLY_JS = "plotly.min.js"
MAX_PARETO_ROWS = 50  # rows of the Pareto table in index.html (the JSON has all)
MAX_COST_ROWS = 200  # rows of the per-trial cost table


def write_plotly_js(out: Path) -> None:
    """``out/plotly.min.js`` from the installed plotly, replaced on every report (atomically).

    plotly's own "directory" mode keeps an existing file, which after a plotly upgrade would
    pair new figures with an old plotly.js.
    """
    import plotly.offline

    files.write_text(out / PLOTLY_JS, plotly.offline.get_plotlyjs())


def plot_page(fig: go.Figure) -> str:
    """A plot's own page: the figure, loading ``plotly.min.js`` from beside it."""
    # A str ending in .js becomes <script src="plotly.min.js">: relative, so offline.
    text: str = fig.to_html(include_plotlyjs=PLOTLY_JS, full_html=True)
    return text


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


def _summary_html(ctx: Ctx) -> str:
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
            head: list[tuple[str, Any]] = [("trial", best.number), (info.objectives[0], best.value)]
            if spread := repeats.spread(best):  # the value aggregates these seeds
                head.append(("seeds", spread))
                head += [
                    (f"seed {r['seed']}", (r.get("values") or ["-"])[0])
                    for r in repeats.seed_records(best)
                ]
            parts.append(_table(head))
            parts.append(_table(list(trial_params(best).items()), ["parameter", "value"]))
            parts.append(f"<p>Reproduce:</p><pre>{_e(reproduce_command(info, best))}</pre>")
        parts.append(_confirmation_html(ctx))
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
    if ctx.info.fidelity:
        parts.append(_fidelity_html(ctx, ctx.info.fidelity))
    if ctx.costs:
        total = cost.combined(ctx.costs.values())
        unit = cost_figures.unit_of(ctx.costs)
        parts.append(f"<h2>Cost ({_e(unit)}, every trial's jobs)</h2>")
        parts.append(
            _table(
                [
                    ("GPU-hours", round(total.gpu_hours, 6)),
                    ("CPU-hours", round(total.cpu_hours, 6)),
                    ("in flight (GPU-hours)", round(total.in_flight_gpu_s / 3600, 6)),
                ]
            )
        )
        header, rows = cost_figures.cost_rows(ctx)
        parts.append(_table(rows[:MAX_COST_ROWS], header))
        if len(rows) > MAX_COST_ROWS:
            parts.append(f'<p class="note">{len(rows) - MAX_COST_ROWS} more in the JSON.</p>')
    parts.append("<h2>Top importances</h2>")
    parts.append(_agreement_html(ctx))
    for name in EVALUATORS:
        label = LABELS[name]
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


def _confirmation_html(ctx: Ctx) -> str:
    """The test-seed re-runs of the top configurations and the pick they make (if any ran)."""
    confirmed = confirm.read_confirmation(ctx.study, ctx.trials)
    if confirmed is None:
        return ""
    obj = ctx.info.objectives[0]
    seeds = confirmed.settings.get("test_seeds")
    parts = [f"<h2>Confirmation on test seeds {_e(seeds)}</h2>"]
    rows = [
        (
            r.trial.number,
            r.tuning_value,
            r.mean_text(),
            r.n,
            r.rank_before,
            r.rank_after if r.rank_after is not None else "-",
            "pick" if confirmed.pick is r else "",
        )
        for r in confirmed.rows
    ]
    head = ["trial", f"tuning {obj}", f"test mean ± 95 % ({obj})", "test seeds",
            "rank before", "rank after", ""]  # fmt: skip
    parts.append(_table(rows, head))
    if confirmed.optimism is not None:
        parts.append(
            f"<p>Winner's optimism (tuning value − test mean): {_fmt(confirmed.optimism)}</p>"
        )
    if confirmed.pick is not None:
        cmd = reproduce_command(ctx.info, confirmed.pick.trial)
        parts.append(f"<p>Reproduce the confirmed pick:</p><pre>{_e(cmd)}</pre>")
    for note in (
        confirmed.note,
        f"{confirmed.missing} test job(s) without a result" if confirmed.missing else None,
    ):
        if note:
            parts.append(f'<p class="note">{_e(note)}</p>')
    return "\n".join(parts)


def _agreement_html(ctx: Ctx) -> str:
    """How sure the importance tables are: trials they rest on, the estimators' agreement."""
    rows, notes = [], []
    for a in agreement(ctx):
        rows.append(
            (
                a.objective,
                a.n_trials,
                "-" if a.rho is None else f"{a.rho:.2f}",
                "-" if a.tops is None else f"{a.tops[0]} / {a.tops[1]}",
                "yes" if a.reliable else "not yet reliable",
            )
        )
        multi = ctx.info.multi_objective
        notes += [f"{a.objective}: {n}" if multi else n for n in a.notes()]
    head = ["objective", "complete trials", "rank correlation fANOVA vs PED-ANOVA",
            "top parameter (fANOVA / PED-ANOVA)", "reliable"]  # fmt: skip
    out = [_table(rows, head)]
    out += [f'<p class="note importance-warning">{_e(n)}</p>' for n in notes]
    return "\n".join(out)


MAX_FIDELITY_ROWS = 200


def _fidelity_html(ctx: Ctx, fid: dict[str, Any]) -> str:
    """Pause and promote: the schedule, and each trial's segments (docs/fidelity.md)."""
    kind = "hyperband" if fid.get("brackets", 1) > 1 else "asha"
    n_paused, held = history.held_by_paused(ctx.trials)
    rows = []
    for t in sorted(ctx.trials, key=lambda t: -len(history.segments(t))):
        segs = history.segments(t)
        if not segs:
            continue
        path = " → ".join(f"{s['step']}: {_fmt(s['value'])} (job {s.get('job')})" for s in segs)
        end = t.user_attrs.get(records.FIDELITY_END) or (
            f"paused at {history.paused_step(t)}" if records.is_paused(t) else t.state.name
        )
        rows.append((t.number, path, round(history.paused_s(t), 1), end))
    parts = [
        f"<h2>Pause and promote ({_e(kind)})</h2>",
        f"<p>rungs {_e(fid.get('rungs'))} of {_e(fid.get('step_key'))}, η="
        f"{_e(fid.get('reduction_factor'))}, {_e(fid.get('mode'))}; {n_paused} paused now, "
        f"their checkpoints hold {_e(history.human(held))}</p>",
        _table(rows[:MAX_FIDELITY_ROWS], ["trial", "segments (step: value)", "paused s", "end"]),
    ]
    if len(rows) > MAX_FIDELITY_ROWS:
        parts.append(f'<p class="note">{len(rows) - MAX_FIDELITY_ROWS} more in the JSON.</p>')
    return "\n".join(parts)


def index_html(ctx: Ctx, entries: list[PlotEntry]) -> str:
    """The summary and every drawn plot, or the reason it was skipped."""
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
        f'<script charset="utf-8" src="{PLOTLY_JS}"></script></head><body>\n'
        + "\n".join(body)
        + "\n</body></html>\n"
    )
