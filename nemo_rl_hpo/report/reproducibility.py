"""The results JSON's reproducibility block: what someone needs to rerun or judge this sweep.

The RL-tuning checklist (Eimer, Lindauer, Raileanu, ICML 2023) asks a reported result to name its
search space, its budget, its tuning and test seeds, and the software and hardware it ran on.
The hardware and versions are those of the machine that writes the results (the sweeper's);
the GPUs the jobs saw are each trial's ``devices`` record, summarized here.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from nemo_rl_hpo.sweep import confirm, records

PACKAGES = (
    "nemo-rl-hpo",
    "optuna",
    "hydra-core",
    "omegaconf",
    "hydra-submitit-launcher",
    "submitit",
    "torch",
    "numpy",
    "scikit-learn",
    "sqlalchemy",
)


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def gpus() -> list[str]:
    """The GPUs this machine has (``nvidia-smi``'s names), [] without any or without the tool."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return (
        [ln.strip() for ln in out.stdout.splitlines() if ln.strip()] if out.returncode == 0 else []
    )


def git_commit(cwd: str | None) -> dict[str, Any] | None:
    """The app's git commit (and whether its tree had changes) when it runs from a git repo."""
    if not cwd or not os.path.isdir(cwd):
        return None
    try:
        head = subprocess.run(
            ["git", "-C", cwd, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", cwd, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def tuning_seeds(study: optuna.Study) -> dict[str, Any]:
    """The seeds the search ran on: the repeats' seeds, or the one the app's config has."""
    attrs = study.user_attrs
    conf = attrs.get(records.STUDY_CONFIRM)
    reps = attrs.get(records.STUDY_REPEATS)
    out: dict[str, Any] = {}
    if isinstance(reps, dict):
        out["repeats"] = {"seed_key": reps.get("seed_key"), "seeds": list(range(int(reps["n"])))}
    if isinstance(conf, dict):
        out["seed_key"] = conf.get("seed_key")
        out["tuning_seeds"] = conf.get("tuning_seeds")
        out["test_seeds"] = conf.get("test_seeds")
    return out


def reproducibility(
    study: optuna.Study,
    trials: Sequence[FrozenTrial],
    sweep_config: Mapping[str, Any] | None,
    cwd: str | None,
) -> dict[str, Any]:
    from nemo_rl_hpo.report.trials import duration_s
    from nemo_rl_hpo.sweep.proposer import counted_trials

    cfg = dict(sweep_config or {})
    seconds = [d for t in trials if (d := duration_s(t)) is not None]
    seen: set[str] = set()
    for t in trials:
        for d in t.user_attrs.get(records.DEVICES) or []:
            seen.add(str(d))
    return {
        "search_space": cfg.get("params"),
        "sampler": study.user_attrs.get(records.STUDY_SAMPLER),
        "budget": {
            "n_trials": cfg.get("n_trials"),
            "trials_counted": counted_trials(list(trials)),
            "trial_seconds": round(sum(seconds), 3),
            "confirmation": confirm.jobs_spent(study),  # outside n_trials
        },
        "seeds": tuning_seeds(study),
        "hardware": {
            "host": platform.node(),
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "gpus": gpus(),
            "job_devices": sorted(seen),
        },
        "packages": package_versions(),
        "app_git": git_commit(cwd),
    }
