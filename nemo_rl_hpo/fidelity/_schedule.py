"""Asynchronous successive halving and Hyperband as plain decisions on plain records.

Hydra-free and storage-free, so a simulator can drive it (``bench/``) exactly as the sweeper
does. The sweeper's proposer (``_proposer.py``) turns study trials into :class:`Record` s, asks
:meth:`Scheduler.promotions` which paused trial to continue, and
:meth:`Scheduler.bracket_of` which bracket a new configuration joins.

The rule is ASHA's (Li et al., MLSys 2020, Algorithm 2): rungs sit at ``min_resource · η^k``
steps (bracket ``s`` starts at ``min_resource · η^s``) up to ``max_resource``; a trial that
reaches a rung *pauses*; when a worker frees up, the best paused trial that is in the top
``⌊n/η⌋`` of the ``n`` trials recorded at its rung is promoted, highest rung first, and only if
none qualifies a new configuration starts. ``mode="stopping"`` is the stopping variant (Optuna's
``SuccessiveHalvingPruner``, Ray Tune's ``ASHAScheduler``): a trial is judged once, when it
reaches the rung, against the trials recorded there so far (the first ``η - 1`` continue only
if they lead), and continues at once or stops for good.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

MODES = ("promotion", "stopping")


class FidelityError(ValueError):
    """Settings that cannot make a schedule: one line naming the setting and the fix."""


@dataclass(frozen=True)
class FidelitySettings:
    """What the schedule needs, in steps of the trial's own step counter.

    ``brackets``: 1 is ASHA; more is asynchronous Hyperband with that many brackets (bracket
    ``s`` starts its trials at rung ``s``); ``None`` with ``hyperband`` means all of them.
    """

    min_resource: int
    max_resource: int
    reduction_factor: int = 3
    mode: str = "promotion"
    brackets: int = 1
    direction: str = "minimize"

    def __post_init__(self) -> None:
        if self.reduction_factor < 2:
            raise FidelityError(
                f"reduction_factor must be 2 or more, but got {self.reduction_factor}."
            )
        if not 1 <= self.min_resource < self.max_resource:
            raise FidelityError(
                f"min_resource={self.min_resource} must be at least 1 and below "
                f"max_resource={self.max_resource}."
            )
        if self.mode not in MODES:
            raise FidelityError(f"mode must be promotion or stopping, but got {self.mode!r}.")
        if not 1 <= self.brackets <= self.max_brackets:
            raise FidelityError(
                f"brackets={self.brackets} must be 1..{self.max_brackets} for "
                f"min_resource={self.min_resource}, max_resource={self.max_resource}, "
                f"reduction_factor={self.reduction_factor}."
            )
        if self.direction not in ("minimize", "maximize"):
            raise FidelityError(f"direction must be minimize or maximize: {self.direction!r}.")

    @property
    def max_brackets(self) -> int:
        """Rungs below ``max_resource`` in the most aggressive bracket, plus one."""
        return len(self.rungs(0))

    def rungs(self, bracket: int = 0) -> list[int]:
        """The steps where a trial of ``bracket`` pauses, ``max_resource`` last."""
        out: list[int] = []
        k = bracket
        while (step := self.min_resource * self.reduction_factor**k) < self.max_resource:
            out.append(step)
            k += 1
        return [*out, self.max_resource]

    def all_rungs(self) -> list[int]:
        return sorted({r for b in range(self.brackets) for r in self.rungs(b)})


@dataclass
class Record:
    """One configuration as the scheduler sees it.

    ``values``: its value at each rung step reached. ``status``: ``running`` (a segment runs),
    ``paused`` (waiting at its highest rung), ``done`` (reached ``max_resource``, stopped, not
    promoted or failed: it never runs again).
    """

    key: int
    bracket: int
    values: dict[int, float] = field(default_factory=dict)
    status: str = "running"

    @property
    def step(self) -> int:
        return max(self.values, default=0)


@dataclass(frozen=True)
class Promotion:
    key: int
    rung: int  # the step it paused at
    target: int  # the step the next segment stops at


class Scheduler:
    """The decisions, from a snapshot of every configuration (no state of its own)."""

    def __init__(self, settings: FidelitySettings) -> None:
        self.s = settings
        self._cycle = _bracket_cycle(settings)

    # ------------------------------------------------------------------ new configurations
    def bracket_of(self, index: int) -> int:
        """The bracket of the ``index``-th configuration: Hyperband's allocation, interleaved."""
        return self._cycle[index % len(self._cycle)]

    def first_target(self, bracket: int) -> int:
        return self.s.rungs(bracket)[0]

    def next_target(self, bracket: int, step: int) -> int:
        later = [r for r in self.s.rungs(bracket) if r > step]
        return later[0] if later else self.s.max_resource

    # -------------------------------------------------------------------------- promotion
    def promotions(self, records: Sequence[Record], more_coming: bool = True) -> list[Promotion]:
        """Paused trials that may continue now, in the order to try them.

        Promotion mode: per bracket, highest rung first, best value first, those in the top
        ``⌊n/η⌋`` of their rung. Stopping mode: a paused trial continues when it was in the
        top ``max(1, ⌊n/η⌋)`` of its rung on arrival (judged once, right after it paused).
        """
        out: list[tuple[int, float, Promotion]] = []
        leaders = self._closing_leaders(records, more_coming)
        for r in records:
            if r.status != "paused" or r.step >= self.s.max_resource:
                continue
            if self._promotable(r, records) or r.key in leaders:
                target = self.next_target(r.bracket, r.step)
                out.append(
                    (-r.step, self._sign * r.values[r.step], Promotion(r.key, r.step, target))
                )
        out.sort(key=lambda x: (x[0], x[1], x[2].key))
        return [p for _, _, p in out]

    def finished(self, records: Sequence[Record], more_coming: bool) -> list[int]:
        """Paused trials that can never be promoted any more.

        Stopping mode: every paused trial not promotable now. Promotion mode: a rung's ranking
        can still change while a trial may arrive there (a segment running below it in the same
        bracket, a trial paused below it, or new configurations to come: ``more_coming``).
        """
        out = []
        leaders = self._closing_leaders(records, more_coming)
        for r in records:
            if r.status != "paused" or self._promotable(r, records) or r.key in leaders:
                continue
            if self.s.mode == "stopping":
                out.append(r.key)
                continue
            if more_coming:
                continue
            below = [
                o for o in records
                if o.bracket == r.bracket and o.status in ("running", "paused") and o.step < r.step
            ]  # fmt: skip
            if not below:
                out.append(r.key)
        return out

    def evictions(
        self, records: Sequence[Record], sizes: Mapping[int, int], cap: int, more_coming: bool
    ) -> list[int]:
        """Paused trials to end so their checkpoints (``sizes``, bytes) fit within ``cap``.

        Those least likely to be promoted go first: never one promotable now (a slot will
        resume it) or a closing leader; the lowest rung first (least compute spent, and where
        most trials wait), and within a rung the worst-ranked first.
        """
        held = sum(sizes.get(r.key, 0) for r in records if r.status == "paused")
        if held <= cap:
            return []
        keep = {p.key for p in self.promotions(records, more_coming)}

        def rank(r: Record) -> tuple[int, float, int]:
            peers = [o for o in records if o.bracket == r.bracket and r.step in o.values]
            ranked = sorted(peers, key=lambda o: (self._sign * o.values[r.step], o.key))
            position = [o.key for o in ranked].index(r.key) / len(ranked)
            return (r.step, -position, r.key)

        candidates = sorted(
            (r for r in records if r.status == "paused" and r.key not in keep), key=rank
        )
        out = []
        for r in candidates:
            if held <= cap:
                break
            out.append(r.key)
            held -= sizes.get(r.key, 0)
        return out

    def _closing_leaders(self, records: Sequence[Record], more_coming: bool) -> set[int]:
        """When nothing more can arrive, each bracket's leader runs on to ``max_resource``.

        With few configurations a rung may hold fewer than η trials, so ``⌊n/η⌋ = 0`` promotes
        nobody and the sweep would end with no configuration at ``max_resource`` (nothing for
        ``best``). Once no new configuration will start and nothing runs in the bracket, its
        best paused trial at its highest rung goes on instead, one at a time, until one
        configuration reaches ``max_resource``. Promotion mode only.
        """
        if more_coming or self.s.mode != "promotion":
            return set()
        leaders = set()
        for b in {r.bracket for r in records}:
            mine = [r for r in records if r.bracket == b]
            if any(r.status == "running" or self.s.max_resource in r.values for r in mine):
                continue
            paused = [r for r in mine if r.status == "paused"]
            if not paused or any(self._promotable(r, records) for r in paused):
                continue
            top = max(r.step for r in paused)
            at_top = [r for r in paused if r.step == top]
            leaders.add(min(at_top, key=lambda r: (self._sign * r.values[top], r.key)).key)
        return leaders

    def _promotable(self, r: Record, records: Sequence[Record]) -> bool:
        step = r.step
        peers = [o for o in records if o.bracket == r.bracket and step in o.values]
        if self.s.mode == "stopping":
            # As Optuna's SuccessiveHalvingPruner: judged once, on arrival (the proposer asks
            # right after the segment ended), against every trial recorded there so far.
            k = max(1, len(peers) // self.s.reduction_factor)
        else:
            k = len(peers) // self.s.reduction_factor
        if k == 0:
            return False
        ranked = sorted(peers, key=lambda o: (self._sign * o.values[step], o.key))
        return r.key in {o.key for o in ranked[:k]}

    @property
    def _sign(self) -> float:
        return 1.0 if self.s.direction == "minimize" else -1.0


def _bracket_cycle(s: FidelitySettings) -> list[int]:
    """Hyperband's share per bracket (n_s ∝ ⌈(S+1)/(s+1)·η^s⌉ counted from the widest), as a
    repeating sequence that interleaves the brackets."""
    n = s.brackets
    if n == 1:
        return [0]
    # Bracket 0 is the most aggressive (most rungs): Hyperband's s = n-1-b.
    shares = {b: math.ceil(n / (n - b) * s.reduction_factor ** (n - 1 - b)) for b in range(n)}
    slots = sorted(
        ((i + 0.5) / shares[b], b) for b in range(n) for i in range(shares[b])
    )  # fmt: skip
    return [b for _, b in slots]


def records_from(items: Iterable[tuple[int, int, dict[int, float], str]]) -> list[Record]:
    """Records from ``(key, bracket, values, status)`` tuples (for simulators and tests)."""
    return [Record(k, b, dict(v), st) for k, b, v, st in items]
