"""The run's trace: one JSON event per line, flushed as it happens, enough to replay the run.

The first line is a header (configuration, tool schemas, system prompt, task and the initial
messages); every later line is one event (``assistant``, ``tool_start``, ``tool_result``,
``feedback``, ``compaction``, ``resume``, ``stop``, ...). Every event reaches the file before the
agent acts on it (a turn with tool calls is flushed together with its calls' start events, before
any call runs; a tool result as soon as the call returns), and the file is fsynced at step
boundaries. A killed process loses at most the line it was writing: readers skip a torn last line
and writers cut it off before appending.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kimidoc.messages import Usage

TRACE_VERSION = 1

# Fields that differ between two runs doing the same work: when, how long, and whether a call was
# re-run after a crash. ``logical_events`` drops them to compare runs.
_INCIDENTAL = frozenset({"t", "duration", "rerun", "elapsed", "chain", "critical_seconds", "wall_seconds"})
# Events that record how a run went rather than what it did.
_BOOKKEEPING = frozenset({"tool_start", "resume", "retry"})


_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":")
)  # one encoder: json.dumps with options builds one per call


class TraceError(ValueError):
    """A trace that cannot be read or continued; the message names the file and line."""


class TraceWriter:
    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        self._failed = False

    def write(self, event: dict[str, Any], *, flush: bool = True) -> None:
        """Append one event; ``flush=False`` leaves it buffered until the next flushed write."""
        if self._failed:
            raise TraceError(f"{self.path}: an earlier write failed, so the trace takes no more events; resume from it")
        event.setdefault("t", time.time())
        line = _ENCODER.encode(event) + "\n"
        try:
            self._file.write(line)
            if flush:
                self._file.flush()
        except BaseException:
            # A partial line may be on disk: appending after it would corrupt the trace mid-file.
            self._failed = True
            raise

    def sync(self) -> None:
        """Flush, and with ``fsync`` make the events durable on disk (a step boundary)."""
        if not self._file.closed:
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()


def _cut_torn_tail(path: Path) -> None:
    """Drop a partial last line (a write cut short by a kill) so appended events start cleanly."""
    if not path.exists():
        return
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos = size
        while pos > 0:
            step = min(65536, pos)
            f.seek(pos - step)
            block = f.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                f.truncate(pos - step + nl + 1)
                return
            pos -= step
        f.truncate(0)


def iter_trace(path: str | Path) -> Iterator[dict[str, Any]]:
    """The events of a trace in order, skipping a torn last line."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file")
    with open(path, "rb") as f:
        lineno = 0
        for raw in f:
            lineno += 1
            if not raw.endswith(b"\n"):
                return  # a write cut short by a kill: the event never happened
            if not raw.strip():
                continue
            try:
                event = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise TraceError(f"{path}:{lineno}: corrupt trace line ({exc})") from exc
            if not isinstance(event, dict) or "type" not in event:
                raise TraceError(f"{path}:{lineno}: trace line is not an event object")
            if lineno == 1 and (event["type"] != "header" or event.get("version") != TRACE_VERSION):
                raise TraceError(
                    f"{path}:1: not a kimidoc trace of version {TRACE_VERSION} (first event {event['type']!r})"
                )
            yield event


def has_events(path: str | Path) -> bool:
    """Whether ``path`` holds at least one complete event (a run killed while writing its header has none)."""
    try:
        with open(path, "rb") as f:
            return f.readline().endswith(b"\n")
    except FileNotFoundError:
        return False


def read_trace(path: str | Path) -> list[dict[str, Any]]:
    return list(iter_trace(path))


def logical_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a run did, independent of timing and crashes: two runs doing the same work compare equal.

    Drops timestamps, durations, re-run marks and bookkeeping events; orders a step's tool
    results by call index (concurrent calls finish in any order); and keeps only the last stop
    (a run stopped by a budget and resumed with a larger one did the same work as one that was not).
    """
    out: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        out.extend(sorted(pending, key=lambda e: e["index"]))
        pending.clear()

    for event in events:
        if event["type"] in _BOOKKEEPING:
            continue
        clean = {k: v for k, v in event.items() if k not in _INCIDENTAL}
        if event["type"] == "tool_result":
            pending.append(clean)
            continue
        flush()
        out.append(clean)
    flush()
    stops = [i for i, e in enumerate(out) if e["type"] == "stop"]
    return [e for i, e in enumerate(out) if e["type"] != "stop" or i == stops[-1]]


def usage_to_dict(u: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "reasoning_tokens": u.reasoning_tokens,
    }


def usage_from_dict(d: dict[str, int] | None) -> Usage:
    return Usage(**d) if d else Usage()
