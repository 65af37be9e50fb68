"""How a trial job opens the study the sweeper created (``open_storage(url, existing=True)``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna

from nemo_rl_hpo.sweep.storage import open_storage

JOB = textwrap.dedent(
    """
    import json, sys

    import optuna

    from nemo_rl_hpo.sweep.storage import open_storage

    storage = open_storage(sys.argv[1], existing=True)
    study = optuna.load_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.report(0.5, step=1)
    study.tell(trial, 0.25)
    alembic_at_tell = "alembic" in sys.modules
    version = storage.get_current_version()  # the deferred version manager answers on demand
    print(json.dumps({"alembic_at_tell": alembic_at_tell, "version": version}))
    """
)


def test_a_job_records_its_trial_without_loading_schema_migrations(tmp_path: Path) -> None:
    """A job skips Optuna's schema bookkeeping (alembic, ~0.14 s a job) but still works fully."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    sweeper_storage = open_storage(url)
    optuna.create_study(study_name="s", storage=sweeper_storage)

    out = subprocess.run(
        [sys.executable, "-c", JOB, url], capture_output=True, text=True, check=True
    ).stdout
    seen = json.loads(out.strip().splitlines()[-1])

    assert seen["alembic_at_tell"] is False
    assert seen["version"] == sweeper_storage.get_current_version()  # type: ignore[attr-defined]
    (frozen,) = optuna.load_study(study_name="s", storage=url).trials
    assert frozen.state == optuna.trial.TrialState.COMPLETE
    assert frozen.value == 0.25
    assert frozen.intermediate_values == {1: 0.5}


def test_the_sweeper_still_creates_and_checks_the_schema(tmp_path: Path) -> None:
    """Only ``existing=True`` defers the version manager; a new database gets its tables."""
    storage = open_storage(f"sqlite:///{tmp_path / 'new.db'}")
    assert type(storage._version_manager).__name__ == "_VersionManager"  # type: ignore[attr-defined]
    study = optuna.create_study(study_name="fresh", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(study.trials) == 2
