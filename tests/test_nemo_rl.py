"""NeMo RL presets through ray.sub, against the NeMo-RL-shaped stand-ins (docs/command.md).

The stand-ins live in ``examples/command/nemo_rl_standin`` (``ray.sub`` and
``examples/run_grpo.py`` laid out as in NeMo RL's repository); the presets run against them
unchanged, with ``NEMO_RL_DIR`` pointing there. Unit tests first, then the stand-in on its own,
then sweeps on the local Slurm (4 fake GPUs on one node: ``GPUS_PER_NODE=4``, and ray.sub's
``--exclusive`` runs one trial's job at a time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from nemo_rl_hpo import slurm, trial
from nemo_rl_hpo.command import (
    CommandConfigError,
    CommandFailed,
    CommandSpec,
    RaySubSpec,
    _pbt,
    _raysub,
    check,
    command_overrides,
    prepare_command,
    run_command,
    slurm_time_seconds,
)
from nemo_rl_hpo.sweep import cost, records
from tests.sweeplib import REPO, load, run_app, states

APP = REPO / "examples" / "command" / "run_command.py"
STANDIN = REPO / "examples" / "command" / "nemo_rl_standin"
GRPO_CONFIG = STANDIN / "examples" / "configs" / "grpo_math_1B.yaml"
# A short stand-in run: a 40-step warm start instead of 100, fewer validation prompts.
SHORT = ["sft.max_num_steps=40", "task.validation_size=128"]


# ------------------------------------------------------------------------------ unit rules
@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 1800),  # minutes
        (90, 5400),
        ("1:30", 90),  # MM:SS
        ("04:00:00", 14400),
        ("1-00", 86400),  # D-HH
        ("1-02:03", 93780),  # D-HH:MM
        ("2-00:00:10", 172810),
    ],
)
def test_slurm_time_formats(value: Any, seconds: int) -> None:
    assert slurm_time_seconds(value, "k") == seconds


@pytest.mark.parametrize("value", ["", "1h", "1:2:3:4", "0", "-5"])
def test_bad_slurm_time_names_the_key(value: str) -> None:
    with pytest.raises(CommandConfigError, match="command.ray_sub.time_limit"):
        RaySubSpec(container="c", time_limit=value).validate()


def test_must_save_by_is_the_limit_less_the_margin() -> None:
    # Rule: NeMo RL's DD:HH:MM:SS, the wall time less the margin.
    spec = RaySubSpec(container="c", time_limit="04:00:00", save_margin_s=900)
    assert _raysub.must_save_by(spec) == "00:03:45:00"
    spec = RaySubSpec(container="c", time_limit="2-00:00:00", save_margin_s=3600)
    assert _raysub.must_save_by(spec) == "01:23:00:00"
    # Rule: the default margin covers ray.sub's 30-minute wait for workers before the driver
    # starts (outside NeMo RL's clock, inside the wall time) plus loading and the last save.
    assert RaySubSpec().save_margin_s >= 1800 + 600
    # Rule: without a time limit nothing is set (the run is not interrupted).
    assert _raysub.must_save_by(RaySubSpec(container="c")) is None
    # Rule: a margin that leaves no training time is refused up front.
    with pytest.raises(CommandConfigError, match="save_margin_s=600 leaves no training time"):
        RaySubSpec(container="c", time_limit="10", save_margin_s=600).validate()


def test_one_gpu_key_feeds_gres_env_and_the_commands_cluster(tmp_path: Path) -> None:
    rs = RaySubSpec(container="img", gpus_per_node=4, nodes=2, time_limit="1:00:00")
    spec = CommandSpec.from_config(
        {
            "command": ["python", "run.py"],
            "metrics": {"tags": {"acc": "validation/accuracy"}},
            "ray_sub": rs.__dict__,
        }
    )
    assert spec.ray_sub is not None
    argv = _raysub.sbatch_argv(spec.ray_sub, tmp_path, tmp_path / "job", "hpo-s-3")
    env = _raysub.environment(spec.ray_sub, "python run.py", tmp_path / "job", "/a:/a")
    overrides = command_overrides(spec, tmp_path / "logs", tmp_path / "ckpt")
    # Rule: GPUs per node is written once and reaches all three places that must agree.
    assert "--gres=gpu:4" in argv and env["GPUS_PER_NODE"] == "4"
    assert "cluster.gpus_per_node=4" in overrides
    assert "--nodes=2" in argv and "cluster.num_nodes=2" in overrides
    # Rule: ray.sub's DEDICATED_RAY_HEAD is always written, so a value exported in the
    # submitting shell cannot disagree with cluster.num_nodes.
    assert env["DEDICATED_RAY_HEAD"] == "0"
    # Rule: the job dir is BASE_LOG_DIR; the job name is the trial's own (singleton).
    assert env["BASE_LOG_DIR"] == str(tmp_path / "job")
    assert "--job-name=hpo-s-3" in argv and argv[-1] == str(tmp_path / "ray.sub")
    assert "--wait" in argv and "--time=1:00:00" in argv
    assert "checkpointing.checkpoint_must_save_by=00:00:15:00" in overrides  # 1 h - 45 min


def test_dedicated_head_gives_the_command_one_node_less(tmp_path: Path) -> None:
    rs = RaySubSpec(container="img", gpus_per_node=4, nodes=3, dedicated_head=True)
    rs.validate()
    env = _raysub.environment(rs, "python run.py", tmp_path, "/a:/a")
    # Rule: with a GPU-free head node ray.sub's Ray has GPUs on nodes - 1 nodes (ray.sub:381-393
    # at 7ea279ab), and NeMo RL must be told so (its docs/cluster.md:153-168): --nodes stays the
    # allocation.
    assert env["DEDICATED_RAY_HEAD"] == "1"
    assert _raysub.overrides(rs)["cluster.num_nodes"] == 2
    assert "--nodes=3" in _raysub.sbatch_argv(rs, tmp_path, tmp_path, "j")
    # Rule: a dedicated head needs a GPU node besides it; the flag has one key.
    with pytest.raises(CommandConfigError, match="dedicated_head=true needs command.ray_sub.nodes"):
        RaySubSpec(container="c", nodes=1, dedicated_head=True).validate()
    with pytest.raises(CommandConfigError, match="env.DEDICATED_RAY_HEAD: set command.ray_sub"):
        RaySubSpec(container="c", env={"DEDICATED_RAY_HEAD": "1"}).validate()


def test_mounts_default_to_the_working_and_sweep_dirs(tmp_path: Path) -> None:
    rs = RaySubSpec(container="c")
    cwd, sweep = tmp_path / "RL", tmp_path / "sweeps" / "s1"
    # Rule: by default both dirs are mounted at their own paths...
    assert _raysub.mounts(rs, cwd, sweep, sweep / "0") == f"{cwd}:{cwd},{sweep}:{sweep}"
    # ...and a dir inside another is mounted once.
    assert _raysub.mounts(rs, tmp_path, sweep, sweep / "0") == f"{tmp_path}:{tmp_path}"
    # Rule: given mounts that hide the trial's job dir are an error naming the key.
    with pytest.raises(CommandConfigError, match="command.ray_sub.mounts="):
        _raysub.mounts(RaySubSpec(container="c", mounts=f"{cwd}:{cwd}"), cwd, sweep, sweep / "0")


def _app_cfg(*overrides: str) -> Any:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(APP.parent / "conf"), version_base="1.3"):
        return compose("config", overrides=["nemo_rl=grpo", *overrides])


def test_empty_container_is_an_error_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEMO_RL_DIR", str(STANDIN))
    monkeypatch.delenv("NEMO_RL_CONTAINER", raising=False)
    with pytest.raises(CommandConfigError, match=r"command\.ray_sub\.container is empty"):
        check(_app_cfg())


def test_empty_container_stops_the_sweep_before_any_job(tmp_path: Path) -> None:
    proc = run_app(
        APP,
        "nemo_rl=grpo",
        f"hydra.sweep.dir={tmp_path}",
        cwd=REPO,
        check=False,
        env={"NEMO_RL_DIR": str(STANDIN), "NEMO_RL_CONTAINER": ""},
    )
    # Rule: one line naming the key and the fix, and no trial was launched.
    assert proc.returncode != 0
    assert "command.ray_sub.container is empty" in proc.stdout + proc.stderr
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit()]


def _in_trial(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **ctx: Any) -> optuna.Study:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="grpo-sweep", storage=storage)
    study.ask()
    study.ask()
    context = {"storage": storage, "study": "grpo-sweep", "number": 1, **ctx}
    monkeypatch.setenv(trial.ENV_TRIAL, json.dumps(context))
    return study


def test_run_names_reach_the_commands_logger_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NEMO_RL_DIR", str(STANDIN))
    monkeypatch.setenv("NEMO_RL_CONTAINER", "img")
    spec = CommandSpec.from_config(_app_cfg().command)
    # Rule: outside a sweep there are no trial names to give.
    assert not any("wandb.name" in o for o in command_overrides(spec, tmp_path, tmp_path))
    _in_trial(monkeypatch, tmp_path)
    names = trial.run_names()
    assert names == trial.RunNames(run="grpo-sweep-trial-1", group="grpo-sweep")
    out = command_overrides(spec, tmp_path, tmp_path)
    # Rule: each trial is its own run, grouped by study, in W&B and in MLflow (NeMo RL's keys).
    assert "logger.wandb.name=grpo-sweep-trial-1" in out
    assert "++logger.wandb.group=grpo-sweep" in out
    assert "logger.mlflow.run_name=grpo-sweep-trial-1" in out
    assert "logger.mlflow.experiment_name=grpo-sweep" in out


def test_pbt_round_starts_from_the_latest_step_of_its_start_checkpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    donor = tmp_path / "member_000" / "round_000"
    for step in (5, 10):
        (donor / f"step_{step}").mkdir(parents=True)
        (donor / f"step_{step}" / "weights.pt").write_text(str(step))
    mine = tmp_path / "member_001" / "round_001"
    _in_trial(monkeypatch, tmp_path, checkpoint_dir=str(mine), resume_from=str(donor), steps=15)
    assert _pbt.checkpoint_dir() == mine
    mine.mkdir(parents=True)
    # Rule: the donor's latest step_N is copied into the round's own checkpoint dir...
    assert _pbt.seed_checkpoint_dir(mine) == mine / "step_10"
    assert (mine / "step_10" / "weights.pt").read_text() == "10"
    assert not (mine / "step_5").exists()
    # ...once: a resubmitted round continues from its own progress.
    (mine / "step_12").mkdir()
    assert _pbt.seed_checkpoint_dir(mine) is None
    # Rule: the round's end reaches the command's max-steps key.
    base = {"command": ["x"], "metrics": {"tags": {"a": "a"}}}
    spec = CommandSpec.from_config({**base, "max_steps_key": "grpo.max_num_steps"})
    assert "grpo.max_num_steps=15" in command_overrides(spec, tmp_path, mine)
    with pytest.raises(CommandConfigError, match="command.max_steps_key is not set"):
        command_overrides(CommandSpec.from_config(base), tmp_path, mine)


def test_pbt_round_is_judged_at_its_last_step(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A command that logs a training loss at steps 1..N and its objective at the given steps
    # (JSONL), then exits 0.
    script = (
        "import json, sys; f = open(sys.argv[1] + '/metrics.jsonl', 'a'); "
        "[f.write(json.dumps(dict(step=s, loss=1 / s)) + '\\n') "
        "for s in range(1, int(sys.argv[3]) + 1)]; "
        "[f.write(json.dumps(dict(step=int(s), acc=int(s) / 10)) + '\\n') "
        "for s in sys.argv[2].split(',')]"
    )

    def round_logging(val_steps: str, last_step: int) -> dict[str, Any]:
        return {
            "command": [sys.executable, "-c", script, "{log_dir}", val_steps, str(last_step)],
            "metrics": {"source": "jsonl", "tags": {"acc": "acc", "loss": "loss"}},
            "max_steps_key": "grpo.max_num_steps",
            "poll_interval_s": 0.05,
        }

    study = _in_trial(monkeypatch, tmp_path, steps=4)
    # Rule: the value PBT ranks a round by is the objective at the round's last step (NeMo RL
    # validates there with val_at_end: grpo.py:3360-3364 at 7ea279ab).
    assert run_command(round_logging("2,4", 4), tmp_path / "a") == {"acc": 0.4, "loss": 0.25}
    assert study.trials[1].intermediate_values == {2: 0.2, 4: 0.4}
    # Rule: a round whose last validation is older than its last trained step is not ranked
    # on it (NeMo RL with val_at_end false and a round length off its val_period)...
    with pytest.raises(CommandFailed, match=r"logged up to step 4, but its last 'acc' is from"):
        run_command(round_logging("3", 4), tmp_path / "b")
    # ...while a run that stopped early (NeMo RL's own early stop) is judged where it stopped.
    (tmp_path / "c").mkdir()
    _in_trial(monkeypatch, tmp_path / "c", steps=4)  # a fresh trial
    assert run_command(round_logging("3", 3), tmp_path / "c")["acc"] == 0.3


# ------------------------------------------------------------------- the stand-in trainer
def _standin(
    tmp_path: Path, *overrides: str, check_rc: bool = True
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(trial.ENV_TRIAL, None)
    proc = subprocess.run(
        [
            sys.executable,
            "examples/run_grpo.py",
            "--config",
            str(GRPO_CONFIG),
            f"logger.log_dir={tmp_path / 'logs'}",
            f"checkpointing.checkpoint_dir={tmp_path / 'ckpt'}",
            "logger.tensorboard_enabled=true",
            *SHORT,
            *overrides,
        ],
        cwd=STANDIN,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    if check_rc:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _scalars(exp_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(exp_dir / "tensorboard"), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    return {
        tag: {int(e.step): float(e.value) for e in acc.Scalars(tag)}
        for tag in acc.Tags()["scalars"]
    }


@pytest.mark.e2e
def test_standin_keeps_nemo_rls_command_line_and_file_contract(tmp_path: Path) -> None:
    # Rule: struct mode, as NeMo RL: a key the config lacks is refused without `+`.
    bad = _standin(tmp_path / "bad", "grpo.no_such_key=1", check_rc=False)
    assert bad.returncode != 0 and "no_such_key" in bad.stderr
    assert "OverridesError: Failed to parse Hydra overrides" in bad.stderr
    # Rule: validation samples like training, as NeMo RL insists outside NeMo-Gym.
    greedy = _standin(tmp_path / "greedy", "policy.generation.val_temperature=0", check_rc=False)
    assert greedy.returncode != 0 and "only supported for vLLM NeMo-Gym" in greedy.stderr
    short = [
        "grpo.val_period=2",
        "grpo.num_generations_per_prompt=4",
        # as the GRPO preset renders it: an interpolation NeMo RL's own `mul` resolver resolves
        "policy.train_global_batch_size='${mul:${grpo.num_prompts_per_step},"
        "${grpo.num_generations_per_prompt}}'",
    ]
    _standin(tmp_path, "grpo.max_num_steps=4", *short)
    exp1 = tmp_path / "logs" / "exp_001"
    used = OmegaConf.load(exp1 / "config.yaml")
    assert used.grpo.num_generations_per_prompt == 4
    assert used.policy.generation.val_temperature == used.policy.generation.temperature == 1.0
    # Rule: NeMo RL's resolvers work in overrides (the GRPO preset's batch size uses `mul`).
    assert used.policy.train_global_batch_size == 16 * 4
    tags = _scalars(exp1)
    # Rule: NeMo RL's tags; train metrics at steps 1..N, validation every val_period.
    assert sorted(tags["train/loss"]) == [1, 2, 3, 4]
    assert sorted(tags["train/reward"]) == [1, 2, 3, 4]
    assert sorted(tags["validation/accuracy"]) == [2, 4]  # step 0 only with val_at_start
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step_4"]
    # Rule: the same dirs again continue from the highest step_N in a new exp_NNN.
    again = _standin(tmp_path, "grpo.max_num_steps=6", *short)
    assert "step_4" in again.stdout + again.stderr
    assert sorted(_scalars(tmp_path / "logs" / "exp_002")["train/loss"]) == [5, 6]


@pytest.mark.e2e
def test_standin_saves_before_checkpoint_must_save_by_and_stops(tmp_path: Path) -> None:
    proc = _standin(
        tmp_path,
        "grpo.max_num_steps=200",
        "grpo.num_generations_per_prompt=2",
        "standin.step_sleep_s=0.2",
        "checkpointing.checkpoint_must_save_by='00:00:00:03'",
        # Only the save at the timeout: the save-by clock starts at the training loop (as NeMo
        # RL's), so 3 s hold ~15 steps, past the stand-in's save_period of 5.
        "checkpointing.save_period=1000",
    )
    # Rule: NeMo RL's behaviour: save, say so, exit 0 long before max_num_steps.
    assert "Timeout has been reached, stopping training early" in proc.stdout
    (saved,) = (tmp_path / "ckpt").iterdir()
    step = int(saved.name.split("_")[1])
    assert 0 < step < 200
    assert max(_scalars(tmp_path / "logs" / "exp_001")["train/loss"]) == step


def _nrl_standin() -> Any:
    """The stand-in's NeMo RL utilities (``nrl_standin.py``), imported from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nrl_standin", STANDIN / "nrl_standin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_standin_config_loader_follows_nemo_rls_rules(tmp_path: Path) -> None:
    nrl = _nrl_standin()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "grand.yaml").write_text(
        "logger: {log_dir: logs, wandb_enabled: false}\npolicy: {model_name: grand, lr: 1.0}\n"
    )
    # a parent's own defaults are relative to the parent's dir
    (tmp_path / "sub" / "parent.yaml").write_text(
        "defaults: grand.yaml\npolicy: {model_name: parent}\n"
    )
    (tmp_path / "child.yaml").write_text(
        "defaults: [sub/parent.yaml]\n"
        "logger: {_override_: true, log_dir: mine}\n"
        "policy: {model_name: '???', inner: {_override_: true, x: 1}}\n"
        "cluster: ???\n"
    )
    cfg = nrl.load_config(tmp_path / "child.yaml")
    # Rule (NeMo RL 7ea279ab nemo_rl/utils/config.py:30-48, merge_with_override): a top-level
    # section marked `_override_` replaces the parents' section (the marker is dropped).
    assert OmegaConf.to_container(cfg.logger) == {"log_dir": "mine"}
    # Rule: only top-level sections are looked at: a deeper marker is an ordinary key.
    assert OmegaConf.to_container(cfg.policy.inner) == {"_override_": True, "x": 1}
    # Rule: `???` leaves the parent's value, or stays missing for a command-line override.
    assert cfg.policy.model_name == "parent" and cfg.policy.lr == 1.0
    assert OmegaConf.is_missing(cfg, "cluster")
    cfg = nrl.parse_hydra_overrides(cfg, ["cluster={num_nodes:1}", "+policy.new=2"])
    assert cfg.cluster.num_nodes == 1 and cfg.policy.new == 2
    # Rule (config.py:166-192): a refused override is NeMo RL's OverridesError with its
    # message, not RuntimeError.
    with pytest.raises(nrl.OverridesError, match="Failed to parse Hydra overrides") as err:
        nrl.parse_hydra_overrides(cfg, ["policy.no_such_key=1"])
    assert not isinstance(err.value, RuntimeError)


def _rendered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *overrides: str) -> Any:
    """The GRPO preset's trial command as a sweep renders it (``prepare_command``)."""
    for key, value in _env().items():
        monkeypatch.setenv(key, value)
    cfg = _app_cfg(
        "grpo.max_num_steps=2",
        "command.extra_args=['sft.max_num_steps=40','task.validation_size=128','grpo.val_period=1']",
        *overrides,
    )
    return prepare_command(cfg.command, tmp_path / "job")


def _raysub_by_hand(
    prepared: Any, job_id: str, nodes: int, **env: str
) -> subprocess.CompletedProcess[str]:
    """The stand-in ray.sub run with bash as Slurm would run it in an allocation of ``nodes``
    nodes (the local Slurm has one node; ray.sub's multi-node logic is what is tested)."""
    full = dict(prepared.env)
    full.update(
        SLURM_JOB_ID=job_id,
        SLURM_SUBMIT_DIR=str(prepared.cwd),
        SLURM_JOB_NUM_NODES=str(nodes),
        SLURM_JOB_PARTITION="standin-no-such-partition",  # no sinfo GRES check
        OMP_NUM_THREADS="1",
        **env,
    )
    full.pop(trial.ENV_TRIAL, None)
    return subprocess.run(
        ["bash", str(STANDIN / "ray.sub")],
        cwd=prepared.cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.e2e
def test_dedicated_ray_head_through_the_standin(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dedicated = _rendered(
        monkeypatch,
        tmp_path / "a",
        "command.ray_sub.nodes=2",
        "command.ray_sub.dedicated_head=true",
    )
    assert dedicated.env["DEDICATED_RAY_HEAD"] == "1"
    done = _raysub_by_hand(dedicated, "11", nodes=2)
    assert done.returncode == 0, done.stderr[-3000:]
    logs = dedicated.job / "11-logs"
    # Rule: ray.sub's Ray has the GPUs of nodes - 1 nodes, and the driver was told so.
    assert "Number of actors online: 4/4" in (logs / "ray-head.log").read_text()
    (exp,) = _exp_dirs(dedicated.job)
    used = OmegaConf.load(exp / "config.yaml")
    assert (used.cluster.num_nodes, used.cluster.gpus_per_node) == (1, 4)
    assert _raysub.startup_failure(dedicated.job, "11") is None
    # Rule: the job's start-up time (outside NeMo RL's save-by clock) is read from ray.sub.
    startup = _raysub.startup_seconds(dedicated.job, "11")
    assert startup is not None and 0 <= startup < 120
    # What happens when cluster.num_nodes is the allocation (the runner before dedicated_head,
    # with DEDICATED_RAY_HEAD=1 exported in the shell): NeMo RL asks Ray for 8 GPUs and fails.
    whole = _rendered(monkeypatch, tmp_path / "b", "command.ray_sub.nodes=2")
    failed = _raysub_by_hand(whole, "12", nodes=2, DEDICATED_RAY_HEAD="1")
    assert failed.returncode != 0
    driver = (whole.job / "12-logs" / "ray-driver.log").read_text()
    assert "Requested 8 GPUs, but only 4 are available" in driver
    assert "Maximum number of retries reached (6)" in driver


@pytest.mark.e2e
def test_raysub_startup_timeout_is_the_failure_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prepared = _rendered(monkeypatch, tmp_path)
    # One GPU's worker unit never registers; the wait's cap is 1 s instead of 30 min.
    proc = _raysub_by_hand(
        prepared, "21", nodes=1, NRL_STANDIN_WORKER_UNITS="3", NRL_STANDIN_WORKER_WAIT_S="1"
    )
    assert proc.returncode == 1
    assert not (prepared.job / "21-logs" / "ray-driver.log").exists()
    # Rule: the reason is ray.sub's start-up timeout (ray.sub:779-813 at 7ea279ab: 30 min, then
    # exit 1 before the driver), read from the head's log.
    detail = _raysub.failure_detail(prepared.job, "21", 20, 1500)
    assert detail.startswith("the driver never started")
    assert "Timed out waiting for all workers to connect (3/4" in detail


# ------------------------------------------------------------------ sweeps on the local Slurm
def _env() -> dict[str, str]:
    return {
        "NEMO_RL_DIR": str(STANDIN),
        "NEMO_RL_CONTAINER": "standin-image",
        "NEMO_RL_RUN": sys.executable,
        "NEMO_RL_GPUS_PER_NODE": "4",  # the local Slurm's node; ray.sub refuses anything else
        "SBATCH_PARTITION": "debug",  # ray.sub's #SBATCH lines are placeholders, as NeMo RL's
        "SBATCH_ACCOUNT": "root",
    }


def _grpo_sweep(
    tmp_path: Path, *args: str, limit: tuple[int, int] = (10, 60), check: bool = True
) -> Any:
    """The GRPO preset, unchanged, against the stand-in; ``limit``: wall time (minutes) and
    save margin (seconds) of each job."""
    return run_app(
        APP,
        "nemo_rl=grpo",
        f"hydra.sweep.dir={tmp_path}",
        "command.poll_interval_s=0.5",
        "command.grace_period_s=5",
        f"command.ray_sub.time_limit={limit[0]}",
        f"command.ray_sub.save_margin_s={limit[1]}",
        *args,
        cwd=REPO,
        env=_env(),
        timeout=800,
        check=check,
    )


def _sacct_fields(job_id: str, fields: str) -> str:
    return subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", fields, "-j", job_id],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()


def _sacct(job_id: str) -> str:
    return _sacct_fields(job_id, "State").split()[0]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _exp_dirs(job_dir: Path) -> list[Path]:
    return sorted((job_dir / "logs").glob("exp_*"))


@pytest.mark.slurm
@pytest.mark.e2e
@pytest.mark.slow
def test_grpo_preset_sweep_through_ray_sub_with_median_pruning(tmp_path: Path) -> None:
    _grpo_sweep(
        tmp_path,
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=2",
        "hydra/sweeper/sampler=random",
        "hydra/sweeper/pruner=median",
        # RandomSampler(seed=2) draws lr 0.001, 0.001 for the two startup trials, then 0.03 four
        # times (checked by drawing from the same distributions in the same order).
        "hydra.sweeper.sampler.seed=2",
        "hydra.sweeper.pruner.n_startup_trials=2",
        "hydra.sweeper.pruner.n_warmup_steps=1",
        "grpo.max_num_steps=16",
        # lr 0.03 wrecks the tiny policy within two steps, 1e-3 keeps it (measured, mean
        # validation reward at step 2, sampled at temperature 1 as NeMo RL validates: 0.06
        # against 0.63-0.79): the four 0.03 trials fall far below the two finished ones'
        # median at their first report and are pruned.
        "policy.optimizer.kwargs.lr=choice(0.001,0.03)",
        "grpo.num_generations_per_prompt=choice(2,4)",
        "command.extra_args=['grpo.val_period=2','standin.step_sleep_s=0.3','sft.max_num_steps=40','task.validation_size=128','logger.wandb_enabled=true','logger.mlflow_enabled=true']",
    )
    study = load(tmp_path, "run_command")
    counts = states(study)
    assert counts == {"COMPLETE": 2, "PRUNED": 4}, counts
    for t in study.get_trials(states=[TrialState.COMPLETE, TrialState.PRUNED]):
        job = Path(t.user_attrs["job_dir"])
        (exp,) = _exp_dirs(job)
        used = OmegaConf.load(exp / "config.yaml")
        # Rule: the sampled values reached the command, as its own (NeMo RL) keys.
        assert used.policy.optimizer.kwargs.lr == t.params["policy.optimizer.kwargs.lr"]
        assert used.grpo.num_generations_per_prompt == t.params["grpo.num_generations_per_prompt"]
        assert used.loss_fn.reference_policy_kl_penalty == pytest.approx(
            t.params["loss_fn.reference_policy_kl_penalty"]
        )
        assert used.loss_fn.ratio_clip_max == pytest.approx(t.params["loss_fn.ratio_clip_max"])
        # Rule: temperature is not searched: NeMo RL validates by sampling at it, so every
        # trial is judged by the same decoding (the yaml's 1.0, val_temperature following it).
        assert "policy.generation.temperature" not in t.params
        assert used.policy.generation.temperature == used.policy.generation.val_temperature == 1
        # Rule: with NeMo RL's loggers on, each trial is its own run, grouped by study.
        trackers = json.loads((exp / "trackers.json").read_text())
        assert trackers["wandb"]["name"] == trackers["mlflow"]["run_name"]
        assert trackers["wandb"]["name"] == f"run_command-trial-{t.number}"
        assert trackers["wandb"]["group"] == trackers["mlflow"]["experiment_name"] == "run_command"
        # Rule: one key for GPUs per node reached the command; the log dir is in the job dir.
        assert used.cluster.gpus_per_node == 4
        assert used.logger.log_dir == str(job / "logs") and exp.parent == job / "logs"
        (job_id,) = t.user_attrs[records.COMMAND_SLURM_JOB_IDS]
        # Rule: BASE_LOG_DIR is the job dir: the driver's log is there.
        assert (job / f"{job_id}-logs" / "ray-driver.log").is_file()
        if t.state == TrialState.PRUNED:
            # Rule: a pruned trial's Slurm job is cancelled and its driver is gone.
            assert _sacct(job_id) == "CANCELLED"
            assert not _alive(int((exp / "driver.pid").read_text()))
            assert max(_scalars(exp)["train/loss"]) < 16
        else:
            assert _sacct(job_id) == "COMPLETED"
            assert max(_scalars(exp)["train/loss"]) == 16


@pytest.mark.slurm
@pytest.mark.e2e
def test_crashing_driver_fails_the_trial_quoting_ray_driver_log(tmp_path: Path) -> None:
    _grpo_sweep(
        tmp_path,
        "hydra.sweeper.n_trials=1",
        "grpo.max_num_steps=6",
        "command.extra_args=['standin.fail_at_step=3','sft.max_num_steps=10']",
        check=False,
    )
    (t,) = load(tmp_path, "run_command").trials
    assert t.state == TrialState.FAIL
    reason = t.user_attrs[records.FAIL_REASON]
    # Rule: the reason names the job and its state and quotes the driver's own log.
    (job_id,) = t.user_attrs[records.COMMAND_SLURM_JOB_IDS]
    assert f"ray.sub job {job_id} ended FAILED" in reason
    assert "ray-driver.log" in reason and "loss became NaN at step 3" in reason
    # Rule: the job's start-up time is recorded on the trial (to size save_margin_s).
    (startup,) = t.user_attrs[records.COMMAND_STARTUP]
    assert startup["job_id"] == job_id and startup["startup_s"] >= 0
    # Rule: the failed trial's ray.sub job is paid for as Slurm accounted it.
    load_study = load(tmp_path, "run_command")
    jobs = cost.job_records(load_study._storage.get_study_system_attrs(load_study._study_id))
    job = jobs[t.number][job_id]
    elapsed, tres = _sacct_fields(job_id, "ElapsedRaw,AllocTRES").split("|")
    gpus = slurm.tres_count(tres, "gres/gpu")
    assert job.source == "sacct" and job.gpus == gpus > 0
    assert job.gpu_s == float(elapsed) * gpus


@pytest.mark.slurm
@pytest.mark.e2e
def test_raysub_startup_timeout_fails_the_trial_with_that_reason(tmp_path: Path) -> None:
    _grpo_sweep(
        tmp_path,
        "hydra.sweeper.n_trials=1",
        "grpo.max_num_steps=2",
        # one GPU's worker unit never registers; ray.sub's 30-minute cap shortened to 1 s
        "+command.ray_sub.env.NRL_STANDIN_WORKER_UNITS=3",
        "+command.ray_sub.env.NRL_STANDIN_WORKER_WAIT_S=1",
        check=False,
    )
    (t,) = load(tmp_path, "run_command").trials
    assert t.state == TrialState.FAIL
    reason = t.user_attrs[records.FAIL_REASON]
    (job_id,) = t.user_attrs[records.COMMAND_SLURM_JOB_IDS]
    # Rule: the trial fails with ray.sub's start-up timeout as its reason, and is not
    # resubmitted (there is nothing to resume).
    assert f"ray.sub job {job_id} ended FAILED" in reason
    assert "the driver never started" in reason
    assert "Timed out waiting for all workers to connect (3/4" in reason
    assert records.COMMAND_RESTARTS not in t.user_attrs


@pytest.mark.slurm
@pytest.mark.e2e
@pytest.mark.slow
def test_wall_time_saves_resubmits_and_resumes_to_the_same_end(tmp_path: Path) -> None:
    steps = 30
    _grpo_sweep(
        tmp_path,
        "hydra.sweeper.n_trials=1",
        f"grpo.max_num_steps={steps}",
        "grpo.num_generations_per_prompt=choice(2)",
        "policy.optimizer.kwargs.lr=choice(0.001)",
        # A 1-minute job saved 52 s early: checkpoint_must_save_by is 8 s after the driver's
        # loop starts; ~0.35 s a step, so each job saves after some steps and stops.
        "command.ray_sub.max_restarts=6",
        "command.extra_args=['grpo.val_period=4','standin.step_sleep_s=0.3','sft.max_num_steps=10','task.validation_size=128']",
        limit=(1, 52),
    )
    (t,) = load(tmp_path, "run_command").trials
    assert t.state == TrialState.COMPLETE
    job = Path(t.user_attrs["job_dir"])
    restarts = t.user_attrs[records.COMMAND_RESTARTS]
    ids = t.user_attrs[records.COMMAND_SLURM_JOB_IDS]
    # Rule: the trial was resubmitted, each restart recorded with the step it resumed from.
    assert len(restarts) >= 1 and len(ids) == len(restarts) + 1
    assert all(r["reason"] == "saved before its wall time" for r in restarts)
    assert restarts[0]["step"] > 0
    assert [r["job_id"] for r in restarts] == ids[:-1]
    exps = _exp_dirs(job)
    assert len(exps) == len(ids)
    first_steps = [min(_scalars(e)["train/loss"]) for e in exps]
    # Rule: every resubmission resumed right after its predecessor's saved step_N...
    assert first_steps == [1] + [r["step"] + 1 for r in restarts]
    resumed = (job / f"{ids[1]}-logs" / "ray-driver.log").read_text()
    assert f"step_{restarts[0]['step']}" in resumed
    # ...and the trial ends with as many steps as an uninterrupted run, each once.
    train_steps = sorted(s for e in exps for s in _scalars(e)["train/loss"])
    assert train_steps == list(range(1, steps + 1))
    assert all(_sacct(i) == "COMPLETED" for i in ids)


@pytest.mark.slurm
@pytest.mark.e2e
@pytest.mark.slow
def test_pbt_over_the_standin_exploit_continues_the_donors_step(tmp_path: Path) -> None:
    interval = 4
    _grpo_sweep(
        tmp_path,
        "hydra/sweeper=pbt",
        "hydra.sweeper.population_size=2",
        "hydra.sweeper.quantile_fraction=0.5",
        f"hydra.sweeper.perturbation_interval={interval}",
        "hydra.sweeper.num_rounds=2",
        "hydra.sweeper.n_jobs=2",
        # ray.sub jobs hold the whole node (--exclusive): members run one after another, so
        # rounds wait for the whole population before ranking (asynchronous PBT would rank a
        # member that finished first against itself only).
        "hydra.sweeper.synchronous=true",
        "hydra.sweeper.seed=0",
        "policy.optimizer.kwargs.lr=interval(0.0005,0.002)",
        "grpo.num_generations_per_prompt=choice(2,4)",
        # val_period 3 does not divide the round length: the preset's grpo.val_at_end makes
        # every round end on a validation
        "command.extra_args=['grpo.val_period=3','sft.max_num_steps=20','task.validation_size=128']",
    )
    study = optuna.load_study(
        study_name="run_command", storage=f"sqlite:///{tmp_path / 'optuna.db'}"
    )
    rounds = [t for t in study.trials if records.PBT_MEMBER in t.user_attrs]
    assert len(rounds) == 4 and all(t.state == TrialState.COMPLETE for t in rounds)
    for t in rounds:
        end = (t.user_attrs[records.PBT_ROUND] + 1) * interval
        (exp,) = _exp_dirs(Path(t.user_attrs["job_dir"]))
        val = _scalars(exp)["validation/accuracy"]
        # Rule: the value PBT ranks a round by is the validation at the round's last step
        # (steps 3 and 6 by val_period, 4 and 8 by val_at_end).
        assert max(val) == end and t.value == pytest.approx(val[end])
    exploits = [t for t in rounds if t.user_attrs[records.PBT_PARENT] is not None]
    # Rule: population 2 at quantile 0.5 -> the worse member of round 0 exploits the better.
    assert len(exploits) >= 1
    for t in exploits:
        donor = next(
            d
            for d in rounds
            if d.user_attrs[records.PBT_MEMBER] == t.user_attrs[records.PBT_PARENT]
            and d.user_attrs[records.PBT_ROUND] == t.user_attrs[records.PBT_ROUND] - 1
        )
        assert (
            t.user_attrs[records.PBT_START_CHECKPOINT] == donor.user_attrs[records.PBT_CHECKPOINT]
        )
        donor_steps = _scalars(_exp_dirs(Path(donor.user_attrs["job_dir"]))[0])["train/loss"]
        (exp,) = _exp_dirs(Path(t.user_attrs["job_dir"]))
        mine = _scalars(exp)["train/loss"]
        # Rule: the exploiting round's first step continues the donor's last step...
        assert min(mine) == max(donor_steps) + 1 == interval + 1
        assert max(mine) == 2 * interval
        # ...from the donor's step_N copied into the member's own checkpoint dir, with the
        # explored values as the command's overrides.
        own = Path(t.user_attrs[records.PBT_CHECKPOINT])
        assert (own / f"step_{interval}").is_dir() and (own / f"step_{2 * interval}").is_dir()
        used = OmegaConf.load(exp / "config.yaml")
        assert used.checkpointing.checkpoint_dir == str(own)
        assert used.policy.optimizer.kwargs.lr == pytest.approx(
            t.params["policy.optimizer.kwargs.lr"]
        )
        assert used.grpo.max_num_steps == 2 * interval


def test_startup_seconds_come_from_ray_subs_phase_line(tmp_path: Path) -> None:
    head = tmp_path / "5-logs" / "ray-head.log"
    head.parent.mkdir()
    head.write_text(
        "+ log_phase 'head: cluster ready, launching driver'\n"  # bash -x trace: not the line
        "[NRL_PHASE][2026-08-04T10:00:00+0000][+1234s] head: cluster ready, launching driver\n"
    )
    # Rule: seconds from the job's start to the driver's launch, as ray.sub prints them.
    assert _raysub.startup_seconds(tmp_path, "5") == 1234
    assert _raysub.startup_seconds(tmp_path, "6") is None


@pytest.mark.parametrize(
    ("stdout", "job_id"),
    [
        ("Submitted batch job 12\n", "12"),
        ("34\n", "34"),  # --parsable
        ("56;cluster2\n", "56"),
        ("sbatch: error: Batch job submission failed\n", None),
    ],
)
def test_job_id_from_sbatch_output(tmp_path: Path, stdout: str, job_id: str | None) -> None:
    (tmp_path / "out").write_text(stdout)
    assert _raysub.submitted_job_id(tmp_path / "out") == job_id


def test_wall_time_stop_is_told_from_the_drivers_log_and_slurms_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nemo_rl_hpo.command._attempt import STDOUT_FILE, _Attempt

    spec = CommandSpec.from_config(
        {
            "command": ["x"],
            "metrics": {"tags": {"a": "a"}},
            "ray_sub": {"container": "c", "time_limit": "60"},
        }
    )
    (tmp_path / STDOUT_FILE).write_text("Submitted batch job 7\n")
    log = tmp_path / "7-logs" / "ray-driver.log"
    log.parent.mkdir()
    states_seen: list[str] = []
    monkeypatch.setattr(slurm, "final_state", lambda job_id: states_seen.append(job_id) or "X")

    def attempt() -> _Attempt:
        return _Attempt(spec, tmp_path, ["sbatch"], tmp_path, {}, {"job_name": "j"}, [])

    log.write_text("step 5\nMax number of steps has been reached, stopping training early\n")
    # Rule: a clean finish is not a wall-time stop.
    assert attempt().wall_time_stop(0) is None
    log.write_text(
        "Saving checkpoint for step 9...\nTimeout has been reached, stopping training early\n"
    )
    # Rule: exit 0 after NeMo RL's timeout line: saved before the wall time -> resubmit.
    assert attempt().wall_time_stop(0) == "saved before its wall time"
    # Rule: a failed job is a wall-time stop only when Slurm says TIMEOUT.
    assert attempt().wall_time_stop(1) is None
    monkeypatch.setattr(slurm, "final_state", lambda job_id: "TIMEOUT")
    assert attempt().wall_time_stop(1) == "was killed at its wall time (TIMEOUT)"
    assert states_seen == ["7"]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("preset", "steps", "tag", "val_steps"),
    [
        ("sft", 20, "validation/val_loss", [0, 10, 20]),  # sft.val_period=10, val_at_start
        ("dpo", 50, "validation-default/loss", [0, 25, 50]),  # dpo.val_period=25, val_at_start
    ],
)
def test_sft_and_dpo_presets_run_unchanged_against_the_standin(
    tmp_path: Path, preset: str, steps: int, tag: str, val_steps: list[int]
) -> None:
    run_app(
        APP,
        f"nemo_rl={preset}",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.n_trials=2",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=0",
        f"{preset}.max_num_steps={steps}",
        "command.poll_interval_s=0.5",
        cwd=REPO,
        env={"NEMO_RL_DIR": str(STANDIN), "NEMO_RL_RUN": sys.executable},
    )
    study = load(tmp_path, "run_command")
    assert states(study) == {"COMPLETE": 2}
    for t in study.trials:
        (exp,) = _exp_dirs(Path(t.user_attrs["job_dir"]))
        used = OmegaConf.load(exp / "config.yaml")
        # Rule: every searched NeMo RL key arrived (and the warm-up in the scheduler list).
        for key, value in t.params.items():
            if key != "warmup_steps":
                assert OmegaConf.select(used, key) == pytest.approx(value), key
        assert used.policy.scheduler[0].kwargs.total_iters == t.params["warmup_steps"]
        assert used.policy.scheduler[2].milestones == [t.params["warmup_steps"]]
        # Rule: the objective is NeMo RL's validation tag at the last step.
        val = _scalars(exp)[tag]
        assert sorted(val) == val_steps and t.value == pytest.approx(val[steps])
