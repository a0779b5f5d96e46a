"""Progress bars for long work (loading shards, ingesting pages, agent steps).

One place decides whether to draw: bars go to stderr, only when it is a terminal or when
``KIMIDOC_PROGRESS=1``; ``KIMIDOC_PROGRESS=0`` silences them everywhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def enabled() -> bool:
    flag = os.environ.get("KIMIDOC_PROGRESS")
    if flag is not None:
        return flag not in ("0", "", "false", "no")
    return sys.stderr.isatty()


def progress(
    iterable: Iterable[T] | None = None, *, desc: str, total: int | None = None, unit: str = "it", **kw: Any
) -> Any:
    """A tqdm bar (disabled when progress is off); use as an iterable wrapper or context manager."""
    return tqdm(
        iterable, desc=desc, total=total, unit=unit, disable=not enabled(), file=sys.stderr, dynamic_ncols=True, **kw
    )
