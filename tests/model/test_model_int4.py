"""INT4: compressed-tensors packing, the dequantize reference, the kernel layout and kernels."""

from __future__ import annotations

import pytest
import torch

from kimidoc.model import int4
from kimidoc.model.moe import DenseExperts, Int4Experts


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_pack_matches_compressed_tensors_nibble_order():
    # Column 8k+j sits in nibble j (least significant first), stored as q + 8.
    q = torch.tensor([[-8, -7, -1, 0, 1, 2, 6, 7]], dtype=torch.int8)
    expected = sum((v + 8) << (4 * j) for j, v in enumerate(q[0].tolist()))
    expected -= 2**32  # top nibble 15 -> negative as int32
    assert int4.pack(q).tolist() == [[expected]]
    assert int4.pack(q).dtype == torch.int32


def test_unpack_inverts_pack_over_the_full_range():
    q = torch.randint(-8, 8, (16, 64), generator=_gen(0), dtype=torch.int8)
    packed = int4.pack(q)
    assert packed.shape == (16, 8)
    assert torch.equal(int4.unpack(packed, 64), q.int() + 8)
    assert torch.equal(int4.unpack_u8(packed), (q.int() + 8).to(torch.uint8))


def test_quantize_then_dequantize_is_close_and_exact_on_the_grid():
    w = torch.randn(32, 128, generator=_gen(1))
    q, scale = int4.quantize(w)
    assert q.min() >= -7 and q.max() <= 7 and scale.dtype == torch.bfloat16 and scale.shape == (32, 4)
    deq = int4.dequantize(int4.pack(q), scale, (32, 128))
    # Error is at most half a step of each group's scale.
    step = scale.float().repeat_interleave(32, dim=1)
    assert ((deq - w).abs() <= step / 2 + 1e-6).all()
    # Values already on the grid survive exactly.
    assert torch.equal(int4.dequantize(int4.pack(q), scale, (32, 128)), q.float() * step)


def test_fast_cpu_layout_equals_the_aten_converter():
    for shape in [(64, 128), (96, 64), (256, 512)]:
        u = torch.randint(0, 16, shape, generator=_gen(2), dtype=torch.int32)
        expected = torch.ops.aten._convert_weight_to_int4pack_for_cpu(u, 1)
        assert torch.equal(int4.to_kernel_layout(u.to(torch.uint8)), expected)


# The three expert projections of a small K2-shaped expert: gate/up [width, hidden], down [hidden, width].
HIDDEN, WIDTH = 256, 128
PROJECTIONS = {"gate_proj": (WIDTH, HIDDEN), "up_proj": (WIDTH, HIDDEN), "down_proj": (HIDDEN, WIDTH)}


@pytest.mark.parametrize("proj", sorted(PROJECTIONS))
@pytest.mark.parametrize("m", [1, 7, 64])
@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16])
def test_int4_kernel_equals_dequantize_reference(proj, m, compute_dtype):
    out_f, in_f = PROJECTIONS[proj]
    g = _gen(hash((proj, m)) % 1000)
    q = torch.randint(-8, 8, (out_f, in_f), generator=g, dtype=torch.int8)
    scale = (torch.rand(out_f, in_f // 32, generator=g) * 0.05 + 0.01).to(torch.bfloat16)
    packed = int4.PackedInt4(int4.pack(q), scale, (out_f, in_f))
    layer = int4.Int4Linear(packed, compute_dtype=compute_dtype)
    x = torch.randn(m, in_f, generator=g).to(compute_dtype)
    reference = x.float() @ packed.dequantize().t()
    got = layer(x).float()
    assert got.shape == (m, out_f)
    tol = 1e-4 if compute_dtype == torch.float32 else 2e-2 * reference.abs().max().item()
    assert (got - reference).abs().max().item() < tol


def _int4_bank(num_experts: int, seed: int, compute_dtype=torch.float32):
    """An Int4Experts filled through its checkpoint slots, plus the dequantized reference weights."""
    g = _gen(seed)
    bank = Int4Experts(num_experts, HIDDEN, WIDTH, compute_dtype=compute_dtype)
    reference = {}
    slots = bank.checkpoint_slots("experts.")
    for e in range(num_experts):
        for proj, (out_f, in_f) in PROJECTIONS.items():
            q, scale = int4.quantize(torch.randn(out_f, in_f, generator=g) * in_f**-0.5)
            base = f"experts.{e}.{proj}."
            slots[base + "weight_shape"].fill(torch.tensor([out_f, in_f], dtype=torch.int32))
            slots[base + "weight_packed"].fill(int4.pack(q))
            slots[base + "weight_scale"].fill(scale)
            reference[(e, proj)] = int4.dequantize(int4.pack(q), scale, (out_f, in_f))
    assert bank.unfinished() == []
    return bank, reference


def test_bank_weights_round_trip_through_kernel_layout():
    bank, reference = _int4_bank(3, seed=3)
    for e in range(3):
        for proj, w in bank.expert_weights(e).items():
            assert torch.allclose(w.float(), reference[(e, proj)], atol=1e-6), (e, proj)


def test_grouped_experts_equal_a_naive_loop_for_int4_and_dense():
    num_experts, k, tokens = 6, 3, 11
    bank, reference = _int4_bank(num_experts, seed=4)
    dense = DenseExperts(num_experts, HIDDEN, WIDTH)
    for e in range(num_experts):
        dense.gate_up.data[e] = torch.cat([reference[(e, "gate_proj")], reference[(e, "up_proj")]])
        dense.down.data[e] = reference[(e, "down_proj")]
    g = _gen(5)
    x = torch.randn(tokens, HIDDEN, generator=g)
    idx = torch.stack([torch.randperm(num_experts, generator=g)[:k] for _ in range(tokens)])
    w = torch.rand(tokens, k, generator=g)
    expected = torch.zeros(tokens, HIDDEN)
    for t in range(tokens):
        for j in range(k):
            e = int(idx[t, j])
            h = torch.nn.functional.silu(x[t] @ reference[(e, "gate_proj")].t()) * (
                x[t] @ reference[(e, "up_proj")].t()
            )
            expected[t] += w[t, j] * (h @ reference[(e, "down_proj")].t())
    assert torch.allclose(bank(x, idx, w), expected, atol=1e-4)
    assert torch.allclose(dense(x, idx, w), expected, atol=1e-4)
    # One token takes each bank's decode path (experts' rows batched, then combined).
    for t in (0, 5):
        assert torch.allclose(bank(x[t : t + 1], idx[t : t + 1], w[t : t + 1]), expected[t : t + 1], atol=1e-4)
        assert torch.allclose(dense(x[t : t + 1], idx[t : t + 1], w[t : t + 1]), expected[t : t + 1], atol=1e-4)


def test_bank_runs_only_active_experts():
    bank, _ = _int4_bank(5, seed=6)
    calls = []
    original = bank.run_expert
    bank.run_expert = lambda e, x: calls.append(e) or original(e, x)
    idx = torch.tensor([[4, 1], [1, 4], [4, 1]])
    bank(torch.randn(3, HIDDEN), idx, torch.ones(3, 2))
    assert calls == [1, 4]


def test_weight_shape_mismatch_is_reported():
    bank = Int4Experts(1, HIDDEN, WIDTH)
    slot = bank.checkpoint_slots("layers.1.mlp.experts.")["layers.1.mlp.experts.0.down_proj.weight_shape"]
    with pytest.raises(ValueError, match="layers.1.mlp.experts.0.down_proj.weight_shape"):
        slot.fill(torch.tensor([WIDTH, HIDDEN], dtype=torch.int32))
