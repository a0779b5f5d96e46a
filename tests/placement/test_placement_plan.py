"""Placement plans on the full K2.6 config: no weights, every tensor placed once, budgets kept."""

import json
from collections import Counter
from dataclasses import replace

import pytest

from kimidoc.placement import DoesNotFit, Machine, inventory_from_config, parse_bytes, parse_gpus, plan
from kimidoc.placement.inventory import K26_CONFIG

CONFIG = json.loads(K26_CONFIG.read_text())
GiB = 1024**3


@pytest.fixture(scope="module")
def inventory():
    return inventory_from_config(CONFIG)


def test_inventory_matches_the_official_checkpoint(inventory):
    assert len(inventory) == 208_550  # the official K2.6 checkpoint's tensor count
    by_kind = Counter()
    for s in inventory:
        by_kind[s.kind] += s.nbytes
    assert by_kind["routed_expert"] == pytest.approx(570.76e9, rel=1e-3)
    text_bf16 = sum(b for k, b in by_kind.items() if k not in ("routed_expert", "vision", "projector"))
    assert text_bf16 == pytest.approx(23.44e9, rel=2e-3)
    params = sum(s.params for s in inventory if s.kind not in ("vision", "projector"))
    assert params == pytest.approx(1.026e12, rel=2e-3)
    packed = [s for s in inventory if s.name.endswith("experts.7.down_proj.weight_packed")]
    assert packed[0].shape == (7168, 2048 // 8) and packed[0].dtype == "I32"


# INT4 experts in RAM counted in PyTorch's layout (a CPU without the VNNI kernel), so that the
# figures do not depend on the CPU the tests run on; test_int4_native_layout_* covers the other.
MACHINES = {
    "1x24GB GPU + 768GB RAM": Machine(
        gpus=[parse_bytes("24GiB")],
        cpu=parse_bytes("768GiB"),
        gpu_bandwidth=1.0e12,
        cpu_bandwidth=2.0e11,
        int4_native=False,
    ),
    "8x H200": Machine(
        gpus=parse_gpus(["8x141GB"]), cpu=parse_bytes("512GiB"), gpu_bandwidth=4.8e12, int4_native=False
    ),
    "CPU only, 1TB RAM": Machine(cpu=parse_bytes("1TB"), int4_native=False),
    "256GB RAM + NVMe": Machine(cpu=parse_bytes("256GB"), disk=parse_bytes("2TB"), int4_native=False),
}


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("name", list(MACHINES))
def test_every_tensor_placed_once_within_budget(inventory, name, native):
    m = replace(MACHINES[name], int4_native=native)
    p = plan(CONFIG, inventory, m, context=32768)
    assert sorted(p.tensors) == sorted(s.name for s in inventory)  # each exactly once
    used = p.bytes_by_device()
    for i, cap in enumerate(m.gpus):
        assert used.get(i, 0) <= cap - m.gpu_reserve
    assert used.get("cpu", 0) <= m.cpu
    if m.disk is None:
        assert "disk" not in used
    else:
        assert used.get("disk", 0) <= m.disk
    # Loaded by PyTorch's kernel (on a GPU, or in RAM without the VNNI kernel), an INT4 expert's
    # bf16 scales sit in (scale, zero) pairs: twice their checkpoint bytes; weight_shape is only
    # checked, not kept.
    scales = sum(
        s.nbytes
        for s in inventory
        if s.kind == "routed_expert"
        and s.name.endswith(".weight_scale")
        and (not native or isinstance(p.tensors[s.name], int))
    )
    shapes = sum(s.nbytes for s in inventory if s.kind == "routed_expert" and s.name.endswith(".weight_shape"))
    assert sum(used.values()) == sum(s.nbytes for s in inventory) + scales - shapes + p.cache_bytes
    assert p.cache_bytes_per_token == 70_272
    assert p.decode_ceiling() > 0


def test_consumer_gpu_holds_what_every_token_reads(inventory):
    p = plan(CONFIG, inventory, MACHINES["1x24GB GPU + 768GB RAM"], context=32768)
    kinds = p.bytes_by_kind()
    for part in ("attention", "shared_expert", "dense_mlp"):
        assert set(kinds[part]) == {0}, part
    assert set(p.cache_device.values()) == {0}
    assert kinds["routed_expert"]["cpu"] > 500e9
    # ~34 GB read per token: ~21 GB BF16 from the GPU and ~13.2 GB INT4 experts from RAM (8 of 384
    # per layer at 0.5 + 4/32 bytes per weight: packed values plus the kernel's scale/zero table).
    reads = p.bytes_read_per_token()
    assert reads["cpu"] == pytest.approx(11.9e9 * (0.5 + 4 / 32) / (0.5 + 2 / 32), rel=0.02)
    assert sum(reads.values()) - p.cache_bytes == pytest.approx(
        21e9 + reads["cpu"], rel=0.03
    )  # weights one decode step reads
    assert 8 < p.decode_ceiling() < 16


def test_int4_native_layout_counts_the_checkpoint_bytes_in_ram_and_the_table_on_gpu(inventory):
    def stored(unit: str, suffix: str = "") -> int:  # an expert's checkpoint bytes (weight_shape is not kept)
        layer, expert = int(unit.split(".")[1]), int(unit.split(".")[3])
        return sum(
            s.nbytes
            for s in inventory
            if s.kind == "routed_expert"
            and (s.layer, s.expert) == (layer, expert)
            and s.name.endswith(suffix)
            and not s.name.endswith("weight_shape")
        )

    gpu_ram = replace(MACHINES["1x24GB GPU + 768GB RAM"], int4_native=True)
    freq = {(layer, e): (0.5 if e == 3 else 0.001) for layer in range(1, 61) for e in range(384)}
    p = plan(CONFIG, inventory, gpu_ram, context=4096, expert_freq=freq)
    assert p.machine.int4_native
    on_gpu = next(u for u, d in p.units.items() if ".experts." in u and d == 0)
    in_ram = next(u for u, d in p.units.items() if ".experts." in u and d == "cpu")
    assert p.unit_bytes[in_ram] == stored(in_ram)  # in RAM: the checkpoint's bytes
    assert p.unit_bytes[on_gpu] == stored(on_gpu) + stored(on_gpu, "weight_scale")  # on a GPU: the scale table
    # 8 of 384 experts a layer read from RAM: their checkpoint bytes (0.5 + 2/32 bytes a weight)
    assert plan(CONFIG, inventory, gpu_ram, context=32768).bytes_read_per_token()["cpu"] == pytest.approx(
        11.9e9, rel=0.02
    )
    # RAM holds the 10% smaller layout, so the same budget keeps more experts off the disk.
    in_ram_count = lambda p: sum(1 for u, d in p.units.items() if ".experts." in u and d == "cpu")  # noqa: E731
    nvme = MACHINES["256GB RAM + NVMe"]
    table = plan(CONFIG, inventory, nvme, context=8192)
    native = plan(CONFIG, inventory, replace(nvme, int4_native=True), context=8192)
    assert in_ram_count(native) > 1.08 * in_ram_count(table)


def test_multi_gpu_keeps_experts_next_to_their_layer(inventory):
    p = plan(CONFIG, inventory, MACHINES["8x H200"], context=32768)
    assert all(isinstance(d, int) for d in p.units.values())
    for unit, dev in p.units.items():
        if ".experts." in unit:
            assert dev == p.units[f"layers.{unit.split('.')[1]}.attention"]
    per_gpu = p.bytes_by_device()
    assert max(per_gpu.values()) < 1.25 * min(per_gpu.values())  # balanced slices


def test_ram_plus_disk_splits_experts_and_keeps_dense_in_ram(inventory):
    p = plan(CONFIG, inventory, MACHINES["256GB RAM + NVMe"], context=8192)
    kinds = p.bytes_by_kind()
    assert set(kinds["attention"]) == {"cpu"}
    assert set(kinds["routed_expert"]) == {"cpu", "disk"}
    # Without statistics each layer keeps the same number of RAM experts (within one).
    ram = Counter(int(u.split(".")[1]) for u, d in p.units.items() if ".experts." in u and d == "cpu")
    assert max(ram.values()) - min(ram.values()) <= 1


def test_routing_statistics_put_hot_experts_on_the_gpu(inventory):
    freq = {(layer, e): (0.5 if e in (3, 301) else 0.001) for layer in range(1, 61) for e in range(384)}
    p = plan(CONFIG, inventory, MACHINES["1x24GB GPU + 768GB RAM"], context=4096, expert_freq=freq)
    on_gpu = {u for u, d in p.units.items() if ".experts." in u and d == 0}
    assert on_gpu and all(u.endswith((".experts.3", ".experts.301")) for u in on_gpu)


def test_shrink_and_does_not_fit(inventory):
    small_gpu = Machine(gpus=[parse_bytes("16GiB")], cpu=parse_bytes("768GiB"))
    plain = plan(CONFIG, inventory, small_gpu, context=4096)
    nf4 = plan(CONFIG, inventory, small_gpu, context=4096, shrink="nf4")
    assert "cpu" in plain.bytes_by_kind()["attention"] or "cpu" in plain.bytes_by_kind()["shared_expert"]
    assert set(nf4.bytes_by_kind()["attention"]) == {0}
    # kv_b_proj (~1 GB over 61 layers) stays BF16 for absorbed decode; the rest shrinks ~3.6x.
    assert sum(nf4.bytes_by_kind()["attention"].values()) < 0.36 * sum(plain.bytes_by_kind()["attention"].values())
    with pytest.raises(DoesNotFit, match="fits nowhere"):
        plan(CONFIG, inventory, Machine(cpu=parse_bytes("128GB")), context=4096)
    with pytest.raises(ValueError, match="memory size"):
        parse_bytes("lots")
