"""Synthetic search problems (define-by-run, minimize), written for Optuna 2.10 and 5 alike.

Each problem is ``fn(trial) -> float`` using only ``suggest_float/int/categorical``; the
conditional ones sample a parameter only when its group option is chosen, exactly as our
sweeper's define-by-run space does (``nemo_rl_hpo.search.space.SearchSpace.suggest``).
``OPTIMA`` gives the known minimum (value reported as regret = value - minimum).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Trial = Any  # optuna.Trial of whichever Optuna version runs this

# Hartmann 6-D: the standard multimodal continuous benchmark, minimum -3.32237 on [0, 1]^6.
_H_ALPHA = [1.0, 1.2, 3.0, 3.2]
_H_A = [
    [10, 3, 17, 3.5, 1.7, 8],
    [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8],
    [17, 8, 0.05, 10, 0.1, 14],
]
_H_P = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]


def hartmann6(trial: Trial) -> float:
    """Continuous, multimodal (6 local minima), 6 parameters."""
    x = [trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(6)]
    total = 0.0
    for a, row, p in zip(_H_ALPHA, _H_A, _H_P, strict=True):
        total += a * math.exp(-sum(r * (xi - pi) ** 2 for r, xi, pi in zip(row, x, p, strict=True)))
    return -total


_KINDS = {  # option -> (offset, centre of its continuous optimum, best integer)
    "relu": (0.5, (2.0, -1.0, 0.5), 3),
    "gelu": (0.0, (-2.5, 1.5, -0.5), 7),
    "tanh": (1.0, (0.0, 0.0, 0.0), 5),
    "silu": (0.25, (3.5, 3.5, -3.5), 9),
}


def mixed(trial: Trial) -> float:
    """Categorical + continuous + integer: each category moves the continuous optimum."""
    kind = trial.suggest_categorical("activation", list(_KINDS))
    offset, centre, best_n = _KINDS[kind]
    xs = [trial.suggest_float(f"x{i}", -5.0, 5.0) for i in range(3)]
    n = trial.suggest_int("layers", 1, 12)
    bowl = sum((x - c) ** 2 for x, c in zip(xs, centre, strict=True)) / 10.0
    ripple = 0.1 * sum(
        1.0 - math.cos(2.0 * math.pi * (x - c)) for x, c in zip(xs, centre, strict=True)
    )
    return float(offset + bowl + ripple + 0.05 * abs(n - best_n))


def conditional(trial: Trial) -> float:
    """Shaped like conf/search/default.yaml: group choices with keys only some options have.

    SGD is the best branch but only with momentum near 0.95 and a high learning rate; Adam is
    easy to make decent. The step scheduler and focal loss are best only when their own
    parameters are tuned.
    """
    lr = trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True)
    wd = trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True)
    dropout = trial.suggest_float("dropout", 0.0, 0.5)
    warmup = trial.suggest_int("warmup_steps", 0, 200)
    opt = trial.suggest_categorical("optimizer", ["adam", "adamw", "sgd"])
    llr = math.log10(lr)
    if opt == "sgd":
        momentum = trial.suggest_float("optimizer.momentum", 0.8, 0.99)
        nesterov = trial.suggest_categorical("optimizer.nesterov", [True, False])
        v = 0.02 + 60.0 * (momentum - 0.95) ** 2 + (0.0 if nesterov else 0.03)
        v += 0.6 * (llr + 1.7) ** 2
    elif opt == "adam":
        v = 0.10 + 0.5 * (llr + 2.8) ** 2 + 0.02 * (math.log10(wd) + 4.0) ** 2 / 4.0
    else:
        v = 0.08 + 0.5 * (llr + 2.6) ** 2 + 0.06 * (math.log10(wd) + 2.0) ** 2 / 4.0
    if llr > -2.2:  # high rates need warm-up
        v += 0.1 * (llr + 2.2) * (1.0 - warmup / 200.0)
    sched = trial.suggest_categorical("scheduler", ["cosine", "linear", "step", "plateau"])
    if sched == "step":
        size = trial.suggest_int("scheduler.step_size", 50, 350, step=50)
        gamma = trial.suggest_float("scheduler.gamma", 0.1, 0.9)
        v += -0.02 + 0.2 * ((size - 250) / 300.0) ** 2 + 0.15 * (gamma - 0.3) ** 2
    else:
        v += {"cosine": 0.0, "linear": 0.01, "plateau": 0.03}[sched]
    loss = trial.suggest_categorical("loss", ["cross_entropy", "focal", "label_smoothing"])
    if loss == "focal":
        alpha = trial.suggest_float("loss.alpha", 0.1, 1.0)
        lgamma = trial.suggest_float("loss.gamma", 1.0, 5.0)
        v += -0.01 + 0.06 * (lgamma - 2.0) ** 2 / 9.0 + 0.06 * (alpha - 0.25) ** 2
    elif loss == "label_smoothing":
        ls = trial.suggest_float("loss.label_smoothing", 0.0, 0.3)
        v += 0.005 + 0.3 * (ls - 0.1) ** 2
    else:
        v += 0.02
    return float(v + 0.1 * (dropout - 0.15) ** 2)


def lr_log(trial: Trial) -> float:
    """Log-scale rates over 6 decades with a divergence cliff just above the best rate."""
    lr = trial.suggest_float("learning_rate", 1e-6, 1.0, log=True)
    wd = trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)
    batch = trial.suggest_categorical("batch_size", [16, 32, 64, 128])
    warmup = trial.suggest_int("warmup_steps", 0, 500)
    one_minus_beta2 = trial.suggest_float("one_minus_beta2", 1e-4, 1e-1, log=True)
    eff = math.log10(lr * math.sqrt(batch / 32.0))
    if eff > -2.0 + 0.6 * warmup / 500.0:  # diverged: the loss of an untrained model
        return 5.0
    v = 0.3 + 0.5 * (eff + 1.9) ** 2
    v += 0.05 * (math.log10(wd) + 3.5) ** 2 / 4.0
    v += 0.04 * (math.log10(one_minus_beta2) + 2.5) ** 2
    v += 0.02 * abs(math.log2(batch / 64.0))
    return float(v + 0.02 * warmup / 500.0)


PROBLEMS: dict[str, Callable[[Trial], float]] = {
    "hartmann6": hartmann6,
    "mixed": mixed,
    "conditional": conditional,
    "lr_log": lr_log,
}

# Known minima (lr_log/conditional: computed by hand from the formulas above).
OPTIMA: dict[str, float] = {
    "hartmann6": -3.32237,
    "mixed": 0.0,
    # sgd, momentum .95, nesterov, lr 10^-1.7 with warm-up 200, step scheduler tuned
    # (-0.02), focal tuned (-0.01), dropout .15
    "conditional": 0.02 - 0.02 - 0.01,
    # eff = -1.9 needs warm-up >= 83 (cost 0.02 * 83/500), wd 10^-3.5, 1-beta2 10^-2.5, batch 64
    "lr_log": 0.3 + 0.02 * 83.34 / 500.0,
}
