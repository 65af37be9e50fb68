"""The search space from Hydra: ``hydra.sweeper.params`` parsed, made conditional by the config
groups that define its keys, and checked with the app's own validation before any job.

The space itself (``nemo_rl_hpo/search``) knows no Hydra; what only Hydra knows comes from
here: which keys each option of a config group defines (by composing each option once, through
the sweep's compose cache) and the composed config of a probe trial.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.nemo_rl_hpo._launch import HydraJobs
from hydra_plugins.nemo_rl_hpo._settings import SweepConfigError, config_error
from nemo_rl_hpo.search.grammar import ParsedParam, SearchSpaceError, format_value, parse_params
from nemo_rl_hpo.search.space import Probe, SearchSpace

log = logging.getLogger(__name__)

_MISSING = object()


def build_space(jobs: HydraJobs, params: Mapping[str, Any], arguments: list[str]) -> SearchSpace:
    """``params`` (and grammar in the command line's ``arguments``) as a conditional space."""
    config = jobs.config
    assert config is not None
    try:
        parsed = parse_params(params, arguments)
    except SearchSpaceError as e:
        raise config_error(e) from None
    groups = group_keys(jobs, parsed)
    choices = {
        str(k): (None if v is None else str(v))
        for k, v in OmegaConf.to_container(config.hydra.runtime.choices).items()  # type: ignore[union-attr]
    }

    def has_key(key: str) -> bool:
        return OmegaConf.select(config, key, default=_MISSING) is not _MISSING

    known = flat_keys(OmegaConf.masked_copy(config, [str(k) for k in config if k != "hydra"]))
    try:
        return SearchSpace(parsed, groups, choices, has_key, known)
    except SearchSpaceError as e:
        raise config_error(e) from None


def group_keys(jobs: HydraJobs, parsed: list[ParsedParam]) -> dict[str, dict[str, frozenset[str]]]:
    """For every config group a searched key lives in: option -> keys it defines."""
    assert jobs.hydra_context is not None and jobs.config is not None
    loader = jobs.hydra_context.config_loader
    choices = jobs.config.hydra.runtime.choices
    candidates: set[str] = set()
    for p in parsed:
        if p.distribution is None:
            continue
        parts = p.bare_key.split(".")
        for i in range(1, len(parts) + 1):
            candidates.add("/".join(parts[:i]))
    out: dict[str, dict[str, frozenset[str]]] = {}
    for group in sorted(candidates):
        if group.startswith("hydra"):
            continue
        try:
            options = loader.get_group_options(group)
        except Exception:
            options = []
        if not options:
            continue
        prefix = "" if group in choices else "+"
        # The command line's fixed overrides (e.g. trial=grpo) decide which groups exist at all.
        fixed = [p.fixed for p in parsed if p.fixed is not None and p.bare_key != group]
        keys: dict[str, frozenset[str]] = {}
        for option in options:
            try:
                cfg = jobs.task_config([*fixed, f"{prefix}{group}={option}"])
                node = OmegaConf.select(cfg, group.replace("/", "."))
            except Exception as e:  # an option that does not compose alone has no keys
                log.debug("option %s/%s does not compose: %s", group, option, e)
                node = None
            keys[option] = frozenset(flat_keys(node)) if node is not None else frozenset()
        out[group] = keys
    return out


def check_space(
    jobs: HydraJobs, space: SearchSpace, path: str | None, exact_ends: bool = False
) -> None:
    """Fail before any job when some trial of the space would fail the app's own check.

    ``hydra.sweeper.check`` (``path``) names the app's validation, fn(cfg) raising on a value a
    trial cannot run with. It runs on the composed config of a reference trial and of each end
    of every range and each choice (:meth:`SearchSpace.probes`), so ``warmup_ratio:
    interval(0, 2)`` is one error line naming the key, not a first trial that fails after the
    sweep started. Compositions go through the sweep's cache and warm it for the jobs.
    ``exact_ends``: the sweeper can propose a float range's exact end (PBT clips perturbed
    values to it), so an end the check rejects is an error even when just inside passes.
    """
    if not path:
        return
    try:
        check = get_method(str(path))
    except Exception:
        raise SweepConfigError(
            f"hydra.sweeper.check={path!r} cannot be imported; give the dotted path of a "
            "function fn(cfg) that raises on a config a trial cannot run with, or null."
        ) from None
    probes = space.probes()
    errors = [_probe_error(jobs, check, space, p, exact_ends) for p in probes]
    if not any(errors):
        return
    # Blame a key whose own values split passing from failing trials: its probes differ in
    # that key only (same pinned group option), so the failure is its value's. Plain keys
    # first: a group's options also switch its conditional keys on and off.
    by_key: dict[str, list[int]] = {}
    for i, p in enumerate(probes):
        if p.key is not None:
            by_key.setdefault(p.key, []).append(i)
    order = sorted(by_key, key=lambda k: k.lstrip("+") in space.groups)
    for key in order:
        failing = [i for i in by_key[key] if errors[i]]
        if failing and len(failing) < len(by_key[key]):
            probe = probes[failing[0]]
            cond = space.conditions.get(key)
            owner = probe.values.get(cond.group) if cond is not None else None
            where = f" (with {cond.group}={owner})" if cond is not None and owner else ""
            raise SweepConfigError(
                f"hydra.sweeper.params.{key}: the range reaches "
                f"{key}={format_value(probe.value)}{where}, where a trial would fail "
                f"{path}: {errors[failing[0]]} Narrow the range."
            )
    if all(errors):
        raise SweepConfigError(
            f"every trial of this sweep would fail hydra.sweeper.check={path}: {errors[0]}"
        )
    i = next(i for i, e in enumerate(errors) if e)
    trial = " ".join(space.overrides(probes[i].values))
    raise SweepConfigError(
        f"hydra.sweeper.check={path}: the trial {trial} of this sweep would fail: {errors[i]}"
    )


def _probe_error(
    jobs: HydraJobs, check: Any, space: SearchSpace, probe: Probe, exact_ends: bool
) -> str | None:
    """The check's message for a probe trial, None when it passes.

    Only the exact end of a float range failing (a point 1e-6 of the range inside passes) is
    a pass: a sampler draws that end with probability 0.
    """
    error = _check_one(jobs, check, space, probe.values)
    if error is not None and probe.inward is not None and not exact_ends:
        if _check_one(jobs, check, space, probe.inward) is None:
            return None
    return error


def _check_one(
    jobs: HydraJobs, check: Any, space: SearchSpace, values: Mapping[str, Any]
) -> str | None:
    try:
        check(jobs.task_config(space.overrides(values)))
    except Exception as e:
        lines = str(e).strip().splitlines()
        return (lines[0] if lines else type(e).__name__).rstrip()
    return None


def flat_keys(node: Any, prefix: str = "") -> list[str]:
    """Every key path under a config node (``a``, ``a.b``, ...)."""
    keys: list[str] = []
    if isinstance(node, DictConfig):
        for k in node.keys():
            full = prefix + str(k)
            keys.append(full)
            try:
                child = node._get_node(k)
            except Exception:
                continue
            if isinstance(child, DictConfig):
                keys.extend(flat_keys(child, full + "."))
    return keys
