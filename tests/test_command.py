"""Sweeping an external (non-Hydra) training command: override syntax, metrics, pruning, failures.

The end-to-end tests run ``examples/command/run_command.py -m`` from the repository root, as a
user would, against ``tests/apps/external_trainer/train_ext.py`` (a real argparse script that
trains a small torch model and logs with ``torch.utils.tensorboard``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.trial import TrialState

from nemo_rl_hpo.command import (
    CommandConfigError,
    CommandFailed,
    CommandSpec,
    CommandTimeout,
    JsonlReader,
    OverrideError,
    TensorBoardReader,
    check,
    command_overrides,
    render_override,
    run_command,
)
from tests.sweeplib import REPO, load, run_app, states

APP = REPO / "examples" / "command" / "run_command.py"
TRAINER = REPO / "tests" / "apps" / "external_trainer"
MAX_STEPS = 12  # train.max_num_steps of the app's default (max_steps)


# ------------------------------------------------------------------------- override syntax
OVERRIDE_TABLE: list[tuple[str, Any, str]] = [
    ("policy.optimizer.kwargs.lr", 1e-05, "policy.optimizer.kwargs.lr=1e-05"),
    ("+policy.new_key", 3, "+policy.new_key=3"),
    ("++policy.maybe_new", 3, "++policy.maybe_new=3"),
    ("policy.scheduler.0.kwargs.T_max", 100, "policy.scheduler.0.kwargs.T_max=100"),
    ("policy.scheduler.2.milestones", [50], "policy.scheduler.2.milestones=[50]"),
    ("logger.log_dir", "/runs/a b/logs", "logger.log_dir='/runs/a b/logs'"),
    ("logger.log_dir", "/runs/x-y.z/logs", "logger.log_dir=/runs/x-y.z/logs"),
    ("data.name", "a,b", "data.name='a,b'"),
    ("data.name", "it's", "data.name='it\\'s'"),
    ("data.name", 'say "hi"', "data.name='say \"hi\"'"),
    ("data.name", "[not, a, list]", "data.name='[not, a, list]'"),
    ("data.name", "a=b", "data.name='a=b'"),
    ("data.name", "", "data.name=''"),
    ("data.name", "true", "data.name='true'"),  # a string, not a bool
    ("data.name", "1.5", "data.name='1.5'"),  # a string, not a float
    ("data.name", "null", "data.name='null'"),
    ("data.name", "end\\", "data.name=end\\"),
    ("data.name", "q\\'", "data.name='q\\\\\\''"),  # backslash before a quote is doubled
    ("data.path", None, "data.path=null"),
    ("policy.enabled", True, "policy.enabled=true"),
    ("policy.enabled", False, "policy.enabled=false"),
    ("policy.betas", [0.9, 0.98], "policy.betas=[0.9,0.98]"),
    ("policy.mixed", [1, "a b", None], "policy.mixed=[1,'a b',null]"),
    ("policy.kw", {"a": 1, "b": "x y"}, "policy.kw={a:1,b:'x y'}"),
    (
        "+policy.scheduler",
        [{"name": "torch.optim.lr_scheduler.LinearLR", "kwargs": {"total_iters": 5}}],
        "+policy.scheduler=[{name:torch.optim.lr_scheduler.LinearLR,kwargs:{total_iters:5}}]",
    ),
    ("data.limit", float("inf"), "data.limit=inf"),
]


@pytest.mark.parametrize(("key", "value", "expected"), OVERRIDE_TABLE)
def test_override_rendering(key: str, value: Any, expected: str) -> None:
    rendered = render_override(key, value)
    # Rule: the rendered text is the expected Hydra override...
    assert rendered == expected
    # ...and NeMo RL's parser (Hydra's, on a struct config) reads back exactly the value.
    parsed = OverridesParser.create().parse_override(rendered)
    assert parsed.value() == value
    assert parsed.key_or_group == key.lstrip("+~")


def _apply_like_nemo_rl(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    conf = OmegaConf.create(cfg)
    OmegaConf.set_struct(conf, True)
    parsed = OverridesParser.create().parse_overrides(overrides=overrides)
    ConfigLoaderImpl._apply_overrides_to_config(overrides=parsed, cfg=conf)
    out = OmegaConf.to_container(conf)
    assert isinstance(out, dict)
    return out


def test_plus_adds_new_keys_and_indices_reach_list_items() -> None:
    base = {"policy": {"scheduler": [{"kwargs": {"T_max": 1}}, {"milestones": [1]}]}}
    ovs = [
        render_override("policy.scheduler.0.kwargs.T_max", 40),
        render_override("policy.scheduler.1.milestones", [7]),
        render_override("+policy.optimizer", {"name": "adamw"}),
    ]
    out = _apply_like_nemo_rl(base, ovs)
    # Rule: an index key changes that list item; `+` adds a key struct mode would refuse.
    assert out["policy"]["scheduler"][0]["kwargs"]["T_max"] == 40
    assert out["policy"]["scheduler"][1]["milestones"] == [7]
    assert out["policy"]["optimizer"] == {"name": "adamw"}
    # Rule: without `+`, a new key is refused by the command's struct-mode config.
    with pytest.raises(Exception, match="optimizer2"):
        _apply_like_nemo_rl(base, [render_override("policy.optimizer2", 1)])


@pytest.mark.parametrize("key", ["", "a..b", "=x", "a b", "a=b", "+"])
def test_bad_override_keys_are_refused(key: str) -> None:
    with pytest.raises(OverrideError, match="not a dotted config key"):
        render_override(key, 1)


def test_dict_keys_that_hydra_cannot_write_are_refused() -> None:
    with pytest.raises(OverrideError, match="dict key"):
        render_override("a", {"x y": 1})


# ------------------------------------------------------------------------------- the schema
def _spec(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "command": ["{python}", "-c", "pass"],
        "metrics": {"source": "jsonl", "tags": {"loss": "loss"}},
    }
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (_spec(comand=["x"]), r"unknown key\(s\) \['comand'\]"),
        (_spec(objective="acc"), "command.objective='acc' is not a metric"),
        (_spec(metrics={"source": "wandb", "tags": {"a": "a"}}), "must be one of"),
        (_spec(metrics={"source": "jsonl", "tags": {}}), "metrics.tags is empty"),
        (_spec(command=[]), "command.command is empty"),
        (_spec(poll_interval_s=0), "poll_interval_s must be at least"),
        (_spec(timeout_s=-1), "timeout_s must be positive"),
    ],
)
def test_bad_command_sections_name_the_key(cfg: dict[str, Any], match: str) -> None:
    with pytest.raises(CommandConfigError, match=match):
        CommandSpec.from_config(cfg)


def test_unknown_placeholder_names_the_key(tmp_path: Path) -> None:
    cfg = _spec(command=["{python}", "{confg}"])
    with pytest.raises(CommandConfigError, match=r"command.command: unknown placeholder \{confg\}"):
        run_command(cfg, job_dir=tmp_path)


# --------------------------------------------------------------------------------- readers
def test_jsonl_reader_consumes_whole_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    reader = JsonlReader(path, {"loss": "val_loss"}, "step")
    assert reader.read() == {"loss": {}}  # no file yet
    with open(path, "w") as f:
        f.write('{"step": 1, "val_loss": 0.5}\n{"step": 2, "val_')
    # Rule: a half-written line is not read...
    assert reader.read() == {"loss": {1: 0.5}}
    with open(path, "a") as f:
        f.write('loss": 0.25}\n{"step": 2, "val_loss": 0.2}\n')
    # ...and is read once complete; a step written again keeps the later value.
    assert reader.read() == {"loss": {1: 0.5, 2: 0.2}}


def test_tensorboard_reader_merges_restarts_later_exp_wins(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    reader = TensorBoardReader(tmp_path, {"val": "validation/loss"}, "exp_*/tensorboard")
    w = SummaryWriter(str(tmp_path / "exp_001" / "tensorboard"))
    for step in (1, 2, 3):
        w.add_scalar("validation/loss", 1.0 / step, step)
    w.flush()
    # Rule: values are read while the writer is still open.
    assert reader.read()["val"] == {1: 1.0, 2: 0.5, 3: pytest.approx(1 / 3)}
    w.close()
    w = SummaryWriter(str(tmp_path / "exp_002" / "tensorboard"))
    w.add_scalar("validation/loss", 9.0, 3)
    w.add_scalar("validation/loss", 0.25, 4)
    w.close()
    # Rule: a restart's exp dir is merged in; for a step both logged, the later exp wins.
    assert reader.read()["val"] == {1: 1.0, 2: 0.5, 3: 9.0, 4: 0.25}


# ----------------------------------------------------------------- the runner, in-process
def test_jsonl_command_outside_a_sweep_returns_its_last_metrics(tmp_path: Path) -> None:
    script = (
        "import json,sys\n"
        "with open(sys.argv[1] + '/m.jsonl', 'w') as f:\n"
        "    for s in range(1, 4): f.write(json.dumps(dict(step=s, loss=1.0 / s)) + '\\n')\n"
        "print(sys.argv[2:])\n"
    )
    cfg = _spec(
        command=["{python}", "-c", script, "{log_dir}", "{overrides}", "--tail"],
        overrides={"+a.b": "x y"},
        metrics={"source": "jsonl", "tags": {"loss": "loss"}, "path": "m.jsonl"},
    )
    out = run_command(cfg, job_dir=tmp_path)
    assert out == {"loss": pytest.approx(1 / 3)}
    # Rule: overrides go where {overrides} stands, as one argv item each (no shell).
    assert (tmp_path / "command.stdout").read_text().strip() == "[\"+a.b='x y'\", '--tail']"


def test_timeout_stops_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # The command starts a grandchild that would outlive a plain kill of its parent.
    script = (
        "import subprocess,sys,time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    cfg = _spec(
        command=["{python}", "-c", script], timeout_s=1.0, poll_interval_s=0.1, grace_period_s=1
    )
    with pytest.raises(CommandTimeout, match="command.timeout_s=1"):
        run_command(cfg, job_dir=tmp_path)
    grandchild = int(pid_file.read_text())
    # Rule: the whole group is gone, grandchildren included.
    assert not _alive(grandchild)


def test_nonzero_exit_raises_with_stderr_tail(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "for i in range(40): print('line', i, file=sys.stderr)\n"
        "sys.exit('fatal: bad config')\n"
    )
    with pytest.raises(CommandFailed) as info:
        run_command(_spec(command=["{python}", "-c", script]), job_dir=tmp_path)
    msg = str(info.value)
    # Rule: the message names the exit code and carries the last ~20 stderr lines, not all.
    assert "exited with code 1" in msg and "fatal: bad config" in msg
    assert "line 39" in msg and "line 10" not in msg


# ------------------------------------------------------------------------------ end to end
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited all the same.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _events(job_dir: Path, tag: str) -> dict[int, float]:
    """An independent read (TensorBoard's EventAccumulator, one per exp dir, later exp wins)."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    out: dict[int, float] = {}
    for d in sorted((job_dir / "logs").glob("exp_*/tensorboard")):
        acc = ea.EventAccumulator(str(d), size_guidance={ea.SCALARS: 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out.update({int(e.step): float(e.value) for e in acc.Scalars(tag)})
    return out


def _sweep(tmp_path: Path, *args: str, check: bool = True) -> Any:
    if not any(a.startswith("hydra.sweeper.n_trials=") for a in args):
        args = ("hydra.sweeper.n_trials=6", *args)
    return run_app(APP, f"hydra.sweep.dir={tmp_path}", *args, cwd=REPO, check=check)


@pytest.mark.e2e
def test_six_trial_sweep_reads_values_from_the_commands_events(tmp_path: Path) -> None:
    _sweep(tmp_path, "hydra.sweeper.sampler.seed=0")
    study = load(tmp_path, "run_command")
    assert states(study) == {"COMPLETE": 6}
    for t in study.trials:
        job = Path(t.user_attrs["job_dir"])
        events = _events(job, "validation/loss")
        # Rule: the trial's value is the final validation/loss the command wrote to TensorBoard.
        assert max(events) == MAX_STEPS
        assert t.value == events[MAX_STEPS]
        # Rule: every objective value of the run reached the study as an intermediate value.
        assert t.intermediate_values == events
        # Rule: the searched values reached the command as its own (struct-mode) keys.
        used = OmegaConf.load(job / "logs" / "exp_001" / "config.yaml")
        assert used.policy.optimizer.kwargs.lr == t.params["learning_rate"]
        assert used.policy.optimizer.kwargs.weight_decay == t.params["weight_decay"]
        assert used.logger.log_dir == str(job / "logs")
        assert used.checkpointing.checkpoint_dir == str(job / "checkpoints")
        # Rule: the trial records what was watched, and the command's pid.
        assert t.user_attrs["command_objective"] == "val_loss"
        assert t.user_attrs["command_tags"] == {
            "val_loss": "validation/loss",
            "train_loss": "train/loss",
        }
        assert t.user_attrs["command_pid"] == int((job / "logs" / "train_ext.pid").read_text())
        assert "done at step 12" in (job / "command.stdout").read_text()
        assert t.user_attrs["metric:train_loss"] == _events(job, "train/loss")[MAX_STEPS]


@pytest.mark.e2e
def test_median_pruning_stops_the_process_early(tmp_path: Path) -> None:
    _sweep(
        tmp_path,
        "hydra/sweeper/sampler=random",
        # With lr the only parameter, RandomSampler(seed=6) draws 0.05, 0.03 (the pruner's two
        # startup trials), then 3e-5, 3e-5, 1e-4. At step 1 a bad lr's val_loss is ~3.5 against
        # ~1 for the good ones (measured: 3.51 vs 0.56), far above their median: those three
        # must be pruned, whatever the noise.
        "hydra.sweeper.sampler.seed=6",
        "hydra.sweeper.n_trials=5",
        "~hydra.sweeper.params.weight_decay",
        "learning_rate=choice(0.05,0.03,0.0001,0.00003)",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2",
        "hydra.sweeper.pruner.n_warmup_steps=1",
        "command.poll_interval_s=0.1",
        "command.extra_args=['train.step_sleep_s=0.3']",
    )
    study = load(tmp_path, "run_command")
    assert states(study) == {"COMPLETE": 2, "PRUNED": 3}
    for t in study.get_trials(states=[TrialState.PRUNED]):
        job = Path(t.user_attrs["job_dir"])
        pid = int((job / "logs" / "train_ext.pid").read_text())
        # Rule: the pruned trial's process really exited...
        assert t.user_attrs["command_pid"] == pid
        assert not _alive(pid)
        # ...before finishing: its last logged step is below the run's length.
        last = max(_events(job, "validation/loss"))
        assert last < MAX_STEPS
        assert t.user_attrs["pruned_at_step"] < MAX_STEPS
        assert t.user_attrs["command_stopped"] == "pruned"
        assert t.params["learning_rate"] < 0.001


@pytest.mark.e2e
def test_failing_command_fails_the_trial_with_its_stderr(tmp_path: Path) -> None:
    _sweep(
        tmp_path,
        "hydra.sweeper.n_trials=1",
        "command.extra_args=['train.fail_at_step=3']",
        check=False,
    )
    study = load(tmp_path, "run_command")
    (t,) = study.trials
    assert t.state == TrialState.FAIL
    reason = t.user_attrs["fail_reason"]
    # Rule: the fail reason says how it exited and carries the stderr tail with the cause.
    assert "CommandFailed" in reason and "exited with code 1" in reason
    assert "loss became NaN at step 3" in reason
    job = Path(t.user_attrs["job_dir"])
    assert "loss became NaN" in (job / "command.stderr").read_text()


@pytest.mark.e2e
def test_restart_resumes_from_checkpoint_and_metrics_merge(tmp_path: Path) -> None:
    cfg = OmegaConf.load(APP.parent / "conf" / "command" / "external_trainer.yaml")
    raw = OmegaConf.to_container(cfg.command, resolve=False)
    assert isinstance(raw, dict)
    raw["overrides"] = {"train.max_num_steps": 6}
    raw["config"] = str(TRAINER / "config.yaml")
    raw["command"] = ["{python}", str(TRAINER / "train_ext.py"), "--config", "{config}"]
    raw["poll_interval_s"] = 0.2
    first = dict(raw, extra_args=["train.fail_at_step=5"])
    with pytest.raises(CommandFailed, match="step 5"):
        run_command(first, job_dir=tmp_path)
    # The same job dir again (a requeued SLURM job): it resumes from the step-4 checkpoint.
    out = run_command(raw, job_dir=tmp_path)
    stdout = (tmp_path / "command.stdout").read_text()
    assert "resumed from" in stdout and "at step 4" in stdout
    assert sorted(p.name for p in (tmp_path / "logs").glob("exp_*")) == ["exp_001", "exp_002"]
    events = _events(tmp_path, "validation/loss")
    # Rule: steps 1-4 come from the first run and 5-6 from the restart; the result is step 6's.
    assert sorted(events) == [1, 2, 3, 4, 5, 6]
    assert out["val_loss"] == events[6]


def test_app_config_composes_with_every_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra import compose, initialize_config_dir

    conf = REPO / "examples" / "command" / "conf"
    presets = [[]] + [[f"nemo_rl={p.stem}"] for p in sorted((conf / "nemo_rl").glob("*.yaml"))]
    assert len(presets) == 4
    monkeypatch.setenv("NEMO_RL_DIR", "/opt/nemo-rl")  # the NeMo RL presets' cwd
    monkeypatch.setenv("NEMO_RL_CONTAINER", "nvcr.io/nvidia/nemo-rl:v0")  # ray.sub's CONTAINER
    for overrides in presets:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
            searched = list(cfg.hydra.sweeper.params)
            # Rule: every searched key reaches the command as one of its own overrides.
            for key in searched:
                probe = compose("config", overrides=[*overrides, f"{key}=777.25"])
                rendered = command_overrides(
                    CommandSpec.from_config(probe.command), Path("/l"), Path("/c")
                )
                assert any("777.25" in o for o in rendered), (overrides, key, rendered)
        spec = CommandSpec.from_config(cfg.command)
        # Rule: every preset passes the sweeper's pre-launch check and maps keys that render
        # as Hydra overrides.
        check(cfg)
        from nemo_rl_hpo.command import render_overrides

        assert render_overrides(spec.overrides)
        assert spec.log_dir_key and spec.checkpoint_dir_key
