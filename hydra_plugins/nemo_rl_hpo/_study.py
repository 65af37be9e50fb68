"""The sweep's study: where it is stored, creating or loading it, and keeping its password out
of the config every job receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
from omegaconf import DictConfig, read_write

from hydra_plugins.nemo_rl_hpo._settings import CommonSettings, SweepConfigError, config_error
from nemo_rl_hpo.sweep import storage as st


@dataclass
class OpenStudy:
    study: optuna.Study
    name: str
    bare_url: str  # the storage URL without its password (jobs get the password by env)
    masked: str  # the URL as shown to people
    sweep_dir: Path
    resume: str = ""  # the shell line that resumes the sweep (set by start_study)


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
        raise config_error(e) from None
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
