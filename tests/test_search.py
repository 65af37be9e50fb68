"""Unit tables: override grammar -> Optuna distributions; conditional activation; objectives."""

from __future__ import annotations

import math
import re

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from nemo_rl_hpo.errors import named
from nemo_rl_hpo.search.grammar import SearchSpaceError, format_value, parse_params
from nemo_rl_hpo.search.space import SearchSpace
from nemo_rl_hpo.sweep.objectives import ObjectiveError, objective_values, parse_objectives


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("choice(a, b, c)", CategoricalDistribution(["a", "b", "c"])),
        ("choice(1, 2, 3)", CategoricalDistribution([1, 2, 3])),
        ("choice(true, false)", CategoricalDistribution([True, False])),
        ("range(1, 5)", IntDistribution(1, 5)),  # upstream: stop inclusive
        ("range(1, 9, 2)", IntDistribution(1, 9, step=2)),
        ("range(-5.5, 5.5, step=0.5)", FloatDistribution(-5.5, 5.5, step=0.5)),
        ("interval(0, 1)", FloatDistribution(0.0, 1.0)),  # Hydra's interval() is float
        ("interval(0.0, 1.0)", FloatDistribution(0.0, 1.0)),
        ("tag(log, interval(1e-6, 1e-3))", FloatDistribution(1e-6, 1e-3, log=True)),
        ("int(tag(log, interval(1, 1024)))", IntDistribution(1, 1024, log=True)),
        ("int(interval(1, 16))", IntDistribution(1, 16)),
        ("float(interval(1, 16))", FloatDistribution(1.0, 16.0)),
    ],
)
def test_grammar_to_distribution(text: str, expected: object) -> None:
    (param,) = parse_params({"k": text})
    assert param.distribution == expected


def test_fixed_values_and_deletions_pass_through() -> None:
    parsed = parse_params({"a": "3", "b": "choice(x, y)"}, ["~c", "+d=1", "a=4"])
    by_key = {p.key: p for p in parsed}
    # Rule: a command-line entry replaces the params entry of the same key.
    assert by_key["a"].fixed == "a=4"
    assert by_key["~c"].fixed == "~c" or by_key["c"].fixed == "~c"
    assert by_key["+d"].fixed == "+d=1"
    assert isinstance(by_key["b"].distribution, CategoricalDistribution)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("interval(1.0)", "cannot parse"),
        ("interval(5, 1)", "lower bound above"),
        ("tag(log, interval(0, 1))", "positive lower bound"),
        ("choice(", "cannot parse"),
    ],
)
def test_grammar_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(SearchSpaceError, match=message) as err:
        parse_params({"learning_rate": text})
    assert "learning_rate" in str(err.value)


@pytest.mark.parametrize("value", [0.1, 1e-7, -3, True, False, None, "adam", "a b", "x,y", "it's"])
def test_format_value_round_trips_through_hydra(value: object) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (ov,) = OverridesParser.create().parse_overrides([f"k={format_value(value)}"])
    assert ov.value() == value


GROUPS = {
    "optimizer": {
        "adam": frozenset({"_target_", "lr"}),
        "sgd": frozenset({"_target_", "lr", "momentum", "nesterov"}),
    },
    "loss": {
        "ce": frozenset({"_target_"}),
        "focal": frozenset({"_target_", "alpha", "gamma"}),
    },
}


def _space(params: dict[str, str], choices: dict[str, str] | None = None) -> SearchSpace:
    return SearchSpace(
        parse_params(params),
        GROUPS,
        choices or {"optimizer": "adam", "loss": "ce"},
        config_has_key=lambda k: k in {"learning_rate", "batch_size"},
        config_keys=["learning_rate", "batch_size"],
    )


def test_conditional_parameters_follow_the_sampled_option() -> None:
    space = _space(
        {
            "learning_rate": "tag(log, interval(1e-5, 1e-2))",
            "optimizer.momentum": "interval(0.8, 0.99)",
            "optimizer": "choice(adam, sgd)",
            "loss": "choice(ce, focal)",
            "loss.gamma": "interval(1.0, 5.0)",
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        values = space.suggest(trial)
        study.tell(trial, 0.0)
        seen.add((values["optimizer"], values["loss"]))
        # Rule: a conditional key is sampled exactly when its owning option is chosen.
        assert ("optimizer.momentum" in values) == (values["optimizer"] == "sgd")
        assert ("loss.gamma" in values) == (values["loss"] == "focal")
        # Rule: group choices come first in the overrides.
        overrides = space.overrides(values)
        assert overrides[0].startswith("optimizer=")
    assert len(seen) == 4


@pytest.mark.parametrize(
    ("params", "choices", "message"),
    [
        ({"optimizer.betas": "interval(0.1, 0.9)"}, None, "exists in no option of group"),
        ({"optimizer.momentum": "interval(0.8, 0.9)"}, None, "fixed to adam"),
        (
            {"optimizer": "choice(adam)", "optimizer.momentum": "interval(0.8, 0.9)"},
            None,
            "never selects",
        ),
        ({"optimizer": "choice(adam, sgdd)"}, None, "unknown option 'sgdd'"),
        ({"optimizer": "interval(0, 1)"}, None, "searched with choice"),
        ({"learning_rat": "interval(0.1, 0.2)"}, None, "did you mean 'learning_rate'"),
    ],
)
def test_bad_spaces_name_key_and_fix(
    params: dict[str, str], choices: dict[str, str] | None, message: str
) -> None:
    with pytest.raises(SearchSpaceError, match=message):
        _space(params, choices)


def test_fixed_option_with_its_conditional_key_is_fine() -> None:
    space = _space({"optimizer.momentum": "interval(0.8, 0.9)"}, {"optimizer": "sgd"})
    study = optuna.create_study()
    assert "optimizer.momentum" in space.suggest(study.ask())


@pytest.mark.parametrize(
    ("ret", "n", "objectives", "expected"),
    [
        (1.5, 1, None, [1.5]),
        ([1.0, 2.0], 2, None, [1.0, 2.0]),
        ((1.0, 2.0), 2, None, [1.0, 2.0]),
        ({"val_loss": 0.3, "acc": 0.9}, 1, ["val_loss"], [0.3]),
        ({"val_loss": 0.3, "acc": 0.9}, 2, ["acc", "val_loss"], [0.9, 0.3]),
        ({"only": 2.0}, 1, None, [2.0]),
    ],
)
def test_objective_values(
    ret: object, n: int, objectives: list[str] | None, expected: list[float]
) -> None:
    assert objective_values(ret, n, objectives) == expected


@pytest.mark.parametrize(
    ("ret", "n", "objectives", "message"),
    [
        ({"a": 1.0}, 1, ["b"], "'b' was not returned"),
        ({"a": 1.0, "b": 2.0}, 1, None, "set hydra.sweeper.objectives"),
        ([1.0, 2.0], 1, None, "1 direction"),
        (math.nan, 1, None, "diverged"),
        ("abc", 1, None, "must be a number, got the str 'abc'"),
        ("1.5", 1, None, "must be a number, got the str"),
        (None, 1, None, "float-castable, got None"),
        (10**400, 1, None, "float-castable"),
    ],
)
def test_objective_errors(ret: object, n: int, objectives: list[str] | None, message: str) -> None:
    with pytest.raises(ObjectiveError) as e:
        objective_values(ret, n, objectives)
    # Rule: as the Hydra sweeper shows it (the library names its parameter, "objectives").
    assert re.search(message, named(e.value, "hydra.sweeper."))


def test_weighted_objectives_sum() -> None:
    names, weights = parse_objectives(
        [{"name": "val_loss", "weight": 1.0}, {"name": "train_time_s", "weight": 0.01}]
    )
    assert names == ["val_loss", "train_time_s"]
    # Rule: weights combine the named metrics into one value.
    value = objective_values({"val_loss": 0.5, "train_time_s": 10.0}, 1, names, weights)
    assert value == [pytest.approx(0.6)]


def test_probes_reach_every_end_and_choice_as_proposable_trials() -> None:
    """The pre-launch check's trials: each a trial a sampler could propose, ends all covered."""
    space = _space(
        {
            "optimizer": "choice(adam, sgd)",
            "optimizer.momentum": "interval(0.5, 0.99)",
            "learning_rate": "tag(log, interval(1e-4, 1e-1))",
            "batch_size": "choice(16, 64)",
        },
        choices={"optimizer": "sgd", "loss": "ce"},
    )
    probes = space.probes()
    reference = probes[0]
    assert reference.key is None
    # numeric ranges at their middle (geometric for log), the group at its current option
    assert reference.values == {
        "optimizer": "sgd",
        "optimizer.momentum": pytest.approx(0.745),
        "learning_rate": pytest.approx(10**-2.5),
        "batch_size": 16,
    }
    moved = {(p.key, p.value) for p in probes[1:]}
    assert moved == {
        ("optimizer", "adam"),
        ("optimizer", "sgd"),
        ("optimizer.momentum", 0.5),
        ("optimizer.momentum", 0.99),
        ("learning_rate", 1e-4),
        ("learning_rate", 1e-1),
        ("batch_size", 16),
        ("batch_size", 64),
    }
    for p in probes:
        # a conditional key appears only with an option that owns it
        assert ("optimizer.momentum" in p.values) == (p.values["optimizer"] == "sgd")
        if p.key is not None:
            assert p.values[p.key] == p.value
    high_lr = next(p for p in probes if p.key == "learning_rate" and p.value == 1e-1)
    assert high_lr.inward is not None and 1e-4 < high_lr.inward["learning_rate"] < 1e-1
    assert next(p for p in probes if p.key == "batch_size").inward is None  # no float: no nudge


def test_reference_is_inside_stepped_and_integer_ranges() -> None:
    space = _space({"learning_rate": "range(0.1, 0.9, 0.2)", "batch_size": "int(interval(1, 4))"})
    ref = space.probes()[0].values
    assert ref["learning_rate"] == pytest.approx(0.5)  # on the step grid
    assert ref["batch_size"] in (2, 3) and isinstance(ref["batch_size"], int)
