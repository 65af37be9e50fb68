"""What a NeMo RL training script does around its algorithm, for the stand-in ``examples/run_*.py``.

Each function mirrors one file of NeMo RL (``NVIDIA-NeMo/RL`` at commit
``7ea279abfbeb698b092856d0dab61e7cf39bc909``, 2026-08-22), reduced to the behaviour a sweep
depends on; docs/command.md lists the contract line by line:

- ``load_config`` / ``parse_hydra_overrides``: ``nemo_rl/utils/config.py`` (``defaults:``
  inheritance with the ``_override_`` marker and ``???`` values; Hydra's override parser
  applied on a struct-mode config, failures raised as ``OverridesError``);
- ``get_next_experiment_dir`` and ``Logger``: ``nemo_rl/utils/logger.py`` (``exp_NNN`` under
  ``logger.log_dir``, TensorBoard under ``<exp dir>/tensorboard``, tags ``"{prefix}/{name}"``);
- ``TimeoutChecker``: ``nemo_rl/utils/timer.py`` (``checkpoint_must_save_by`` as
  ``DD:HH:MM:SS``, counted from the start of the training loop, one average step ahead);
- checkpoints (``checkpointing.checkpoint_dir/step_N``, written as ``tmp_step_N`` and renamed,
  with ``training_info.json``; resume from the highest N): ``nemo_rl/utils/checkpoint.py``; for
  GRPO the embedded trial's own (``nemo_rl_hpo.training.grpo.run``, same layout);
- ``train``: the step/validation/save order of ``sft_train`` / ``dpo_train`` (train metrics at
  every step, validation every ``val_period``, at the last step with ``val_at_end`` and at
  step 0 with ``val_at_start``, a save every
  ``save_period``, at the end and at the save-by time, then the timeout line and exit 0).

Not mirrored: Ray, vLLM, containers, W&B/MLflow uploads (their run names are printed, and
recorded in ``<exp dir>/trackers.json``, instead).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pprint
import re
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

TIMEOUT_MESSAGE = "Timeout has been reached, stopping training early"


# ------------------------------------------------------------------ nemo_rl/utils/config.py
# Written from what NeMo RL's loader does at 7ea279ab (nemo_rl/utils/config.py:30-192), not
# from its code: the tests in tests/test_nemo_rl.py pin each rule below.
def _merge_sections(base: DictConfig, child: DictConfig) -> DictConfig:
    """``child`` merged over ``base``; a top-level section of ``child`` that carries
    ``_override_: true`` replaces ``base``'s section instead of merging into it (the marker is
    dropped; deeper sections are not looked at). A ``???`` value is never inspected for the
    marker: it stays to be filled by a later config or a command-line override, and merging it
    leaves ``base``'s value in place."""
    for key in list(child.keys()):
        if OmegaConf.is_missing(child, key):
            continue
        section = child[key]
        if isinstance(section, DictConfig) and section.get("_override_", False):
            section.pop("_override_")
            base.pop(key, None)
    merged = OmegaConf.merge(base, child)
    assert isinstance(merged, DictConfig)
    return merged


def load_config(config_path: str | Path) -> DictConfig:
    """A YAML config whose ``defaults:`` (a path or a list of paths, each relative to the file
    that names it unless absolute) are loaded the same way and merged in first, in order."""
    path = Path(config_path)
    config = OmegaConf.load(path)
    if not isinstance(config, DictConfig):
        raise TypeError("Config must be a Dictionary Config (List Config not supported)")
    if "defaults" not in config:
        return config
    defaults = config.pop("defaults")
    items = [defaults] if isinstance(defaults, (str, Path)) else [str(d) for d in defaults]
    base = OmegaConf.create({})
    for item in items:
        parent = Path(item) if str(item).startswith("/") else path.parent / str(item)
        base = _merge_sections(base, load_config(parent))
    return _merge_sections(base, config)


class OverridesError(Exception):
    """An override that Hydra's parser or struct mode refused (NeMo RL's own exception type,
    ``nemo_rl.utils.config.OverridesError``, with the same message prefix)."""


def parse_hydra_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """Struct mode, Hydra's parser, Hydra's own way of applying (new keys need ``+``)."""
    try:
        OmegaConf.set_struct(cfg, True)
        parsed = OverridesParser.create().parse_overrides(overrides=overrides)
        ConfigLoaderImpl._apply_overrides_to_config(overrides=parsed, cfg=cfg)
        return cfg
    except Exception as e:
        raise OverridesError(f"Failed to parse Hydra overrides: {e}") from e


def register_omegaconf_resolvers() -> None:
    for name, fn in (
        ("add", lambda a, b: a + b),
        ("mul", lambda a, b: a * b),
        ("div", lambda a, b: a / b),
        ("max", lambda a, b: max(a, b)),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def parse_args_and_config(default_config: str) -> dict[str, Any]:
    """``--config <yaml>`` plus overrides, resolved to a plain dict (as ``run_grpo.py``)."""
    register_omegaconf_resolvers()
    parser = argparse.ArgumentParser(description="Run training with configuration")
    parser.add_argument("--config", type=str, default=None, help="Path to YAML config file")
    args, overrides = parser.parse_known_args()
    config_path = args.config or str(Path(sys.argv[0]).parent / "configs" / default_config)
    cfg = load_config(config_path)
    print(f"Loaded configuration from: {config_path}")
    if overrides:
        print(f"Overrides: {overrides}")
        cfg = parse_hydra_overrides(cfg, overrides)
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    print("Final config:")
    pprint.pprint(config)
    return config


# ------------------------------------------------------- nemo_rl/distributed/virtual_cluster.py
class ResourceInsufficientError(Exception):
    """The Ray cluster has fewer GPUs than ``cluster.num_nodes x cluster.gpus_per_node``."""


PLACEMENT_RETRIES = 6  # NRL_VIRTUAL_CLUSTER_MAX_RETRIES' default


def init_cluster(config: Mapping[str, Any]) -> None:
    """What NeMo RL's ``RayVirtualCluster`` does before placing workers (virtual_cluster.py
    at 7ea279ab, ``_init_placement_groups`` / ``_create_placement_groups_internal``): ask Ray
    for ``cluster.num_nodes x cluster.gpus_per_node`` GPUs, retry, then give up with
    "Maximum number of retries reached". Under the stand-in ray.sub, Ray's GPUs are
    ``NRL_STANDIN_RAY_GPUS`` (none on a dedicated head); run directly there is no cluster to
    check. The real retries sleep 1, 2, ... 32 s; the stand-in does not wait."""
    available = os.environ.get("NRL_STANDIN_RAY_GPUS")
    if available is None:
        return
    cluster = config["cluster"]
    requested = int(cluster["num_nodes"]) * int(cluster["gpus_per_node"])
    if requested <= int(available):
        return
    for i in range(PLACEMENT_RETRIES):
        print(
            f"Not enough GPUs available. Requested {requested} GPUs, but only {available} are "
            "available in the cluster."
        )
        print(f"Retrying placement group creation... {i + 1}/{PLACEMENT_RETRIES}.", flush=True)
    raise ResourceInsufficientError(
        f"Maximum number of retries reached ({PLACEMENT_RETRIES}). Cluster resources may be "
        "insufficient or cluster itself is highly unstable. Please check your cluster "
        "configuration and your cluster logs."
    )


# ------------------------------------------------------------------ nemo_rl/utils/logger.py
def get_next_experiment_dir(base_log_dir: str) -> str:
    pattern = re.compile(r"exp_(\d+)")
    ids = [
        int(m.group(1))
        for d in glob.glob(os.path.join(base_log_dir, "exp_*"))
        if (m := pattern.search(d))
    ]
    new_dir = os.path.join(base_log_dir, f"exp_{max(ids, default=0) + 1:03d}")
    os.makedirs(new_dir, exist_ok=True)
    return new_dir


class Logger:
    """TensorBoard under ``<log_dir>/tensorboard``; tags ``"{prefix}/{name}"``."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.base_log_dir = str(cfg["log_dir"])
        os.makedirs(self.base_log_dir, exist_ok=True)
        self.writer = None
        trackers: dict[str, Any] = {}
        if cfg.get("wandb_enabled"):
            w = dict(cfg.get("wandb") or {})
            trackers["wandb"] = w
            print(f"Initialized WandbLogger for project {w.get('project')}, run {w.get('name')}")
        if cfg.get("mlflow_enabled"):
            m = dict(cfg.get("mlflow") or {})
            trackers["mlflow"] = m
            print(
                f"Initialized MLflowLogger for experiment {m.get('experiment_name')}, run "
                f"{m.get('run_name')}"
            )
        if trackers:  # the stand-in talks to no server: it records what it would have used
            with open(os.path.join(self.base_log_dir, "trackers.json"), "w") as f:
                json.dump(trackers, f)
        if cfg.get("tensorboard_enabled"):
            from torch.utils.tensorboard import SummaryWriter

            tb_dir = os.path.join(self.base_log_dir, "tensorboard")
            os.makedirs(tb_dir, exist_ok=True)
            self.writer = SummaryWriter(log_dir=tb_dir)
            print(f"Initialized TensorboardLogger at {tb_dir}")

    def log_metrics(self, metrics: Mapping[str, Any], step: int, prefix: str = "") -> None:
        if self.writer is None:
            return
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{name}" if prefix else name, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ------------------------------------------------------------------- nemo_rl/utils/timer.py
def convert_to_seconds(time_string: str) -> int:
    days, hours, minutes, seconds = map(int, time_string.split(":"))
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


class TimeoutChecker:
    def __init__(self, timeout: str | None, fit_last_save_time: bool = False) -> None:
        self.last_save_time = float("inf") if timeout is None else convert_to_seconds(timeout)
        self.start_time = time.time()
        self.last_saved = False
        self.iteration_times: list[float] = []
        self.previous_iteration_time: float | None = None
        self.fit_last_save_time = fit_last_save_time

    def check_save(self) -> bool:
        sys.stdout.flush()
        if self.last_saved:
            return False
        elapsed = time.time() - self.start_time
        if self.fit_last_save_time and self.iteration_times:
            average = sum(self.iteration_times) / len(self.iteration_times)
            if elapsed + average >= self.last_save_time:
                self.last_saved = True
                return True
        if elapsed >= self.last_save_time:
            self.last_saved = True
            return True
        return False

    def start_iterations(self) -> None:
        self.previous_iteration_time = time.time()

    def mark_iteration(self) -> None:
        now = time.time()
        if self.previous_iteration_time is not None:
            self.iteration_times.append(now - self.previous_iteration_time)
        self.previous_iteration_time = now


# ----------------------------------------------------------------------------- stand-in only
def write_run_files(log_dir: str, config: Mapping[str, Any]) -> None:
    """``<exp dir>/config.yaml`` (the resolved config the run used) and ``driver.pid``: what
    tests read to see which values reached the command and whether its process is gone."""
    with open(os.path.join(log_dir, "config.yaml"), "w") as f:
        f.write(OmegaConf.to_yaml(OmegaConf.create(dict(config))))
    with open(os.path.join(log_dir, "driver.pid"), "w") as f:
        f.write(f"{os.getpid()}\n")


# ------------------------------------------------- a small supervised loop (SFT / DPO stand-ins)
class Algorithm(Protocol):
    """One step and one validation of a stand-in algorithm, and its state for checkpoints."""

    def train_step(self) -> dict[str, float]: ...

    def validate(self) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def build_optimizer(params: Any, policy: Mapping[str, Any]) -> Any:
    """``policy.optimizer.name`` (dotted class) with its kwargs, as NeMo RL's DTensor policy."""
    import importlib

    module, _, name = str(policy["optimizer"]["name"]).rpartition(".")
    kwargs = {
        k: tuple(v) if k == "betas" else v
        for k, v in dict(policy["optimizer"]["kwargs"]).items()
        if k not in ("foreach", "fused")
    }
    return getattr(importlib.import_module(module), name)(params, **kwargs)


def build_scheduler(optimizer: Any, spec: list[Any]) -> Any:
    """NeMo RL's ``policy.scheduler`` list: schedulers, then ``{milestones: [...]}``."""
    import torch

    milestones, scheds = None, []
    for item in spec:
        if "milestones" in item:
            milestones = list(item["milestones"])
            continue
        cls = getattr(torch.optim.lr_scheduler, str(item["name"]).rsplit(".", 1)[-1])
        scheds.append(cls(optimizer, **dict(item.get("kwargs") or {})))
    if not scheds:
        return None
    if len(scheds) == 1:
        return scheds[0]
    return torch.optim.lr_scheduler.SequentialLR(optimizer, scheds, milestones=milestones or [1])


def latest_step_dir(root: Path) -> Path | None:
    found = [p for p in root.glob("step_*") if re.fullmatch(r"step_\d+", p.name)]
    return max(found, key=lambda p: int(p.name[5:]), default=None)


def validates_at(algo_cfg: Mapping[str, Any], step: int) -> bool:
    """NeMo RL's rule (grpo.py / sft.py / dpo.py at 7ea279ab): validate after step N when
    ``val_period`` divides N, or at the last step (N = ``max_num_steps``) with ``val_at_end``."""
    period = int(algo_cfg["val_period"])
    last = step >= int(algo_cfg["max_num_steps"])
    return (period > 0 and step % period == 0) or (bool(algo_cfg.get("val_at_end")) and last)


def train(
    config: Mapping[str, Any], section: str, algo: Algorithm, val_prefix: str = "validation"
) -> int:
    """NeMo RL's ``<algo>_train`` order: train metrics at every step, validation every
    ``val_period`` (step 0 with ``val_at_start``), a ``step_N`` save every ``save_period``, at
    the end and at the save-by time (then the timeout line, exit 0); resume from the highest N."""
    import torch

    init_cluster(config)
    algo_cfg, ckpt = config[section], config["checkpointing"]
    standin = dict(config.get("standin") or {})
    log_dir = get_next_experiment_dir(str(config["logger"]["log_dir"]))
    print(f"📊 Using log directory: {log_dir}")
    write_run_files(log_dir, config)
    logger = Logger({**config["logger"], "log_dir": log_dir})
    root = Path(ckpt["checkpoint_dir"])
    step = 0
    latest = latest_step_dir(root) if ckpt["enabled"] else None
    if latest is not None:
        algo.load_state_dict(torch.load(latest / "state.pt", weights_only=False))
        step = int(json.loads((latest / "training_info.json").read_text())["total_steps"])
        print(f"Resuming from checkpoint {latest} at step {step}", flush=True)
    timeout = TimeoutChecker(ckpt.get("checkpoint_must_save_by"), fit_last_save_time=True)
    timeout.start_iterations()
    if algo_cfg.get("val_at_start") and step == 0:
        logger.log_metrics(algo.validate(), 0, prefix=val_prefix)
    max_steps = int(algo_cfg["max_num_steps"])
    while step < max_steps:
        step += 1
        if standin.get("fail_at_step") is not None and step >= int(standin["fail_at_step"]):
            raise RuntimeError(f"loss became NaN at step {step} (standin.fail_at_step)")
        metrics = algo.train_step()
        val = None
        if validates_at(algo_cfg, step):
            val = algo.validate()
            logger.log_metrics(val, step, prefix=val_prefix)
        if float(standin.get("step_sleep_s") or 0) > 0:
            time.sleep(float(standin["step_sleep_s"]))
        timeout.mark_iteration()
        by_timeout = timeout.check_save()
        if ckpt["enabled"] and (
            step == max_steps or step % int(ckpt["save_period"]) == 0 or by_timeout
        ):
            print(f"Saving checkpoint for step {step}...", flush=True)
            tmp = root / f"tmp_step_{step}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            torch.save(algo.state_dict(), tmp / "state.pt")
            info = {"total_steps": step, **{f"val:{k}": v for k, v in (val or {}).items()}}
            (tmp / "training_info.json").write_text(json.dumps(info))
            shutil.rmtree(root / f"step_{step}", ignore_errors=True)
            os.rename(tmp, root / f"step_{step}")
        logger.log_metrics(metrics, step, prefix="train")
        if by_timeout:
            print(TIMEOUT_MESSAGE, flush=True)
            logger.close()
            return 0
    logger.close()
    return 0
