"""``hydra/sweeper=pbt``: a thin Hydra Sweeper forwarding to the PBT implementation."""

from __future__ import annotations

from hydra_plugins.nemo_rl_hpo._forwarding import ForwardingSweeper


class PBTSweeper(ForwardingSweeper):
    """Population-based training with checkpoint exploit/explore over any launcher."""

    implementation = "hydra_plugins.nemo_rl_hpo._pbt_sweep:PBTSweeperImpl"
