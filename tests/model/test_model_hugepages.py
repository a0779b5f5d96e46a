"""Weights in RAM on 2 MB pages: aligned storage of their own, resident at their size, freed with the
tensor, and the plain allocator where huge pages are off."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

from kimidoc.model import hugepages, load
from kimidoc.testing import tiny_text_config, write_checkpoint

needs_thp = pytest.mark.skipif(not hugepages.available(), reason="no transparent huge pages here (Linux, not 'never')")
MAPS = Path("/proc/self/smaps")


def _mapping(address: int) -> dict[str, int] | None:
    """The kB fields of the mapping of this process that holds ``address`` (None: unmapped)."""
    fields = None
    for line in MAPS.read_text().splitlines():
        head = line.split()
        if not head[0].endswith(":"):  # a mapping's first line: "lo-hi perms offset dev inode [path]"
            if fields is not None:
                break
            lo, hi = (int(v, 16) for v in head[0].split("-"))
            if lo <= address < hi:
                fields = {"size": (hi - lo) // 1024}
        elif fields is not None and head[-1] == "kB":
            fields[head[0][:-1]] = int(head[1])
    return fields


@needs_thp
def test_large_tensor_gets_aligned_storage_resident_at_its_size_and_freed_with_it():
    nbytes = 5 * 2**20  # two whole 2 MB blocks and a 1 MB tail
    t = hugepages.empty((nbytes // 4,), torch.float32)
    assert t.shape == (nbytes // 4,) and t.dtype == torch.float32 and t.is_contiguous()
    assert t.data_ptr() % hugepages.HUGE == 0
    t.fill_(1.5)
    view = t[1000:2000]
    fields = _mapping(t.data_ptr())
    # Resident: the tensor's pages, the tail on 4 KB pages (not a third 2 MB block).
    assert fields["Rss"] * 1024 <= nbytes + 4096
    assert fields.get("AnonHugePages", 0) * 1024 <= 2 * hugepages.HUGE
    address = t.data_ptr()
    del t
    gc.collect()
    assert _mapping(address) is not None and view.sum().item() == 1500.0  # a view keeps it alive
    del view
    gc.collect()
    assert _mapping(address) is None


def test_small_tensors_and_switched_off_huge_pages_use_the_plain_allocator(monkeypatch):
    small = hugepages.empty((3, 5), torch.bfloat16)
    assert small.shape == (3, 5) and small.dtype == torch.bfloat16
    hugepages.available.cache_clear()
    try:
        monkeypatch.setenv("KIMIDOC_HUGEPAGES", "0")
        assert not hugepages.available()
        big = hugepages.empty((2**20,), torch.float32)
        fields = _mapping(big.data_ptr())
        assert fields is None or fields["size"] * 1024 != 4 * 2**20 + hugepages.HUGE  # not a mapping of its own
    finally:
        monkeypatch.delenv("KIMIDOC_HUGEPAGES")
        hugepages.available.cache_clear()


@needs_thp
def test_loaded_weights_of_two_megabytes_and_more_sit_on_aligned_storage(tmp_path):
    cfg = tiny_text_config(vocab_size=20000, num_hidden_layers=1)  # a 5 MB float32 embedding table
    path = write_checkpoint(tmp_path / "ckpt", config=cfg, text_only=True)
    model = load(path, dtype=torch.float32, pack=False)
    table = model.model.embed_tokens.weight
    assert table.numel() * 4 >= hugepages.HUGE and table.data_ptr() % hugepages.HUGE == 0
    assert torch.equal(table, load(path, dtype=torch.float32, pack=False).model.embed_tokens.weight)
