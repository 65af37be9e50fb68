"""Hyperparameter importance: PED-ANOVA and fANOVA per objective, computed once per report.

The ranking orders the parameters every other plot shows (slice, parallel coordinates, contour).
Costs are bounded for large studies: fANOVA sees at most ``MAX_IMPORTANCE_TRIALS`` random
complete trials with capped trees.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from nemo_rl_hpo.report.context import Ctx, Figures, SkipPlot, param_order

# fANOVA's forest costs ~1.3 s for 1,000 trials x 16 trees of depth 8 on one core here; its
# ranking on 1,000 random complete trials matched the one on all 4,000 of the benchmark study.
MAX_IMPORTANCE_TRIALS = 1000
FANOVA_TREES = 16
FANOVA_DEPTH = 8

# How sure the tables are (bench/importance_stability.py, bench/README.md): on 270 recorded GRPO
# trials, the top parameter of n random trials matched the one of all 270 in 35 % (fANOVA) / 25 %
# (PED-ANOVA) of 20 draws at n=30, 55/60 % at 50, 75/75 % at 80 and 100/90 % at 120; the rank
# correlation with the full ranking stayed at or below 0.5 up to 50 trials. On synthetic problems
# (mixed, Hartmann-6) it took 120 trials or more. Below this many complete trials a table is
# marked "not yet reliable".
RELIABLE_MIN_TRIALS = 80
# The two estimators answer different questions (fANOVA: what moves the value across the whole
# space; PED-ANOVA: what the best 10 % share). On all 270 GRPO trials they still named different
# tops (fANOVA num_generations_per_prompt 0.57, PED-ANOVA lr 0.61; rank correlation 0.45); on
# Hartmann-6 they converged to 0.94. Below 0.3, or with different tops, the page says so.
DISAGREE_BELOW = 0.3

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


def spearman(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Spearman's rank correlation of two importance tables over their parameters (a parameter
    one table lacks counts as 0 there); 1.0 when fewer than 2 parameters or no spread."""
    from scipy.stats import spearmanr

    keys = sorted(set(a) | set(b))
    xs = [float(a.get(k, 0.0)) for k in keys]
    ys = [float(b.get(k, 0.0)) for k in keys]
    if len(keys) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return 1.0
    return float(spearmanr(xs, ys).statistic)


@dataclass(frozen=True)
class Agreement:
    """How far one objective's importance tables can be trusted."""

    objective: str
    n_trials: int  # complete trials the tables rest on
    rho: float | None  # Spearman rank correlation of fANOVA and PED-ANOVA (None: one missing)
    tops: tuple[str, str] | None  # (fANOVA's, PED-ANOVA's) most important parameter

    @property
    def reliable(self) -> bool:
        return self.n_trials >= RELIABLE_MIN_TRIALS

    @property
    def disagree(self) -> bool:
        if self.rho is None or self.tops is None:
            return False
        return self.rho < DISAGREE_BELOW or self.tops[0] != self.tops[1]

    def notes(self) -> list[str]:
        """What the page says next to the tables (empty: nothing to warn about)."""
        out = []
        if not self.reliable:
            out.append(
                f"not yet reliable: these rest on {self.n_trials} complete trials; on recorded "
                "GRPO sweeps, the top parameter of 50 random trials matched the top of all 270 "
                f"in about half the draws, of {RELIABLE_MIN_TRIALS} in 3 of 4 "
                "(bench/importance_stability.py)"
            )
        if self.disagree and self.rho is not None and self.tops is not None:
            out.append(
                f"the estimators disagree: rank correlation {self.rho:.2f}; fANOVA ranks "
                f"{self.tops[0]} first (what moves the value across the whole space), "
                f"PED-ANOVA {self.tops[1]} (what the best 10 % of trials share); read neither "
                "table's top as a fact"
            )
        return out


def agreement(ctx: Ctx) -> list[Agreement]:
    """Per objective: trials, rank correlation and top parameters of the two estimators."""
    out = []
    for obj in ctx.info.objectives:
        fan = ctx.importances.get("fanova", {}).get(obj)
        ped = ctx.importances.get("ped_anova", {}).get(obj)
        rho = spearman(fan, ped) if fan and ped else None
        tops = (_top(fan), _top(ped)) if fan and ped else None
        out.append(Agreement(obj, len(ctx.done), rho, tops))
    return out


def _top(imp: Mapping[str, float]) -> str:
    return max(imp, key=lambda k: (imp[k], k))


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
