"""Every option of every config group composes, instantiates and trains; the search preset fits."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from nemo_rl_hpo.training import ConfigError, train
from tests.conftest import CONF_DIR, TINY

NOT_TRAINING = {"hydra", "search"}  # folders of conf/ that are not training groups
# The trial group and the GRPO trial's own groups (tested in tests/test_grpo_conf.py).
NOT_TRAINING |= {"trial", "loss_fn", "baseline"}
SUPERVISED = CONF_DIR / "trial" / "supervised.yaml"  # the supervised trial's keys and groups
GROUPS = sorted(d.name for d in CONF_DIR.iterdir() if d.is_dir() and d.name not in NOT_TRAINING)
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF_DIR / g).glob("*.yaml"))]


def test_groups_are_found() -> None:
    # The glob must see the groups the root config selects, or every test below is vacuous.
    defaults = yaml.safe_load(SUPERVISED.read_text())["defaults"]
    selected = {next(iter(d)).lstrip("/") for d in defaults if isinstance(d, dict)}
    assert set(GROUPS) <= selected, f"groups {set(GROUPS) - selected} are not in the defaults list"
    assert {"model", "optimizer", "scheduler", "loss", "precision"} <= set(GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_trains(
    compose_trial: Callable[..., DictConfig], group: str, option: str
) -> None:
    cfg = compose_trial(f"{group}={option}", *TINY)
    if (group, option) == ("precision", "fp16") and not torch.cuda.is_available():
        # fp16 needs a GradScaler on CUDA: on a CPU it fails at start and names the alternatives.
        with pytest.raises(ConfigError, match=r"precision=fp16 needs a CUDA GPU.*precision=bf16"):
            train(cfg)
        return
    metrics = train(cfg)
    assert metrics["step"] == cfg.max_steps
    assert math.isfinite(metrics["val_loss"]) and 0.0 <= metrics["val_accuracy"] <= 1.0


def test_bf16_on_a_cpu_without_a_fast_path_says_so(
    compose_trial: Callable[..., DictConfig], caplog: pytest.LogCaptureFixture
) -> None:
    from nemo_rl_hpo.training.precision import cpu_has_bf16

    cfg = compose_trial("precision=bf16", "device=cpu", *TINY)
    with caplog.at_level("WARNING", logger="nemo_rl_hpo.training.precision"):
        train(cfg)
    warned = [r.getMessage() for r in caplog.records if "precision=fp32" in r.getMessage()]
    # Rule: the warning appears exactly on CPUs where oneDNN has no fast bf16 path (the AVX2-only
    # CI machine warns; an AVX-512 one does not), and only once per run.
    assert len(warned) == (0 if cpu_has_bf16() else 1), warned


def _search_space() -> dict[str, str]:
    text = (CONF_DIR / "search" / "default.yaml").read_text()
    assert text.splitlines()[0] == "# @package hydra.sweeper.params"
    return {str(k): str(v) for k, v in yaml.safe_load(text).items()}


def _option_keys(group: str) -> dict[str, set[str]]:
    return {
        f.stem: set(OmegaConf.load(f).keys()) for f in sorted((CONF_DIR / group).glob("*.yaml"))
    }


@pytest.mark.parametrize("key", sorted(_search_space()))
def test_search_space_names_real_keys(key: str) -> None:
    value = _search_space()[key]
    # Every value is a sweep in hydra-optuna-sweeper's grammar.
    (override,) = OverridesParser.create().parse_overrides([f"{key}={value}"])
    assert override.is_sweep_override(), f"{key}: {value} is not a sweep"
    root = OmegaConf.merge(OmegaConf.load(CONF_DIR / "config.yaml"), OmegaConf.load(SUPERVISED))
    if key in GROUPS:
        # A group choice lists existing options only.
        choices = {str(c) for c in override.sweep_string_iterator()}
        assert choices <= set(_option_keys(key)), f"{key}: unknown options in {value}"
    elif "." in key:
        # A conditional key lives in some options of its group, never in the root config.
        group, leaf = key.split(".", 1)
        owners = [o for o, keys in _option_keys(group).items() if leaf in keys]
        assert owners, f"{key}: no option of {group}/ has {leaf}"
        assert leaf not in root
    else:
        assert key in root, f"{key} is not a training key of conf/trial/supervised.yaml"
