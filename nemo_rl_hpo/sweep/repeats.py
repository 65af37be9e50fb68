"""Seed repeats: one configuration = ``repeats`` jobs with different seeds, one Optuna trial.

RL rewards are noisy: a configuration that wins on one seed often loses on the next. With
``repeats: n`` each configuration the sampler proposes runs as n jobs, job ``i`` with
``<seed_key>=i`` (the same seeds 0..n-1 for every configuration, so configurations are
compared on equal draws). The seeds are jobs of the trial loop like any other:
:class:`SeedRepeats` wraps the sweeper's proposer and fans each of its proposals out into n
seed proposals of the same trial; the loop runs them as slots free up (``n_jobs`` seed jobs at
once, about ``n_jobs / n`` configurations) and tells the wrapped proposer once, when the
configuration is over.

All n jobs record into the configuration's one Optuna trial, each under its own keys
(``repeat:<i>``...), through the one job-side implementation (``sweep/job.py``, a seed being
part i of n): the trial's value is ``aggregate`` (mean | median | min | max) of its seeds'
values, told by the seed ending last; a failing seed fails the configuration at once (reason
prefixed ``seed 2 (seed=2): ...``) and the others stop at their next ``should_prune()``; the
pruner judges the aggregate of the seeds that reported a step so far, and a pruned
configuration stops all of its seeds.

- **records**: ``repeat:<i>`` = {seed, state, values, metrics, reason} once seed i ended;
  ``repeat:<i>:curves`` its learning curves, ``repeat:<i>:reports`` its prune-metric reports,
  ``repeat:<i>:job`` where it ran (host, pid, dir, devices, SLURM id).
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nemo_rl_hpo.errors import ParamError
from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep.aggregate import AGGREGATES, combine

if TYPE_CHECKING:  # the CLI imports this module's readers: Optuna only where it is used
    import optuna
    from optuna.trial import FrozenTrial, TrialState

    from nemo_rl_hpo.sweep.proposer import Proposal, Proposer

log = logging.getLogger(__name__)

# In the trial context: {"index", "seed", "n", "aggregate", "seed_key", "launch"}; read by
# sweep/job.Part.of_context.
CONTEXT_KEY = "repeat"
LaunchOne = Callable[[list[str], dict[str, Any], int], tuple[bool, str | None]]
__all__ = ["AGGREGATES", "CONTEXT_KEY", "Repeats", "SeedRepeats", "combine", "seed_records"]


class RepeatConfigError(ParamError, ValueError):
    """Bad ``repeats``/``seed_key``/``aggregate``: one line naming the key, before any job."""

    default_params = ("repeats", "seed_key", "aggregate")


@dataclass(frozen=True)
class Repeats:
    """How many seeds each configuration runs, which config key takes the seed, and how the
    seeds' values become the configuration's value."""

    n: int = 1
    seed_key: str = "seed"
    aggregate: str = "mean"

    @classmethod
    def from_config(cls, repeats: Any, seed_key: Any = "seed", aggregate: Any = "mean") -> Repeats:
        if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
            raise RepeatConfigError(
                f"repeats must be 1 or more seeds per configuration, but got {repeats!r}."
            )
        if not isinstance(seed_key, str) or not seed_key:
            raise RepeatConfigError(
                f"seed_key must name the config key that takes the seed "
                f"(e.g. seed), but got {seed_key!r}."
            )
        if aggregate not in AGGREGATES:
            raise RepeatConfigError(
                f"aggregate must be one of {', '.join(AGGREGATES)}, but got {aggregate!r}."
            )
        return cls(repeats, seed_key, str(aggregate))

    @property
    def active(self) -> bool:
        return self.n > 1

    def seeds(self) -> list[int]:
        return list(range(self.n))

    def configurations_in_flight(self, n_jobs: int) -> int:
        """Configurations the loop keeps running so that about ``n_jobs`` seed jobs run."""
        return max(1, math.ceil(n_jobs / self.n))

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "seed_key": self.seed_key, "aggregate": self.aggregate}


# ------------------------------------------------------------------------- sweeper side
def seed_jobs(repeats: Repeats, proposal: Proposal, subdir: str | None) -> list[Proposal]:
    """The configuration's seed jobs: one proposal per seed, same trial.

    ``subdir``: the app's ``hydra.sweep.subdir`` (unresolved); each seed's job dir is a
    ``seed_<s>`` folder below it, and a ``checkpoint_dir`` in the context gets one too, so seeds
    never share checkpoints.
    """
    from nemo_rl_hpo.sweep.proposer import Proposal

    out = []
    for i, seed in enumerate(repeats.seeds()):
        extra = [f"{repeats.seed_key}={seed}"]
        if subdir is not None:
            extra.append(f"hydra.sweep.subdir='{subdir}/seed_{seed}'")
        ctx: dict[str, Any] = {CONTEXT_KEY: {"index": i, "seed": seed, **repeats.as_dict()}}
        if proposal.context.get("checkpoint_dir"):
            ctx["checkpoint_dir"] = f"{proposal.context['checkpoint_dir']}/seed_{i}"
        out.append(
            Proposal(
                proposal.trial,
                proposal.overrides,
                {**proposal.context, **ctx},
                job_overrides=[*proposal.job_overrides, *extra],
                index=i,
                label=f"seed {i} ({repeats.seed_key}={seed})",
                ended=_seed_ended(i, ctx[CONTEXT_KEY]),
            )
        )
    return out


def _seed_ended(index: int, seed: dict[str, Any]) -> Callable[[FrozenTrial], bool]:
    token = seed["launch"] = uuid.uuid4().hex  # this launch's end, not an earlier segment's

    def ended(t: FrozenTrial) -> bool:
        r = t.user_attrs.get(records.repeat_key(index))
        return isinstance(r, dict) and r.get("launch") == token

    return ended


@dataclass
class SeedRepeats:
    """A proposer wrapper: each proposal of ``inner`` runs as ``repeats.n`` seed jobs.

    Keeps at most ``configurations`` configurations in flight (their seeds fill the loop's
    slots), so a configuration's seeds run side by side and the next configuration is judged
    on the ones before. Everything else (budget, retries, re-attach) is ``inner``'s: it is told
    once per configuration.
    """

    inner: Proposer
    repeats: Repeats
    configurations: int  # in flight at once (``Repeats.configurations_in_flight(n_jobs)``)
    subdir: str | None = None
    _queue: deque[Proposal] = field(default_factory=deque)
    _in_flight: set[int] = field(default_factory=set)

    def adopt(self, reattached: Sequence[FrozenTrial]) -> list[Proposal]:
        return self.inner.adopt(reattached)

    def ask(self) -> Proposal | None:
        while self._queue:
            p = self._queue.popleft()
            if not p.trial.storage.get_trial(p.trial._trial_id).state.is_finished():
                return p  # a seed of a configuration already over (a sibling failed) is dropped
        if len(self._in_flight) >= self.configurations:
            return None
        proposal = self.inner.ask()
        if proposal is None:
            return None
        self._in_flight.add(proposal.number)
        self._queue.extend(seed_jobs(self.repeats, proposal, self.subdir))
        return self._queue.popleft()

    def tell(self, trial: FrozenTrial) -> bool:
        self._in_flight.discard(trial.number)
        self._queue = deque(p for p in self._queue if p.number != trial.number)
        return self.inner.tell(trial)

    def pending(self) -> bool:
        return self.inner.pending()

    def rescue(self, trial: FrozenTrial) -> bool:
        """The optional hook of ``inner`` (sweep/proposer.py), passed through."""
        rescue = getattr(self.inner, "rescue", None)
        return bool(rescue(trial)) if rescue is not None else False


def launch_seeds(
    repeats: Repeats,
    study: optuna.Study,
    trial: optuna.Trial,
    overrides: Sequence[str],
    launch_one: LaunchOne,
    subdir: str | None,
    parallel: bool = True,
) -> tuple[bool, str | None]:
    """Run a configuration's seed jobs side by side without the trial loop (a script's own).

    ``launch_one(overrides, context, seed_index)`` launches one job and returns (ok, error). A
    seed whose job died without telling fails the configuration at once, as the loop does
    (the others then stop at their next ``should_prune()``). Returns (ok, the first error).
    """
    from nemo_rl_hpo.sweep.proposer import Proposal

    errors: list[str] = []
    lock = threading.Lock()
    base = Proposal(trial, list(overrides))

    def one(job: Proposal) -> None:
        try:
            ok, error = launch_one([*job.overrides, *job.job_overrides], job.context, job.index)
        except Exception as e:  # noqa: BLE001 - a launcher error is this seed's failure
            ok, error = False, f"{type(e).__name__}: {e}"
        if ok:
            return
        reason = f"{job.label}: {error or 'the job failed'}"
        with lock:
            errors.append(reason)
        try:
            if records.fail_trial(study, trial, reason):
                log.warning("trial %d FAIL: %s", trial.number, reason)
        except Exception as e:  # storage hiccup: the caller fails it when all seeds returned
            log.debug("could not fail trial %d: %s", trial.number, e)

    jobs = seed_jobs(repeats, base, subdir)
    if not parallel:
        for job in jobs:
            one(job)
    else:
        threads = [
            threading.Thread(target=one, args=(j,), name=f"seed-{trial.number}-{j.index}")
            for j in jobs
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return (not errors, errors[0] if errors else None)


# ----------------------------------------------------------------------------- job side
# What a seed job calls, through nemo_rl_hpo.trial and sweep/job.py: the one job-side
# implementation, with the seed as part i of n.
def seed_of(context: Mapping[str, Any]) -> dict[str, Any] | None:
    """This job's seed (index, seed, n, aggregate, seed_key) when it is one of a repeat."""
    rep = context.get(CONTEXT_KEY)
    return rep if isinstance(rep, dict) and "index" in rep else None


def report(
    trial: optuna.Trial,
    seed: Mapping[str, Any],
    step: int,
    metrics: float | Mapping[str, float],
    prune_metric: str | None,
) -> None:
    """Record one seed's metrics at ``step``; rewrite the trial's aggregate at that step."""
    from nemo_rl_hpo.sweep import job

    job.report(trial, job.Part.of_seed(seed), step, metrics, prune_metric)


def should_prune(trial: optuna.Trial, seed: Mapping[str, Any]) -> bool:
    """Yes once the configuration is pruned or finished, else the pruner on its aggregate."""
    from nemo_rl_hpo.sweep import job

    return job.should_prune(trial, job.Part.of_seed(seed))


def on_seed_end(
    study: optuna.Study,
    trial_id: int,
    seed: Mapping[str, Any],
    completed: bool,
    value: Any,
    context: Mapping[str, Any],
) -> TrialState | None:
    """Record how this seed ended; the seed that completes the set tells the trial."""
    from nemo_rl_hpo.sweep import job

    return job.end(study, trial_id, job.Part.of_seed(seed), completed, value, context)


# ------------------------------------------------------------------------------ readers
def seed_records(trial: FrozenTrial) -> list[dict[str, Any]]:
    """The ended seeds of a trial (index order), for reports, ``best`` and ``status``."""
    out = []
    for k, v in trial.user_attrs.items():
        if k.startswith(records.REPEAT_PREFIX) and k.count(":") == 1 and isinstance(v, dict):
            out.append({"index": int(k.split(":")[1]), **v})
    return sorted(out, key=lambda r: r["index"])


def spread(trial: FrozenTrial) -> str | None:
    """``0.48 .. 0.57 (sd 0.04, 3 seeds)``: the first objective's spread, None without seeds."""
    vals = [r["values"][0] for r in seed_records(trial) if r.get("values")]
    if not vals:
        return None
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{min(vals):.6g} .. {max(vals):.6g} (sd {sd:.3g}, {len(vals)} seeds)"
