"""Run a Hydra app under cProfile in *every* thread (our sweeper launches trials from a pool).

    python bench/_profile_run.py OUT.prof APP.py -m overrides...

cProfile alone sees only the main thread, where our loop mostly waits; here each new thread
starts its own profiler and all of them are merged into ``OUT.prof`` at exit.
"""

from __future__ import annotations

import cProfile
import pstats
import runpy
import sys
import threading
from types import FrameType
from typing import Any

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _start_in_thread(frame: FrameType, event: str, arg: Any) -> None:
    prof = cProfile.Profile()
    with _lock:
        _profiles.append(prof)
    prof.enable()  # replaces this bootstrap hook for the rest of the thread


def main() -> None:
    out, app, *args = sys.argv[1:]
    threading.setprofile(_start_in_thread)
    main_prof = cProfile.Profile()
    _profiles.append(main_prof)
    sys.argv = [app, *args]
    main_prof.enable()
    try:
        runpy.run_path(app, run_name="__main__")
    except SystemExit:
        pass
    finally:
        main_prof.disable()
        threading.setprofile(None)
        stats = pstats.Stats(main_prof)
        for p in _profiles[1:]:
            try:
                stats.add(p)
            except TypeError:  # a profiler that never recorded anything
                continue
        stats.dump_stats(out)


if __name__ == "__main__":
    main()
