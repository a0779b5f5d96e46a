import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from backends_fault_server import FaultServer  # noqa: E402


@pytest.fixture
def fault_server():
    with FaultServer() as server:
        yield server
