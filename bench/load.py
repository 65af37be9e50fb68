"""Load held: 1,000 trials through one sweeper, and 4 sweepers sharing one PostgreSQL study.

    python bench/load.py                                # full: results/load.json
    python bench/load.py --trials 200 --pg-trials 200   # reduced
    python bench/load.py --only pool                    # one part

``pool``: ``bench/apps/trivial`` (a trivial objective), ``--trials`` trials, ``n_jobs=8`` on
``hydra/launcher=pool``, SQLite in the sweep dir. ``postgres``: 4 sweeper processes started with
the same command on one study of the throw-away PostgreSQL of ``ci/postgres.sh`` (``--pg-trials``
is the study's budget, which the sweepers share; basic launcher, one trial at a time each).

Each sweeper runs in a child process with a timing hook on the Optuna proposer's ``ask`` (the
whole proposal: budget check, storage reads, the sampler, the suggestions) that also records the
sweeper's resident memory. Per run it reports:

- lost: trials of the budget without a COMPLETE record (the app ran, or should have, and no
  result was kept); duplicated: Hydra job numbers that ran more than once, or COMPLETE trials
  whose job never ran; left RUNNING: trials still RUNNING after every sweeper exited;
- the sweeper's RSS at its proposal near trial 100 and at its last one (growth < 100 MB);
- the median proposal time with 100 to 100 + 20·k trials in the study and in the budget's last
  20·k (k sweepers; ratio <= 2), as CPU time of the proposing thread (the target) and as wall
  time (which also counts waiting for a core behind the trials' processes).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

APP = c.BENCH / "apps" / "trivial" / "app.py"
WINDOW = 20  # proposals per sweeper at each end (100.. trials, the budget's last ones)
# What sampler=auto picks at 1,000 trials; named so that a reduced run (auto: GPSampler up to
# 200 trials, seconds per proposal) measures the same sampler.
SAMPLER = "hydra/sweeper/sampler=tpe"


# ------------------------------------------------------------------- inside a sweeper child
def sweeper_child(record: str, argv: list[str]) -> None:
    """Run the trivial app's sweep here, timing every proposal and noting this process's RSS."""
    from nemo_rl_hpo.sweep.proposer import OptunaProposer

    ask = OptunaProposer.ask
    out = open(record, "a", buffering=1)  # noqa: SIM115  (open for the whole sweep)

    def timed_ask(self: OptunaProposer) -> Any:
        storage = self.study._storage
        n = len(storage.get_all_trials(self.study._study_id, deepcopy=False))
        t0, c0 = time.perf_counter(), time.thread_time()
        proposal = ask(self)
        dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
        row = {"n": n, "s": round(dt, 6), "cpu_s": round(cpu, 6), "rss_mb": _rss_mb()}
        out.write(json.dumps(row) + "\n")
        return proposal

    OptunaProposer.ask = timed_ask  # type: ignore[method-assign]
    sys.argv = [str(APP), *argv]
    runpy.run_path(str(APP), run_name="__main__")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------ one run
def _start(work: Path, name: str, env: dict[str, str], overrides: list[str]) -> Any:
    record = work / f"{name}.jsonl"
    log = open(work / f"{name}.log", "w")  # noqa: SIM115  (closed by _wait)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--sweeper-child", str(record), "--", *overrides],
        cwd=APP.parent,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, log, record


def _wait(procs: list[Any], timeout: float) -> list[int]:
    end = time.time() + timeout
    codes = []
    for proc, log, _ in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, end - time.time())))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
        log.close()
    return codes


def _proposals(records: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for i, path in enumerate(records):
        for line in path.read_text().splitlines():
            rows.append({**json.loads(line), "sweeper": i})
    return rows


def _summary(
    storage: Any, study_name: str, budget: int, runs: Path, records: list[Path]
) -> dict[str, Any]:
    """Counts from the study and the apps' own record, memory and proposal times per sweeper."""
    import optuna
    from optuna.trial import TrialState

    from nemo_rl_hpo.sweep import records as rec

    trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
    counted = [t for t in trials if not t.system_attrs.get(rec.SYS_OVERFLOW)]
    states = Counter(t.state.name for t in counted)
    ran = Counter(int(x) for x in runs.read_text().split()) if runs.exists() else Counter()
    complete = {t.number for t in counted if t.state == TrialState.COMPLETE}
    rows = _proposals(records)
    k = len(records)
    per_sweeper = []
    for i in range(k):
        mine = sorted((r for r in rows if r["sweeper"] == i), key=lambda r: r["n"])
        # The same stretch of the study for every sweeper: W proposals each at both ends.
        at100 = [r for r in mine if 100 <= r["n"] < 100 + WINDOW * k]
        last = [r for r in mine if r["n"] >= budget - WINDOW * k]
        rss100 = at100[0]["rss_mb"] if at100 else float("nan")
        rss_end = mine[-1]["rss_mb"] if mine else float("nan")
        per_sweeper.append(
            {
                "proposals": len(mine),
                "rss_mb_at_100": round(rss100, 1),
                "rss_mb_at_end": round(rss_end, 1),
                "rss_growth_mb": round(rss_end - rss100, 1),
                "propose_ms_at_100": round(1000 * c.median([r["s"] for r in at100]), 2),
                "propose_ms_at_end": round(1000 * c.median([r["s"] for r in last]), 2),
                "propose_cpu_ms_at_100": round(1000 * c.median([r["cpu_s"] for r in at100]), 2),
                "propose_cpu_ms_at_end": round(1000 * c.median([r["cpu_s"] for r in last]), 2),
                "n_windows": [len(at100), len(last)],
            }
        )
    ratios = [
        s["propose_cpu_ms_at_end"] / s["propose_cpu_ms_at_100"]
        for s in per_sweeper
        if s["propose_cpu_ms_at_100"] > 0
    ]
    wall_ratios = [
        s["propose_ms_at_end"] / s["propose_ms_at_100"]
        for s in per_sweeper
        if s["propose_ms_at_100"] > 0
    ]
    return {
        "states": dict(states),
        "overflow_trials": len(trials) - len(counted),
        "lost": max(0, budget - len(complete)),
        "duplicated": sum(n - 1 for n in ran.values() if n > 1) + len(complete - set(ran)),
        "left_running": states.get("RUNNING", 0),
        "jobs_run": sum(ran.values()),
        "sweepers": per_sweeper,
        "max_rss_growth_mb": max(s["rss_growth_mb"] for s in per_sweeper),
        # The target: the proposal's own CPU time (this thread's), which a loaded machine does
        # not inflate; wall time also counts waiting for a core behind the trials' processes.
        "max_propose_ratio": round(max(ratios), 2) if ratios else float("nan"),
        "max_propose_wall_ratio": round(max(wall_ratios), 2) if wall_ratios else float("nan"),
    }


def run_pool(trials: int, n_jobs: int, work: Path, timeout: float) -> dict[str, Any]:
    sweep = work / "pool-sweep"
    runs = work / "pool-runs.txt"
    env = {**c.clean_env(), "BENCH_RUNS": str(runs)}
    overrides = [
        "-m",
        f"hydra.sweep.dir={sweep}",
        "hydra/launcher=pool",
        SAMPLER,
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweeper.n_jobs={n_jobs}",
        "hydra.sweeper.write_report=false",
    ]
    t0 = time.time()
    procs = [_start(work, "pool", env, overrides)]
    (code,) = _wait(procs, timeout)
    wall = time.time() - t0
    out = _summary(f"sqlite:///{sweep}/optuna.db", "trivial", trials, runs, [procs[0][2]])
    return {"exit_codes": [code], "wall_s": round(wall, 1), "trials": trials, **out}


def run_postgres(trials: int, sweepers: int, work: Path, timeout: float) -> dict[str, Any]:
    import optuna

    url = _postgres_url()
    name = f"load-{uuid.uuid4().hex[:8]}"
    runs = work / "pg-runs.txt"
    env = {**c.clean_env(), "BENCH_RUNS": str(runs), "NEMO_RL_HPO_STORAGE": url}
    t0 = time.time()
    procs = []
    for i in range(sweepers):
        overrides = [
            "-m",
            f"hydra.sweep.dir={work / f'pg-sweep-{i}'}",
            "hydra.sweeper.storage=${oc.env:NEMO_RL_HPO_STORAGE}",
            f"hydra.sweeper.study_name={name}",
            SAMPLER,
            f"hydra.sweeper.n_trials={trials}",
            "hydra.sweeper.n_jobs=1",
            "hydra.sweeper.write_report=false",
        ]
        procs.append(_start(work, f"pg-{i}", env, overrides))
    codes = _wait(procs, timeout)
    wall = time.time() - t0
    storage = optuna.storages.RDBStorage(url)
    try:
        out = _summary(storage, name, trials, runs, [p[2] for p in procs])
    finally:
        optuna.delete_study(study_name=name, storage=storage)
        storage.engine.dispose()  # no connection left for the garbage collector to close
    return {
        "exit_codes": codes,
        "wall_s": round(wall, 1),
        "trials": trials,
        "n_sweepers": sweepers,
        **out,
    }


def _postgres_url() -> str:
    state = Path(os.environ.get("NEMO_PG_DIR", "/tmp/nemo-rl-hpo-pg"))
    subprocess.run(
        ["bash", str(c.ROOT / "ci" / "postgres.sh"), "start"], check=True, capture_output=True
    )
    return (state / "url").read_text().strip()


def held(part: dict[str, Any]) -> list[str]:
    """What failed of the load invariants (empty: held)."""
    bad = []
    for key in ("lost", "duplicated", "left_running"):
        if part[key]:
            bad.append(f"{key}={part[key]}")
    if any(part["exit_codes"]):
        bad.append(f"exit codes {part['exit_codes']}")
    if not part["max_rss_growth_mb"] < 100:
        bad.append(f"RSS grew {part['max_rss_growth_mb']} MB")
    if not part["max_propose_ratio"] <= 2:
        bad.append(f"proposal time ratio {part['max_propose_ratio']}")
    return bad


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--sweeper-child":
        sweeper_child(sys.argv[2], sys.argv[4:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=1000, help="pool part: trials of one sweeper")
    ap.add_argument("--n-jobs", type=int, default=8)
    ap.add_argument("--pg-trials", type=int, default=1000, help="postgres part: the study's budget")
    ap.add_argument("--pg-sweepers", type=int, default=4)
    ap.add_argument("--only", choices=["pool", "postgres"])
    ap.add_argument("--timeout", type=float, default=4 * 3600)
    ap.add_argument("--out", default="load", help="results/<out>.json; '-' prints only")
    args = ap.parse_args()
    result: dict[str, Any] = {"machine": c.machine(), "args": vars(args)}
    work = Path(tempfile.mkdtemp(prefix="nemo-load-"))
    try:
        if args.only in (None, "pool"):
            result["pool"] = run_pool(args.trials, args.n_jobs, work, args.timeout)
            print(json.dumps({"pool": result["pool"]}, indent=1), flush=True)
        if args.only in (None, "postgres"):
            result["postgres"] = run_postgres(args.pg_trials, args.pg_sweepers, work, args.timeout)
            print(json.dumps({"postgres": result["postgres"]}, indent=1), flush=True)
    except BaseException:
        print(f"kept the run's files in {work}", file=sys.stderr)
        raise
    for part in ("pool", "postgres"):
        if part in result:
            result[part]["held"] = not held(result[part])
            result[part]["missed"] = held(result[part])
    if args.out != "-":
        c.write_result(args.out, result)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
