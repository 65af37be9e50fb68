"""Several processes share one Optuna study on a real PostgreSQL server.

    ci/postgres.sh start && . /tmp/nemo-rl-hpo-pg/env.sh
    pytest -m postgres tests/test_postgres.py

Fails (does not skip) without NEMO_RL_HPO_TEST_PG_URL: selecting ``-m postgres`` means a server
is expected.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

ENV_URL = "NEMO_RL_HPO_TEST_PG_URL"

WORKER = """
import sys

import optuna

from nemo_rl_hpo.sweep.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
url, name = sys.argv[1], sys.argv[2]
storage = open_storage(url)
study = optuna.load_study(study_name=name, storage=storage)
study.optimize(lambda t: (t.suggest_float("x", -1.0, 1.0) - 0.2) ** 2, n_trials=5)
storage.engine.dispose()
"""


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    url = os.environ.get(ENV_URL)
    if not url:
        pytest.fail(
            f"{ENV_URL} is not set; run `ci/postgres.sh start` and `. /tmp/nemo-rl-hpo-pg/env.sh`."
        )
    return url


def test_two_processes_share_one_study(pg_url: str) -> None:
    import optuna

    from nemo_rl_hpo.sweep.storage import open_storage

    # A fresh name per run: the server outlives test runs.
    name = f"test-two-workers-{uuid.uuid4().hex[:8]}"
    storage = open_storage(pg_url)
    optuna.create_study(study_name=name, storage=storage)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WORKER), pg_url, name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=150)
        assert p.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    # Close the pool now: psycopg warns about connections left to the garbage collector.
    storage.engine.dispose()  # type: ignore[attr-defined]
    # Each process ran its 5 trials against the same study: 10 in all, numbered without gaps.
    assert len(trials) == 10
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(10))


OPENER = """
import sys
import time

from nemo_rl_hpo.sweep.storage import open_storage

url, start = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
storage = open_storage(url)
storage.engine.dispose()
"""


def test_sweepers_started_together_on_an_empty_database_all_open_it(pg_url: str) -> None:
    """Several sweepers pointed at a new database create Optuna's tables at the same moment.

    Without a retry the losers of that race stop with "duplicate key ... pg_type" (seen in CI
    with three sweepers); every one of them must open the storage.
    """
    import time

    import sqlalchemy

    schema = f"race_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    # A fresh, empty schema stands in for a fresh database (the test role may not CREATE DATABASE).
    url = f"{pg_url}?options=-csearch_path%3D{schema}"
    start = time.time() + 3.0  # all processes import first, then open together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(OPENER), url, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    try:
        for p in procs:
            _, err = p.communicate(timeout=150)
            assert p.returncode == 0, err[-3000:]
        with admin.connect() as conn:
            tables = conn.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = :s"
                ),
                {"s": schema},
            ).scalar_one()
            versions = conn.execute(
                sqlalchemy.text(f"SELECT count(*) FROM {schema}.version_info")
            ).scalar_one()
        assert tables >= 10  # Optuna's schema was created once, in the new schema
        assert versions == 1
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
