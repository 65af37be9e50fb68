"""An outage of a service every caller shares: when it began, said once, given up once.

The study storage (``sweep/retrying.py``: a database restart) and the Slurm controller
(``slurm.py``: a slurmctld restart) go away the same way: many threads see the failure at once,
the user should read one line when it starts and one when it ends, and every caller waits with
the same doubling back-off up to one limit. This class is that bookkeeping; each service
decides what counts as "away" and what to do while waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator


class Outage:
    """The state of one service's outage, shared by every thread that calls it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.since: float | None = None  # monotonic time of the first failed call
        self.gave_up = False
        self.back_at = 0.0  # wall time the service last came back (0: never away)

    def down(self) -> tuple[bool, float]:
        """Note a failed call: (whether it began the outage, seconds it has lasted)."""
        now = time.monotonic()
        with self.lock:
            first = self.since is None
            if self.since is None:
                self.since = now
            return first, now - self.since

    def up(self) -> float | None:
        """Note a successful call: seconds the service was away, None when it was not."""
        if self.since is None:
            return None
        with self.lock:
            if self.since is None:
                return None
            away = time.monotonic() - self.since
            self.since = None
            self.gave_up = False
            self.back_at = time.time()
        return away


def backoff(first_s: float = 0.5, max_s: float = 5.0) -> Iterator[float]:
    """Waits between attempts: doubling from ``first_s`` up to ``max_s``, forever."""
    delay = first_s
    while True:
        yield delay
        delay = min(2 * delay, max_s)
