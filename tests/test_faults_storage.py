"""Storage faults: a PostgreSQL outage mid-sweep, a retry limit, and commits whose answer is lost.

The outage tests start their own throw-away PostgreSQL (``ci/postgres.sh`` with a private
``NEMO_PG_DIR``) and stop it for real while two sweepers with two jobs each run; the shared
server other tests use is never touched. Counts come from the study after the sweep ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nemo_rl_hpo.errors import named
from nemo_rl_hpo.sweep import storage as st
from nemo_rl_hpo.sweep.records import SYS_OVERFLOW
from tests.sweeplib import APPS, REPO

LOCAL = ["hydra/launcher=local", "hydra.launcher.timeout_min=10"]


# ------------------------------------------------------------------------------ helpers
@contextlib.contextmanager
def _opened(url: str, retry_s: float = 60.0) -> Iterator[optuna.storages.BaseStorage]:
    storage = st.open_storage(url, retry_s=retry_s)
    try:
        yield storage
    finally:
        engine = getattr(storage, "engine", None)
        if engine is not None:
            engine.dispose()


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    with _opened(url) as storage:
        return optuna.load_study(study_name=name, storage=storage).get_trials()


def _real(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if not t.system_attrs.get(SYS_OVERFLOW)]


def _pg(state: Path, *args: str) -> str:
    proc = subprocess.run(
        ["bash", "ci/postgres.sh", *args],
        cwd=REPO,
        env={**os.environ, "NEMO_PG_DIR": str(state)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def own_pg() -> Iterator[tuple[str, Path]]:
    """A PostgreSQL of this module only (the outage stops it), deleted afterwards."""
    # Under /tmp itself: the server runs as `postgres`, which cannot enter pytest's tmp dirs.
    state = Path(f"/tmp/nemo-rl-hpo-pg-faults-{os.getpid()}")
    _pg(state, "start")
    try:
        yield (state / "url").read_text().strip(), state
    finally:
        _pg(state, "stop")


def _sweeper(sweep: Path, url: str, name: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(APPS / "toy" / "app.py"),
        "-m",
        f"hydra.sweep.dir={sweep}",
        f"hydra.sweeper.storage={url}",
        f"hydra.sweeper.study_name={name}",
        "hydra.sweeper.write_report=false",
        *LOCAL,
        *extra,
    ]


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.time() + timeout
    while time.time() < end:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


# ------------------------------------------------------------------------- real outage
@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_postgres_outage_mid_sweep_loses_nothing(own_pg: tuple[str, Path], tmp_path: Path) -> None:
    url, state = own_pg
    password = url.split(":")[2].split("@")[0]
    name = f"outage-{uuid.uuid4().hex[:6]}"
    n_trials = 12
    args = _sweeper(
        tmp_path,
        url,
        name,
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.n_jobs=2",
        "durations=[2.5,3.5,3.0]",
        "hydra.sweeper.storage_retry_s=120",
    )
    logs = [tmp_path.parent / f"{tmp_path.name}-sweeper{i}.log" for i in range(2)]
    with _opened(url) as storage:  # created up front: the sweepers then only load it
        optuna.create_study(study_name=name, storage=storage)
    procs = []
    for log in logs:
        with open(log, "wb") as f:
            procs.append(
                subprocess.Popen(args, cwd=APPS / "toy", stdout=f, stderr=subprocess.STDOUT)
            )
    try:

        def sleeping() -> set[int]:
            """Running trials whose job started its work (it records its dir first)."""
            return {
                t.number
                for t in _real(_trials(url, name))
                if t.state == TrialState.RUNNING and "job_dir" in t.user_attrs
            }

        _wait(lambda: len(sleeping()) >= 2, 240, "two jobs at work")
        running = sleeping()
        _pg(state, "down")
        t_down = time.time()  # after the server is gone: a result told before it is not "during"
        time.sleep(20)
        _pg(state, "up")
        t_up = time.time()
        outs = []
        for p, log in zip(procs, logs, strict=True):
            p.wait(timeout=400)
            outs.append(log.read_text())
            assert p.returncode == 0, outs[-1][-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    trials = _real(_trials(url, name))
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    # Rule: nothing lost, nothing counted twice, nothing left RUNNING: exactly n_trials complete.
    assert len(by_state[TrialState.COMPLETE]) == n_trials, [(t.number, t.state) for t in trials]
    assert not by_state[TrialState.FAIL] and not by_state[TrialState.RUNNING]
    dirs = [t.user_attrs["job_dir"] for t in trials]
    assert len(set(dirs)) == len(dirs) == n_trials
    slept = sorted(p.parent for p in tmp_path.rglob("slept.txt"))
    assert [str(p) for p in slept] == sorted(dirs), "each trial's job ran exactly once"
    # Rule: a job that finished during the outage recorded its result once the server was back.
    during = []
    for t in trials:
        if t.number in running:
            end = float((Path(t.user_attrs["job_dir"]) / "slept.txt").read_text().split()[1])
            if t_down < end < t_up:
                during.append(t)
    assert during, "some job should have finished while the server was down"
    for t in during:
        assert t.datetime_complete is not None and t.datetime_complete.timestamp() >= t_up - 1
        job_log = (Path(t.user_attrs["job_dir"]) / "app.log").read_text()
        # Rule: the job said once that it waits for the storage, and once that it came back.
        assert job_log.count("unreachable") == 1, job_log
        assert job_log.count("reachable again") == 1, job_log
    for out in outs:
        # Rule: each sweeper said so once (not once per attempt), and never the password.
        assert out.count("unreachable (") == 1, out[-3000:]
        assert out.count("reachable again") == 1, out[-3000:]
        assert password not in out and "Caught an error from sqlalchemy" not in out
    recovered = min(
        t.datetime_complete.timestamp()  # type: ignore[union-attr]
        for t in trials
        if t.datetime_complete is not None and t.datetime_complete.timestamp() >= t_up
    )
    print(
        f"\nFAULT postgres outage: {t_up - t_down:.1f} s; "
        f"first result {recovered - t_up:.1f} s after it was back"
    )


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_outage_past_the_limit_stops_with_one_line_and_resumes(
    own_pg: tuple[str, Path], tmp_path: Path
) -> None:
    url, state = own_pg
    password = url.split(":")[2].split("@")[0]
    name = f"limit-{uuid.uuid4().hex[:6]}"
    # The URL from the environment, as the README advises: the printed resume command then
    # works as printed (a password written into the URL would be masked in it).
    env = {**os.environ, "FAULT_TEST_PG_URL": url}
    args = _sweeper(
        tmp_path,
        "${oc.env:FAULT_TEST_PG_URL}",
        name,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.retry_failed=2",
        "durations=[3.0]",
        "hydra.sweeper.storage_retry_s=4",
    )
    log = tmp_path.parent / f"{tmp_path.name}-limit.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(args, cwd=APPS / "toy", stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        _wait(
            lambda: any(t.state == TrialState.RUNNING for t in _trials(url, name)),
            240,
            "a running trial",
        )
        _pg(state, "down")
        t_down = time.time()
        proc.wait(timeout=120)
        stopped_after = time.time() - t_down
    finally:
        if proc.poll() is None:
            proc.kill()
        _pg(state, "up")
    out = log.read_text()
    # Rule: past hydra.sweeper.storage_retry_s the sweep stops with one line naming the key and
    # the storage (password masked) and how to resume; no traceback.
    assert proc.returncode != 0
    lines = [ln for ln in out.splitlines() if "longer than hydra.sweeper.storage_retry_s=4" in ln]
    assert len(lines) == 1, out[-3000:]
    assert "resume with: " in lines[0] and "nemo:***@" in lines[0]
    assert "Traceback" not in out and password not in out
    # Rule: the outage is said once before that (Optuna's per-attempt SQL lines are dropped).
    assert out.count("unreachable (") == 1 and "Caught an error from sqlalchemy" not in out
    assert stopped_after < 60, stopped_after
    resume = lines[0].split("resume with: ", 1)[1]
    again = subprocess.run(
        resume, shell=True, cwd=APPS / "toy", capture_output=True, text=True, timeout=400, env=env
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    trials = _real(_trials(url, name))
    retried = {t.user_attrs.get("retry_of") for t in trials}
    # Rule: the resumed sweep tops the study up: 4 complete, nothing RUNNING, and any trial whose
    # result the outage took is failed and retried (not counted twice).
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert all(t.number in retried for t in trials if t.state == TrialState.FAIL)
    print(
        f"\nFAULT postgres past the limit (4 s): stopped {stopped_after:.1f} s after it went down"
    )


# ------------------------------------------------------- retries that must not count twice
class _LostAnswer:
    """Commits reach the database, then the client sees the connection drop (armed calls only)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import sqlalchemy.event
        import sqlalchemy.exc
        import sqlalchemy.orm

        self.armed = 0
        self.fired = 0
        real_commit = sqlalchemy.orm.Session.commit
        outer = self

        def wrote(session: sqlalchemy.orm.Session, _ctx: object) -> None:
            session.info["wrote"] = True

        sqlalchemy.event.listen(sqlalchemy.orm.Session, "after_flush", wrote)

        def commit(session: sqlalchemy.orm.Session) -> None:
            real_commit(session)  # flushes what is pending
            if outer.armed and session.info.pop("wrote", False):
                outer.armed -= 1
                outer.fired += 1
                raise sqlalchemy.exc.OperationalError(
                    "COMMIT", {}, Exception("server closed the connection unexpectedly")
                )

        monkeypatch.setattr(sqlalchemy.orm.Session, "commit", commit)
        self._undo = lambda: sqlalchemy.event.remove(sqlalchemy.orm.Session, "after_flush", wrote)

    def close(self) -> None:
        self._undo()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def rdb_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lost.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_a_lost_commit_answer_creates_no_second_trial_and_no_double_tell(
    rdb_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"lost-{uuid.uuid4().hex[:6]}"
    with _opened(rdb_url, retry_s=30) as storage:
        study = optuna.create_study(study_name=name, storage=storage)
        fault = _LostAnswer(monkeypatch)
        with caplog.at_level(logging.WARNING, logger="nemo_rl_hpo.sweep"):
            fault.armed = 1
            trial = study.ask()
            # Rule: the retried creation found the trial its lost commit made: one trial.
            assert len(study.get_trials()) == 1
            trial.suggest_float("x", 0.0, 1.0)
            fault.armed = 1
            study.tell(trial, 0.25)
            # Rule: the retried tell saw its own earlier success: COMPLETE with that value, once.
            (t,) = study.get_trials()
            assert t.state == TrialState.COMPLETE and t.value == 0.25
            fault.armed = 1
            study.enqueue_trial({"x": 0.5})
            # Rule: a retried enqueue leaves one waiting trial, not two.
            assert [t.state for t in study.get_trials()] == [
                TrialState.COMPLETE,
                TrialState.WAITING,
            ]
        fault.close()
        assert fault.fired == 3
        # Rule: a retry says so once and its end once (Optuna retries a trial's creation itself;
        # the token makes that retry find the trial too).
        said = [r.getMessage() for r in caplog.records]
        down = sum("unreachable" in m for m in said)
        assert 1 <= down <= 3 and sum("reachable again" in m for m in said) == down, said
        optuna.delete_study(study_name=name, storage=storage)


def test_without_the_wrapper_a_lost_answer_does_create_a_second_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Why the token exists: Optuna's RDBStorage retries a failed commit itself.
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'plain.db'}")
    study = optuna.create_study(storage=storage)
    fault = _LostAnswer(monkeypatch)
    fault.armed = 1
    study.ask()
    fault.close()
    assert len(study.get_trials()) == 2
    storage.engine.dispose()


def test_unreachable_server_gives_up_after_the_limit_in_one_masked_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://nemo:s3cret-pw@127.0.0.1:{port}/optuna"
    storage = st.open_storage(url, existing=True, retry_s=2)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="nemo_rl_hpo.sweep"):
        with pytest.raises(st.StorageUnavailable) as err:
            optuna.load_study(study_name="any", storage=storage)
        # Rule: once given up, a later call tries once and fails at once (no second wait).
        t1 = time.monotonic()
        with pytest.raises(st.StorageUnavailable):
            storage.get_all_studies()
    took = t1 - t0
    assert 2 <= took < 8, took
    assert time.monotonic() - t1 < 1.5
    message = named(err.value, "hydra.sweeper.")  # as the sweeper shows it
    # Rule: one line naming the limit's key and the storage, password masked.
    assert "\n" not in message and "hydra.sweeper.storage_retry_s=2" in message
    assert "nemo:***@" in message and "s3cret" not in message
    said = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in said) == 1 and "s3cret" not in " ".join(said)
    storage.engine.dispose()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ("server closed the connection unexpectedly", True),
        ('connection to server at "127.0.0.1", port 5 failed: Connection refused', True),
        ("terminating connection due to administrator command", True),
        ("FATAL:  the database system is starting up", True),
        ("database is locked", True),
        ("(2006, 'MySQL server has gone away')", True),
        ("database or disk is full", False),
        ('relation "trials" does not exist', False),
        (
            'connection to server at "127.0.0.1", port 5 failed: FATAL:  password '
            'authentication failed for user "nemo"',
            False,
        ),
        ("value too long for type character varying(512)", False),
    ],
)
def test_which_errors_are_an_outage(message: str, transient: bool) -> None:
    import sqlalchemy.exc

    err = optuna.exceptions.StorageInternalError("commit failed")
    err.__cause__ = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(message))
    # Rule: only a storage that is away is waited for; a bad request or a full disk fails at once.
    assert st.is_transient(err) is transient
    assert re.search("disk is full", message) is None or st.is_disk_full(err)


def test_a_negative_retry_limit_is_one_line_before_any_job(tmp_path: Path) -> None:
    from tests.sweeplib import run_app

    proc = run_app(
        "toy", f"hydra.sweep.dir={tmp_path}", "hydra.sweeper.storage_retry_s=-1", check=False
    )
    out = proc.stdout + proc.stderr
    # Rule: bad input is one line naming the key, and no trial ran.
    assert proc.returncode != 0
    assert "hydra.sweeper.storage_retry_s must be 0 or more seconds, but got -1" in out, out
    assert "Traceback" not in out
    assert not [p for p in tmp_path.iterdir() if p.name.isdigit()]


def test_after_an_outage_no_peer_is_judged_stale_until_it_could_beat_again() -> None:
    from nemo_rl_hpo.sweep import records
    from nemo_rl_hpo.sweep.core import AsyncSweep, SweepSettings

    storage = st.RetryingStorage(optuna.storages.InMemoryStorage(), name="memory", retry_s=5)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    # A live peer on another host, whose last heartbeat is old only because the storage was away.
    owner = {"host": "other-host", "pid": 1, "token": "peer"}
    storage.set_trial_system_attr(trial._trial_id, records.SYS_OWNER, owner)
    storage.set_trial_system_attr(trial._trial_id, records.SYS_HEARTBEAT, time.time() - 120)
    sweep = AsyncSweep(study, None, lambda p: None, SweepSettings(n_trials=1, stale_after=60))  # type: ignore[arg-type]
    frozen = storage.get_trial(trial._trial_id)
    # Rule: without an outage, a heartbeat 120 s old (stale_after=60) marks an orphan ...
    assert sweep._is_orphan(frozen)
    storage._outage.back_at = time.time() - 5  # the storage came back 5 s ago
    # ... but nobody could beat during the outage: ages count from the storage's return.
    assert not sweep._is_orphan(frozen)
