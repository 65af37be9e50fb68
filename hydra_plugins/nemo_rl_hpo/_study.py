"""The study of a sweep: where it is stored, opening it, what it records about the sweep, the
resume command, the progress line and the outputs written at the end.

Every key it writes is named in ``nemo_rl_hpo/sweep/records.py``.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, read_write
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.nemo_rl_hpo._settings import CommonSettings, SweepConfigError
from nemo_rl_hpo.report import _io
from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep import storage as st
from nemo_rl_hpo.sweep.core import SweepSettings, SweepSummary
from nemo_rl_hpo.sweep.proposer import counted_trials

log = logging.getLogger(__name__)


@dataclass
class OpenStudy:
    study: optuna.Study
    name: str
    bare_url: str  # the storage URL without its password (jobs get the password by env)
    masked: str  # the URL as shown to people
    sweep_dir: Path
    resume: str = ""  # the shell line that resumes the sweep (set by start_study)


def start_study(
    settings: CommonSettings,
    config: DictConfig,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    *,
    on_slurm: bool,
    kind: str,
) -> OpenStudy:
    """Open the sweep's study and record the sweep on it: what every sweeper does first."""
    opened = open_study(settings, config, settings.directions, sampler, pruner, on_slurm)
    opened.resume = resume_command(opened.sweep_dir, opened.name)
    record_sweep(
        opened,
        config,
        kind=kind,
        sampler=type(sampler).__name__,
        objectives=settings.objectives,
        directions=settings.directions,
        resume=opened.resume,
    )
    return opened


def storage_url(settings: CommonSettings, sweep_dir: Path, on_slurm: bool) -> str:
    """The configured storage, or the default: a journal file under Slurm (jobs on other nodes
    write the same file over the shared file system), SQLite otherwise."""
    if settings.storage is not None:
        return settings.storage
    if on_slurm:
        return f"{st.JOURNAL_SCHEME}{sweep_dir / 'optuna.journal'}"
    return f"sqlite:///{sweep_dir / 'optuna.db'}"


def open_study(
    settings: CommonSettings,
    config: DictConfig,
    directions: list[str],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    on_slurm: bool,
) -> OpenStudy:
    """Create or load the study in ``hydra.sweep.dir``; a password never stays in the config."""
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    url = storage_url(settings, sweep_dir, on_slurm)
    bare_url = st.export_password(url)
    masked = st.mask(url) or ""
    scrub_secrets(config)
    try:
        storage = st.open_storage(url, retry_s=settings.storage_retry_s)
    except st.StorageError as e:
        raise SweepConfigError(str(e)) from None
    st.register_live(bare_url, storage)
    study_name = str(settings.study_name or config.hydra.job.name)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            sampler=sampler,
            pruner=pruner,
            directions=directions,  # type: ignore[arg-type]
            load_if_exists=True,
        )
    except Exception as e:
        raise SweepConfigError(
            f"hydra.sweeper.storage={masked!r}: cannot create study {study_name!r} "
            f"({st.mask(str(e))})."
        ) from None
    existing = [d.name.lower() for d in study.directions]
    if existing != directions:
        raise SweepConfigError(
            f"study {study_name!r} in {masked} optimizes {existing}, but "
            f"hydra.sweeper.direction is {directions}; set hydra.sweeper.study_name to a new "
            "name or restore the direction."
        )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return OpenStudy(study, study_name, bare_url, masked, sweep_dir)


def scrub_secrets(config: DictConfig) -> None:
    """Mask storage passwords in the config that launchers save and pickle for every job.

    Jobs reach the study through the trial context (URL without password) and inherit the
    password through the process environment, so nothing a job writes needs it.
    """
    with read_write(config.hydra):
        overrides = config.hydra.overrides.hydra
        for i, value in enumerate(list(overrides)):
            overrides[i] = st.mask(str(value))
        sweeper = config.hydra.sweeper
        if isinstance(sweeper.get("storage"), str):
            sweeper["storage"] = st.mask(sweeper["storage"])
        ws = sweeper.get("warm_start")
        if ws is not None and isinstance(ws.get("storage"), str):
            ws["storage"] = st.mask(ws["storage"])


def resume_command(sweep_dir: Path, study_name: str) -> str:
    """The shell line that resumes this sweep: the same command, pinned to its dir and study."""
    args = [a for a in sys.argv[1:] if not a.startswith(("hydra.sweep.dir=", "-m", "--multirun"))]
    args = [a for a in args if not a.startswith("hydra.sweeper.study_name=")]
    cmd = ["python", _argv0(), "-m", *args, f"hydra.sweep.dir={sweep_dir}"]
    cmd.append(f"hydra.sweeper.study_name={study_name}")
    return " ".join(shlex.quote(st.mask(a) or a) for a in cmd)


def record_sweep(
    opened: OpenStudy,
    config: DictConfig,
    *,
    kind: str,
    sampler: str,
    objectives: list[str],
    directions: list[str],
    resume: str,
) -> None:
    """What the report and CLI read about this sweep, on the study; ``sweep.json`` beside it."""
    task_overrides = [str(o) for o in config.hydra.overrides.task]
    attrs = {
        records.STUDY_COMMAND: ["python", _argv0()],
        records.STUDY_CWD: os.getcwd(),
        records.STUDY_BASE_OVERRIDES: [st.mask(o) or o for o in task_overrides if not _is_sweep(o)],
        records.STUDY_OBJECTIVES: objectives or (["value"] if len(directions) == 1 else []),
        records.STUDY_SWEEP_DIR: str(opened.sweep_dir),
        records.STUDY_SAMPLER: sampler,
        records.STUDY_KIND: kind,
        records.STUDY_STORAGE: opened.masked,
        records.STUDY_RESUME_COMMAND: resume,
    }
    for k, v in attrs.items():
        opened.study.set_user_attr(k, v)
    name_metrics(opened.study)
    _io.write_text(
        opened.sweep_dir / "sweep.json",
        json.dumps({"study_name": opened.name, "storage": st.mask(opened.bare_url)}, indent=2),
    )


def name_metrics(study: optuna.Study) -> None:
    """Optuna's own metric names (``study.set_metric_names``), so optuna-dashboard and
    ``optuna.visualization`` label each objective as our report does, not "Objective 0"."""
    from optuna.exceptions import ExperimentalWarning

    from nemo_rl_hpo.report.trials import objective_names

    names = objective_names(study)
    if study.metric_names == names:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # experimental since Optuna 3.2
        study.set_metric_names(names)


def write_outputs(
    study: optuna.Study,
    sweep_dir: Path,
    started_at: datetime,
    raw_config: Mapping[str, Any],
    write_report: bool,
) -> None:
    """Results files (always), the report (``write_report``) and the summary block (logged and
    ``summary.txt``); a failure is a warning."""
    sweep_cfg = dict(raw_config)
    if sweep_cfg.get("storage"):
        sweep_cfg["storage"] = st.mask(str(sweep_cfg["storage"]))
    ws = sweep_cfg.get("warm_start")
    if isinstance(ws, Mapping) and ws.get("storage"):
        sweep_cfg["warm_start"] = {**ws, "storage": st.mask(str(ws["storage"]))}
    try:
        from nemo_rl_hpo.report.results import write_results

        write_results(
            study,
            sweep_dir,
            sweep_config=sweep_cfg,
            started_at=started_at,
            finished_at=datetime.now(),
        )
    except ImportError:
        log.warning("results writer not available")
    except Exception as e:
        log.warning("could not write results: %s", e)
    if write_report:
        try:
            from nemo_rl_hpo.report import build_report

            build_report(study, sweep_dir / "report")
        except ImportError:
            log.warning("report builder not available")
        except Exception as e:
            log.warning("could not write the report: %s", e)
    try:  # last, so that it is what the user sees when the sweep ends
        from nemo_rl_hpo.report.summary import write_summary

        for line in write_summary(study, sweep_dir):
            log.info("%s", line)
    except Exception as e:
        log.warning("could not write the summary: %s", e)


class Progress:
    """One line per finished trial: n/total, state, value, best, running, elapsed, ETA."""

    def __init__(self, settings: SweepSettings, study: optuna.Study) -> None:
        self.settings = settings
        self.study = study
        self.t0 = time.time()
        self.done = 0

    def __call__(self, t: FrozenTrial, summary: SweepSummary, trials: list[FrozenTrial]) -> None:
        self.done += 1
        finished = sum(1 for x in trials if x.state.is_finished() and x.state != TrialState.WAITING)
        running = sum(1 for x in trials if x.state == TrialState.RUNNING)
        elapsed = time.time() - self.t0
        left = max(0, self.settings.n_trials - counted_trials(trials))
        per = elapsed / self.done
        eta = per * (left + running) / max(1, self.settings.n_jobs)
        value = "-" if t.values is None else ",".join(f"{v:.6g}" for v in t.values)
        best = "-"
        done = [x for x in trials if x.state == TrialState.COMPLETE and x.values is not None]
        if done and len(self.study.directions) == 1:
            sign = 1.0 if self.study.direction.name == "MINIMIZE" else -1.0
            b = min(done, key=lambda x: sign * float(x.values[0]))
            best = f"{b.values[0]:.6g} (#{b.number})"
        elif done:
            best = "see the Pareto front"
        reason = ""
        if t.state == TrialState.FAIL:
            reason = f" reason={records.fail_reason(t)}"
        if t.state == TrialState.PRUNED:
            reason = f" at step {t.user_attrs.get(records.PRUNED_AT_STEP, t.last_step)}"
        log.info(
            "[%d/%d] trial %d %s value=%s best=%s running=%d elapsed=%s eta=%s%s",
            finished,
            self.settings.n_trials,
            t.number,
            t.state.name,
            value,
            best,
            running,
            _hms(elapsed),
            _hms(eta),
            reason,
        )


def _argv0() -> str:
    try:
        return os.path.relpath(sys.argv[0])
    except ValueError:
        return sys.argv[0]


def _is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        (ov,) = OverridesParser.create().parse_overrides([override])
    except Exception:
        return False
    return bool(ov.is_sweep_override())


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
