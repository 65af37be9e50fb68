"""Slots of the machine for local trials: GPUs (its own ``gpus_per_trial`` devices per running
trial, handed back when it ends) and CPU cores (how many trials fit side by side).

A local launcher runs several trials on one machine (a workstation, or one node of a SLURM
allocation). Without slots every trial sees the same GPUs (submitit's ``gpus_per_node``) or
none at all; here the visible devices (``CUDA_VISIBLE_DEVICES``, ``/dev/nvidiaN``, or an
explicit ``devices`` list) are cut into fixed slots of ``k`` devices, and a trial holds a slot
for exactly as long as its launch call runs, so a crashed or killed trial's devices go to the
next trial. Slot ``i`` always owns the same devices, so a warm worker bound to it keeps them.
Thread-safe: launchers are called from one thread per trial. Nothing here knows Hydra.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

ENV = "CUDA_VISIBLE_DEVICES"  # the job records what it saw as records.DEVICES


class DeviceConfigError(ValueError):
    """Slots that cannot be built (too few devices for n_jobs, a bad option): one line."""


def visible_devices(env: Mapping[str, str] | None = None) -> tuple[list[str], str]:
    """The GPUs this process may use, and where that list came from (for error messages).

    ``CUDA_VISIBLE_DEVICES`` wins when set (SLURM sets it to a job's GPUs; ids or UUIDs are
    kept as written); otherwise the NVIDIA device nodes ``/dev/nvidiaN``; else none.
    """
    env = os.environ if env is None else env
    raw = env.get(ENV)
    if raw is not None:
        return [d.strip() for d in raw.split(",") if d.strip()], f"{ENV}={raw}"
    found = sorted(
        int(m.group(1))
        for p in glob.glob("/dev/nvidia*")
        if (m := re.fullmatch(r"/dev/nvidia(\d+)", p))
    )
    return [str(i) for i in found], f"/dev/nvidia0-{found[-1]}" if found else "no GPU found"


def parse_devices(value: Any) -> list[str] | None:
    """A ``devices`` option: a list (``[0,1,2,3]``), a comma string (``"0,1"``), or null."""
    if value is None:
        return None
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        items: Sequence[Any] = str(value).split(",")
    elif isinstance(value, Sequence):
        items = value
    else:
        raise DeviceConfigError(
            f"hydra.launcher.devices must be a list of device ids like [0,1,2,3] (or null: "
            f"{ENV}), but got {value!r}."
        )
    out = [str(v).strip() for v in items if str(v).strip()]
    if len(set(out)) != len(out):
        raise DeviceConfigError(f"hydra.launcher.devices lists a device twice: {out}.")
    return out


@dataclass(frozen=True)
class Slot:
    """One trial's share of the machine. ``devices`` None: leave the GPUs as they are."""

    index: int
    devices: tuple[str, ...] | None

    def env(self) -> dict[str, str]:
        """Environment a trial on this slot runs with ({} when GPUs are not managed)."""
        return {} if self.devices is None else {ENV: ",".join(self.devices)}


def plan(
    n_slots: int,
    gpus_per_trial: Any,
    devices: Any = None,
    env: Mapping[str, str] | None = None,
    slots_key: str = "n_jobs",
) -> list[Slot]:
    """Cut the devices into ``n_slots`` fixed slots of ``gpus_per_trial`` devices each.

    ``gpus_per_trial``: null (auto) gives each trial one device when GPUs are visible and
    leaves a CPU-only machine untouched; 0 hides the GPUs from every trial; k gives each its
    own k. Asking for more devices than exist is an error naming both numbers.
    """
    if gpus_per_trial is not None and (
        not isinstance(gpus_per_trial, int)
        or isinstance(gpus_per_trial, bool)
        or gpus_per_trial < 0
    ):
        raise DeviceConfigError(
            "hydra.launcher.gpus_per_trial must be 0 or more devices per trial (or null: one "
            f"per trial when GPUs are visible), but got {gpus_per_trial!r}."
        )
    explicit = parse_devices(devices)
    if explicit is not None:
        found, source = explicit, f"hydra.launcher.devices={','.join(explicit)}"
    else:
        found, source = visible_devices(env)
    k = gpus_per_trial if gpus_per_trial is not None else (1 if found else None)
    if k is None:
        return [Slot(i, None) for i in range(n_slots)]
    if k == 0:
        return [Slot(i, ()) for i in range(n_slots)]
    need = n_slots * k
    if need > len(found):
        fit = len(found) // k
        raise DeviceConfigError(
            f"{slots_key}={n_slots} trials x hydra.launcher.gpus_per_trial={k} need {need} "
            f"devices, but only {len(found)} are available ({source}); lower {slots_key} to "
            f"{fit} or less, or set hydra.launcher.gpus_per_trial=0 for trials without GPUs."
            if fit
            else f"hydra.launcher.gpus_per_trial={k} needs {k} devices per trial, but only "
            f"{len(found)} are available ({source}); lower it, or set hydra.launcher.devices."
        )
    return [Slot(i, tuple(found[i * k : (i + 1) * k])) for i in range(n_slots)]


class SlotPool:
    """Free slots handed out lowest index first; ``hold`` blocks until one is free."""

    def __init__(self, slots: Sequence[Slot]) -> None:
        if not slots:
            raise DeviceConfigError("a slot pool needs at least one slot.")
        self.slots = list(slots)
        self._free = [s.index for s in self.slots]
        self._cond = threading.Condition()

    @property
    def managed(self) -> bool:
        """Whether slots set the trials' devices (else a launcher may skip holding them)."""
        return self.slots[0].devices is not None

    @contextmanager
    def hold(self) -> Iterator[Slot]:
        """A free slot for the duration of one trial; returned on any exit, error or not."""
        with self._cond:
            while not self._free:
                self._cond.wait()
            self._free.sort()
            index = self._free.pop(0)
        try:
            yield self.slots[index]
        finally:
            with self._cond:
                self._free.append(index)
                self._cond.notify()


def job_devices(env: Mapping[str, str] | None = None) -> list[str] | None:
    """In a trial's job: the devices it runs on (its CUDA_VISIBLE_DEVICES), None if unset."""
    env = os.environ if env is None else env
    raw = env.get(ENV)
    if raw is None:
        return None
    return [d.strip() for d in raw.split(",") if d.strip()]


def cpu_cores() -> int:
    """Cores this process may use (its affinity: a SLURM allocation's CPUs, not the node's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def local_trials(threads_per_trial: int, gpus_per_trial: Any = None, devices: Any = None) -> int:
    """How many trials a local launcher runs at once by default: the machine, fully used.

    With GPUs (visible or listed, and not hidden by ``gpus_per_trial=0``): one trial per GPU
    slot. Otherwise CPU slots: cores // threads per trial, so threads x trials ~ cores.
    """
    if gpus_per_trial != 0:
        explicit = parse_devices(devices)
        found = explicit if explicit is not None else visible_devices()[0]
        k = gpus_per_trial or 1
        if found and len(found) >= k:
            return len(found) // k
    return max(1, cpu_cores() // max(1, int(threads_per_trial)))
