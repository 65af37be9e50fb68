"""Read a running command's metrics incrementally: TensorBoard event files or a JSONL file.

Both readers are polled while the process runs and return the whole history seen so far as
``{metric name: {step: value}}``. A command that restarts writes a new ``exp_NNN`` directory;
the directories are merged in numeric order so that the later run wins for a step both logged.
Reading goes
through TensorBoard's ``EventFileLoader`` (its event-file reader, with TensorBoard's own
conversion of old- and new-style scalar summaries), never a hand-written record parser.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

History = dict[str, dict[int, float]]


class MetricsReader(Protocol):
    def read(self) -> History:
        """Everything seen so far (a fresh dict each call)."""
        ...


def _natural_key(path: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


class TensorBoardReader:
    """Scalars of ``tags`` (name -> tag) from every dir matching ``log_dir/subdir_glob``.

    One TensorBoard ``EventFileLoader`` per event file: each read continues where the previous
    one stopped, and a record still being written is picked up on the next read.
    """

    def __init__(self, log_dir: Path, tags: Mapping[str, str], subdir_glob: str) -> None:
        self.log_dir = Path(log_dir)
        self.tags = dict(tags)
        self._names_by_tag: dict[str, list[str]] = {}
        for name, tag in self.tags.items():
            self._names_by_tag.setdefault(tag, []).append(name)
        self.subdir_glob = subdir_glob
        self._loaders: dict[str, Any] = {}
        # per event file, what it holds so far: a later file overrides an earlier one per step
        self._per_file: dict[str, History] = {}

    def dirs(self) -> list[str]:
        pattern = str(self.log_dir / self.subdir_glob) if self.subdir_glob else str(self.log_dir)
        return sorted((d for d in glob.glob(pattern) if os.path.isdir(d)), key=_natural_key)

    def files(self) -> list[str]:
        out: list[str] = []
        for d in self.dirs():
            found = glob.glob(os.path.join(glob.escape(d), "*tfevents*"))
            out.extend(sorted(found, key=_natural_key))
        return out

    def read(self) -> History:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
        from tensorboard.util import tensor_util

        merged: History = {name: {} for name in self.tags}
        for path in self.files():
            loader = self._loaders.get(path)
            if loader is None:
                loader = self._loaders[path] = EventFileLoader(path)
                self._per_file[path] = {name: {} for name in self.tags}
            seen = self._per_file[path]
            try:
                for event in loader.Load():
                    for value in event.summary.value:
                        names = self._names_by_tag.get(value.tag)
                        if not names:
                            continue
                        if value.HasField("tensor"):
                            number = float(tensor_util.make_ndarray(value.tensor).item())
                        else:
                            number = float(value.simple_value)
                        for name in names:
                            seen[name][int(event.step)] = number
            except Exception as e:  # unreadable right now (being replaced?): next poll
                log.debug("could not read %s: %s", path, e)
            for name, series in seen.items():
                merged[name].update(series)
        return merged


class JsonlReader:
    """``{step_field: .., field: value}`` lines appended to ``path``; ``fields`` is name -> field.

    Only whole lines are consumed, so a line being written is read on the next poll. A step
    written twice (a restarted run) keeps the later value.
    """

    def __init__(self, path: Path, fields: Mapping[str, str], step_field: str) -> None:
        self.path = Path(path)
        self.fields = dict(fields)
        self.step_field = step_field
        self._offset = 0
        self._history: History = {name: {} for name in self.fields}

    def read(self) -> History:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return {k: dict(v) for k, v in self._history.items()}
        end = chunk.rfind(b"\n")
        if end >= 0:
            self._offset += end + 1
            for raw in chunk[: end + 1].splitlines():
                self._consume(raw)
        return {k: dict(v) for k, v in self._history.items()}

    def _consume(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            log.warning("%s: skipping a line that is not JSON: %r", self.path, raw[:200])
            return
        if not isinstance(row, dict) or self.step_field not in row:
            return
        try:
            step = int(row[self.step_field])
        except (TypeError, ValueError):
            return
        for name, field in self.fields.items():
            v = row.get(field)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self._history[name][step] = float(v)


def last_values(history: History) -> dict[str, float]:
    """The value at the highest step of every metric that has one (non-finite values kept)."""
    out: dict[str, float] = {}
    for name, series in history.items():
        if series:
            out[name] = series[max(series)]
    return out
