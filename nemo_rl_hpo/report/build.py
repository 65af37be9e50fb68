"""``build_report``: the study report, each plot as an offline HTML page (plotly) and a PNG
(matplotlib).

    nemo-rl-hpo report multirun/2026-11-28/12-00-00     # -> <sweep dir>/report/index.html

Everything works from a snapshot of the study taken at the start, so a report drawn while trials
run is consistent; a plot that cannot be drawn yet (too few trials, one parameter) is skipped
with a note in ``index.html``, never an exception. This module plans and writes the plots; the
families live beside it: :mod:`.importance`, :mod:`.figures`, :mod:`.pbt_figures`, and
:mod:`.page` (the HTML, which loads one ``plotly.min.js`` per report dir by a relative path).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna

from nemo_rl_hpo.report import cost_figures, figures, files, pbt_figures
from nemo_rl_hpo.report.context import Ctx, Figures, PlotEntry, SkipPlot, snapshot
from nemo_rl_hpo.report.importance import compute_importances, importance_figure, rank_params
from nemo_rl_hpo.report.page import index_html, plot_page, write_plotly_js
from nemo_rl_hpo.report.trials import SweepInfo, complete_trials, pbt_rows
from nemo_rl_hpo.sweep import cost

log = logging.getLogger(__name__)

Build = Callable[[], Figures]


def _save(entry: PlotEntry, build: Build, out: Path) -> None:
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
    files.write_text(out / f"{entry.stem}.html", plot_page(fig))
    buf = io.BytesIO()
    mfig.savefig(buf, format="png", dpi=100)
    plt.close("all")
    files.write_bytes(out / f"{entry.stem}.png", buf.getvalue())
    entry.files = [f"{entry.stem}.html", f"{entry.stem}.png"]


def _plan(ctx: Ctx) -> list[tuple[PlotEntry, Build]]:
    """Which plots this study gets, in the order ``index.html`` shows them."""
    plan: list[tuple[PlotEntry, Build]] = []
    for i, name in enumerate(ctx.info.objectives):
        stem = "history" if not ctx.info.multi_objective else f"history_{_slug(name)}"
        plan.append(
            (
                PlotEntry(stem, f"Optimization history: {name}"),
                _bind(figures.history_figure, ctx, i),
            )
        )
    plan.append(
        (
            PlotEntry("anytime", "Best so far against compute (GPU- or CPU-hours)"),
            lambda: cost_figures.anytime_figure(ctx),
        )
    )
    plan += [
        (
            PlotEntry("importance_ped_anova", "Importance (PED-ANOVA)"),
            lambda: importance_figure(ctx, "ped_anova"),
        ),
        (
            PlotEntry("importance_fanova", "Importance (fANOVA)"),
            lambda: importance_figure(ctx, "fanova"),
        ),
        (
            PlotEntry("parallel_coordinate", "Parallel coordinates"),
            lambda: figures.parallel_figure(ctx),
        ),
        (PlotEntry("slice", "Slice"), lambda: figures.slice_figure(ctx)),
        (
            PlotEntry("contour", "Contour of the two most important parameters"),
            lambda: figures.contour_figure(ctx),
        ),
        (
            PlotEntry("intermediate_values", "Intermediate values"),
            lambda: figures.intermediate_figure(ctx),
        ),
    ]
    if ctx.info.multi_objective:
        plan += [
            (PlotEntry("pareto_front", "Pareto front"), lambda: figures.pareto_figure(ctx)),
            (
                PlotEntry("hypervolume_history", "Hypervolume history"),
                lambda: figures.hypervolume_figure(ctx),
            ),
        ]
    if ctx.info.kind == "pbt" or pbt_rows(ctx.trials):
        plan += [
            (PlotEntry("pbt_lineage", "PBT lineage"), lambda: pbt_figures.lineage_figure(ctx)),
            (
                PlotEntry("pbt_schedules", "PBT schedules"),
                lambda: pbt_figures.schedules_figure(ctx),
            ),
        ]
    return plan


def _bind(fn: Callable[[Ctx, int], Figures], ctx: Ctx, i: int) -> Build:
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
    """Write every plot (HTML + PNG), ``plotly.min.js`` and ``index.html`` into ``out_dir``.

    Returns the path of ``index.html``; ``timings.json`` beside it says where the time went.
    """
    import matplotlib

    matplotlib.use("Agg")
    # matplotlib logs at INFO for every categorical axis whose labels look numeric (batch_size)
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_plotly_js(out)  # first: a page opened while the report is written finds it
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
        snap = snapshot(study, trials)
        info = SweepInfo.from_study(study)
        costs = cost.trial_totals(study._storage.get_study_system_attrs(study._study_id))
        ctx = Ctx(study=snap, trials=trials, done=complete_trials(trials), info=info, costs=costs)
        timings["snapshot"] = time.perf_counter() - tick
        tick = time.perf_counter()
        compute_importances(ctx)
        rank_params(ctx)
        timings["importance"] = time.perf_counter() - tick
        entries = []
        for entry, build in _plan(ctx):
            tick = time.perf_counter()
            _save(entry, build, out)
            timings[entry.stem] = time.perf_counter() - tick
            entries.append(entry)
    tick = time.perf_counter()
    index = out / "index.html"
    files.write_text(index, index_html(ctx, entries))
    timings["index"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - t0
    files.write_text(out / "timings.json", json.dumps({k: round(v, 3) for k, v in timings.items()}))
    log.info("report: %s (%.1f s)", index, timings["total"])
    return index
