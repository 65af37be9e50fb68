"""The NeMo RL presets' driver lines against NeMo RL's own configs at the recorded commit.

``tests/fixtures/nemo_rl_configs.json`` holds the keys and types of NeMo RL's
``examples/configs/{grpo_math_1B,sft,dpo}.yaml``, its scripts, resolvers and ``ray.sub``'s
variables, extracted from a NeMo RL checkout by ``examples/command/nemo_rl_config_schema.py``.
Each preset's trial is rendered with the runner's own functions, as a sweep renders it (a
sampled trial, inside a PBT round so every per-trial key is there), and every override of the
driver line must be one NeMo RL's loader accepts: an existing key of a compatible type, ``+`` only
for a key the file lacks, interpolations only of existing keys and NeMo RL's resolvers. After
updating the fixture to a newer NeMo RL commit, a failure here names the preset key to change.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from nemo_rl_hpo import trial
from nemo_rl_hpo.command import prepare_command
from nemo_rl_hpo.search.grammar import format_value, parse_params
from tests.sweeplib import REPO

FIXTURE = REPO / "tests" / "fixtures" / "nemo_rl_configs.json"
APP_CONF = REPO / "examples" / "command" / "conf"
STANDIN = REPO / "examples" / "command" / "nemo_rl_standin"
SCHEMA = json.loads(FIXTURE.read_text())
# an interpolation's key references and resolver calls: ${a.b}, ${mul:...}
_REFERENCE = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")
_RESOLVER = re.compile(r"\$\{(\w+):")
# the value types a key of each recorded type accepts (NeMo RL's MasterConfig, pydantic, takes
# an int for a float; a null or ??? default says nothing about the type)
ACCEPTS: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "PathLike": (str,),
    "None": (type(None),),
    "list": (list,),
    "dict": (dict,),
}
_WRAPPER = re.compile(r"^(?:NotRequired|Optional|Required)\[(.*)\]$")


def _accepts(config_rel: str, key: str) -> tuple[type, ...] | None:
    """The value types NeMo RL takes for ``key``: its annotation in NeMo RL's config classes
    where there is one, else the type of the YAML's value; None: not known."""
    annotation = SCHEMA["annotations"][config_rel].get(key)
    if annotation is None:
        return ACCEPTS.get(SCHEMA["configs"][config_rel][key])
    while m := _WRAPPER.match(annotation):
        annotation = m.group(1)
    parts = [p.strip() for p in annotation.split("|")]
    if not all(p in ACCEPTS for p in parts):
        return None  # a class, dict[str, Any], Literal[...]: not checked here
    return tuple(t for p in parts for t in ACCEPTS[p])


def _sample_trial(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, preset: str) -> Any:
    """The preset's command for one sampled trial, as the sweeper's job renders it."""
    monkeypatch.setenv("NEMO_RL_DIR", str(STANDIN))
    monkeypatch.setenv("NEMO_RL_CONTAINER", "nvcr.io/nvidia/nemo-rl:test")
    with initialize_config_dir(config_dir=str(APP_CONF), version_base="1.3"):
        sweep = compose("config", overrides=[f"nemo_rl={preset}"], return_hydra_config=True)
        space = {p.key: p.distribution for p in parse_params(sweep.hydra.sweeper.params)}
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        sampled = study.ask({k: d for k, d in space.items() if d is not None}).params
        job = compose(
            "config",
            overrides=[f"nemo_rl={preset}"]
            + [f"{k}={format_value(v)}" for k, v in sampled.items()],
        )
    # inside a sweep's PBT round: run names, the round's end step, its own checkpoint dir
    context = {
        "storage": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "study": "fidelity",
        "number": 3,
        "steps": 20,
        "checkpoint_dir": str(tmp_path / "round_ckpt"),
    }
    monkeypatch.setenv(trial.ENV_TRIAL, json.dumps(context))
    return prepare_command(job.command, tmp_path / "job")


def _problems(config_rel: str, overrides: list[str]) -> list[str]:
    """Every override NeMo RL's loader would refuse or misread, as one sentence each."""
    keys: dict[str, str] = SCHEMA["configs"][config_rel]
    out = []
    for ov in OverridesParser.create().parse_overrides(overrides):
        key, text = ov.key_or_group, ov.input_line
        parent = key.rpartition(".")[0]
        if ov.is_add() or ov.is_force_add():
            if parent and keys.get(parent) != "dict":
                out.append(f"{text}: {parent} is not a section of {config_rel}")
            if ov.is_add() and key in keys:
                out.append(f"{text}: {key} exists in {config_rel}; struct mode refuses '+'")
            continue
        if key not in keys:
            out.append(f"{text}: {config_rel} has no key {key} (struct mode refuses it)")
            continue
        if ov.is_delete():
            continue
        value = ov.value()
        if isinstance(value, str) and "${" in value:
            for ref in _REFERENCE.findall(value):
                if ref not in keys:
                    out.append(f"{text}: the interpolation refers to {ref}, not in {config_rel}")
            for name in _RESOLVER.findall(value):
                if name not in SCHEMA["resolvers"]:
                    out.append(f"{text}: NeMo RL registers no resolver {name!r}")
            continue
        accepts = _accepts(config_rel, key)
        if accepts is None:  # null, ???, an interpolation: no type to hold the value to
            continue
        if isinstance(value, bool) != (bool in accepts) or not isinstance(value, accepts):
            out.append(f"{text}: {key} is {keys[key]} in {config_rel}, got {value!r}")
    return out


def test_fixture_is_for_the_commit_the_docs_name() -> None:
    # Rule: the docs and the presets name the commit the fixture was extracted at.
    commit = SCHEMA["nemo_rl_commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    assert commit in (REPO / "docs" / "command.md").read_text()
    for preset in ("grpo", "sft", "dpo"):
        assert commit[:8] in (APP_CONF / "nemo_rl" / f"{preset}.yaml").read_text(), preset


@pytest.mark.parametrize("preset", ["grpo", "sft", "dpo"])
def test_preset_driver_line_fits_nemo_rls_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, preset: str
) -> None:
    prepared = _sample_trial(monkeypatch, tmp_path, preset)
    driver = shlex.split(prepared.env["COMMAND"]) if prepared.spec.ray_sub else prepared.driver
    config_rel = Path(prepared.values["config"]).relative_to(prepared.cwd).as_posix()
    # Rule: the script and the config are NeMo RL's, at their paths in the checkout.
    assert config_rel in SCHEMA["configs"]
    script = next(a for a in driver if a.endswith(".py"))
    assert Path(script).as_posix().removeprefix("./") in SCHEMA["scripts"]
    assert driver[driver.index("--config") + 1] == prepared.values["config"]
    overrides = driver[driver.index("--config") + 2 :]
    # Rule: the driver line carries the rendered overrides, and every per-trial key is there.
    assert overrides == prepared.overrides + list(prepared.spec.extra_args)
    rendered = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    spec = prepared.spec
    per_trial = [spec.log_dir_key, spec.checkpoint_dir_key, spec.max_steps_key]
    for key in [*per_trial, "logger.wandb.name", "logger.mlflow.run_name"]:
        assert key in rendered, key
    # Rule: NeMo RL's loader accepts every override, with the type its config has.
    assert _problems(config_rel, overrides) == []
    if prepared.spec.ray_sub is not None:
        # Rule: every variable the runner gives ray.sub is one ray.sub reads.
        given = {"COMMAND", "CONTAINER", "MOUNTS", "BASE_LOG_DIR", "GPUS_PER_NODE"}
        given.add("DEDICATED_RAY_HEAD")
        assert given <= set(prepared.env) and given <= set(SCHEMA["ray_sub_variables"])


def test_the_check_catches_what_nemo_rl_refuses() -> None:
    grpo = "examples/configs/grpo_math_1B.yaml"
    # Rule: each kind of mistake is caught (the check is not vacuous).
    assert len(_problems(grpo, ["grpo.no_such_key=1"])) == 1  # unknown key
    assert len(_problems(grpo, ["+grpo.val_period=3"])) == 1  # '+' on an existing key
    assert len(_problems(grpo, ["grpo.max_num_steps=1.5"])) == 1  # float for an int
    assert len(_problems(grpo, ["grpo.val_at_end=1"])) == 1  # int for a bool
    assert len(_problems(grpo, ["cluster.num_nodes=2.0"])) == 1  # float for an annotated int
    assert len(_problems(grpo, ["policy.train_global_batch_size='${mul:${grpo.nope},2}'"])) == 1
    assert len(_problems(grpo, ["policy.train_global_batch_size='${pow:2,3}'"])) == 1
    assert len(_problems(grpo, ["+nosection.key=1"])) == 1
    # ...and what NeMo RL takes passes: an int for a float, a string for a null default.
    ok = ["policy.optimizer.kwargs.lr=1", "checkpointing.checkpoint_must_save_by='00:03:45:00'"]
    assert _problems(grpo, ok + ["++logger.wandb.group=g"]) == []
    # ...and a float where the YAML writes `0` but NeMo RL declares a float.
    assert _problems("examples/configs/dpo.yaml", ["dpo.sft_loss_weight=0.5"]) == []
