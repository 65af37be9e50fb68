"""Hyperparameter importance: PED-ANOVA and fANOVA per objective, computed once per report.

The ranking orders the parameters every other plot shows (slice, parallel coordinates, contour).
Costs are bounded for large studies: fANOVA sees at most ``MAX_IMPORTANCE_TRIALS`` random
complete trials with capped trees.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Callable

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from nemo_rl_hpo.report.context import Ctx, Figures, SkipPlot, param_order

# fANOVA's forest costs ~1.3 s for 1,000 trials x 16 trees of depth 8 on one core here; its
# ranking on 1,000 random complete trials matched the one on all 4,000 of the benchmark study.
MAX_IMPORTANCE_TRIALS = 1000
FANOVA_TREES = 16
FANOVA_DEPTH = 8

EVALUATORS = ("ped_anova", "fanova")
LABELS = {"ped_anova": "PED-ANOVA", "fanova": "fANOVA"}

SPARSE = re.compile(r"regimes for parameter `([^`]+)` have less than")


def compute_importances(ctx: Ctx) -> None:
    """PED-ANOVA on every complete trial, fANOVA on a capped random subsample, per objective."""
    all_params, _ = param_order(ctx.done)
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


def rank_params(ctx: Ctx) -> None:
    """Order the parameters by importance on the first objective (fANOVA's, else PED-ANOVA's)."""
    all_params, shared = param_order(ctx.done)
    first = ctx.info.objectives[0]
    ranking: dict[str, float] = {}
    for name in ("fanova", "ped_anova"):
        if name in ctx.importances and ctx.importances[name].get(first):
            ranking = ctx.importances[name][first]
            break
    order = sorted(all_params, key=lambda k: -ranking.get(k, -1.0))
    ctx.top_params = order
    ctx.shared_params = [k for k in order if k in shared]


def importance_figure(ctx: Ctx, evaluator: str) -> Figures:
    """One horizontal bar per parameter, grouped by objective."""
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
    label = LABELS[evaluator]
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
