"""Mixed precision as nanoGPT does it: a dtype, ``torch.autocast``, a ``GradScaler`` for fp16."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

from nemo_rl_hpo.training.config import ConfigError

log = logging.getLogger(__name__)

OPTIONS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # dtype -> precision=...


class Precision:
    """How the forward pass runs: ``float32``, or autocast to ``bfloat16`` / ``float16``."""

    def __init__(self, dtype: str = "float32") -> None:
        if dtype not in OPTIONS:
            raise ValueError(
                f"precision.dtype must be one of {', '.join(OPTIONS)}, but got {dtype=}."
            )
        self.name = OPTIONS[dtype]
        self.dtype: torch.dtype = getattr(torch, dtype)

    def check(self, device: torch.device) -> None:
        """Fail before training when ``device`` cannot run this precision, saying what can."""
        if self.dtype is torch.float16 and device.type != "cuda":
            raise ConfigError(
                f"precision=fp16 needs a CUDA GPU, but the device is {device.type}; "
                "use precision=bf16 or precision=fp32 on this machine."
            )
        if (
            self.dtype is torch.bfloat16
            and device.type == "cuda"
            and not torch.cuda.is_bf16_supported()
        ):
            raise ConfigError(
                f"precision=bf16 is not supported by {torch.cuda.get_device_name(device)}; "
                "use precision=fp16 or precision=fp32 on this GPU."
            )
        if self.dtype is torch.bfloat16 and device.type == "cpu" and not cpu_has_bf16():
            # Measured on an AVX2-only EPYC: a 400-step default trial takes ~90 s in bf16, ~18 s
            # in fp32. A sweep searching precision spends most of its time on emulated bf16.
            log.warning(
                "precision=bf16 on a CPU without AVX-512 (or ARM bf16) is emulated and about "
                "5x slower than fp32; use precision=fp32 on this machine."
            )

    @contextlib.contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        """Run the enclosed forward pass in this precision (no autocast at all for fp32)."""
        if self.dtype is torch.float32:
            yield
            return
        with torch.autocast(device_type=device.type, dtype=self.dtype):
            yield

    def scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """A loss scaler, enabled only for fp16 on CUDA where small gradients underflow."""
        enabled = self.dtype is torch.float16 and device.type == "cuda"
        return torch.amp.GradScaler(device.type, enabled=enabled)


def cpu_has_bf16() -> bool:
    """Whether oneDNN has a fast bf16 path here (AVX-512 or ARM bf16); else bf16 is emulated."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
