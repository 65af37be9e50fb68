"""GPU-slot utilization: skewed trials on a simulated 8-device node, one device per trial.

    python bench/devices.py                      # 48 trials, 8 fake devices: ~2 min
    python bench/devices.py --trials 16 --median 1 --repeats 1     # smoke run

The launchers get a fake device list (``hydra.launcher.devices=[0..7]``,
``gpus_per_trial=1``, ``n_jobs=8``), so this runs on a CPU machine: trials are sleeps of skewed
length (lognormal, as bench/utilization.py) stamped inside the trial, and each trial records
the device it was given. Utilization = busy device-seconds / (devices x span), span from the
first trial's start to the last one's end. The reference is the ideal list schedule of the
same durations in the same order on 8 devices with zero overhead; the target is >= 0.95 of it.
Also checked on every run: no two trials that overlap in time share a device.
Contenders: warm workers (``pool``, each owns a device) and ``local`` (a process per trial).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402
from utilization import APP, durations, list_schedule  # noqa: E402

LAUNCHERS = ("pool", "local")


def run_one(launcher: str, ds: list[float], devices: int, rep: int) -> dict[str, object]:
    import optuna

    run = c.WORK / "devices" / f"{launcher}-{rep}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    stamps = run / "stamps.txt"
    env = c.clean_env()
    env["BENCH_STAMPS"] = str(stamps)
    args = [
        str(c.ours_python()),
        str(APP),
        "-m",
        f"hydra.sweep.dir={run / 'sweep'}",
        f"hydra.sweeper.n_trials={len(ds)}",
        f"hydra.sweeper.n_jobs={devices}",
        "durations=[" + ",".join(str(d) for d in ds) + "]",
        "hydra.sweeper.write_report=false",
        f"hydra/launcher={launcher}",
        "hydra.launcher.devices=[" + ",".join(str(i) for i in range(devices)) + "]",
        "hydra.launcher.gpus_per_trial=1",
    ]
    t0 = time.time()
    proc = subprocess.run(args, cwd=run, env=env, capture_output=True, text=True, check=False)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{launcher} failed:\n{proc.stderr[-3000:]}")
    study = optuna.load_study(
        study_name="sleep", storage=f"sqlite:///{run / 'sweep' / 'optuna.db'}"
    )
    device_of = {t.number: tuple(t.user_attrs.get("devices") or ()) for t in study.trials}
    rows = [line.split() for line in stamps.read_text().splitlines() if line.strip()]
    if len(rows) != len(ds):
        raise RuntimeError(f"{launcher}: {len(rows)} trials ran, expected {len(ds)}")
    spans = [(int(r[0]), float(r[1]), float(r[2])) for r in rows]
    clashes = 0
    for a in spans:
        for b in spans:
            if a[0] < b[0] and set(device_of[a[0]]) & set(device_of[b[0]]):
                clashes += int(a[1] < b[2] and b[1] < a[2])
    busy = sum(e - s for _, s, e in spans)
    # Hand-over: from a trial's end to the next trial's start on the same device (slot overhead:
    # noticing the end, asking the sampler, starting the next trial on a free slot).
    handover = []
    for d in {d for ds_ in device_of.values() for d in ds_}:
        mine = sorted((s, e) for n, s, e in spans if d in device_of[n])
        handover += [b[0] - a[1] for a, b in zip(mine, mine[1:], strict=False)]
    # Start-up: until every device ran its first trial (worker or process start on this machine).
    firsts = [
        min(s for n, s, _ in spans if d in device_of[n]) for d in set().union(*device_of.values())
    ]
    span = max(e for _, _, e in spans) - min(s for _, s, _ in spans)
    shutil.rmtree(run, ignore_errors=True)
    return {
        "launcher": launcher,
        "repeat": rep,
        "span_s": round(span, 2),
        "process_wall_s": round(wall, 2),
        "utilization": round(busy / (devices * span), 3),
        "handover_median_s": round(c.median(handover), 2),
        "handover_max_s": round(max(handover), 2) if handover else None,
        "last_device_first_start_s": round(max(firsts) - min(firsts), 2),
        "devices_used": len({d for ds_ in device_of.values() for d in ds_}),
        "overlapping_trials_sharing_a_device": clashes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=48)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--median", type=float, default=4.0, help="median trial length, seconds")
    ap.add_argument("--sigma", type=float, default=0.8, help="lognormal sigma (skew)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    ds = durations(args.trials, args.median, args.sigma, args.seed)
    ideal_span = list_schedule(ds, args.devices)
    ideal = sum(ds) / (args.devices * ideal_span)
    print(f"durations sum {sum(ds):.1f} s; ideal list schedule {ideal_span:.1f} s -> {ideal:.3f}")
    runs = []
    for rep in range(args.repeats):
        for launcher in LAUNCHERS:
            r = run_one(launcher, ds, args.devices, rep)
            runs.append(r)
            print(
                f"  [{rep}] {launcher:6s} span {r['span_s']:6.1f} s  util {r['utilization']:.3f}"
                f"  = {float(str(r['utilization'])) / ideal:.3f} of ideal;"
                f" hand-over median {r['handover_median_s']} s (max {r['handover_max_s']}),"
                f" last device's first trial after {r['last_device_first_start_s']} s;"
                f" devices used {r['devices_used']},"
                f" clashes {r['overlapping_trials_sharing_a_device']}"
            )
    summary = {}
    for launcher in LAUNCHERS:
        us = [float(str(r["utilization"])) for r in runs if r["launcher"] == launcher]
        summary[launcher] = {
            "utilization_median": round(c.median(us), 3),
            "of_ideal": round(c.median(us) / ideal, 3),
        }
    c.write_result(
        "devices",
        {
            "benchmark": f"GPU slots: {args.trials} skewed trials on {args.devices} fake devices",
            "command": " ".join(["python", "bench/devices.py", *sys.argv[1:]]),
            "machine": c.machine(),
            "settings": vars(args),
            "durations": ds,
            "ideal": {"list_schedule_s": round(ideal_span, 2), "utilization": round(ideal, 3)},
            "runs": runs,
            "summary": summary,
        },
    )
    for launcher, s in summary.items():
        print(f"{launcher:6s} util {s['utilization_median']:.3f} = {s['of_ideal']:.3f} of ideal")


if __name__ == "__main__":
    main()
