"""Is the simulator faithful? A live pause/resume sweep, replayed by bench/simulate.py, decision
by decision.

    python train.py -m trial=grpo hydra/sweeper/fidelity=asha hydra/launcher=pool \\
        hydra.sweeper.n_jobs=2 hydra.sweeper.n_trials=12 hydra.sweeper.sampler.seed=0 \\
        grpo.max_num_steps=27 grpo.val_period=3 hydra.sweep.dir=/tmp/replay/s0
    python bench/curves.py build --from-sweep /tmp/replay/s0   # its configurations' full curves
    python bench/replay_check.py /tmp/replay/s0 [/tmp/replay/s1 ...]

The simulator replays the sweep with what the live sweep had: its recorded sweeper config
(``sweep_config`` of its results JSON: sampler and its seed, fidelity settings), its ``n_trials``
and ``n_jobs``, its unsearched overrides (the table's ``fixed``) and its jobs' seeds (the table
holds exactly those runs, so no seed is drawn and every sampled configuration must map to a
table configuration at distance 0). Two clocks:

- **live clock**: each segment takes the seconds its live job took (``started`` -> ``ended`` of
  its rung record); a segment the live sweep never ran takes the table's seconds scaled by the
  median live/table ratio. This isolates the decisions from the clock: a difference here is the
  simulator's fault (or two live jobs ending within one poll of the loop, see below).
- **table clock**: the simulator as the benchmarks run it, each segment taking the CPU seconds
  the table recorded. A difference here comes from the clock, i.e. from asynchrony: with 2
  workers, which job ends first decides what a freed worker sees, and the table's CPU seconds
  leave out what a live job spends besides training (process start-up, model build, checkpoint
  save and load, a loaded machine's wall time).
- **table clock + start-up**: the same with a start-up added to every job
  (``simulate_one(job_start_s=...)``, ``simulate.py --job-start-s``): fitted on the live
  segments (live = slope x table + intercept; intercept / slope), or ``--job-start-s``, or each
  value of ``--start-grid``; ``--jitter`` adds replays with randomly scaled segment seconds.

Two sweep dirs of the same command (app, overrides, sweeper config) are also compared with each
other: how far a live sweep reproduces itself.

Compared per trial: the configuration (table key), the rungs it reached and its value at each
(live vs table, 1e-6), and how it ended (COMPLETE at max_resource, or "not promoted at N");
and the order in which segments were launched. Writes ``bench/results/replay_check.json``.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import _common as c  # noqa: E402
import curves  # noqa: E402
import simulate  # noqa: E402

VALUE_TOL = 1e-6
JITTER = "table clock, jittered"
START = "table clock + start-up"
GRID = "table clock + start-up of"


@dataclass
class Decisions:
    """What a sweep decided, per trial number, and the order of its segments."""

    trials: dict[int, dict[str, Any]]  # number -> key, steps, values, end
    launches: list[tuple[int, int, int]]  # (number, from step, to step), in launch order
    # the live clock: (key, from step, to step) -> (started, ended), seconds since the first launch
    times: dict[tuple[str, int, int], tuple[float, float]] = field(default_factory=dict)


def _end(state: str, end: str | None) -> str:
    return f"{state} ({end})" if end else state


def live_decisions(sweep: dict[str, Any], keys: dict[int, str]) -> Decisions:
    """The live sweep's decisions, from its results JSON (each trial's fidelity record)."""
    trials: dict[int, dict[str, Any]] = {}
    starts: list[tuple[float, int, int, int]] = []
    times: dict[tuple[str, int, int], tuple[float, float]] = {}
    for t in sweep["trials"]:
        if t["number"] not in keys:
            continue
        fid = t.get("fidelity") or {}
        rungs = fid.get("rungs") or []
        prev = 0
        for r in rungs:
            step = int(r["step"])
            starts.append((float(r["started"]), t["number"], prev, step))
            times[(keys[t["number"]], prev, step)] = (float(r["started"]), float(r["ended"]))
            prev = step
        trials[t["number"]] = {
            "key": keys[t["number"]],
            "steps": [int(r["step"]) for r in rungs],
            "values": [float(r["value"]) for r in rungs],
            "end": _end(t["state"], fid.get("end")),
        }
    launches = [(n, a, b) for _, n, a, b in sorted(starts)]
    t0 = min((s for s, _, _, _ in starts), default=0.0)
    times = {k: (a - t0, b - t0) for k, (a, b) in times.items()}
    return Decisions(trials, launches, times)


def sim_decisions(res: simulate.SweepResult) -> Decisions:
    trials = {
        t["number"]: {
            "key": t["key"],
            "steps": [s for s, _ in t["rungs"]],
            "values": [v for _, v in t["rungs"]],
            "end": _end(t["state"], t["end"]),
        }
        for t in res.trials
    }
    return Decisions(trials, [(n, a, b) for _, n, a, b in res.launches])


def replay(
    sweep_dir: Path,
    table_path: Path,
    composer: curves.Composer,
    jitter: float = 0.0,
    draws: int = 0,
    job_start_s: float | None = None,
    start_grid: Sequence[float] = (),
) -> tuple[dict[int, str], Decisions, dict[str, simulate.SweepResult], dict[str, float]]:
    """The live decisions and the simulator's under each clock, and the clock fit.

    The fit: live seconds = ``ratio`` x table seconds + ``start`` per job (least squares over
    the live segments); ``start / ratio`` is the job start-up in table seconds that the
    ``table clock + start-up`` replay adds to every job (``job_start_s`` overrides it);
    ``start_grid``: more replays, one per start-up value.

    ``jitter``, ``draws``: also ``draws`` replays on the table clock with every segment's
    seconds times ``exp(jitter * z)``, ``z`` standard normal: how much the decisions hang on
    the clock (with 2 workers, on which job ends first).
    """
    sweep = curves.read_sweep(sweep_dir)
    table = simulate.load_table(table_path)
    kind = table.kind
    space = composer.space(kind)
    fixed, _ = curves.sweep_runs(composer, space, kind, sweep)
    if fixed != table.fixed:
        raise SystemExit(
            f"{table_path} was recorded with {table.fixed}, the sweep ran with {fixed}: "
            f"record it with `bench/curves.py build --from-sweep {sweep_dir}`"
        )
    searched = {p.key for p in space.params}
    keys: dict[int, str] = {}
    for t in sweep["trials"]:
        values = {k: v for k, v in (t.get("params") or {}).items() if k in searched}
        if values:
            keys[t["number"]] = curves.config_key(
                curves._overrides(space, curves._active(space, values))
            )
    missing = sorted({k for k in keys.values() if k not in table.keys()})
    if missing:
        raise SystemExit(
            f"{table_path} lacks {len(missing)} of the sweep's configurations ({missing[0]}, "
            f"...): run `bench/curves.py build --from-sweep {sweep_dir}` (it resumes)"
        )
    live = live_decisions(sweep, keys)
    cfg = sweep["sweep_config"]
    seed = (cfg.get("sampler") or {}).get("seed")
    if seed is None:
        raise SystemExit(
            f"{sweep_dir}: the sweep's sampler had no seed (hydra.sweeper.sampler.seed=null), "
            "so its configurations cannot be drawn again"
        )
    nearest = simulate.Nearest(
        simulate.space_spec(space), {k: table.overrides[k] for k in table.keys()}
    )
    pool_seed = table.seeds[0]

    def table_seconds(key: str, a: int, b: int) -> float:
        run = table.runs[(key, pool_seed)]
        return sum(cpu for st, cpu in zip(run.steps, run.cpu, strict=True) if a < st <= b)

    ratios = [(b - a) / table_seconds(*k) for k, (a, b) in live.times.items() if table_seconds(*k)]
    ratio = statistics.median(ratios) if ratios else 1.0
    fit = {"ratio": ratio, **_fit([(table_seconds(*k), b - a) for k, (a, b) in live.times.items()])}
    start = fit["start_table_s"] if job_start_s is None else job_start_s

    def live_clock(key: str, a: int, b: int, now: float) -> float:
        """Ends when the live job ended (so the simulator sees the live order of job ends);
        started later than the live one ended: its live seconds; a segment the live sweep did
        not run: its table seconds scaled to the live clock."""
        got = live.times.get((key, a, b))
        if got is None:
            return table_seconds(key, a, b) * ratio
        return got[1] - now if got[1] > now else got[1] - got[0]

    def jittered(draw: int) -> simulate.SegmentSeconds:
        def seconds(key: str, a: int, b: int, now: float) -> float:
            z = random.Random(f"{draw}:{key}:{a}:{b}").gauss(0.0, 1.0)
            return table_seconds(key, a, b) * math.exp(jitter * z)

        return seconds

    reaction = _reaction_s(live, int(cfg["n_jobs"]))
    fit["reaction_s"] = reaction
    clocks: list[tuple[str, simulate.SegmentSeconds | None, float]] = [
        ("live clock", live_clock, 0.0),
        ("table clock", None, 0.0),
        (START, None, start),
    ]
    clocks += [(f"{JITTER} {d}", jittered(d), 0.0) for d in range(draws if jitter > 0 else 0)]
    clocks += [(f"{GRID} {x:g} s", None, x) for x in start_grid]
    from nemo_rl_hpo.sweep import context

    results = {}
    job_seam = context.open_trial  # simulate_one points jobs at its in-memory study: give back
    try:
        for clock, seconds, job_start in clocks:
            results[clock] = simulate.simulate_one(
                table,
                space,
                nearest,
                composer,
                clock,
                [],
                int(seed),
                int(cfg["n_jobs"]),
                None,
                int(cfg["n_trials"]),
                [],  # no test seeds: every run is the sweep's own seed
                sweeper_config=cfg,
                seconds=seconds,
                job_start_s=job_start,
                # on the live clock, job ends closer than the live sweeper's reaction time
                # were seen together by its next ask
                batch_s=reaction if seconds is live_clock else 0.0,
            )
    finally:
        context.open_trial = job_seam  # type: ignore[method-assign]
    return keys, live, results, fit


def _reaction_s(live: Decisions, n_jobs: int) -> float:
    """The live sweeper's reaction time: the median delay from a segment's end to the next
    launch (over the launches after the first ``n_jobs``), in live seconds."""
    ends = sorted(b for _, b in live.times.values())
    starts = sorted(a for a, _ in live.times.values())[n_jobs:]
    gaps = [s - max(e for e in ends if e <= s) for s in starts if any(e <= s for e in ends)]
    return statistics.median(gaps) if gaps else 0.0


def _command(sweep: dict[str, Any]) -> str:
    """What makes two live sweeps the same sweep: app, overrides and sweeper config."""
    cfg = dict(sweep.get("sweep_config") or {})
    cfg.pop("storage", None)
    return repr((sweep.get("command"), sweep.get("base_overrides"), sorted(cfg.items())))


def _fit(points: list[tuple[float, float]]) -> dict[str, float]:
    """live = slope x table + intercept (least squares); the intercept per job in table s."""
    if len(points) < 2:
        return {"slope": math.nan, "start_s": math.nan, "start_table_s": 0.0}
    slope, intercept = statistics.linear_regression(*zip(*points, strict=True))
    return {
        "slope": slope,
        "start_s": intercept,
        "start_table_s": max(0.0, intercept / slope) if slope > 0 else 0.0,
    }


def compare(live: Decisions, sim: Decisions) -> dict[str, Any]:
    """Per trial: same configuration, same rungs, same end; values to 1e-6; launch order."""
    rows = []
    for n in sorted(set(live.trials) | set(sim.trials)):
        a, b = live.trials.get(n), sim.trials.get(n)
        if a is None or b is None:
            rows.append({"trial": n, "agree": False, "why": "only in one sweep"})
            continue
        common = min(len(a["values"]), len(b["values"])) if a["key"] == b["key"] else 0
        dv = max(
            (abs(x - y) for x, y in zip(a["values"][:common], b["values"][:common], strict=True)),
            default=0.0,
        )
        why = [
            w
            for w, bad in (
                ("configuration", a["key"] != b["key"]),
                ("rungs", a["steps"] != b["steps"]),
                ("end", a["end"] != b["end"]),
                ("values", dv > VALUE_TOL),
            )
            if bad
        ]
        rows.append(
            {
                "trial": n,
                "agree": not why,
                "why": ", ".join(why),
                "live": f"{a['steps']} {a['end']}",
                "sim": f"{b['steps']} {b['end']}",
                "max_value_diff": dv,
            }
        )
    n = min(len(live.launches), len(sim.launches))
    first = next(
        (i for i in range(n) if live.launches[i] != sim.launches[i]),
        None if len(live.launches) == len(sim.launches) else n,
    )
    return {
        "rows": rows,
        "agree": sum(r["agree"] for r in rows),
        "trials": len(rows),
        "same_launch_order": first is None,
        "first_launch_difference": first,
        "live_launches": live.launches,
        "sim_launches": sim.launches,
        "max_value_diff": max((r.get("max_value_diff", 0.0) for r in rows), default=0.0),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("sweeps", nargs="+", type=Path, help="sweep dirs of finished live sweeps")
    ap.add_argument("--table", type=Path, help="default: <sweep dir>/curves.jsonl.gz")
    ap.add_argument("--out", default="replay_check", help="bench/results/<out>.json")
    ap.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        help="also replay on the table clock with each segment's seconds x exp(JITTER * z)",
    )
    ap.add_argument("--draws", type=int, default=20, help="replays per sweep with --jitter")
    ap.add_argument(
        "--start-grid",
        default="",
        metavar="S,S,...",
        help="also replay on the table clock with each of these job start-ups (table s)",
    )
    ap.add_argument(
        "--job-start-s",
        type=float,
        help="table seconds each job spends starting (default: fitted on the live sweep)",
    )
    args = ap.parse_args(argv)
    import logging
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for name in ("nemo_rl_hpo", "hydra_plugins"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    payload: dict[str, Any] = {"machine": c.machine(), "command": " ".join(sys.argv), "sweeps": []}
    totals: dict[str, list[int]] = {}  # clock -> [trials alike, trials, runs in the same order]
    runs: dict[str, int] = {}
    lives: dict[str, list[tuple[Path, Decisions]]] = {}  # by command: the same sweep run twice
    with curves.Composer() as composer:
        for sweep_dir in args.sweeps:
            table = args.table or sweep_dir / "curves.jsonl.gz"
            keys, live, results, fit = replay(
                sweep_dir,
                table,
                composer,
                args.jitter,
                args.draws,
                args.job_start_s,
                [float(x) for x in args.start_grid.split(",") if x],
            )
            print(
                f"\n{sweep_dir}: {len(keys)} trials; live seconds = {fit['slope']:.2f} x table "
                f"seconds + {fit['start_s']:.2f} per job (start-up {fit['start_table_s']:.2f} "
                f"table s; median live/table {fit['ratio']:.2f})"
            )
            entry: dict[str, Any] = {"sweep": str(sweep_dir), "table": str(table), "fit": fit}
            cmp = {clock: compare(live, sim_decisions(res)) for clock, res in results.items()}
            shown = [k for k in cmp if not k.startswith((JITTER, GRID))]
            print("| trial | live: rungs reached, end | " + " | ".join(shown) + " |")
            print("|---:|---|" + "---|" * len(shown))
            for i, row in enumerate(cmp["live clock"]["rows"]):
                cells = []
                for clock in shown:
                    r = cmp[clock]["rows"][i]
                    cells.append("same" if r["agree"] else f"{r.get('sim', '')} ({r['why']})")
                print(f"| {row['trial']} | {row.get('live', '')} | " + " | ".join(cells) + " |")
            for clock, cm in cmp.items():
                name = JITTER if clock.startswith(JITTER) else clock
                t = totals.setdefault(name, [0, 0, 0])
                t[0] += cm["agree"]
                t[1] += cm["trials"]
                t[2] += int(cm["same_launch_order"])
                runs[name] = runs.get(name, 0) + 1
                if name != clock:
                    continue
                order = (
                    "same launch order"
                    if cm["same_launch_order"]
                    else f"launch order differs from launch {cm['first_launch_difference']}"
                )
                print(
                    f"{clock}: {cm['agree']}/{cm['trials']} trials decided alike; {order}; "
                    f"rung values live vs table max |diff| {cm['max_value_diff']:.2g}"
                )
            jittered = [cm for k, cm in cmp.items() if k.startswith(JITTER)]
            if jittered:
                alike = sorted(cm["agree"] for cm in jittered)
                print(
                    f"{JITTER} (x exp({args.jitter} z), {len(jittered)} draws): every trial alike "
                    f"in {sum(cm['agree'] == cm['trials'] for cm in jittered)} draws; trials "
                    f"alike per draw: min {alike[0]}, median {statistics.median(alike):g}"
                )
            entry["live"] = {str(n): d for n, d in live.trials.items()}
            keep = ("agree", "trials", "same_launch_order", "first_launch_difference")
            entry["compare"] = {  # in full for the clocks shown above, else their counts
                k: cm if k in shown else {x: cm[x] for x in keep} for k, cm in cmp.items()
            }
            payload["sweeps"].append(entry)
            same = _command(curves.read_sweep(sweep_dir))
            for other_dir, other in lives.get(same, []):
                cm = compare(other, live)  # the same command, run twice: the live ceiling
                print(
                    f"live vs live ({other_dir} and {sweep_dir}, the same command): "
                    f"{cm['agree']}/{cm['trials']} trials decided alike; launch order "
                    f"{'the same' if cm['same_launch_order'] else 'differs'}"
                )
                entry.setdefault("live_vs_live", {})[str(other_dir)] = cm
                t = totals.setdefault("live vs live", [0, 0, 0])
                t[0] += cm["agree"]
                t[1] += cm["trials"]
                t[2] += int(cm["same_launch_order"])
                runs["live vs live"] = runs.get("live vs live", 0) + 1
            lives.setdefault(same, []).append((sweep_dir, live))
    print()
    for clock, (agree, n, same_order) in totals.items():
        print(
            f"{clock}: {agree}/{n} trials decided alike over {runs[clock]} replays of "
            f"{len(args.sweeps)} sweep(s); launch order identical in {same_order}/{runs[clock]}"
        )
    payload["totals"] = {
        k: {"agree": v[0], "trials": v[1], "same_order": v[2], "replays": runs[k]}
        for k, v in totals.items()
    }
    payload["jitter"] = args.jitter
    c.write_result(args.out, payload)


if __name__ == "__main__":
    main()
