import os
from collections.abc import Callable

import pytest

# Tests never draw progress bars and never reach a model hub.
os.environ.setdefault("KIMIDOC_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def scaled_deadline(seconds: float) -> float:
    """A deadline for something expected to finish: ``seconds`` on an idle machine, stretched by the
    run queue per core at the time of the call (a shared CI runner, a loaded laptop) and by
    ``KIMIDOC_TEST_TIME_SCALE`` (a slow machine). A passing test ends as soon as its condition
    holds, so the stretch costs nothing; tests that check a timeout fires keep their own short one."""
    per_core = os.getloadavg()[0] / (os.cpu_count() or 1) if hasattr(os, "getloadavg") else 1.0
    return seconds * max(1.0, per_core) * float(os.environ.get("KIMIDOC_TEST_TIME_SCALE", "1"))


@pytest.fixture(scope="session")
def scaled() -> Callable[[float], float]:
    return scaled_deadline
