"""Validation of the GRPO trial's config: one sentence per problem, naming the key and the fix.

The key names are NeMo RL's (``grpo.*``, ``loss_fn.*``, ``policy.*``, ``checkpointing.*``), so the
sweeper's pre-launch check (``hydra.sweeper.check``) blames a bad range on the key a NeMo RL user
knows. Checked before anything is built.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from nemo_rl_hpo.training.config import ConfigError, check_integer, check_number, config_value

DEVICES = ("auto", "cpu", "cuda")


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value the GRPO trial cannot run with."""
    check_integer(cfg, "grpo.num_prompts_per_step", low=1, example="grpo.num_prompts_per_step=16")
    check_integer(
        cfg, "grpo.num_generations_per_prompt", low=2, example="grpo.num_generations_per_prompt=8"
    )
    _bool(cfg, "grpo.use_leave_one_out_baseline")
    _bool(cfg, "grpo.normalize_rewards")
    check_integer(cfg, "grpo.max_num_steps", low=1, example="grpo.max_num_steps=100")
    check_integer(cfg, "grpo.val_period", low=1, example="grpo.val_period=10")
    check_integer(cfg, "grpo.seed", low=0, example="grpo.seed=42")
    check_integer(
        cfg, "sft.max_num_steps", low=0, example="sft.max_num_steps=60 (0: no warm start)"
    )
    check_integer(
        cfg, "sft.train_global_batch_size", low=1, example="sft.train_global_batch_size=64"
    )
    check_number(cfg, "sft.lr", low=0.0, open_low=True, example="sft.lr=3e-3")
    check_number(
        cfg, "loss_fn.ratio_clip_min", low=0.0, high=1.0, example="loss_fn.ratio_clip_min=0.2"
    )
    check_number(cfg, "loss_fn.ratio_clip_max", low=0.0, example="loss_fn.ratio_clip_max=0.2")
    ratio_clip_c = config_value(cfg, "loss_fn.ratio_clip_c", must=False)
    if ratio_clip_c is not None:
        check_number(cfg, "loss_fn.ratio_clip_c", low=1.0, open_low=True, example="3.0", must=False)
    check_number(
        cfg,
        "loss_fn.reference_policy_kl_penalty",
        low=0.0,
        example="loss_fn.reference_policy_kl_penalty=0.01",
    )
    kl_type = config_value(cfg, "loss_fn.reference_policy_kl_type", must=False)
    if kl_type not in (None, "k3"):
        raise ConfigError(
            f"loss_fn.reference_policy_kl_type={kl_type!r} is not supported by this trial; "
            "use loss_fn.reference_policy_kl_type=k3 (NeMo RL's default)."
        )
    for key in ("loss_fn.kl_input_clamp_value", "loss_fn.kl_output_clamp_value"):
        check_number(cfg, key, low=0.0, open_low=True, example=f"{key}=20 (or null)", must=False)
    _bool(cfg, "loss_fn.token_level_loss")
    check_number(
        cfg,
        "policy.generation.temperature",
        low=0.0,
        open_low=True,
        example="policy.generation.temperature=1.0",
    )
    check_number(
        cfg,
        "policy.generation.val_temperature",
        low=0.0,
        example="policy.generation.val_temperature=0 (greedy) or "
        "'${policy.generation.temperature}' (NeMo RL's: sample at the training temperature)",
        must=False,
    )
    check_number(
        cfg, "policy.optimizer.kwargs.lr", low=0.0, open_low=True, example="1e-3", must=True
    )
    check_number(cfg, "policy.optimizer.kwargs.weight_decay", low=0.0, example="0.01", must=False)
    if cfg.policy.get("max_grad_norm") is not None:
        check_number(cfg, "policy.max_grad_norm", low=0.0, open_low=True, example="1.0 (or null)")
    check_integer(
        cfg, "policy.train_global_batch_size", low=1, example="policy.train_global_batch_size=64"
    )
    check_integer(cfg, "task.num_digits", low=1, example="task.num_digits=8")
    check_integer(cfg, "task.validation_size", low=1, example="task.validation_size=256")
    _policy_fits_task(cfg)
    _bool(cfg, "checkpointing.enabled")
    check_integer(cfg, "checkpointing.save_period", low=1, example="checkpointing.save_period=10")
    if config_value(cfg, "checkpointing.keep_top_k", must=False) is not None:
        check_integer(cfg, "checkpointing.keep_top_k", low=1, example="3 (or null: keep all)")
    check_integer(cfg, "num_threads", low=1, example="num_threads=1")
    device = str(cfg.get("device"))
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ConfigError(
            f"device must be one of {', '.join(DEVICES)} (or cuda:N), but got {device=}."
        )


def _policy_fits_task(cfg: DictConfig) -> None:
    """The policy's vocabulary and length fit the task (checked here, before any job starts)."""
    from nemo_rl_hpo.training.grpo.task import NAMES, DigitsTask

    name = config_value(cfg, "task.name", must=True)
    if name not in NAMES:
        raise ConfigError(f"task.name must be one of {', '.join(NAMES)}, but got {name!r}.")
    task = DigitsTask(name=str(name), num_digits=int(cfg.task.num_digits))
    vocab = config_value(cfg, "model.vocab_size", must=True)
    classes = config_value(cfg, "model.num_classes", must=True)
    if vocab != task.vocab_size or classes != task.vocab_size:
        raise ConfigError(
            "model.vocab_size and model.num_classes must be the task's vocabulary "
            f"({task.vocab_size}: the policy is a causal LM), but got {vocab} and {classes}."
        )
    check_integer(
        cfg, "model.max_seq_len", low=task.seq_len, example=f"model.max_seq_len={task.seq_len}"
    )


def _bool(cfg: DictConfig, key: str) -> None:
    value = config_value(cfg, key, must=True)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, but got {value!r}; e.g. {key}=true.")


def default_config() -> DictConfig:
    """Every key of the GRPO trial with its default, for use without Hydra.

    The same values as ``python train.py trial=grpo`` composes from ``conf/`` (a test holds the
    two together); ``model`` is the Llama policy, ``loss_fn`` the plain clipped loss.
    """
    return OmegaConf.create(DEFAULTS)


DEFAULTS: dict[str, Any] = {
    "task": {
        "name": "sort",
        "num_digits": 8,
        "seed": 1234,
        "validation_size": 256,
        "split": "validation",
    },
    "model": {
        "_target_": "nemo_rl_hpo.training.models.Llama",
        "vocab_size": 13,
        "num_classes": 13,
        "max_seq_len": 24,
        "hidden_size": 64,
        "num_layers": 2,
        "num_heads": 4,
        "intermediate_size": 172,
        "rope_theta": 10000.0,
        "dropout": 0.0,
    },
    "precision": {"_target_": "nemo_rl_hpo.training.precision.Precision", "dtype": "float32"},
    "sft": {"max_num_steps": 10, "train_global_batch_size": 64, "lr": 3.0e-3},
    "grpo": {
        "num_prompts_per_step": 32,
        "num_generations_per_prompt": 8,
        "use_leave_one_out_baseline": True,
        "normalize_rewards": True,
        "max_num_steps": 110,
        "val_period": 10,
        "seed": 42,
    },
    "loss_fn": {
        "reference_policy_kl_penalty": 0.01,
        "reference_policy_kl_type": "k3",
        "kl_input_clamp_value": 20.0,
        "kl_output_clamp_value": 10.0,
        "ratio_clip_min": 0.2,
        "ratio_clip_max": 0.2,
        "token_level_loss": True,
    },
    "policy": {
        "train_global_batch_size": 64,
        "max_grad_norm": 1.0,
        "optimizer": {
            "name": "torch.optim.AdamW",
            "kwargs": {"lr": 5.0e-4, "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1.0e-8},
        },
        "generation": {"temperature": 1.0, "val_temperature": 0.0},
    },
    "checkpointing": {
        "enabled": True,
        "checkpoint_dir": None,
        "save_period": 50,
        "keep_top_k": 1,
    },
    "device": "auto",
    "num_threads": 1,
}
