"""``nemo-rl-hpo`` on damaged sweep dirs, fuzzed: success, or one clear line and a non-zero exit.

A traceback (an exception out of ``cli.main``) or a hang (the test's time limit) fails. Each
damage is drawn by Hypothesis from a healthy sweep dir (an SQLite study shaped like the
sweeper's, its results files and job dirs, and the same trials in a journal file):

- a truncated SQLite file, a journal with a torn line in the middle, a half-written
  ``optimization_results.json`` or ``sweep.json``;
- missing job dirs, a study with 0 trials or only FAIL trials;
- a study written by hydra-optuna-sweeper 1.3.0 / Optuna 2.10 (``tests/data``);
- attribute keys from a newer version of this project (unknown keys: must still work);
- a directory that is not a sweep at all.

``main()`` runs in-process (the console script is ``main`` itself); ``report`` renders plots
(seconds each), so it runs on one example per damage, the other commands on many.
``FUZZ_COUNTS`` counts the inputs tried (README's reliability table).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState, create_trial

from nemo_rl_hpo import cli
from tests import report_fixtures as rf

pytestmark = pytest.mark.timeout(600)

DATA = Path(__file__).parent / "data"
COMMANDS = [c for c in ("status", "best", "export", "list", "confirm") if c in cli.COMMANDS]
FUZZ_COUNTS: Counter[str] = Counter()
# NEMO_FUZZ_SCALE=10 runs ten times the examples (a deeper run by hand; CI keeps the default).
FUZZ = settings(
    max_examples=int(25 * float(os.environ.get("NEMO_FUZZ_SCALE", "1"))),
    deadline=None,  # a shared 2-core machine: the test's timeout catches a hang instead
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``nemo-rl-hpo ARGV`` in-process: (exit status, stdout, stderr). Exceptions propagate."""
    import contextlib
    import io

    if argv and argv[0] == "confirm":
        # confirm reads the sweep dir like the others, then starts the sweep's own app: the
        # fuzzed part is the reading (and the command it builds), not someone's app.
        argv = (*argv, "--dry-run")
    out, err = io.StringIO(), io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        warnings.simplefilter("ignore")  # a warning is a line, not a failure; not counted here
        try:
            rc = cli.main(list(argv))
        except SystemExit as e:  # argparse's own exit
            rc = int(e.code or 0)
    FUZZ_COUNTS[argv[0]] += 1
    return rc, out.getvalue(), err.getvalue()


def assert_clear(rc: int, out: str, err: str, what: str) -> None:
    """Rule: success, or exactly one line on stderr and a non-zero exit."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if rc == 0:
        assert "Traceback" not in err, f"{what}: {err[-2000:]}"
        return
    assert len(lines) == 1, f"{what}: exit {rc} with {len(lines)} lines:\n{err[-2000:]}"
    assert "error" in lines[0] and "Traceback" not in lines[0], f"{what}: {lines[0]}"


def each_command(sweep: Path, what: str, commands: list[str] | None = None) -> None:
    for cmd in commands or COMMANDS:
        rc, out, err = run_cli(cmd, str(sweep))
        assert_clear(rc, out, err, f"{cmd} on {what}")


# ------------------------------------------------------------------------- healthy sources
@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An SQLite sweep dir (marker, results files, job dirs) and the same trials in a journal."""
    from nemo_rl_hpo.report.results import write_results

    root = tmp_path_factory.mktemp("healthy")
    sq = root / "sqlite"
    study = rf.single_objective(sq, n=12)
    for t in study.trials:
        (sq / str(t.number)).mkdir()
        (sq / str(t.number) / "app.log").write_text("trained\n")
    now = dt.datetime.now().astimezone()
    write_results(study, sq, sweep_config={"n_trials": 12}, started_at=now, finished_at=now)
    jn = root / "journal"
    jn.mkdir()
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(jn / "optuna.journal"))
    )
    copy = optuna.create_study(study_name="so", storage=storage, direction="minimize")
    for k, v in study.user_attrs.items():
        copy.set_user_attr(k, v)
    copy.add_trials(study.trials)
    (jn / "sweep.json").write_text(
        json.dumps({"study_name": "so", "storage": f"journal://{jn / 'optuna.journal'}"})
    )
    return {"sqlite": sq, "journal": jn}


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """``fresh(src)``: a new copy of ``src`` for one example (examples share the test's tmp)."""
    n = [0]

    def copy(src: Path) -> Path:
        n[0] += 1
        dst = tmp_path / f"ex{n[0]:06d}"  # one length: markers keep their size
        shutil.copytree(src, dst)
        for marker in ("sweep.json", "optimization_results.json"):  # they name their storage
            if (dst / marker).exists():
                text = (dst / marker).read_text().replace(str(src), str(dst))
                (dst / marker).write_text(text)
        return dst

    yield copy


# ------------------------------------------------------------------------------- damages
@FUZZ
@given(data=st.data())
def test_truncated_sqlite(healthy: dict[str, Path], fresh: Callable[[Path], Path], data) -> None:  # type: ignore[no-untyped-def]
    sweep = fresh(healthy["sqlite"])
    db = sweep / "optuna.db"
    size = db.stat().st_size
    cut = data.draw(st.integers(0, size - 1), label="bytes kept")
    with open(db, "r+b") as f:
        f.truncate(cut)
    each_command(sweep, f"optuna.db cut to {cut} of {size} bytes")


@FUZZ
@given(data=st.data())
def test_journal_with_a_torn_line(
    healthy: dict[str, Path], fresh: Callable[[Path], Path], data
) -> None:  # type: ignore[no-untyped-def]
    sweep = fresh(healthy["journal"])
    path = sweep / "optuna.journal"
    lines = path.read_bytes().splitlines(keepends=True)
    i = data.draw(st.integers(1, len(lines) - 2), label="torn line")
    cut = data.draw(st.integers(1, len(lines[i]) - 2), label="bytes of it kept")
    tail = data.draw(st.booleans(), label="newline after the torn part")
    torn = lines[i][:cut] + (b"\n" if tail else b"")
    path.write_bytes(b"".join(lines[:i]) + torn + b"".join(lines[i + 1 :]))
    each_command(sweep, f"journal line {i} torn after {cut} bytes (newline: {tail})")


@FUZZ
@given(data=st.data())
def test_half_written_marker_files(
    healthy: dict[str, Path], fresh: Callable[[Path], Path], data
) -> None:  # type: ignore[no-untyped-def]
    sweep = fresh(healthy["sqlite"])
    name = data.draw(st.sampled_from(["optimization_results.json", "sweep.json"]), label="file")
    if name == "optimization_results.json":
        (sweep / "sweep.json").unlink()  # the results file is then what locates the study
    text = (sweep / name).read_bytes()
    cut = data.draw(st.integers(0, len(text) - 1), label="bytes kept")
    (sweep / name).write_bytes(text[:cut])
    each_command(sweep, f"{name} cut to {cut} bytes")


def test_missing_job_dirs_zero_trials_only_failures(
    healthy: dict[str, Path], fresh: Callable[[Path], Path], tmp_path: Path
) -> None:
    sweep = fresh(healthy["sqlite"])
    for t in optuna.load_study(study_name="so", storage=f"sqlite:///{sweep / 'optuna.db'}").trials:
        shutil.rmtree(sweep / str(t.number))
    # Rule: job dirs are the jobs' business; every command still works without them.
    for cmd in COMMANDS:
        rc, out, err = run_cli(cmd, str(sweep))
        assert rc == 0, f"{cmd} without job dirs: {err}"

    empty = tmp_path / "empty"
    empty.mkdir()
    study = optuna.create_study(storage=f"sqlite:///{empty / 'optuna.db'}", study_name="e")
    rf._attrs(study, empty, ["val_loss"], "optuna")
    failed = tmp_path / "failed"
    failed.mkdir()
    study = optuna.create_study(storage=f"sqlite:///{failed / 'optuna.db'}", study_name="f")
    rf._attrs(study, failed, ["val_loss"], "optuna")
    study.add_trials(
        [
            create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": f"boom {i}"})
            for i in range(3)
        ]
    )
    for sweep, what in ((empty, "0 trials"), (failed, "only FAIL trials")):
        each_command(sweep, what)
        # Rule: status and export describe what is there, whatever it is.
        for cmd in ("status", "export", "list"):
            rc, out, err = run_cli(cmd, str(sweep))
            assert rc == 0, f"{cmd} on {what}: {err}"
        # Rule: best has nothing to show: it says so in one line, exit non-zero.
        rc, out, err = run_cli("best", str(sweep))
        assert rc != 0 and "no" in err.lower(), err


def test_study_of_optuna_2_10(tmp_path: Path) -> None:
    """What hydra-optuna-sweeper 1.3.0 (Optuna 2.10's schema) left in a sweep dir."""
    sweep = tmp_path / "old"
    sweep.mkdir()
    con = sqlite3.connect(sweep / "optuna.db")
    con.executescript((DATA / "optuna_2_10_study.sql").read_text())
    con.close()
    before = (sweep / "optuna.db").read_bytes()
    for cmd in COMMANDS:
        rc, out, err = run_cli(cmd, str(sweep))
        assert_clear(rc, out, err, f"{cmd} on an Optuna 2.10 study")
        # Rule: the line names the cause and the remedy, and the user's file is left as it was.
        assert rc != 0 and "optuna storage upgrade" in err and "2.10.1" in err, err
    assert (sweep / "optuna.db").read_bytes() == before


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
NEW_KEY = st.text(min_size=1, max_size=12).map(lambda s: f"nemo_rl_hpo:{s}") | st.text(
    min_size=1, max_size=12
)


@FUZZ
@given(
    study_attrs=st.dictionaries(NEW_KEY, JSON, max_size=3),
    trial_attrs=st.dictionaries(NEW_KEY, JSON, max_size=3),
    system_attrs=st.dictionaries(NEW_KEY, JSON, max_size=3),
)
def test_attribute_keys_of_a_newer_version(
    healthy: dict[str, Path],
    fresh: Callable[[Path], Path],
    study_attrs: dict[str, object],
    trial_attrs: dict[str, object],
    system_attrs: dict[str, object],
) -> None:
    sweep = fresh(healthy["sqlite"])
    url = f"sqlite:///{sweep / 'optuna.db'}"
    study = optuna.load_study(study_name="so", storage=url)
    known = set(study.user_attrs) | set(study.trials[0].user_attrs)
    for k, v in study_attrs.items():
        if k not in known:
            study.set_user_attr(k, v)
    base = study.trials[0]
    study.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=1.0,
            params=base.params,
            distributions=base.distributions,
            user_attrs={
                **base.user_attrs,
                **{k: v for k, v in trial_attrs.items() if k not in known},
            },
            system_attrs=system_attrs,
        )
    )
    # Rule: keys this version does not know are left alone: every command still succeeds.
    for cmd in COMMANDS:
        rc, out, err = run_cli(cmd, str(sweep))
        assert rc == 0, f"{cmd} with new keys {study_attrs} / {trial_attrs}: {err[-2000:]}"


NAMES = st.sampled_from(
    ["sweep.json", "optimization_results.json", "optuna.db", "optuna.journal", "0", "x.txt"]
) | st.text(st.characters(codec="ascii", exclude_characters="/\x00"), min_size=1, max_size=10)


@FUZZ
@given(files=st.dictionaries(NAMES, st.binary(max_size=64), max_size=4))
def test_directory_that_is_not_a_sweep(tmp_path: Path, files: dict[str, bytes]) -> None:
    sweep = tmp_path / f"d{sum(FUZZ_COUNTS.values())}"
    sweep.mkdir()
    for name, content in files.items():
        if name in (".", ".."):
            continue
        (sweep / name).write_bytes(content)
    each_command(sweep, f"a dir holding {sorted(files)}")
    rc, out, err = run_cli("status", str(sweep / "no-such-dir"))
    assert_clear(rc, out, err, "a dir that does not exist")
    assert rc != 0


def test_report_on_each_damage(
    healthy: dict[str, Path], fresh: Callable[[Path], Path], tmp_path: Path
) -> None:
    """``report`` renders plots (seconds each): one example of each damage."""
    cases: list[tuple[str, Path]] = []
    db = fresh(healthy["sqlite"])
    with open(db / "optuna.db", "r+b") as f:
        f.truncate(5000)
    cases.append(("truncated SQLite", db))
    jn = fresh(healthy["journal"])
    lines = (jn / "optuna.journal").read_bytes().splitlines(keepends=True)
    (jn / "optuna.journal").write_bytes(b"".join(lines[:5]) + lines[5][:7] + b"".join(lines[6:]))
    cases.append(("torn journal line", jn))
    half = fresh(healthy["sqlite"])
    (half / "sweep.json").unlink()
    text = (half / "optimization_results.json").read_bytes()
    (half / "optimization_results.json").write_bytes(text[: len(text) // 2])
    cases.append(("half-written results", half))
    old = tmp_path / "old"
    old.mkdir()
    con = sqlite3.connect(old / "optuna.db")
    con.executescript((DATA / "optuna_2_10_study.sql").read_text())
    con.close()
    cases.append(("Optuna 2.10 study", old))
    empty = tmp_path / "empty"
    empty.mkdir()
    optuna.create_study(storage=f"sqlite:///{empty / 'optuna.db'}", study_name="e")
    cases.append(("0 trials", empty))
    cases.append(("not a sweep", tmp_path))
    for what, sweep in cases:
        rc, out, err = run_cli("report", str(sweep))
        assert_clear(rc, out, err, f"report on {what}")


def test_zz_inputs_tried() -> None:
    """Prints the count for README's reliability table (runs last in this module)."""
    print(f"\nFUZZ inputs tried (CLI): {sum(FUZZ_COUNTS.values())} {dict(FUZZ_COUNTS)}")
