"""Bad input, fuzzed: search-space strings, custom_search_space paths, what a trial returns.

Each input either works correctly or gives one clear line (``SearchSpaceError`` /
``SweepConfigError`` / ``ObjectiveError``, which the sweeper prints as its one error line); any
other exception is a traceback a user would see, and fails. ``test_fuzz_cli.py`` fuzzes the
``nemo-rl-hpo`` commands; ``test_sweeper_errors.py`` runs bad command lines through a real app.
"""

from __future__ import annotations

import json
import math
import os
import types
from collections import Counter
from pathlib import Path

import optuna
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from nemo_rl_hpo.search.grammar import SearchSpaceError, parse_params
from nemo_rl_hpo.search.space import SearchSpace
from nemo_rl_hpo.sweep.objectives import ObjectiveError, objective_values

COUNTS: Counter[str] = Counter()
# NEMO_FUZZ_SCALE=10 runs ten times the examples (a deeper run by hand; CI keeps the default).
SCALE = float(os.environ.get("NEMO_FUZZ_SCALE", "1"))
FAST = settings(max_examples=int(300 * SCALE), deadline=None, database=None)

# ------------------------------------------------------------------- search-space strings
NUMBER = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "-0.0", "1e-5", "1e400", "nan", "inf", "-inf", "1_000", ".5", "5."]),
)
WORD = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=6)
ITEM = st.one_of(NUMBER, WORD, st.sampled_from(["null", "true", "''", "'a,b'", "[1,2]", "{a: 1}"]))


@st.composite
def grammar(draw: st.DrawFn) -> str:
    """Hydra sweep grammar put together from its parts, well-formed or nearly so."""
    fn = draw(st.sampled_from(["choice", "range", "interval", "int(interval", "tag(log, interval"]))
    args = draw(st.lists(ITEM, min_size=0, max_size=4))
    sep = draw(st.sampled_from([", ", ",", " "]))
    close = ")" * (fn.count("(") + 1) if draw(st.booleans()) else ")"
    shuffle = "shuffle(" if draw(st.integers(0, 9)) == 0 else ""
    return f"{shuffle}{fn}({sep.join(args)}{close}{')' if shuffle else ''}"


def _one_line_naming(e: Exception, key: str) -> None:
    msg = str(e)
    assert "\n" not in msg.strip(), msg
    assert key in msg, msg


@FAST
@given(value=st.one_of(st.text(max_size=40), grammar()))
@example(value="\n")  # found: the error line was split by the value's newline
@example(value="shuffle(range(0))")  # found: Optuna's ValueError for an empty choice
def test_any_string_as_a_params_value_is_a_distribution_or_one_error_line(value: str) -> None:
    COUNTS["params"] += 1
    try:
        parsed = parse_params({"lr": value})
        space = SearchSpace(parsed, {}, {}, lambda key: True, ["lr"])
    except SearchSpaceError as e:
        _one_line_naming(e, "lr")
        return
    (p,) = parsed
    # Rule: what parses is a distribution Optuna can sample, or a fixed override.
    if p.distribution is not None:
        assert isinstance(p.distribution, BaseDistribution)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        trial = study.ask()
        values = space.suggest(trial)
        assert "lr" in values
        assert space.overrides(values)  # it becomes an override a job can run with
    else:
        assert p.fixed is not None


@FAST
@given(
    path=st.one_of(
        st.text(max_size=30),
        st.builds(
            lambda mod, attr: f"{mod}.{attr}",
            st.sampled_from(["math", "os.path", "json", "nemo_rl_hpo.trial", "tests", "hydra"]),
            st.text(max_size=12),
        ),
    )
)
def test_any_custom_search_space_path_is_a_function_or_one_error_line(path: str) -> None:
    from hydra_plugins.nemo_rl_hpo._optuna_sweep import OptunaSweeperImpl
    from hydra_plugins.nemo_rl_hpo._settings import SweepConfigError

    # A random word may name a real module whose import has effects ("this", "antigravity").
    first = path.split(".")[0]
    assume(
        first in ("math", "os", "json", "nemo_rl_hpo", "tests", "hydra") or not _importable(first)
    )
    COUNTS["custom_search_space"] += 1
    settings_ = types.SimpleNamespace(custom_search_space=path)
    try:
        fn = OptunaSweeperImpl._custom_search_space(settings_)  # type: ignore[arg-type]
    except SweepConfigError as e:
        _one_line_naming(e, "hydra.sweeper.custom_search_space")
        return
    # Rule: what loads is a callable (or nothing, for an empty path).
    assert fn is None and not path or callable(fn)


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------- what a trial returns
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**400), 10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=4),
)
RETURNS = st.recursive(
    LEAF,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.sampled_from(["loss", "acc", "other", "1"]), inner, max_size=3)
    ),
    max_leaves=5,
)


@FAST
@given(ret=RETURNS, n=st.sampled_from([1, 2]), objectives=st.sampled_from([None, ["loss"]]))
@example(ret=b"\x00\x00", n=2, objectives=None)  # found: bytes taken as two values
@example(ret="1.5", n=1, objectives=None)  # found: a string taken for a number
@example(ret=10**400, n=1, objectives=None)  # found: OverflowError out of the job
def test_any_return_is_values_or_one_line_naming_what_came_back(
    ret: object, n: int, objectives: list[str] | None
) -> None:
    COUNTS["returns"] += 1
    try:
        values = objective_values(ret, n, objectives)
    except ObjectiveError as e:
        msg = str(e)
        assert "\n" not in msg, msg
        # Rule: the line names what came back: the value, its metric names or its count.
        shown = [repr(ret)[:20], "metric", "value(s)", "nan", "inf"]
        if isinstance(ret, (list, tuple, dict)):
            shown += [repr(v)[:20] for v in (ret.values() if isinstance(ret, dict) else ret)]
        assert any(s in msg for s in shown), msg
        return
    # Rule: accepted returns give exactly one finite float per direction.
    assert len(values) == n and all(isinstance(v, float) and math.isfinite(v) for v in values)
    assert not isinstance(ret, (str, bytes))


@pytest.mark.parametrize(
    ("ret", "named"),
    [
        (None, "got None"),
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        ("0.5", "the str '0.5'"),
        ({"acc": 0.9}, "['acc']"),
    ],
)
def test_job_fails_its_trial_naming_what_came_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ret: object, named: str
) -> None:
    """The job-side path a real trial takes (sweep/job.on_job_end), against a real storage."""
    from nemo_rl_hpo import trial as trial_api
    from nemo_rl_hpo.sweep import job, records

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    t = study.ask()
    ctx = {"study": "s", "storage": url, "number": t.number, "objectives": ["loss"]}
    if not isinstance(ret, dict):
        ctx.pop("objectives")
    monkeypatch.setenv(trial_api.ENV_TRIAL, json.dumps(ctx))
    # Rule: the trial is FAIL, and its reason names what the function returned.
    assert job.on_job_end(True, ret) == TrialState.FAIL
    reason = (
        optuna.load_study(study_name="s", storage=url).trials[0].user_attrs[records.FAIL_REASON]
    )
    assert named in reason, reason


def test_zz_inputs_tried() -> None:
    print(f"\nFUZZ inputs tried (inputs): {sum(COUNTS.values())} {dict(COUNTS)}")
