"""``hydra/sweeper=optuna``: a thin Hydra Sweeper forwarding to the implementation."""

from __future__ import annotations

from hydra_plugins.nemo_rl_hpo._forwarding import ForwardingSweeper


class OptunaSweeper(ForwardingSweeper):
    """Optuna on current versions: conditional spaces, async trials, pruning, resumable studies."""

    implementation = "hydra_plugins.nemo_rl_hpo._optuna_sweep:OptunaSweeperImpl"
