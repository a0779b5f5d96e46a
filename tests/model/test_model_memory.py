"""Loading keeps peak memory near the weights' own size (measured in a fresh subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import kimidoc
from kimidoc.testing import tiny_text_config, write_checkpoint

# A few hundred MB, mostly INT4 experts (vocab shrunk: the embedding is not what this measures).
BIG = dict(
    vocab_size=16000,
    hidden_size=1024,
    intermediate_size=2048,
    moe_intermediate_size=512,
    num_hidden_layers=4,
    n_routed_experts=64,
    num_experts_per_tok=8,
    num_attention_heads=8,
    q_lora_rank=256,
    kv_lora_rank=128,
    qk_nope_head_dim=64,
    qk_rope_head_dim=32,
    v_head_dim=64,
)

PROBE = textwrap.dedent(
    """
    import json, sys
    import torch
    import kimidoc.model.int4 as int4
    from kimidoc.model import load

    def status(field):
        # VmHWM is the high-water mark of this address space; unlike ru_maxrss it does not
        # start from the parent's RSS at fork time.
        line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    int4._cpu_block_size()  # warm the one-off layout probe before measuring
    before = status("VmRSS")
    model = load(sys.argv[1], dtype=torch.bfloat16)
    peak = status("VmHWM")
    # (packed BF16 weights are opaque oneDNN tensors, with no data pointer)
    tensors = {id(t) if t.is_mkldnn else t.data_ptr(): t for t in list(model.parameters()) + list(model.buffers())}
    weights = sum(t.numel() * t.element_size() for t in tensors.values())
    print(json.dumps({"before": before, "peak": peak, "weights": weights}))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc (Linux)")
def test_peak_rss_of_loading_grows_with_the_weights_not_twice_as_fast(tmp_path):
    # Loading costs the weights plus a fixed amount (imports, allocator arenas, one tensor in
    # flight), and that fixed amount differs between machines and library versions. Two
    # checkpoints alike but for their number of experts cancel it: between them the peak grows by
    # the extra weights when each tensor is read straight into place, and by twice that when a
    # shard is mapped or staged while its copy is made. The bound is the midpoint, 1.5x.
    root = str(Path(kimidoc.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    runs = []
    for experts in (32, 64):
        path = write_checkpoint(
            tmp_path / f"e{experts}",
            config=tiny_text_config(**{**BIG, "n_routed_experts": experts}),
            int4=True,
            num_shards=4,
        )
        out = subprocess.run(
            [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, env=env, check=False
        )
        assert out.returncode == 0, out.stderr
        m = json.loads(out.stdout.strip().splitlines()[-1])
        m["on_disk"] = sum(f.stat().st_size for f in path.glob("*.safetensors"))
        assert m["weights"] > 0.9 * m["on_disk"], m  # the model really holds the checkpoint
        runs.append(m)
    small, large = runs
    assert large["on_disk"] > 180e6
    grown = (large["peak"] - large["before"]) - (small["peak"] - small["before"])
    assert grown < 1.5 * (large["weights"] - small["weights"]), runs
