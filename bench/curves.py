"""Learning-curve tables: every searched configuration's full run, recorded once, replayed later.

    python bench/curves.py build --trial supervised --configs 96 --seeds 2
    python bench/curves.py build --trial grpo --configs 96 --seeds 3
    python bench/curves.py show bench/data/grpo.jsonl.gz          # record counts, spread
    python bench/curves.py build --from-sweep <sweep dir>         # a live sweep's configurations

``build`` appends one record per run (configuration x seed) to ``bench/data/<trial>.jsonl.gz``
(one gzip member per record, so an interrupted build loses at most the run in flight) and skips
records already there: it can be stopped and resumed at any time, over several sessions. Two
cores: ``--shard 0/2`` and ``--shard 1/2`` split the configurations between two builders on one
file (each appends under a file lock); never run two builders of the same shard.
``--from-sweep`` records instead the configurations a finished live sweep ran (from its
``optimization_results.json``), with the sweep's unsearched overrides and its jobs' seeds, into
``<sweep dir>/curves.jsonl.gz``: ``bench/replay_check.py`` replays that sweep in the simulator
and compares its decisions.

The configurations are the trial's default configuration, then a scrambled Sobol design
(``scipy.stats.qmc.Sobol``) over every key of the trial's search preset (``search=default`` /
``search=grpo``): the space is the project's own (``hydra_plugins.nemo_rl_hpo._search_space``
builds it from Hydra's config groups, as a sweep does), so a conditional key (``loss_fn.
ratio_clip_c`` only with ``loss_fn=dual_clip``) is in a record only where its option is chosen.
Runs go configuration by configuration (all seeds of one before the next), so a partial table
holds complete configurations.

Each run is the live trial: the config is composed with Hydra's compose API from the overrides
and the seed, and the trial's own function (``train`` / ``train_grpo``, what ``train.py`` calls in
a sweep job) runs it in this process with ``num_threads=1``. The build only observes: it wraps
``nemo_rl_hpo.trial.report`` (called at every validation) and the per-step metrics, and times
each validation segment in wall AND process-CPU seconds. The build runs niced beside other work,
so CPU seconds are the trustworthy cost; wall seconds are kept to show the load.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import math
import os
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class TrialKind:
    """What differs between the two trials of the embedded app."""

    name: str
    search: str  # the search preset the trial's sweep uses
    seed_key: str
    first_seed: int  # the trial's default seed
    objective: str
    direction: str  # "minimize" | "maximize"


TRIALS = {
    "supervised": TrialKind("supervised", "default", "seed", 0, "val_loss", "minimize"),
    "grpo": TrialKind("grpo", "grpo", "grpo.seed", 42, "val_reward", "maximize"),
}


# --- the search space, through the project's own code ---------------------------------------


class Composer:
    """Hydra's compose API on the app's ``conf/``, plus the sweep's own space builder."""

    def __init__(self) -> None:
        from hydra import initialize_config_dir

        import hydra_plugins.nemo_rl_hpo._resolvers  # noqa: F401  (the n_jobs resolver)

        self._ctx = initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3")
        self._ctx.__enter__()

    def __enter__(self) -> Composer:
        return self

    def __exit__(self, *exc: object) -> None:
        """Give Hydra's global state back (a test process composes other apps too)."""
        self._ctx.__exit__(None, None, None)

    def compose(self, overrides: list[str], hydra: bool = False) -> Any:
        from hydra import compose

        return compose("config", overrides=overrides, return_hydra_config=hydra)

    def space(self, kind: TrialKind) -> Any:
        """The SearchSpace a ``python train.py -m trial=<kind>`` sweep searches."""
        from hydra.core.global_hydra import GlobalHydra
        from hydra.types import HydraContext
        from omegaconf import OmegaConf

        from hydra_plugins.nemo_rl_hpo._launch import HydraJobs
        from hydra_plugins.nemo_rl_hpo._search_space import build_space
        from hydra_plugins.nemo_rl_hpo.compose_cache import CachedSweepConfigLoader

        config = self.compose([f"trial={kind.name}"], hydra=True)
        loader = GlobalHydra.instance().config_loader()
        jobs = HydraJobs()
        jobs.config = config
        jobs.hydra_context = HydraContext(
            config_loader=CachedSweepConfigLoader(loader),  # type: ignore[arg-type]
            callbacks=None,  # type: ignore[arg-type]
        )
        params = OmegaConf.to_container(config.hydra.sweeper.params, resolve=False)
        return build_space(jobs, params, [f"trial={kind.name}"])  # type: ignore[arg-type]


def _unit_to_value(u: float, dist: Any) -> Any:
    """One coordinate of the unit cube as a value of ``dist`` (log scale where searched so)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    u = min(max(u, 0.0), 1.0 - 1e-12)
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(u * len(dist.choices))]
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        lo, hi = float(dist.low), float(dist.high)
        if dist.log:
            x = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        else:
            x = lo + u * (hi - lo)
        if isinstance(dist, IntDistribution):
            step = dist.step or 1
            n = int((dist.high - dist.low) // step) + 1
            return int(dist.low + min(int(u * n), n - 1) * step)
        if dist.step is not None:
            x = lo + round((x - lo) / dist.step) * dist.step
        return float(x)
    raise TypeError(f"unsupported distribution {dist!r}")


def _active(space: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """The keys a trial with ``values`` samples, in the space's order (conditions applied)."""
    import optuna

    return dict(space.suggest(optuna.trial.FixedTrial(dict(values))))


def design(space: Any, default_values: Mapping[str, Any], n: int, seed: int) -> list[list[str]]:
    """The default configuration, then ``n`` scrambled-Sobol points; each as Hydra overrides."""
    from scipy.stats import qmc

    params = list(space.params)
    sobol = qmc.Sobol(d=len(params), scramble=True, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n need not be a power of 2 (balance warning)
        points = sobol.random(n)
    out = [_overrides(space, _active(space, default_values))]
    for row in points:
        values = {
            p.key: _unit_to_value(float(u), p.distribution)
            for p, u in zip(params, row, strict=True)
        }
        out.append(_overrides(space, _active(space, values)))
    unique: list[list[str]] = []
    for o in out:
        if o not in unique:
            unique.append(o)
    return unique


def _overrides(space: Any, values: Mapping[str, Any]) -> list[str]:
    return [o for o in space.overrides(values) if not o.startswith("trial=")]


def default_values(composer: Composer, space: Any, kind: TrialKind) -> dict[str, Any]:
    """Every searched key's value in the trial's default config (a group key: its option)."""
    from omegaconf import OmegaConf

    cfg = composer.compose([f"trial={kind.name}"], hydra=True)
    choices = cfg.hydra.runtime.choices
    out: dict[str, Any] = {}
    for p in space.params:
        if p.bare_key in space.groups:
            out[p.key] = str(choices[p.bare_key])
        else:
            v = OmegaConf.select(cfg, p.bare_key, default=None)
            if v is not None:
                out[p.key] = v
    return out


# --- one live run --------------------------------------------------------------------------


def config_key(overrides: list[str]) -> str:
    return hashlib.sha1(" ".join(overrides).encode()).hexdigest()[:12]


def run_record(
    composer: Composer, kind: TrialKind, overrides: list[str], seed: int, fixed: Sequence[str] = ()
) -> dict[str, Any]:
    """Run one configuration x seed as the live trial does; its curves, metrics and timings."""
    import torch
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from nemo_rl_hpo import trial as trial_api
    from nemo_rl_hpo.training import loop
    from nemo_rl_hpo.training.grpo import entry

    argv = [f"trial={kind.name}", *overrides, *fixed, f"{kind.seed_key}={seed}"]
    t0w, t0c = time.perf_counter(), time.process_time()
    full = composer.compose(argv, hydra=True)
    HydraConfig.instance().set_config(full)
    cfg = OmegaConf.masked_copy(full, [str(k) for k in full if k != "hydra"])
    compose_s = time.perf_counter() - t0w

    val: dict[str, dict[str, float]] = {}
    train: dict[str, dict[str, float]] = {}
    segments: list[dict[str, float]] = []
    mark = [time.perf_counter(), time.process_time()]

    def segment(step: int) -> None:
        w, c = time.perf_counter(), time.process_time()
        segments.append({"step": step, "wall_s": w - mark[0], "cpu_s": c - mark[1]})
        mark[0], mark[1] = w, c

    def on_report(step: int, metrics: Any) -> None:
        val[str(step)] = {str(k): float(v) for k, v in dict(metrics).items()}
        segment(step)

    run_grpo = getattr(entry, "run_grpo")  # noqa: B009  (patched below: the observer)

    def observed_run_grpo(*args: Any, on_metrics: Any = None, **kw: Any) -> Any:
        def tee(step: int, metrics: Mapping[str, float]) -> None:
            if "validation/reward" in metrics:
                if step == 0:  # the warm start: reported to nobody, recorded here
                    val["0"] = {"val_reward": float(metrics["validation/reward"])}
                    val["0"]["val_accuracy"] = float(metrics["validation/accuracy"])
                    segment(0)
            else:
                train[str(step)] = {k: _r(v) for k, v in metrics.items()}
            if on_metrics is not None:
                on_metrics(step, metrics)

        return run_grpo(*args, on_metrics=tee, **kw)

    build = loop._build

    def observed_build(c: Any, group: str, *args: Any) -> Any:
        obj = build(c, group, *args)
        if group == "loss":  # the supervised loss of every step (a forward hook only reads it)
            n = [0]

            def hook(_m: Any, _inp: Any, out: Any) -> None:
                n[0] += 1
                train[str(n[0])] = {"train_loss": _r(float(out.detach()))}

            obj.register_forward_hook(hook)
        return obj

    error = None
    with tempfile.TemporaryDirectory(prefix="curves-") as tmp:
        # The trial context a sweeper gives a job: a fresh checkpoint dir (no resume).
        os.environ[trial_api.ENV_TRIAL] = json.dumps({"checkpoint_dir": tmp})
        patches = [
            (trial_api, "report", on_report),
            (entry, "run_grpo", observed_run_grpo),
            (loop, "_build", observed_build),
        ]
        saved = [(m, a, getattr(m, a)) for m, a, _ in patches]
        for m, a, f in patches:
            setattr(m, a, f)
        try:
            final = entry.train_grpo(cfg) if kind.name == "grpo" else loop.train(cfg)
        except Exception as e:  # a configuration the trial rejects is a record too
            final, error = {}, f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
        finally:
            for m, a, f in saved:
                setattr(m, a, f)
            os.environ.pop(trial_api.ENV_TRIAL, None)
            HydraConfig.instance().cfg = None  # type: ignore[assignment]
    end_w, end_c = time.perf_counter() - mark[0], time.process_time() - mark[1]
    curve = {s: m[kind.objective] for s, m in val.items() if kind.objective in m}
    return {
        "trial": kind.name,
        "key": config_key(overrides),
        "overrides": overrides,
        "seed": seed,
        "fixed": list(fixed),  # overrides of unsearched keys (--set), e.g. a shorter run
        "curve": curve,  # step -> objective (val_loss / val_reward), every validation
        "val": val,  # step -> every validation metric
        "train": train,  # step -> train metrics of that step
        "segments": segments,  # seconds from the previous validation (or start) to this one
        "tail": {"wall_s": end_w, "cpu_s": end_c},  # last validation -> return (test, save)
        "compose_s": compose_s,
        "wall_s": time.perf_counter() - t0w,
        "cpu_s": time.process_time() - t0c,
        "final": {k: float(v) for k, v in final.items()},
        "error": error,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "num_threads_cfg": int(cfg.num_threads),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load": round(os.getloadavg()[0], 2),
    }


def _r(v: Any) -> float:
    """Train metrics at 7 significant digits (the table's size); objectives stay exact."""
    return float(f"{float(v):.7g}")


# --- the table file ---------------------------------------------------------------------------


def table_path(kind: str) -> Path:
    return DATA / f"{kind}.jsonl.gz"


def read_table(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Every complete record; ``repair`` rewrites the file without a torn last member."""
    records: list[dict[str, Any]] = []
    if not path.exists():
        return records
    torn = False
    try:
        with gzip.open(path, "rt") as f:
            for line in f:
                if line.strip():
                    records.append(json.loads(line))
    except (EOFError, OSError, zlib.error, json.JSONDecodeError):
        torn = True
    if torn and repair:
        print(f"{path}: dropping a torn last record, keeping {len(records)}", flush=True)
        tmp = path.with_suffix(".tmp")
        with gzip.open(tmp, "wt") as f:
            for r in records:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")
        os.replace(tmp, path)
    return records


def append_record(path: Path, record: Mapping[str, Any]) -> None:
    """One gzip member per record, synced: a killed build loses only the run in flight. Under
    the table's write lock: another shard's builder may append to the same file."""
    line = json.dumps(record, separators=(",", ":")) + "\n"
    with _write_lock(path), open(path, "ab") as raw:
        raw.write(gzip.compress(line.encode(), compresslevel=9, mtime=0))
        raw.flush()
        os.fsync(raw.fileno())


@contextlib.contextmanager
def _write_lock(path: Path) -> Iterator[None]:
    """Held while the table file is written (an append, a repair), by any shard's builder."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".write.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _lock(path: Path, shard: str) -> Iterator[None]:
    """Refuse a second builder of the same shard on the same table."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(f".lock{shard.replace('/', 'of')}"), "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(
                f"another build holds {path} (shard {shard}); run one builder per shard"
            ) from None
        yield


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N): this builder runs configurations K, K+N, K+2N, ... of the design."""
    k, _, n = text.partition("/")
    try:
        ki, ni = int(k), int(n)
    except ValueError:
        raise SystemExit(f"--shard must be K/N with 0 <= K < N, e.g. 0/2; got {text!r}") from None
    if not 0 <= ki < ni:
        raise SystemExit(f"--shard must be K/N with 0 <= K < N, e.g. 0/2; got {text!r}")
    return ki, ni


def build(args: argparse.Namespace) -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _locked_build(args)
    finally:
        torch.set_num_threads(threads)  # a caller in-process (a test) keeps its own


def _locked_build(args: argparse.Namespace) -> None:
    sweep = read_sweep(Path(args.from_sweep)) if args.from_sweep else None
    if sweep is not None and (args.set or args.trial or args.shard != "0/1"):
        raise SystemExit(
            "build --from-sweep takes the trial and the --set overrides from the sweep (no shards)"
        )
    trial = sweep_trial(sweep) if sweep is not None else args.trial
    if trial is None:
        raise SystemExit("build: give --trial supervised|grpo, or --from-sweep <sweep dir>")
    kind = TRIALS[trial]
    if args.table:
        path = Path(args.table)
    elif sweep is not None:  # beside the sweep, never into the committed tables
        path = Path(args.from_sweep) / "curves.jsonl.gz"
    else:
        path = table_path(kind.name)
    parse_shard(args.shard)
    with _lock(path, args.shard):
        with _write_lock(path):
            done = {(r["key"], r["seed"]) for r in read_table(path, repair=True)}
        with Composer() as composer:
            _build(args, path, kind, sweep, done, composer)


def _build(
    args: argparse.Namespace,
    path: Path,
    kind: TrialKind,
    sweep: Mapping[str, Any] | None,
    done: set[tuple[str, int]],
    composer: Composer,
) -> None:
    """Run the records of ``path`` not yet ``done``: the design's (this shard's), or a sweep's."""
    space = composer.space(kind)
    if sweep is not None:
        fixed, runs = sweep_runs(composer, space, kind, sweep)
        n_configs = len({config_key(o) for o, _ in runs})
        what = f"the {n_configs} configurations of {args.from_sweep}"
    else:
        k, n = parse_shard(args.shard)
        fixed = list(args.set)
        rows = design(space, default_values(composer, space, kind), args.configs, args.design_seed)
        runs = [
            (o, kind.first_seed + s)
            for i, o in enumerate(rows)
            if i % n == k
            for s in range(args.seeds)
        ]
        what = f"{len(rows)} configurations x {args.seeds} seeds"
    todo = [(o, seed) for o, seed in runs if (config_key(o), seed) not in done]
    print(f"{path}: {len(done)} records, {len(todo)} to run ({what})", flush=True)
    for i, (overrides, seed) in enumerate(todo[: args.limit or None]):
        rec = run_record(composer, kind, overrides, seed, fixed)
        append_record(path, rec)
        best = rec["curve"].get(max(rec["curve"], key=int)) if rec["curve"] else None
        print(
            f"[{i + 1}/{len(todo)}] seed {seed} {' '.join(overrides)}: final {best} "
            f"cpu {rec['cpu_s']:.1f}s wall {rec['wall_s']:.1f}s load {rec['load']}"
            + (f" ERROR {rec['error']}" if rec["error"] else ""),
            flush=True,
        )


# --- the configurations of a live sweep (bench/replay_check.py replays it) ---------------------


def read_sweep(sweep_dir: Path) -> dict[str, Any]:
    """The results JSON a finished sweep wrote (``optimization_results.json``)."""
    path = sweep_dir / "optimization_results.json"
    if not path.is_file():
        raise SystemExit(
            f"--from-sweep {sweep_dir}: no optimization_results.json there; give the "
            "hydra.sweep.dir of a finished `python train.py -m ...` sweep."
        )
    return dict(json.loads(path.read_text()))


def sweep_trial(sweep: Mapping[str, Any]) -> str:
    """Which trial of ``train.py`` the sweep ran (its ``trial=`` override; supervised if none)."""
    chosen = [o.split("=", 1)[1] for o in sweep["base_overrides"] if o.startswith("trial=")]
    trial = chosen[-1] if chosen else "supervised"
    if trial not in TRIALS:
        raise SystemExit(f"--from-sweep: trial={trial} is not one of {sorted(TRIALS)}")
    return trial


def sweep_runs(
    composer: Composer, space: Any, kind: TrialKind, sweep: Mapping[str, Any]
) -> tuple[list[str], list[tuple[list[str], int]]]:
    """The sweep's unsearched overrides, and (overrides, seed) of every configuration it ran.

    A configuration's overrides are rebuilt from its recorded parameters by the space that
    made them, so they are the text the sweep launched (and the key the simulator maps to);
    its seed is the one its jobs ran with: the composed seed key, or each repeat's ``0..n-1``.
    """
    from omegaconf import OmegaConf

    fixed = [o for o in sweep["base_overrides"] if not o.startswith("trial=")]
    searched = {p.key for p in space.params}
    clash = [o for o in fixed if o.split("=", 1)[0].lstrip("+~") in searched]
    if clash:
        raise SystemExit(f"--from-sweep: {clash[0]} sets a searched key; nothing to record")
    sweeper = sweep.get("sweep_config") or {}
    repeats = int(sweeper.get("repeats") or 1)
    if repeats > 1 and sweeper.get("seed_key") != kind.seed_key:
        raise SystemExit(
            f"--from-sweep: repeats seed {sweeper.get('seed_key')}, but the {kind.name} "
            f"trial's seed key is {kind.seed_key}; the table could not hold those runs."
        )
    runs: list[tuple[list[str], int]] = []
    for t in sweep["trials"]:
        params = t.get("params") or {}
        values = {k: params[k] for k in searched if k in params}
        if not values:  # asked but never launched: nothing ran
            continue
        overrides = _overrides(space, _active(space, values))
        if repeats > 1:
            seeds = list(range(repeats))
        else:
            cfg = composer.compose([f"trial={kind.name}", *overrides, *fixed])
            seeds = [int(OmegaConf.select(cfg, kind.seed_key))]
        runs += [(overrides, s) for s in seeds if (overrides, s) not in runs]
    return fixed, runs


def show(args: argparse.Namespace) -> None:
    import statistics

    records = read_table(Path(args.table))
    by_cfg: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_cfg.setdefault(r["key"], []).append(r)
    errors = sum(1 for r in records if r["error"])
    cpu = [r["cpu_s"] for r in records]
    print(f"{args.table}: {len(records)} records, {len(by_cfg)} configurations, {errors} errors")
    if cpu:
        print(f"CPU s per run: median {statistics.median(cpu):.1f}, total {sum(cpu) / 3600:.2f} h")
    seeds: dict[int, int] = {}
    for rs in by_cfg.values():
        seeds[len(rs)] = seeds.get(len(rs), 0) + 1
    print("configurations by seed count:", dict(sorted(seeds.items())))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="run missing records and append them")
    b.add_argument("--trial", choices=sorted(TRIALS))
    b.add_argument(
        "--from-sweep",
        metavar="SWEEP_DIR",
        help="record the configurations a finished sweep ran, with its unsearched overrides "
        "and seeds (default table: SWEEP_DIR/curves.jsonl.gz; bench/replay_check.py)",
    )
    b.add_argument("--configs", type=int, default=96, help="Sobol points (the default comes too)")
    b.add_argument("--seeds", type=int, default=2, help="seeds per configuration")
    b.add_argument("--design-seed", type=int, default=0, help="the Sobol scramble's seed")
    b.add_argument("--table", help="default: bench/data/<trial>.jsonl.gz")
    b.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an unsearched override for every run (a short table for tests)",
    )
    b.add_argument("--limit", type=int, default=0, help="run at most this many records")
    b.add_argument(
        "--shard",
        default="0/1",
        metavar="K/N",
        help="run configurations K, K+N, ... only (two builders: 0/2 and 1/2)",
    )
    s = sub.add_parser("show", help="record counts of a table")
    s.add_argument("table")
    args = ap.parse_args(argv)
    {"build": build, "show": show}[args.cmd](args)


if __name__ == "__main__":
    main()
