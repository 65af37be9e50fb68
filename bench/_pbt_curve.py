"""A PBT member's learning curve on a table of constant-configuration runs (the approximation).

A table holds one full curve per fixed configuration, so a PBT exploit (copy the parent's
checkpoint at step t, continue with explored hyperparameters) has no recorded curve. The
replays here (``simulate.py``'s PBT and ``peers.py``'s Ray Tune PBT/PB2) share one rule: after
an exploit at step t the member continues on the curve of the table configuration nearest to
its new hyperparameters, on the seed it inherited from its parent, from step t on. How the
new curve joins the parent's value v_p(t) is the ``mode``:

- ``jump`` (the default): the new configuration's own values (v_new(s) for s > t): what Syne Tune's
  tabular simulator backend does when a trial resumes with a changed configuration (it drops
  the results up to the paused resource level and reads the rest from the new configuration's
  row; ``syne_tune/blackbox_repository/simulated_tabular_backend.py``). The parent's progress
  is lost: exploiting a good parent buys nothing but its hyperparameters.
- ``shift``: v_p(t) + v_new(s) - v_new(t): the new configuration's *improvement* from t on,
  added to where the parent was; continuous at t, but a loss can go below zero when a slow
  configuration that still falls steeply is grafted onto a parent that has converged.
- ``scale``: v_p(t) * v_new(s) / v_new(t): the relative improvement; continuous
  at t and keeps a positive loss positive. For a maximized objective (a reward), the
  multiplicative rule is applied to its distance from the curve's best value.

``bench/pbt_exploit_check.py`` measures all three against live exploits of the supervised trial
(a real checkpoint of one configuration resumed with another's hyperparameters, 16 pairs):
``jump`` was closest (median |error| of the final val_loss 0.049, rank correlation with the live
finals 0.73; ``scale`` 0.060 / 0.56, ``shift`` 0.099 / 0.11; bench/README.md): this small model
forgets its checkpoint fast once its learning rate changes, so it is the default. A member whose
explored hyperparameters map to the table configuration it already had continues on its own
curve: exact in every mode. A schedule is ``[(start_step, table_key), ...]`` (first start 0) and a
member's key in results is :func:`schedule_key`, so a replayed member has a *true* quality too:
its schedule replayed on the test seeds by the same rule.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

MODES = ("jump", "scale", "shift")
PREFIX = "pbt:"

# (key, seed) -> (steps, values); values end early where the run diverged
Curves = Callable[[str, int], tuple[Sequence[int], Sequence[float]]]


def schedule_key(schedule: Sequence[tuple[int, str]]) -> str:
    return PREFIX + json.dumps([[int(s), k] for s, k in schedule], separators=(",", ":"))


def parse_key(key: str) -> list[tuple[int, str]] | None:
    if not key.startswith(PREFIX):
        return None
    return [(int(s), str(k)) for s, k in json.loads(key[len(PREFIX) :])]


def join(parent: float, at_t: float, new: float, mode: str, maximize: bool = False) -> float:
    """The member's value where the new configuration's curve reads ``new`` (``at_t`` at t)."""
    if mode == "jump":
        return new
    if mode == "shift":
        return parent + new - at_t
    if mode == "scale":
        if maximize:  # distance below 1.0 (rewards here are in [0, 1]) shrinks by the ratio
            gap_t, gap = 1.0 - at_t, 1.0 - new
            return 1.0 - (1.0 - parent) * (gap / gap_t) if gap_t > 0 else parent + new - at_t
        return parent * new / at_t if at_t > 0 else parent + new - at_t
    raise ValueError(f"mode must be one of {MODES}, but got {mode!r}")


def segment(
    curves: Curves,
    key: str,
    seed: int,
    t: int,
    end: int,
    parent: float | None,
    mode: str,
    maximize: bool = False,
) -> list[tuple[int, float]]:
    """(step, value) of ``key`` on ``seed`` for t < step <= end, joined to ``parent`` at t.

    ``parent`` None: a fresh start (round 0), the raw curve. The list ends early where the
    new configuration's run diverged (its recorded curve ends): the member fails there.
    """
    steps, values = curves(key, seed)
    # the new configuration's value at t (its last validation at or before t)
    before = [v for s, v in zip(steps, values, strict=True) if s <= t]
    at_t = before[-1] if before else None
    if at_t is not None and not math.isfinite(at_t):
        return []  # it had diverged by t: nothing to continue on
    out: list[tuple[int, float]] = []
    for s, v in zip(steps, values, strict=True):
        if t < s <= end:
            fresh = parent is None or at_t is None
            out.append((s, v if fresh else join(parent, at_t, v, mode, maximize)))  # type: ignore[arg-type]
    return out


def replay(
    curves: Curves,
    schedule: Sequence[tuple[int, str]],
    seed: int,
    end: int,
    mode: str,
    maximize: bool = False,
) -> list[tuple[int, float]]:
    """The member's whole curve: each schedule entry from its start step to the next one."""
    out: list[tuple[int, float]] = []
    for i, (start, key) in enumerate(schedule):
        stop = schedule[i + 1][0] if i + 1 < len(schedule) else end
        parent = out[-1][1] if out and start > 0 else None
        if start > 0 and (not out or out[-1][0] != start):
            return out  # the previous part ended early (diverged): no checkpoint at start
        part = segment(curves, key, seed, start, stop, parent, mode, maximize)
        out.extend(part)
        if not part or part[-1][0] != stop:
            return out
    return out


def final(
    curves: Curves,
    schedule: Sequence[tuple[int, str]],
    seed: int,
    end: int,
    mode: str,
    maximize: bool = False,
) -> float:
    """The member's value at ``end``; the worst value there is (inf) where it never got there."""
    curve = replay(curves, schedule, seed, end, mode, maximize)
    if not curve or curve[-1][0] != end or not math.isfinite(curve[-1][1]):
        return -math.inf if maximize else math.inf
    return curve[-1][1]
