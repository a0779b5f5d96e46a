"""Execution that follows a placement plan: experts in RAM and on the disk tier, on tiny checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from kimidoc.model import generate, load
from kimidoc.model.shards import CheckpointError
from kimidoc.placement import Machine, inventory_from_checkpoint, plan, read_config
from kimidoc.placement.plan import QUANTIZED_EXPERT_BYTES_PER_PARAM, resident_bytes
from kimidoc.placement.routing import collect_routing
from kimidoc.placement.runtime import HostEmbeddingLM, load_placed, main_device, placement_report
from kimidoc.placement.stats import load_routing_stats
from kimidoc.placement.tiered import ExpertCache, TieredExperts
from kimidoc.testing import tiny_text_config, write_checkpoint

REPO = Path(__file__).resolve().parents[2]
PROMPT = list(range(7, 31))


def _config(**kw):
    base = dict(
        vocab_size=1024,
        hidden_size=128,
        moe_intermediate_size=64,
        n_routed_experts=16,
        num_experts_per_tok=4,
        num_hidden_layers=3,
    )
    return tiny_text_config(**{**base, **kw})


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(
        tmp_path_factory.mktemp("offload") / "ckpt", config=_config(), text_only=True, num_shards=3, seed=3
    )


def _budget(path: Path, expert_share: float, context: int = 64) -> tuple[int, int]:
    """RAM for every non-expert part, the latent cache, the default disk-tier cache (2 x top-k
    experts) and ``expert_share`` of the experts; and the bytes of all experts (loaded)."""
    specs = inventory_from_checkpoint(path)
    cfg = read_config(path)
    dense = sum(s.nbytes for s in specs if s.kind != "routed_expert")
    expert_specs = [s for s in specs if s.kind == "routed_expert"]
    experts = sum(resident_bytes(s) for s in expert_specs)  # as loaded: the kernel's scale table included
    one = experts // len({(s.layer, s.expert) for s in expert_specs})
    latent = (cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"]) * 2 * cfg["num_hidden_layers"] * context
    return dense + latent + 2 * cfg["num_experts_per_tok"] * one + int(expert_share * experts), experts


def test_disk_tier_matches_all_in_ram_logits_and_tokens(ckpt):
    ram = load(ckpt, dtype=torch.float32, int4_compute_dtype=torch.float32)
    cpu, _ = _budget(ckpt, 0.25)
    tiered = load_placed(
        ckpt, Machine(cpu=cpu, disk=10**9), dtype=torch.float32, int4_compute_dtype=torch.float32, context=64
    )
    by_device = placement_report(tiered)["routed_experts_by_device"]
    assert by_device.get("disk", 0) > 0 and by_device.get("cpu", 0) > 0
    x = torch.tensor([PROMPT])
    assert torch.equal(ram(x), tiered(x))  # same kernels, same summation order: bit-identical
    expected = generate(ram, PROMPT, max_new_tokens=10)
    assert generate(tiered, PROMPT, max_new_tokens=10) == expected
    # The layout used when the embedding table stays in RAM beside a GPU (here both are the CPU).
    tiered.__class__ = HostEmbeddingLM
    assert tiered.device == tiered.model.norm.weight.device and generate(tiered, PROMPT, max_new_tokens=10) == expected
    cache = tiered.expert_cache
    assert cache.used <= cache.budget
    assert cache.misses > len(cache)  # the budget forced evictions, and evicted experts came back right


def test_disk_reads_ahead_and_converted_experts_change_nothing(ckpt, tmp_path):
    import threading

    class OneExpert(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.zeros(25))  # 100 bytes

    loads: list[tuple[int, str]] = []

    def loader(i):
        def load(_cache):
            loads.append((i, threading.current_thread().name))
            return OneExpert()

        return load

    cache = ExpertCache(budget=350, workers=2)
    wanted = [((0, i), loader(i)) for i in range(8)]
    cache.prefetch(wanted)
    for key, read in wanted:
        cache.get(key, read)
        assert cache.used <= cache.budget
    assert sorted(i for i, _ in loads) == list(range(8))  # each read exactly once
    assert any(name.startswith("kimidoc-disk-experts") for _, name in loads)  # read ahead, off the caller's thread
    assert (cache.misses, cache.hits) == (8, 0) and len(cache) <= 3
    cache.get((0, 7), loader(7))
    assert cache.hits == 1 and len(loads) == 8
    cache.close()

    # The runtime's answer depends neither on reading ahead nor on reading converted experts back.
    cpu, _ = _budget(ckpt, 0.25)
    x = torch.tensor([PROMPT])

    def placed(**kw):
        return load_placed(
            ckpt, Machine(cpu=cpu, disk=10**9), dtype=torch.float32, int4_compute_dtype=torch.float32, context=64, **kw
        )

    reference = placed(disk_workers=0)(x)
    assert torch.equal(placed(disk_workers=3)(x), reference)
    folder = tmp_path / "offload"
    first = placed(offload_folder=folder)
    assert torch.equal(first(x), reference)
    converted = sorted(folder.rglob("*.safetensors"))
    assert len(converted) == first.expert_cache.misses > 0  # one file per expert read, in kernel layout
    again = placed(offload_folder=folder)
    assert torch.equal(again(x), reference)
    assert sorted(folder.rglob("*.safetensors")) == converted
    assert (
        first.expert_cache.bytes_read > 0 and again.expert_cache.bytes_read == 0
    )  # no checkpoint reads the second time
    # Other load settings never read those files back.
    placed_bf16 = load_placed(ckpt, Machine(cpu=cpu, disk=10**9), context=64, offload_folder=folder)
    placed_bf16(x)
    assert len({f.parent for f in folder.rglob("*.safetensors")}) == 2


def test_every_expert_tensor_is_resident_once_or_a_disk_reference(ckpt):
    cpu, _ = _budget(ckpt, 0.5)
    model = load_placed(ckpt, Machine(cpu=cpu, disk=10**9), context=64)
    expert_names = {s.name for s in inventory_from_checkpoint(ckpt) if s.kind == "routed_expert"}
    resident, on_disk = set(), set()
    for bank in model.expert_banks():
        assert isinstance(bank, TieredExperts)
        prefix = f"model.layers.{bank.layer}.mlp.experts."
        sub_banks = sum(b.num_experts for b in bank.resident.values())
        assert sub_banks == sum(1 for d in bank.where.values() if d != "disk")  # memory only for resident experts
        for e, dev in bank.where.items():
            assert model.plan.units[f"layers.{bank.layer}.experts.{e}"] == dev
        for e, refs in bank.disk_refs.items():
            on_disk |= {name for _, name in refs.values()}
            assert all(name.startswith(f"{prefix}{e}.") for _, name in refs.values())
        for name in bank.checkpoint_slots(prefix):
            e = int(name[len(prefix) :].split(".")[0])
            if bank.where[e] != "disk":
                resident.add(name)
    assert resident.isdisjoint(on_disk)
    assert resident | on_disk == expert_names


def test_a_plan_counting_the_checkpoint_layout_is_refused_where_experts_are_converted(ckpt):
    from kimidoc.placement.plan import plan_for_checkpoint

    cpu, _ = _budget(ckpt, 1.0)
    native = plan_for_checkpoint(ckpt, Machine(cpu=cpu, int4_native=True), context=64)
    with pytest.raises(ValueError, match="int4_native=False"):  # float32 activations convert the experts
        load_placed(ckpt, native, int4_compute_dtype=torch.float32, context=64)
    # Given a Machine, the plan is made for the layout the run keeps.
    model = load_placed(ckpt, Machine(cpu=cpu), int4_compute_dtype=torch.float32, context=64)
    assert model.plan.machine.int4_native is False


def test_cache_budget_is_checked_and_disk_errors_name_the_tensor(ckpt, tmp_path):
    cpu, _ = _budget(ckpt, 0.0)
    with pytest.raises(ValueError, match="cache budget"):
        model = load_placed(ckpt, Machine(cpu=cpu + 100, disk=10**9), disk_cache_bytes=10, context=64)
        model(torch.tensor([PROMPT]))
    with pytest.raises(ValueError, match="positive byte budget"):
        ExpertCache(0)
    # A shard that vanishes after loading: the on-demand read names the file and the tensor.
    import shutil

    copy = shutil.copytree(ckpt, tmp_path / "copy")
    model = load_placed(copy, Machine(cpu=cpu, disk=10**9), context=64)
    bank = model.expert_banks()[0]
    path, name = next(iter(bank.disk_refs[next(iter(bank.disk_refs))].values()))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"truncated|tensor"):
        model(torch.tensor([PROMPT]))


def test_routing_statistics_feed_the_next_plan(ckpt, tmp_path):
    model = load(ckpt)
    with collect_routing(model) as stats:
        generate(model, PROMPT, max_new_tokens=6)
    tokens = len(PROMPT) + 5  # prefill, then one forward per new token but the last
    moe_layers = [1, 2]
    assert sorted(stats.tokens) == moe_layers and all(stats.tokens[layer] == tokens for layer in moe_layers)
    freq = stats.frequencies()
    for layer in moe_layers:
        assert sum(f for (lay, _), f in freq.items() if lay == layer) == pytest.approx(4.0)  # top-4 per token
    stats.save(tmp_path / "routing.json")
    assert load_routing_stats(tmp_path / "routing.json") == pytest.approx(freq)
    # Hooks are gone after the block.
    n = sum(stats.tokens.values())
    model(torch.tensor([PROMPT]))
    assert sum(stats.tokens.values()) == n
    # The next plan keeps the hottest experts of each layer in RAM, the rest on disk.
    cpu, _ = _budget(ckpt, 0.25)
    placed = load_placed(
        ckpt, Machine(cpu=cpu, disk=10**9), expert_freq=load_routing_stats(tmp_path / "routing.json"), context=64
    )
    ram = [
        (lay, e) for bank in placed.expert_banks() for e, d in bank.where.items() if d == "cpu" for lay in [bank.layer]
    ]
    disk = [(bank.layer, e) for bank in placed.expert_banks() for e, d in bank.where.items() if d == "disk"]
    assert ram and disk
    assert min(freq.get(k, 0.0) for k in ram) >= max(freq.get(k, 0.0) for k in disk)


def test_gpu_plans_are_refused_without_cuda_and_split_plans_are_named(ckpt):
    config = read_config(ckpt)
    specs = inventory_from_checkpoint(ckpt)
    gpu_plan = plan(config, specs, Machine(gpus=[4 * 2**30], cpu=10**9), context=64)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            load_placed(ckpt, gpu_plan)
    cpu, _ = _budget(ckpt, 0.0)
    split = plan(config, specs, Machine(cpu=cpu // 2, disk=10**9), context=64)
    with pytest.raises(NotImplementedError, match="several devices"):
        main_device(split)


_PROBE = textwrap.dedent(
    """
    import json, sys
    import torch
    import kimidoc.progress
    from kimidoc.model import generate, load
    from kimidoc.placement import Machine
    from kimidoc.placement.runtime import load_placed

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    torch.set_num_threads(1)
    path, mode, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.ones(8) @ torch.ones(8)
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    base = status("VmRSS:")
    model = load(path) if mode == "ram" else load_placed(path, Machine(cpu=budget, disk=10**12), context=64)
    tokens = generate(model, list(range(3, 40)), max_new_tokens=8)
    disk = sum(1 for b in model.expert_banks() for d in getattr(b, "where", {}).values() if d == "disk")
    print(json.dumps({"tokens": tokens, "peak": status("VmHWM:") - base, "disk_experts": disk}))
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset the RSS peak")
def test_ram_budget_below_the_weights_keeps_peak_rss_under_budget(tmp_path):
    cfg = _config(
        hidden_size=512,
        moe_intermediate_size=384,
        n_routed_experts=128,
        q_lora_rank=64,
        kv_lora_rank=64,
        num_hidden_layers=5,
    )
    path = write_checkpoint(tmp_path / "ckpt", config=cfg, text_only=True, num_shards=3, seed=5)
    budget, experts = _budget(path, 0.2)  # all non-expert parts + a fifth of the experts (cache included)
    weights = sum(s.nbytes for s in inventory_from_checkpoint(path) if s.kind != "routed_expert") + experts
    one = experts // (4 * 128)
    probe = tmp_path / "probe.py"
    probe.write_text(_PROBE)
    env = {**os.environ, "PYTHONPATH": str(REPO), "KIMIDOC_PROGRESS": "0"}
    results = {}
    for mode in ("ram", "tiered"):  # one at a time: their peaks must not squeeze each other
        proc = subprocess.run(
            [sys.executable, str(probe), str(path), mode, str(budget)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["tiered"]["tokens"] == results["ram"]["tokens"]
    assert results["ram"]["peak"] > weights  # the all-in-RAM run holds every weight...
    # ...and what it needs beyond them (activations, logits, allocator slack) any run needs. The
    # disk tier adds its own transit: prefill routes tokens to every expert of a layer, so up to one
    # layer's disk-tier experts pass through freshly read buffers the allocator may keep mapped.
    working = results["ram"]["peak"] - weights
    transit = results["tiered"]["disk_experts"] // 4 * one
    assert budget + working + transit < weights  # the bound could not hold every expert
    assert results["tiered"]["peak"] < budget + working + transit


def test_quantize_on_load_turns_bf16_experts_into_int4(tmp_path):
    from kimidoc.model import int4
    from kimidoc.model.moe import DenseExperts
    from kimidoc.placement.quantize import QuantizedOnLoad
    from kimidoc.testing import read_tensors

    path = write_checkpoint(tmp_path / "bf16", config=_config(), text_only=True, int4=False, seed=4)
    cpu, _ = _budget(path, 0.0)
    dense = load(path, dtype=torch.float32)
    assert isinstance(dense.model.layers[1].mlp.experts, DenseExperts)
    model = load_placed(
        path,
        Machine(cpu=cpu, disk=10**9),
        quantize_experts=True,
        dtype=torch.float32,
        int4_compute_dtype=torch.float32,
        context=64,
    )
    assert model.plan.quantize_experts and placement_report(model)["quantize_experts"]
    bf16_experts = sum(s.nbytes for s in inventory_from_checkpoint(path) if s.kind == "routed_expert")
    # INT4 values plus the kernel's bf16 (scale, zero) per group of 32: under a third of BF16
    assert sum(b for u, b in model.plan.unit_bytes.items() if ".experts." in u) == pytest.approx(
        bf16_experts / 2 * QUANTIZED_EXPERT_BYTES_PER_PARAM, rel=1e-3
    )
    assert QUANTIZED_EXPERT_BYTES_PER_PARAM / 2 < 1 / 3
    tensors = read_tensors(path)
    for bank in model.expert_banks():
        assert set(bank.where.values()) == {"cpu", "disk"}
        assert all(isinstance(b, QuantizedOnLoad) for b in bank.resident.values())
        for e in (
            next(e for e, d in bank.where.items() if d == "cpu"),
            next(e for e, d in bank.where.items() if d == "disk"),
        ):
            w = tensors[f"model.layers.{bank.layer}.mlp.experts.{e}.down_proj.weight"]
            q, scale = int4.quantize(w)
            expected = int4.dequantize(int4.pack(q), scale, tuple(w.shape))
            assert torch.equal(bank.expert_weights(e)["down_proj"].float(), expected)
    # The BF16 model with its experts replaced by their INT4 round trip computes the same logits.
    for bank in dense.expert_banks():
        for e in range(bank.num_experts):
            for view in bank.expert_weights(e).values():
                q, scale = int4.quantize(view)
                view.copy_(int4.dequantize(int4.pack(q), scale, tuple(view.shape)))
    x = torch.tensor([PROMPT])
    assert torch.allclose(model(x), dense(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="already INT4"):
        load_placed(
            write_checkpoint(tmp_path / "int4", config=_config(), text_only=True),
            Machine(cpu=10**9),
            quantize_experts=True,
        )


def _bnb_dequantized(bnb, lin: torch.nn.Module) -> torch.Tensor:
    """The float32 weight a bitsandbytes linear stands for (NF4 blocks or int8 rows with their scales)."""
    if isinstance(lin, bnb.nn.Linear4bit):
        return bnb.functional.dequantize_4bit(lin.weight.data, lin.weight.quant_state).float()
    scb = getattr(lin.weight, "SCB", None)
    scb = lin.state.SCB if scb is None else scb
    return lin.weight.data.float() * scb.float()[:, None] / 127


def test_shrink_swaps_attention_shared_and_dense_linears_for_bitsandbytes(ckpt, monkeypatch):
    from kimidoc.placement.shrink import shrink_linears, shrinkable_linears

    plain = load_placed(ckpt, Machine(cpu=10**9), dtype=torch.float32)
    names = shrinkable_linears(plain)
    assert "model.layers.0.mlp.down_proj" in names and "model.layers.1.mlp.shared_experts.up_proj" in names
    assert "model.layers.1.self_attn.o_proj" in names and not any(
        "kv_b_proj" in n or ".experts." in n.replace("shared_experts", "") for n in names
    )
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "bitsandbytes", None)
        with pytest.raises(ImportError, match=r"kimidoc\[bnb\]"):
            shrink_linears(plain, "nf4")
    bnb = pytest.importorskip("bitsandbytes")
    x = torch.tensor([PROMPT])
    for mode, cls in (("int8", bnb.nn.Linear8bitLt), ("nf4", bnb.nn.Linear4bit)):
        model = load_placed(ckpt, Machine(cpu=10**9), shrink=mode, dtype=torch.float32)
        assert model.plan.shrink == mode
        assert type(model.model.layers[1].self_attn.kv_b_proj) is type(plain.model.layers[1].self_attn.kv_b_proj)
        reference = load_placed(
            ckpt, Machine(cpu=10**9), dtype=torch.float32
        )  # the plain model, given the quantized weights
        for name in names:
            lin = model.get_submodule(name)
            assert isinstance(lin, cls), name
            deq = _bnb_dequantized(bnb, lin)
            w = plain.get_submodule(name).weight.float()
            # Round to nearest on each format's grid. int8 rows step absmax/127: |dW| <= absmax/254 (1%
            # for the float32 scale). NF4 picks codes for w/a (a: the block of 64's absmax) and stores a
            # itself quantized, as a' (the largest |value| the block dequantizes to): |dW| <= half the
            # codebook's widest gap (-1..-0.6962) times a, plus |a' - a|.
            if mode == "int8":
                assert ((deq - w).abs() <= w.abs().amax(1, keepdim=True) / 254 * 1.01).all(), name
            else:
                a = w.reshape(-1, 64).abs().amax(1, keepdim=True)
                stored = deq.reshape(-1, 64).abs().amax(1, keepdim=True)
                bound = (1 - 0.6961928) / 2 * a + (stored - a).abs() + 1e-6 * a
                assert ((deq - w).reshape(-1, 64).abs() <= bound).all(), name
            reference.get_submodule(name).weight.data.copy_(deq)
            # Each swapped linear computes x @ W_q^T up to what quantizing its input could add
            # (LLM.int8 kernels quantize activations row-wise to int8: |dx| <= max|x| / 254), plus
            # float32 rounding of a sum of in_features terms.
            hx = torch.randn(3, lin.in_features, generator=torch.Generator().manual_seed(1))
            exact = hx @ deq.t()
            bound = deq.abs().sum(1) * hx.abs().amax(1, keepdim=True) / 254 + lin.in_features * torch.finfo(
                torch.float32
            ).eps * (hx.abs() @ deq.abs().t())
            assert ((lin(hx).float() - exact).abs() <= bound).all(), name
        out = model(x)
        assert torch.isfinite(out).all()
        if mode == "nf4":  # a weight-only kernel: the whole model is the plain one with NF4 weights, to rounding
            ref = reference(x)
            assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
