"""slurm/sbatch/node.sbatch: a whole sweep inside one 4-GPU allocation of the local Slurm.

The cluster's 4 fake GPUs (slurm/start.sh --gpus 4) make Slurm set the allocation's
CUDA_VISIBLE_DEVICES; the template shares them out, one per trial, 4 trials at a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from nemo_rl_hpo.sweep.storage import open_storage
from tests.sweeplib import APPS, REPO

pytestmark = [pytest.mark.slurm, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]


def _max_in_flight(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, d in events:
        now += d
        peak = max(peak, now)
    return peak


def test_node_template_runs_8_trials_4_at_a_time_each_on_its_own_gpu(
    slurm_cluster: str, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    env = dict(os.environ)
    env.update(
        SLURM_CONF=slurm_cluster,
        APP="app.py",
        VENV=str(Path(sys.executable).parents[1]),
        SWEEP_DIR=str(sweep_dir),
        # Equal sleeps long enough that four trials overlap even on a busy 2-core machine.
        SWEEP_ARGS="hydra.sweeper.n_trials=8 durations=[3.0] hydra.sweeper.write_report=false",
    )
    proc = subprocess.run(
        [
            "sbatch",
            "--wait",
            "--gpus-per-node=4",
            "--cpus-per-task=2",
            "--mem=2G",
            f"--output={tmp_path / 'node.out'}",
            str(REPO / "slurm" / "sbatch" / "node.sbatch"),
        ],
        cwd=APPS / "toy",
        env=env,
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
    )
    log = (tmp_path / "node.out").read_text() if (tmp_path / "node.out").exists() else ""
    assert proc.returncode == 0, proc.stderr + log[-3000:]
    assert "4 GPUs (0,1,2,3), 4 trials at a time" in log
    study = optuna.load_study(
        study_name="app",
        storage=open_storage(f"journal://{sweep_dir / 'optuna.journal'}", existing=True),
    )
    trials = study.trials
    # Rule: all 8 trials ran and were recorded, inside the one allocation (one Slurm job).
    assert [t.state.name for t in trials] == ["COMPLETE"] * 8
    assert len({t.user_attrs["slurm_job_id"] for t in trials}) == 1
    spans = {}
    for t in trials:
        start, end = (
            float(x) for x in (Path(t.user_attrs["job_dir"]) / "slept.txt").read_text().split()
        )
        spans[t.number] = (t.user_attrs["devices"], start, end)
    # Rule: each trial ran on one GPU of its own; the four GPUs were all used.
    assert all(len(d) == 1 for d, _, _ in spans.values())
    assert {d[0] for d, _, _ in spans.values()} == {"0", "1", "2", "3"}
    for a, (da, sa, ea) in spans.items():
        for b, (db, sb, eb) in spans.items():
            if a < b and da == db:
                assert ea <= sb or eb <= sa, (a, b, spans)
    # Rule: four at a time (never more: one per GPU).
    assert _max_in_flight([(s, e) for _, s, e in spans.values()]) == 4
