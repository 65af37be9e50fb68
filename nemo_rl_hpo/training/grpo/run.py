"""One GRPO run, Hydra-free: ``run_grpo(cfg, checkpoint_dir=..., on_metrics=..., should_stop=...)``.

Reads top to bottom: build the task, the policy (a tiny llama/gpt causal LM) and its optimizer;
resume from the newest ``step_N`` checkpoint in ``checkpoint_dir`` (else from ``resume_from``,
PBT's exploit, whose hyperparameters this config's replace); otherwise warm-start the policy with
``sft.max_num_steps`` supervised steps and freeze a copy as the reference policy. Then GRPO:
every step samples ``grpo.num_prompts_per_step`` prompts, ``grpo.num_generations_per_prompt``
answers each at ``policy.generation.temperature``, scores them with the verifier, turns rewards
into group-relative advantages and takes one optimizer step per ``policy.train_global_batch_size``
samples on NeMo RL's clipped policy-gradient loss (:mod:`.loss`). Every ``grpo.val_period`` steps
(and at the end) it validates on the task's fixed held-out prompts: greedily by default, or
sampling at ``policy.generation.val_temperature`` as NeMo RL does.

A checkpoint (``<checkpoint_dir>/step_N/``, NeMo RL's layout, written atomically) holds the
policy, the reference policy, the optimizer, the prompt and sampling generators, the torch RNG,
the curves and counters, and the config, so a killed run re-run in the same dir ends exactly as
an uninterrupted one.
"""

from __future__ import annotations

import copy
import importlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from nemo_rl_hpo.training.config import ConfigError
from nemo_rl_hpo.training.grpo.checkpoint import (
    STATE_FILE,
    latest_checkpoint,
    save_checkpoint,
)
from nemo_rl_hpo.training.grpo.config import validate
from nemo_rl_hpo.training.grpo.loss import ClippedPGLoss, grpo_advantages
from nemo_rl_hpo.training.grpo.rollout import answer_logprobs, generate, validate_policy
from nemo_rl_hpo.training.grpo.task import DigitsTask, token_mask, verify
from nemo_rl_hpo.training.precision import Precision

log = logging.getLogger(__name__)


MetricsCallback = Callable[[int, Mapping[str, float]], None]
StopHook = Callable[[int], bool]


@dataclass
class GRPOResult:
    """What a run ends with. ``metrics`` is what a sweep optimizes (see :func:`run_grpo`)."""

    metrics: dict[str, float]
    curve: dict[int, float] = field(default_factory=dict)  # step -> validation reward
    stopped: bool = False  # ended early because ``should_stop`` said so
    checkpoint: Path | None = None  # the last checkpoint written (or resumed from)


def run_grpo(
    cfg: DictConfig | Mapping[str, Any],
    *,
    checkpoint_dir: Path | str | None = None,
    resume_from: Path | str | None = None,
    stop_at_step: int | None = None,
    on_metrics: MetricsCallback | None = None,
    should_stop: StopHook | None = None,
    on_train_start: Callable[[int], None] | None = None,
) -> GRPOResult:
    """Run GRPO as ``cfg`` says and return its final metrics.

    - ``checkpoint_dir``: where ``step_N/`` checkpoints go (every ``checkpointing.save_period``
      steps when ``checkpointing.enabled``, always when stopping early and at the end; only the
      newest ``checkpointing.keep_top_k`` are kept). The run resumes from the newest one there.
      None: no checkpoints at all.
    - ``resume_from``: a checkpoint dir (or ``step_N`` dir) to start from when ``checkpoint_dir``
      has none — PBT's exploit; this config's optimizer settings replace the saved ones.
    - ``stop_at_step``: train up to this step instead of ``grpo.max_num_steps`` (PBT rounds).
    - ``on_metrics(step, metrics)``: called after every step with ``train/loss``,
      ``train/reward``, ... and after every validation with ``validation/accuracy``,
      ``validation/reward``, ``validation/avg_length`` (NeMo RL's TensorBoard tags).
    - ``should_stop(step)``: asked after every step (after its validation, if any); True saves
      a checkpoint and returns with ``stopped=True`` (pruning, a wall-time limit).
    - ``on_train_start(step)``: called once the policy is built and resumed (or warm-started),
      right before the first GRPO step, with the step it continues from: where NeMo RL's
      ``grpo_train`` starts its save-by clock (``TimeoutChecker``).

    The returned metrics: ``val_reward`` (greedy unless ``policy.generation.val_temperature``
    > 0; the objective, maximized), ``val_accuracy``
    (exact answers), ``val_reward_start`` (the warm-started policy's), ``best_val_reward``,
    ``train_reward``, ``generated_tokens``, ``train_time_s`` (wall time over all resumptions),
    ``step``.
    """
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    validate(cfg)
    torch.set_num_threads(int(cfg.get("num_threads", 1)))
    device = _device(str(cfg.get("device", "cpu")))
    precision = _precision(cfg)
    precision.check(device)
    grpo, loss_cfg, policy_cfg = cfg.grpo, cfg.loss_fn, cfg.policy
    task = _task(cfg)
    ckpt_root = None if checkpoint_dir is None else Path(checkpoint_dir)
    # validation decoding: greedy (0, the default) or NeMo RL's sampling at val_temperature
    val_sampling = (float(policy_cfg.generation.get("val_temperature") or 0.0), int(grpo.seed) + 3)

    torch.manual_seed(int(grpo.seed))
    policy = _policy(cfg, task).to(device)
    optimizer = _optimizer(policy_cfg, policy)
    prompts_rng = torch.Generator().manual_seed(int(grpo.seed))
    sampling_rng = torch.Generator().manual_seed(int(grpo.seed) + 1)
    state: dict[str, Any] = {
        "step": 0,
        "curve": {},  # step -> validation reward
        "val_reward_start": math.nan,
        "metrics": {},  # of the latest validation
        "train_reward_sum": 0.0,  # since that validation
        "train_reward_count": 0,
        "generated_tokens": 0,
        "time_s": 0.0,
    }
    started = time.perf_counter()
    source = latest_checkpoint(ckpt_root)
    explored = source is None and resume_from is not None
    if explored:
        source = latest_checkpoint(resume_from)
        if source is None:
            raise FileNotFoundError(f"no GRPO checkpoint to resume from at {resume_from}")
    if source is not None:
        saved = torch.load(source / STATE_FILE, map_location=device, weights_only=True)
        policy.load_state_dict(saved["policy"])
        reference = _frozen(_policy(cfg, task).to(device), saved["reference"])
        optimizer.load_state_dict(saved["optimizer"])
        if explored:  # PBT: this job's (explored) optimizer settings replace the parent's
            apply_optimizer_settings(optimizer, policy_cfg)
        torch.set_rng_state(saved["rng"]["torch"])
        prompts_rng.set_state(saved["rng"]["prompts"])
        sampling_rng.set_state(saved["rng"]["sampling"])
        state = {k: saved["state"][k] for k in state}
        state["curve"] = {int(k): float(v) for k, v in state["curve"].items()}
        log.info("resumed GRPO from %s at step %d", source, state["step"])
    else:
        sft(policy, cfg, task, device, precision)
        reference = _frozen(copy.deepcopy(policy), None)
        optimizer = _optimizer(policy_cfg, policy)  # GRPO starts with fresh moments
        val = validate_policy(policy, task, device, precision, *val_sampling)
        state["val_reward_start"] = val["validation/reward"]
        state["curve"][0] = val["validation/reward"]
        if on_metrics is not None:
            on_metrics(0, val)

    loss_fn = ClippedPGLoss(
        ratio_clip_min=float(loss_cfg.ratio_clip_min),
        ratio_clip_max=float(loss_cfg.ratio_clip_max),
        ratio_clip_c=_opt_float(loss_cfg.get("ratio_clip_c")),
        reference_policy_kl_penalty=float(loss_cfg.reference_policy_kl_penalty),
        kl_input_clamp_value=_opt_float(loss_cfg.get("kl_input_clamp_value", 20.0)),
        kl_output_clamp_value=_opt_float(loss_cfg.get("kl_output_clamp_value", 10.0)),
        token_level_loss=bool(loss_cfg.token_level_loss),
    )
    end = int(grpo.max_num_steps)
    if stop_at_step is not None:
        end = min(int(stop_at_step), end)
    step = int(state["step"])
    last_saved = source
    stopped = False

    def save(at: int) -> Path | None:
        nonlocal started
        state["step"] = at
        state["time_s"] += time.perf_counter() - started
        started = time.perf_counter()
        if ckpt_root is None:
            return None
        return save_checkpoint(
            ckpt_root,
            at,
            keep_top_k=cfg.checkpointing.get("keep_top_k"),
            policy=policy.state_dict(),
            reference=reference.state_dict(),
            optimizer=optimizer.state_dict(),
            rng={
                "torch": torch.get_rng_state(),
                "prompts": prompts_rng.get_state(),
                "sampling": sampling_rng.get_state(),
            },
            state=state,
            config=OmegaConf.to_container(cfg, resolve=True),
        )

    if on_train_start is not None:
        on_train_start(step)
    while step < end:
        train_metrics = grpo_step(
            policy, reference, optimizer, loss_fn, cfg, task, device, precision,
            prompts_rng, sampling_rng,
        )  # fmt: skip
        step += 1
        state["generated_tokens"] += int(train_metrics.pop("generated_tokens"))
        state["train_reward_sum"] += train_metrics["train/reward"]
        state["train_reward_count"] += 1
        if on_metrics is not None:
            on_metrics(step, train_metrics)
        diverged = not math.isfinite(train_metrics["train/loss"])
        if diverged or step % int(grpo.val_period) == 0 or step == end:
            val = validate_policy(policy, task, device, precision, *val_sampling)
            state["curve"][step] = val["validation/reward"]
            state["metrics"] = {
                "val_reward": val["validation/reward"],
                "val_accuracy": val["validation/accuracy"],
                "val_avg_length": val["validation/avg_length"],
                "train_reward": state["train_reward_sum"] / max(1, state["train_reward_count"]),
            }
            state.update(train_reward_sum=0.0, train_reward_count=0)
            if on_metrics is not None:
                on_metrics(step, val)
        if diverged:
            loss = train_metrics["train/loss"]
            log.warning("GRPO loss is %s at step %d: stopping this run", loss, step)
        stopped = should_stop is not None and should_stop(step)
        save_period = int(cfg.checkpointing.save_period)
        periodic = bool(cfg.checkpointing.enabled) and step % save_period == 0
        if stopped or diverged or step == end or periodic:
            last_saved = save(step) or last_saved
        if stopped or diverged:
            break
    state["time_s"] += time.perf_counter() - started  # since the last save
    return GRPOResult(
        metrics=_final_metrics(state, step),
        curve=dict(state["curve"]),
        stopped=stopped,
        checkpoint=last_saved,
    )


def _final_metrics(state: Mapping[str, Any], step: int) -> dict[str, float]:
    curve = state["curve"]
    metrics: dict[str, float] = {k: float(v) for k, v in state["metrics"].items()}
    if "val_reward" not in metrics and curve:  # no GRPO step yet: the warm start's numbers
        metrics["val_reward"] = float(curve[max(curve)])
    return {
        **metrics,
        "val_reward_start": float(state["val_reward_start"]),
        "best_val_reward": max((float(v) for v in curve.values()), default=math.nan),
        "generated_tokens": float(state["generated_tokens"]),
        "train_time_s": float(state["time_s"]),
        "step": float(step),
    }


# --- the algorithm ----------------------------------------------------------------------------


def grpo_step(
    policy: nn.Module,
    reference: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: ClippedPGLoss,
    cfg: DictConfig,
    task: DigitsTask,
    device: torch.device,
    precision: Precision,
    prompts_rng: torch.Generator,
    sampling_rng: torch.Generator,
) -> dict[str, float]:
    """One GRPO step: rollouts, rewards, advantages, then the clipped-PG updates."""
    grpo, policy_cfg = cfg.grpo, cfg.policy
    group = int(grpo.num_generations_per_prompt)
    temperature = float(policy_cfg.generation.temperature)
    prompts, operands = task.sample(int(grpo.num_prompts_per_step), prompts_rng)
    prompts = prompts.repeat_interleave(group, dim=0).to(device)
    operands = operands.repeat_interleave(group, dim=0)
    answers = generate(policy, prompts, task.answer_len, temperature, sampling_rng, precision)
    rewards = verify(task, operands, answers.cpu()).to(device)
    advantages = grpo_advantages(
        rewards,
        group,
        use_leave_one_out_baseline=bool(grpo.use_leave_one_out_baseline),
        normalize_rewards=bool(grpo.normalize_rewards),
    )
    sequences = torch.cat([prompts, answers], dim=1)
    mask = token_mask(answers)
    with torch.no_grad():
        prev_logprobs = answer_logprobs(policy, sequences, task.answer_len, temperature, precision)
        ref_logprobs = (
            answer_logprobs(reference, sequences, task.answer_len, temperature, precision)
            if loss_fn.reference_policy_kl_penalty != 0
            else prev_logprobs
        )
    policy.train()
    batch = int(policy_cfg.train_global_batch_size)
    losses, extra = [], []
    for idx in torch.split(torch.arange(len(sequences), device=device), batch):
        logprobs = answer_logprobs(policy, sequences[idx], task.answer_len, temperature, precision)
        adv = advantages[idx].unsqueeze(1).expand_as(logprobs)
        loss, metrics = loss_fn(logprobs, prev_logprobs[idx], ref_logprobs[idx], adv, mask[idx])
        torch.autograd.backward(loss)
        if policy_cfg.get("max_grad_norm") is not None:
            nn.utils.clip_grad_norm_(policy.parameters(), float(policy_cfg.max_grad_norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        extra.append(metrics)
    return {
        "train/loss": sum(losses) / len(losses),
        "train/reward": float(rewards.mean()),
        "train/kl_penalty": sum(m["kl_penalty"] for m in extra) / len(extra),
        "train/clip_fraction": sum(m["clip_fraction"] for m in extra) / len(extra),
        "train/avg_length": float(mask.sum(dim=1).mean()),
        "generated_tokens": float(mask.sum()),
    }


def sft(
    policy: nn.Module, cfg: DictConfig, task: DigitsTask, device: torch.device, precision: Precision
) -> None:
    """The warm start: ``sft.max_num_steps`` steps of next-token cross-entropy on true answers.

    Its own generator (``grpo.seed``) and optimizer, so GRPO's streams start the same whatever
    the warm start's length.
    """
    steps = int(cfg.sft.max_num_steps)
    if steps == 0:
        return
    rng = torch.Generator().manual_seed(int(cfg.grpo.seed) + 2)
    opt = torch.optim.AdamW(policy.parameters(), lr=float(cfg.sft.lr), weight_decay=0.0)
    policy.train()
    for _ in range(steps):
        prompts, operands = task.sample(int(cfg.sft.train_global_batch_size), rng)
        answers = task.answers(operands)
        sequences = torch.cat([prompts, answers], dim=1).to(device)
        logprobs = answer_logprobs(policy, sequences, task.answer_len, 1.0, precision)
        loss = -(logprobs * token_mask(answers).to(device)).sum() / token_mask(answers).sum()
        torch.autograd.backward(loss)
        nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)


# --- building and checkpoints -----------------------------------------------------------------


def _task(cfg: DictConfig) -> DigitsTask:
    fields = cast(dict[str, Any], OmegaConf.to_container(cfg.task, resolve=True))
    try:
        return DigitsTask(**fields)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"task: {e}") from None


def _precision(cfg: DictConfig) -> Precision:
    node = cfg.get("precision")
    if node is None:
        return Precision()
    return Precision(str(node.get("dtype", "float32")))


def _policy(cfg: DictConfig, task: DigitsTask) -> nn.Module:
    """The policy from ``model`` (conf/model/): a causal LM over the task's vocabulary."""
    node = cfg.model
    if int(node.vocab_size) != task.vocab_size or int(node.num_classes) != task.vocab_size:
        raise ConfigError(
            f"model.vocab_size and model.num_classes must be the task's vocabulary "
            f"({task.vocab_size}), but got {node.vocab_size} and {node.num_classes}."
        )
    if int(node.max_seq_len) < task.seq_len:
        raise ConfigError(
            f"model.max_seq_len must be at least {task.seq_len} (prompt + answer of "
            f"task.num_digits={task.num_digits}), but got {node.max_seq_len}; raise it."
        )
    model: nn.Module = instantiate(node)
    if not hasattr(model, "token_logits"):
        raise ConfigError(
            f"model._target_={node._target_} is not a causal LM (no token_logits); use "
            "model=llama or model=gpt for the GRPO trial."
        )
    return model


def _optimizer(policy_cfg: DictConfig, policy: nn.Module) -> torch.optim.Optimizer:
    """``policy.optimizer.name`` (a dotted class) with ``policy.optimizer.kwargs``, as NeMo RL."""
    module, _, name = str(policy_cfg.optimizer.name).rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    kwargs = cast(dict[str, Any], OmegaConf.to_container(policy_cfg.optimizer.kwargs, resolve=True))
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    optimizer: torch.optim.Optimizer = cls(policy.parameters(), **kwargs)
    return optimizer


def apply_optimizer_settings(optimizer: torch.optim.Optimizer, policy_cfg: DictConfig) -> None:
    """Make this config's ``policy.optimizer.kwargs`` take effect on a resumed optimizer (PBT)."""
    kwargs = cast(dict[str, Any], OmegaConf.to_container(policy_cfg.optimizer.kwargs, resolve=True))
    for group in optimizer.param_groups:
        for key, value in kwargs.items():
            if key in group:
                group[key] = tuple(value) if isinstance(group[key], tuple) else value


def _frozen(model: nn.Module, state_dict: Mapping[str, Any] | None) -> nn.Module:
    if state_dict is not None:
        model.load_state_dict(state_dict)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _device(name: str) -> torch.device:
    from nemo_rl_hpo.training.loop import resolve_device

    return resolve_device(name)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
