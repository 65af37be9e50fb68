"""Multi-fidelity scheduling that pauses instead of killing: ASHA and asynchronous Hyperband.

A trial runs with its full-length config and stops at a rung, leaving a checkpoint and its
value there; its job ends and the slot frees. When a worker frees up, the best paused trial in
the top ``1/η`` of its rung is promoted (a new job that resumes from the checkpoint and runs to
the next rung), else a new configuration starts. One configuration is one Optuna trial however
many segments it runs. Design and settings: docs/fidelity.md.

- :class:`Scheduler`, :class:`FidelitySettings`, :class:`Record`: the decisions, Hydra- and
  storage-free (a simulator drives them directly).
- :class:`FidelityProposer`: the proposer for the shared trial loop (``sweep/core.py``).
- :class:`RungSampler`: any Optuna sampler, fitted on the highest rung with enough values.
- ``segment``: the job side (pause at the rung); ``_claims``: the atomic promotion claim.
"""

from __future__ import annotations

from nemo_rl_hpo.fidelity._schedule import (
    FidelityError,
    FidelitySettings,
    Promotion,
    Record,
    Scheduler,
    records_from,
)

__all__ = [
    "FidelityError",
    "FidelityProposer",
    "FidelitySettings",
    "Promotion",
    "Record",
    "RungSampler",
    "Scheduler",
    "records_from",
]


def __getattr__(name: str) -> object:
    # The proposer and sampler import optuna; jobs import this package for ``segment`` only.
    if name == "FidelityProposer":
        from nemo_rl_hpo.fidelity._proposer import FidelityProposer

        return FidelityProposer
    if name == "RungSampler":
        from nemo_rl_hpo.fidelity._sampler import RungSampler

        return RungSampler
    raise AttributeError(name)
