"""Sweeper overhead per trial on a trivial objective: ours vs hydra-optuna-sweeper vs plain Optuna.

    python bench/overhead.py                          # full run: writes results/overhead.json
    python bench/overhead.py --trials 40 --repeats 1 --submitit-trials 8   # smoke run (~2 min)
    python bench/overhead.py --profile                # + cProfile of ours, all threads

Each contender runs the same Hydra app (``bench/apps/trivial``), which stamps the time at every
trial; the figure is the steady-state cycle (last stamp - first stamp) / (trials - 1), so process
start-up and the final results/report writing are excluded. Contenders are interleaved
(A, B, C, A, B, C, ...) and the median over repeats is reported. hydra-optuna-sweeper 1.3.0 runs
in its own virtualenv under ``bench/_work`` (Optuna 2.10, SQLAlchemy 1.4).
"""

from __future__ import annotations

import argparse
import json
import pstats
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

APP = c.BENCH / "apps" / "trivial" / "app.py"
OURS_LOCAL = [
    "hydra/launcher=submitit_local",
    "hydra.launcher._target_=hydra_plugins.nemo_rl_hpo.launchers.LocalLauncher",
]
UPSTREAM_LOCAL = ["hydra/launcher=submitit_local"]


@dataclass
class Contender:
    name: str
    launcher: str  # "basic", "submitit_local" or "none" (plain loop)
    argv: Callable[[Path, int], list[str]]  # (run dir, trials) -> command


def _sweep(python: Path, *extra: str) -> Callable[[Path, int], list[str]]:
    def argv(run: Path, n: int) -> list[str]:
        ov = [a.replace("{run}", str(run)) for a in extra]
        return [
            str(python),
            str(APP),
            "-m",
            f"hydra.sweep.dir={run / 'sweep'}",
            f"hydra.sweeper.n_trials={n}",
            "hydra.sweeper.n_jobs=1",
            *ov,
        ]

    return argv


def _plain(python: Path, storage: str) -> Callable[[Path, int], list[str]]:
    def argv(run: Path, n: int) -> list[str]:
        url = "memory" if storage == "memory" else f"sqlite:///{run / 'plain.db'}"
        return [str(python), str(c.BENCH / "_plain_loop.py"), str(n), url]

    return argv


def contenders(ours: Path, up: Path) -> list[Contender]:
    no_report = "hydra.sweeper.write_report=false"
    # Upstream's sampler is TPE: ours runs TPE too for the overhead figures. The default ``auto``
    # picks GP on this small unconditional space, which costs its own ~100 ms/trial (shown apart).
    tpe = "hydra/sweeper/sampler=tpe"
    return [
        Contender("ours sqlite tpe", "basic", _sweep(ours, no_report, tpe)),
        Contender(
            "ours memory tpe",
            "basic",
            _sweep(ours, no_report, tpe, "hydra.sweeper.storage=memory://"),
        ),
        Contender("ours sqlite auto (GP)", "basic", _sweep(ours, no_report)),
        Contender("upstream memory", "basic", _sweep(up)),
        Contender(
            "upstream sqlite",
            "basic",
            _sweep(up, "hydra.sweeper.storage=sqlite:///{run}/upstream.db"),
        ),
        Contender("optuna5 loop memory", "none", _plain(ours, "memory")),
        Contender("optuna5 loop sqlite", "none", _plain(ours, "sqlite")),
        Contender("optuna2.10 loop memory", "none", _plain(up, "memory")),
        Contender("optuna2.10 loop sqlite", "none", _plain(up, "sqlite")),
        Contender("ours sqlite tpe", "submitit_local", _sweep(ours, no_report, tpe, *OURS_LOCAL)),
        Contender("upstream memory", "submitit_local", _sweep(up, *UPSTREAM_LOCAL)),
        # our warm-worker launcher against upstream's only other parallel local launcher
        Contender("ours sqlite tpe", "pool", _sweep(ours, no_report, tpe, "hydra/launcher=pool")),
        Contender(
            "upstream memory",
            "joblib",
            _sweep(up, "hydra/launcher=joblib", "hydra.launcher.n_jobs=1"),
        ),
        Contender(
            "upstream sqlite",
            "submitit_local",
            _sweep(up, *UPSTREAM_LOCAL, "hydra.sweeper.storage=sqlite:///{run}/upstream.db"),
        ),
    ]


def run_one(con: Contender, n: int, rep: int) -> dict[str, object]:
    slug = f"{con.launcher}-{con.name}".replace(" ", "_").replace("(", "").replace(")", "")
    run = c.WORK / "overhead" / f"{slug}-{rep}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    stamps = run / "stamps.txt"
    env = c.clean_env()
    env["BENCH_STAMPS"] = str(stamps)
    t0 = time.time()
    proc = subprocess.run(con.argv(run, n), cwd=run, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{con.name} ({con.launcher}) failed:\n{proc.stderr[-3000:]}")
    if con.launcher == "none":
        per = float(json.loads(proc.stdout.strip().splitlines()[-1])["per_trial_s"])
        count = n
    else:
        times = sorted(float(x) for x in stamps.read_text().split())
        count = len(times)
        if count != n:
            raise RuntimeError(f"{con.name} ({con.launcher}) ran {count} trials, expected {n}")
        per = (times[-1] - times[0]) / (count - 1)
    shutil.rmtree(run, ignore_errors=True)
    return {
        "contender": con.name,
        "launcher": con.launcher,
        "repeat": rep,
        "trials": count,
        "per_trial_ms": round(per * 1000, 2),
        "process_wall_s": round(wall, 2),
    }


def profile_ours(n: int) -> dict[str, object]:
    """cProfile (all threads) of our default sweep; returns per-trial ms of the main hot spots."""
    run = c.WORK / "overhead" / "profile"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    prof = run / "ours.prof"
    argv = _sweep(c.ours_python(), "hydra.sweeper.write_report=false", "hydra/sweeper/sampler=tpe")(
        run, n
    )
    argv = [argv[0], str(c.BENCH / "_profile_run.py"), str(prof), *argv[1:]]
    env = c.clean_env()
    env["BENCH_STAMPS"] = str(run / "stamps.txt")
    subprocess.run(argv, cwd=run, env=env, check=True, capture_output=True)
    stats = pstats.Stats(str(prof))
    text = run / "profile.txt"
    with text.open("w") as f:
        stats.stream = f  # type: ignore[attr-defined]
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(80)
    shutil.copy(text, c.RESULTS / "overhead_profile.txt")
    raw = stats.stats  # type: ignore[attr-defined]
    wanted = {
        "core.py:run": ("nemo_rl_hpo/sweep/core.py", "run"),
        "proposer.py:ask": ("nemo_rl_hpo/sweep/proposer.py", "ask"),
        "  study.ask": ("optuna/study/study.py", "ask"),
        "  space.suggest (sampler)": ("nemo_rl_hpo/search/space.py", "suggest"),
        "  counted_trials": ("nemo_rl_hpo/sweep/proposer.py", "counted_trials"),
        "core.py:_finish": ("nemo_rl_hpo/sweep/core.py", "_finish"),
        "Progress.__call__": ("hydra_plugins/nemo_rl_hpo/_study.py", "__call__"),
        "launcher.launch (worker thread)": (
            "hydra/_internal/core_plugins/basic_launcher.py",
            "launch",
        ),
        "  load_sweep_config (re-compose)": (
            "hydra/_internal/config_loader_impl.py",
            "load_sweep_config",
        ),
        "  run_job": ("hydra/core/utils.py", "run_job"),
        "    job.on_job_start": ("nemo_rl_hpo/sweep/job.py", "on_job_start"),
        "    job.on_job_end": ("nemo_rl_hpo/sweep/job.py", "on_job_end"),
        "    trial._trial_cached (load_study)": ("nemo_rl_hpo/trial.py", "_trial_cached"),
        "storage: all get_all_trials": ("optuna/storages/_cached_storage.py", "get_all_trials"),
        "storage: set_trial_system_attr": (
            "optuna/storages/_cached_storage.py",
            "set_trial_system_attr",
        ),
        "storage: set_trial_user_attr": (
            "optuna/storages/_cached_storage.py",
            "set_trial_user_attr",
        ),
        "storage: get_trial": ("optuna/storages/_cached_storage.py", "get_trial"),
        "sqlite3 commit (fsync)": ("~", "<method 'commit' of 'sqlite3.Connection' objects>"),
        "sqlalchemy Session.execute": ("sqlalchemy/orm/session.py", "execute"),
    }
    out: dict[str, dict[str, float]] = {}
    for label, (path, func) in wanted.items():
        calls, cum = 0, 0.0  # the outermost match (largest cumulative time) of that name
        for (file, _line, name), (_cc, nc, _tt, ct, _callers) in raw.items():
            if name == func and (path == "~" or file.endswith(path)) and ct > cum:
                calls, cum = nc, ct
        out[label] = {
            "calls_per_trial": round(calls / n, 2),
            "ms_per_trial": round(cum / n * 1000, 2),
        }
    stamps = sorted(float(x) for x in (run / "stamps.txt").read_text().split())
    return {
        "trials": n,
        "per_trial_ms_under_profiler": round((stamps[-1] - stamps[0]) / (n - 1) * 1000, 1),
        "note": "cumulative ms per trial; threads overlap, so rows do not add up",
        "hotspots": out,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=200, help="trials per basic-launcher run")
    ap.add_argument("--submitit-trials", type=int, default=20, help="trials per submitit run")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats per contender")
    ap.add_argument("--skip-submitit", action="store_true")
    ap.add_argument(
        "--launchers",
        default="basic,none,submitit_local,pool,joblib",
        help="comma-separated subset of the contenders' launchers",
    )
    ap.add_argument("--profile", action="store_true", help="also profile ours (cProfile)")
    ap.add_argument("--profile-trials", type=int, default=100, help="trials of the profiled sweep")
    ap.add_argument("--out", default="overhead")
    args = ap.parse_args()

    ours, up = c.ours_python(), c.upstream_python()
    cons = [
        x
        for x in contenders(ours, up)
        if not (args.skip_submitit and x.launcher == "submitit_local")
        and x.launcher in args.launchers.split(",")
    ]
    payload: dict[str, object] = {
        "benchmark": "overhead per trial, trivial objective, n_jobs=1",
        "command": " ".join(["python", "bench/overhead.py", *sys.argv[1:]]),
        "machine": c.machine(),
        "versions": {"ours": c.versions(ours), "upstream": c.versions(up)},
        "settings": vars(args),
    }
    if args.profile:  # first, so the hot spots are there even if the timing runs are cut short
        payload["profile"] = profile_ours(args.profile_trials)
        print(json.dumps(payload["profile"], indent=1), flush=True)
    runs: list[dict[str, object]] = []
    for rep in range(args.repeats):
        for con in cons:
            n = args.submitit_trials if con.launcher == "submitit_local" else args.trials
            r = run_one(con, n, rep)
            runs.append(r)
            print(
                f"  [{rep}] {con.launcher:15s} {con.name:25s} {r['per_trial_ms']:9.1f} ms/trial",
                flush=True,
            )
        _summarize(payload, cons, runs)
        c.write_result(args.out, payload)  # after every repeat: a cut-short run still reports
    print()
    summary = payload["summary"]
    assert isinstance(summary, dict)
    for key, s in summary.items():
        print(f"{key:45s} {s['median_ms']:9.1f} ms/trial  IQR {s['iqr_ms']}")
    ratios = payload["ratios"]
    assert isinstance(ratios, dict)
    for key, v in ratios.items():
        print(f"{key:55s} {v:.2f}x")


def _summarize(
    payload: dict[str, object], cons: list[Contender], runs: list[dict[str, object]]
) -> None:
    summary: dict[str, dict[str, object]] = {}
    for con in cons:
        key = f"{con.launcher} | {con.name}"
        xs = [
            float(str(r["per_trial_ms"]))
            for r in runs
            if r["contender"] == con.name and r["launcher"] == con.launcher
        ]
        summary[key] = {"median_ms": round(c.median(xs), 1), "iqr_ms": c.iqr(xs), "runs": xs}
    ratios: dict[str, float] = {}
    pairs_of = [
        ("basic", "basic"),
        ("submitit_local", "submitit_local"),
        ("pool", "joblib"),
        ("pool", "submitit_local"),
    ]
    for launcher, other_launcher in pairs_of:
        ours_key = f"{launcher} | ours sqlite tpe"
        for other in ("upstream memory", "upstream sqlite"):
            key = f"{other_launcher} | {other}"
            if ours_key in summary and key in summary:
                # Ratio of per-repeat pairs (same repeat = same machine state), then the median.
                a = summary[ours_key]["runs"]
                b = summary[key]["runs"]
                assert isinstance(a, list) and isinstance(b, list)
                pairs = [x / y for x, y in zip(a, b, strict=False)]
                name = f"{launcher}: ours sqlite tpe / {other_launcher} {other}"
                ratios[name] = round(c.median(pairs), 2)
    payload["runs"] = runs
    payload["summary"] = summary
    payload["ratios"] = ratios
    payload["repeats_done"] = 1 + max(int(str(r["repeat"])) for r in runs)


if __name__ == "__main__":
    main()
