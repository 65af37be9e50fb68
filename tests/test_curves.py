"""The learning-curve tables of bench/ are the live trial: a random record re-runs the same.

bench/simulate.py replays sweeps on bench/data/*.jsonl.gz instead of training; its results mean
something only if a table's record is what the trial computes today. One random record of each
committed table is run again, live, with its recorded thread count, through the trial's own
function (composed with Hydra, as a sweep job is); every validation value, the train metrics
of every step and the returned metrics must match the table to 1e-6.
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import curves  # noqa: E402

TABLES = sorted((ROOT / "bench" / "data").glob("*.jsonl.gz"))


def _close(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
        return
    fa, fb = float(a), float(b)
    if math.isnan(fa) and math.isnan(fb):
        return
    assert abs(fa - fb) <= 1e-6 * max(1.0, abs(fa)), f"{where}: table {fa!r}, live {fb!r}"


@pytest.mark.parametrize("table", TABLES, ids=lambda p: p.name.split(".")[0])
def test_a_random_record_reruns_to_the_same_numbers(table: Path) -> None:
    import torch

    records = [r for r in curves.read_table(table) if not r.get("fixed")]
    if not records:
        pytest.fail(f"{table} holds no full-length record")
    seed = random.SystemRandom().randrange(2**32)
    rec = random.Random(seed).choice(records)
    where = f"{table.name} record {rec['key']} seed {rec['seed']} (pick seed {seed})"
    assert rec["torch"] == torch.__version__, f"{where}: recorded with torch {rec['torch']}"
    kind = curves.TRIALS[rec["trial"]]
    threads = torch.get_num_threads()
    torch.set_num_threads(int(rec["threads"]))
    try:
        with curves.Composer() as composer:
            live = curves.run_record(
                composer, kind, rec["overrides"], int(rec["seed"]), rec.get("fixed", [])
            )
    finally:
        torch.set_num_threads(threads)
    assert live["error"] == rec["error"], where
    assert live["threads"] == rec["threads"], where
    _close(rec["curve"], live["curve"], f"{where}: curve")
    _close(rec["val"], live["val"], f"{where}: validation metrics")
    _close(rec["train"], live["train"], f"{where}: train metrics")
    final = {k: v for k, v in rec["final"].items() if k != "train_time_s"}  # a wall clock
    _close(final, {k: live["final"][k] for k in final}, f"{where}: returned metrics")


def test_a_pbt_replay_runs_the_real_population_on_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench/simulate.py's PBT drives nemo_rl_hpo.pbt's scheduler: every member reaches the full
    length, bottom members exploit (their schedule switches configuration), and the value each
    member reported is its schedule replayed on the table by bench/_pbt_curve.py."""
    import logging

    import optuna
    import simulate

    from nemo_rl_hpo.sweep import context

    # the replay's seam (a job finds its trial in the in-memory study) and the log levels its
    # workers quieten: undone after the test
    monkeypatch.setattr(context, "open_trial", context.open_trial)
    verbosity = optuna.logging.get_verbosity()
    levels = {n: logging.getLogger(n).level for n in ("optuna", "nemo_rl_hpo", "hydra_plugins")}
    table_path = ROOT / "bench" / "data" / "supervised.jsonl.gz"
    simulate._init(str(table_path), 106)
    w = simulate._WORKER
    table = w["table"]
    test = [table.seeds[1]]
    budget = 10.0  # full runs: a population of 8 members (4 workers)
    try:
        res = simulate._task(
            (
                "pbt",
                simulate.CONTENDERS["pbt"],
                0,
                4,
                budget * table.full_run_s,
                0,
                test,
                budget,
                [],
            )
        )
    finally:
        w["composer"].__exit__(None, None, None)  # Hydra's global state back
        optuna.logging.set_verbosity(verbosity)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    assert len(res.finished) == 8
    schedules = [simulate.pc.parse_key(f["key"]) for f in res.finished]
    assert any(len(s) > 1 and s[-1][0] > 0 for s in schedules), "no member exploited"
    for f in res.finished:
        assert f["value"] == table.final(f["key"], table.seeds[0])
    assert res.incumbents and table.true_quality(res.incumbents[-1][1], test) < math.inf


def test_a_confirmation_replay_picks_the_best_candidate_on_the_confirmation_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A contender with ``hydra.sweeper.confirm.*`` runs the sweeper's own confirmation stage
    after its search (bench/_confirm_stage.py): the candidates are the top-k tuning values of
    the search, each is recorded on the study as a confirmation job would record it, and the
    pick is the candidate whose final objective on the confirmation seed is best - not the
    search's own best. The search stops early enough to leave the budget for the stage."""
    import logging

    import optuna
    import simulate

    from nemo_rl_hpo.sweep import context

    monkeypatch.setattr(context, "open_trial", context.open_trial)
    monkeypatch.setattr(context, "open_study", context.open_study)
    verbosity = optuna.logging.get_verbosity()
    levels = {n: logging.getLogger(n).level for n in ("optuna", "nemo_rl_hpo", "hydra_plugins")}
    simulate._init(str(ROOT / "bench" / "data" / "supervised.jsonl.gz"), 106)
    w = simulate._WORKER
    table = w["table"]
    tune, conf = table.seeds[0], table.seeds[1]
    ovs = ["hydra.sweeper.confirm.top_k=3", "hydra.sweeper.confirm.seeds=1"]
    assert simulate.confirms(ovs)
    budget = 16.0  # full runs, 3 of them the confirmation's
    try:
        res = simulate._task(
            ("c3", ovs, 9, 4, budget * table.full_run_s / 4, 100000, [conf], budget, [conf])
        )
    finally:
        w["composer"].__exit__(None, None, None)
        optuna.logging.set_verbosity(verbosity)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    assert res.confirm is not None
    done = [f for f in res.finished if f["state"] == "COMPLETE"]
    assert all(f["time"] <= (budget - 3) * table.full_run_s / 4 for f in done)
    # the candidates: the search's 3 best configurations by tuning value (lower val_loss is
    # better); trials that ran the same table configuration are one configuration
    top = []
    for f in sorted(done, key=lambda f: (f["value"], f["number"])):
        if f["key"] not in {g["key"] for g in top}:
            top.append(f)
    top = top[:3]
    assert res.confirm["candidates"] == [f["key"] for f in top]
    assert all(f["value"] == table.final(f["key"], tune) for f in top)
    # the pick: the best candidate on the confirmation seed
    want = min(top, key=lambda f: table.final(f["key"], conf))["key"]
    assert res.confirm["pick"] == want
    assert res.incumbents[-1][1] == want
    assert res.end_time > (budget - 3) * table.full_run_s / 4
    # (sampler seed 9: a sweep whose own best is not the confirmation's best)
    assert want != top[0]["key"]
