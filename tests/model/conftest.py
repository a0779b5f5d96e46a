import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # The tiny models here are latency-bound; on a shared 2-core machine a second OpenMP thread
    # mostly waits to be scheduled, making every small op milliseconds slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
