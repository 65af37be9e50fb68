"""Load held, at the reduced size CI can afford: bench/load.py's own runs and invariants.

The full benchmark (``python bench/load.py``: 1,000 trials on ``pool``, 4 sweepers sharing a
budget of 1,000 on one PostgreSQL study) takes an hour on 2 cores; here each part runs 200 trials
through the same code and must hold the same invariants: 0 lost, 0 duplicated, 0 left RUNNING,
the sweeper's RSS growth < 100 MB, the proposal's CPU time at the end within 2x of at trial 100.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import load  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]


def _assert_held(part: dict, budget: int) -> None:
    assert load.held(part) == [], part
    # Every trial of the budget ran exactly once and was recorded COMPLETE.
    assert part["jobs_run"] == budget and part["states"].get("COMPLETE") == budget, part


def test_pool_200_trials_n_jobs_8_lose_nothing(tmp_path: Path) -> None:
    part = load.run_pool(200, 8, tmp_path, timeout=600)
    _assert_held(part, 200)
    assert part["sweepers"][0]["proposals"] >= 200


@pytest.mark.postgres
def test_four_sweepers_share_a_200_trial_postgres_study(postgres_url: str, tmp_path: Path) -> None:
    part = load.run_postgres(200, 4, tmp_path, timeout=600)
    _assert_held(part, 200)
    # All four took part: each proposed some of the shared budget.
    assert all(s["proposals"] > 0 for s in part["sweepers"]), part["sweepers"]
