"""The ``nemo-rl-hpo`` command: report, status, best, export and list for a sweep's study.

    nemo-rl-hpo report multirun/2026-11-28/12-00-00      # plots + importance -> <dir>/report/
    nemo-rl-hpo status multirun/2026-11-28/12-00-00 --watch 5
    $(nemo-rl-hpo best multirun/2026-11-28/12-00-00)      # rerun the best trial
    nemo-rl-hpo export multirun/... -o trials.csv
    nemo-rl-hpo list --storage postgresql://user@host/optuna

Every command takes a sweep dir or ``--storage URL [--study NAME]``; a storage password comes
from ``NEMO_RL_HPO_STORAGE_PASSWORD`` and is never printed.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from nemo_rl_hpo.errors import named
from nemo_rl_hpo.fidelity import history
from nemo_rl_hpo.report.status import confirmation_lines, fmt, status_view
from nemo_rl_hpo.sweep import confirm, cost, records, repeats

if TYPE_CHECKING:
    import optuna

PROG = "nemo-rl-hpo"


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit 2 (argparse would print the whole usage)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_target(p: argparse.ArgumentParser, *, study: bool = True) -> None:
    p.add_argument(
        "sweep_dir", nargs="?", metavar="SWEEP_DIR", help="the sweep dir (multirun/DATE/TIME)"
    )
    p.add_argument("--storage", metavar="URL", help="storage URL instead of (or over) a sweep dir")
    if study:
        p.add_argument(
            "--study", metavar="NAME", help="study name (needed if the storage holds several)"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Inspect nemo-rl-hpo sweeps: report, status, best, export, list.",
        epilog="Each command takes SWEEP_DIR or --storage URL [--study NAME].",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser(
        "report",
        help="write plots and index.html (also while the sweep runs)",
        description="Write plots (offline HTML + PNG) and index.html for a study.",
    )
    _add_target(p)
    p.add_argument("--out", metavar="DIR", type=Path, help="output dir (default: SWEEP_DIR/report)")
    p = sub.add_parser(
        "status",
        help="trial counts by state, best so far, running trials",
        description="Show trial counts by state, the best value so far and the running trials.",
    )
    _add_target(p)
    p.add_argument("--watch", metavar="SECONDS", type=_positive, help="refresh every SECONDS")
    p.add_argument(
        "--iterations", metavar="N", type=_count, help="with --watch: stop after N refreshes"
    )
    p.add_argument(
        "--refresh-cost",
        action="store_true",
        help="ask Slurm's accounting (sacct) again for jobs whose cost was measured locally "
        "while it was unavailable, and record what it says",
    )
    p = sub.add_parser(
        "best",
        help="print the command that reproduces the best trial",
        description="Print the command line that reproduces the best trial (stdout: the command "
        "only, so `$(nemo-rl-hpo best DIR)` runs it). Multi-objective: the Pareto front, or the "
        "best on one objective with --objective.",
    )
    _add_target(p)
    p.add_argument("--objective", metavar="NAME", help="multi-objective: best on this objective")
    p = sub.add_parser(
        "confirm",
        help="re-run the best configurations on test seeds (resumable)",
        description="Run the confirmation stage on a sweep (also one made without it): the "
        "top-k configurations that completed the full length re-run on test seeds through the "
        "sweep's own command and launcher (its resume command, with no new search trial); "
        "confirmations already done are not re-run. The pick is the best test mean.",
    )
    _add_target(p)
    p.add_argument("--top-k", type=_count, metavar="K", help="configurations (default: 3)")
    p.add_argument("--seeds", type=_count, metavar="N", help="test seeds each (default: 5)")
    p.add_argument("--first-seed", type=int, metavar="S", help="first test seed (default: 1000)")
    p.add_argument("--seed-key", metavar="KEY", help="config key of the seed (default: seed_key)")
    p.add_argument(
        "--override",
        action="append",
        metavar="KEY=VALUE",
        help="a test-only setting (repeatable), e.g. --override task.split=test",
    )
    p.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    p = sub.add_parser(
        "export",
        help="write every trial as CSV",
        description="Write one CSV row per trial: state, values, params, metrics, durations, "
        "job dir.",
    )
    _add_target(p)
    p.add_argument("-o", "--output", metavar="FILE", type=Path, help="CSV file (default: stdout)")
    p = sub.add_parser(
        "list",
        help="list the studies in a storage with trial counts",
        description="List the studies of a storage with their trial counts by state.",
    )
    _add_target(p, study=False)
    return parser


def _load(args: argparse.Namespace) -> optuna.Study:
    from nemo_rl_hpo.report.locate import LocateError, load, resolve

    try:
        return load(resolve(args.sweep_dir, args.storage, getattr(args, "study", None)))
    except LocateError as e:
        raise CliError(str(e), code=2) from None


# ---------------------------------------------------------------- commands


def cmd_report(args: argparse.Namespace) -> int:
    from nemo_rl_hpo.report.build import build_report

    study = _load(args)
    if args.out is not None:
        out = args.out
    elif args.sweep_dir is not None:
        out = Path(args.sweep_dir) / "report"
    else:
        out = Path.cwd() / f"{study.study_name}-report"
    index = build_report(study, out)
    print(index)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    if args.iterations is not None and args.watch is None:
        raise CliError("--iterations needs --watch SECONDS.", code=2)
    study = _load(args)
    console = Console()
    if args.refresh_cost:
        n = cost.refresh(study)
        console.print(f"cost: {n} job record(s) filled in from sacct")
    if args.watch is None:
        console.print(status_view(study))
        return 0
    try:
        with Live(status_view(study), console=console, auto_refresh=False) as live:
            n = 1
            while args.iterations is None or n < args.iterations:
                time.sleep(args.watch)
                live.update(status_view(study), refresh=True)
                n += 1
    except KeyboardInterrupt:
        pass
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    from nemo_rl_hpo.report.trials import (
        SweepInfo,
        best_trial,
        complete_trials,
        pareto_trials,
        reproduce_command,
    )

    study = _load(args)
    info = SweepInfo.from_study(study)
    trials = study.get_trials(deepcopy=False)
    if not complete_trials(trials):
        raise CliError(f"study {info.study_name!r} has no complete trial yet.")
    if not info.command:
        print(
            f"note: study {info.study_name!r} records no app command; printing the overrides only.",
            file=sys.stderr,
        )
    if args.objective is not None:
        if args.objective not in info.objectives:
            raise CliError(
                f"--objective {args.objective!r} is not an objective of this study; "
                f"use one of: {', '.join(info.objectives)}.",
                code=2,
            )
        chosen = [best_trial(trials, study.directions, info.objectives.index(args.objective))]
    elif info.multi_objective:
        chosen = list(pareto_trials(trials, study.directions))
    else:
        chosen = [best_trial(trials, study.directions)]
        confirmed = confirm.read_confirmation(study, trials)
        if confirmed is not None and confirmed.pick is not None:  # the test mean decides
            _say_confirmation(confirmed, info.objectives[0], sys.stderr)
            chosen = [confirmed.pick.trial]
    for t in chosen:
        if t is None:
            continue
        values = ", ".join(f"{o}={fmt(v)}" for o, v in zip(info.objectives, t.values, strict=True))
        comment = f"# trial {t.number}: {values}"
        if info.multi_objective and args.objective is None:
            print(comment)
        else:
            print(comment, file=sys.stderr)
        seeds = repeats.seed_records(t)
        if seeds:  # a repeated configuration: its value aggregates these seeds
            key = study.user_attrs.get(records.STUDY_REPEATS, {}).get("seed_key", "seed")
            each = ", ".join(
                f"{key}={r['seed']}: {fmt((r.get('values') or [None])[0])}" for r in seeds
            )
            print(
                f"# seeds: {each}; {repeats.spread(t)}; add {key}=N to rerun one", file=sys.stderr
            )
        if history.segments(t):  # paused and promoted: where each segment ended
            print(f"# rungs: {history.line(t)}", file=sys.stderr)
        print(reproduce_command(info, t, here=os.getcwd()))
    if info.kind == "pbt":
        print(
            "note: PBT trial: this is its final-round configuration; the schedule that produced "
            "it is in optimization_results.json (pbt.schedule).",
            file=sys.stderr,
        )
    return 0


def _say_confirmation(confirmed: confirm.Confirmation, objective: str, out: IO[str]) -> None:
    for line in confirmation_lines(confirmed, objective):
        print(f"# {line}", file=out)


def cmd_export(args: argparse.Namespace) -> int:
    from nemo_rl_hpo.report import export, files

    study = _load(args)
    if args.output is None:
        export.export_csv(study, sys.stdout)
        return 0
    buf = io.StringIO()
    n = export.export_csv(study, buf)
    files.write_text(args.output, buf.getvalue())
    print(f"wrote {n} trials to {args.output}", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from nemo_rl_hpo.fidelity._claims import is_claims_study
    from nemo_rl_hpo.report.locate import LocateError, open_target_storage, resolve
    from nemo_rl_hpo.report.trials import STATES, best_trial, counts_by_state

    try:
        target = resolve(args.sweep_dir, args.storage, None)
        storage = open_target_storage(target)
    except LocateError as e:
        raise CliError(str(e), code=2) from None
    studies = sorted(
        (s for s in storage.get_all_studies() if not is_claims_study(s.study_name)),
        key=lambda s: s.study_name,
    )
    table = Table(title=f"studies in {target.shown_storage}")
    for col in ("study", "directions", "trials", *STATES, "best"):
        table.add_column(col)
    for s in studies:
        trials = storage.get_all_trials(s._study_id, deepcopy=False)
        counts = counts_by_state(trials)
        best = best_trial(trials, s.directions) if len(s.directions) == 1 else None
        table.add_row(
            s.study_name,
            ",".join(d.name.lower() for d in s.directions),
            str(len(trials)),
            *(str(counts[k]) for k in STATES),
            fmt(best.value if best else None),
        )
    Console().print(table)
    return 0


def confirm_command(study: optuna.Study, args: argparse.Namespace) -> str:
    """The sweep's own command (its resume line), continued to no new search trial, with the
    confirmation stage's settings: earlier settings of this study unless flags replace them."""
    import shlex

    from nemo_rl_hpo.report.trials import SweepInfo
    from nemo_rl_hpo.sweep.proposer import counted_trials

    info = SweepInfo.from_study(study)
    attrs = study.user_attrs
    line = attrs.get(records.STUDY_RESUME_COMMAND)
    if isinstance(line, str) and line:
        argv = shlex.split(line)
    elif info.command and info.sweep_dir:  # recorded before the resume command was
        argv = [*info.command, "-m", *info.base_overrides, f"hydra.sweep.dir={info.sweep_dir}"]
        argv.append(f"hydra.sweeper.study_name={info.study_name}")
    else:
        raise CliError(
            f"study {info.study_name!r} records no app command (not made by nemo-rl-hpo's "
            "sweeper): rerun its app with -m hydra.sweeper.confirm.top_k=K and its "
            "hydra.sweep.dir / hydra.sweeper.study_name / hydra.sweeper.storage."
        )
    if len(study.directions) != 1:
        raise CliError("confirmation ranks configurations by one objective; this has several.")
    if info.kind == records.KIND_PBT:
        raise CliError("a PBT study's configurations are schedules; confirmation needs fixed ones.")
    earlier = attrs.get(records.STUDY_CONFIRM)
    earlier = earlier if isinstance(earlier, dict) else {}
    settings: dict[str, Any] = {
        "top_k": args.top_k or earlier.get("top_k") or 3,
        "seeds": args.seeds or earlier.get("seeds") or 5,
        "first_seed": args.first_seed if args.first_seed is not None else earlier.get("first_seed"),
        "seed_key": args.seed_key or earlier.get("seed_key"),
        "overrides": args.override if args.override is not None else earlier.get("overrides"),
    }
    n = counted_trials(study.get_trials(deepcopy=False))
    extra = [f"hydra.sweeper.n_trials={max(1, n)}"]  # the search is over: no new trial
    for k, v in settings.items():
        if v is None:
            continue
        if k == "overrides":
            v = "[" + ",".join(json.dumps(str(o)) for o in v) + "]"
        extra.append(f"hydra.sweeper.confirm.{k}={v}")
    keys = {e.split("=", 1)[0] for e in extra}
    argv = [a for a in argv if a.split("=", 1)[0] not in keys]
    if argv and argv[0] in ("python", "python3"):  # the Python this package is installed in
        argv[0] = sys.executable
    return " ".join(shlex.quote(a) for a in [*argv, *extra])


def cmd_confirm(args: argparse.Namespace) -> int:
    from nemo_rl_hpo.report.trials import SweepInfo

    study = _load(args)
    line = confirm_command(study, args)
    info = SweepInfo.from_study(study)
    print(f"# {line}", file=sys.stderr)
    if args.dry_run:
        print(line)
        return 0
    cwd = info.cwd if info.cwd and os.path.isdir(info.cwd) else None
    import subprocess

    return subprocess.run(line, shell=True, cwd=cwd).returncode


COMMANDS = {
    "report": cmd_report,
    "confirm": cmd_confirm,
    "status": cmd_status,
    "best": cmd_best,
    "export": cmd_export,
    "list": cmd_list,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nemo-rl-hpo`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    import optuna

    from nemo_rl_hpo.sweep.storage import StorageError

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return COMMANDS[args.command](args)
    except CliError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return e.code
    except BrokenPipeError:  # `nemo-rl-hpo export DIR | head`
        return 0
    except StorageError as e:  # already one masked sentence; its parameter is --storage
        print(f"{PROG} {args.command}: error: {named(e, '--')}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
