"""What a sweep records about itself: the study attributes the report and CLI read,
``sweep.json`` beside the study, and the shell line that resumes the sweep.

Every key it writes is named in ``nemo_rl_hpo/sweep/records.py``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import warnings
from pathlib import Path

import optuna
from omegaconf import DictConfig

from hydra_plugins.nemo_rl_hpo._study import OpenStudy
from nemo_rl_hpo.report import files
from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep import storage as st


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
    files.write_text(
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
