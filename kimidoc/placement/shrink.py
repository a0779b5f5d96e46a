"""Shrinking BF16 parts with bitsandbytes so they fit a GPU: 8-bit (LLM.int8) or NF4 linears.

Chosen explicitly (``shrink="int8"`` / ``"nf4"`` in the plan): attention projections, shared
experts and the dense MLP become ``bnb.nn.Linear8bitLt`` / ``bnb.nn.Linear4bit``. ``kv_b_proj``
stays in its dtype because absorbed-MLA decode reads its weight matrix directly (it is ~8% of an
attention block). Each linear is quantized from a CPU copy as it moves to its device, so the GPU
never holds the BF16 weight.
"""

from __future__ import annotations

import torch
from torch import nn

from kimidoc.model.mla import MLAttention
from kimidoc.model.moe import SwiGLU

MODES = ("int8", "nf4")
# Read as a matrix by absorbed decode, not called as a linear.
_KEEP = ("kv_b_proj",)


def shrinkable_linears(model: nn.Module) -> list[str]:
    """Names of the linears a shrink replaces: attention (but ``kv_b_proj``), shared experts,
    dense MLP -- the parts the plan counts at bitsandbytes size."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, MLAttention):
            names += [
                f"{name}.{child}"
                for child, m in module.named_children()
                if isinstance(m, nn.Linear) and child not in _KEEP
            ]
        elif isinstance(module, SwiGLU):
            names += [f"{name}.{child}" for child, m in module.named_children() if isinstance(m, nn.Linear)]
    return names


def _require_bnb():
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ImportError("shrink='int8'/'nf4' needs bitsandbytes: pip install kimidoc[bnb]") from None
    return bnb


def bnb_linear(linear: nn.Linear, mode: str, device: torch.device) -> nn.Module:
    """A bitsandbytes copy of ``linear`` on ``device`` (quantized by bitsandbytes on the move)."""
    bnb = _require_bnb()
    weight = linear.weight.data.to("cpu")
    bias = linear.bias is not None
    if mode == "nf4":
        q = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=bias,
            compute_dtype=weight.dtype,
            quant_type="nf4",
            device="meta",
        )
        q.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
    elif mode == "int8":
        q = bnb.nn.Linear8bitLt(
            linear.in_features, linear.out_features, bias=bias, has_fp16_weights=False, device="meta"
        )
        q.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        raise ValueError(f"shrink must be one of {MODES}, got {mode!r}")
    if bias:
        q.bias = nn.Parameter(linear.bias.data.to("cpu"), requires_grad=False)
    return q.to(device)


def shrink_linears(model: nn.Module, mode: str, device: torch.device | str | None = None) -> list[str]:
    """Replace every :func:`shrinkable_linears` module in place; returns the names replaced.

    ``device`` is where the quantized linears go (default: where each one is now).
    """
    if mode not in MODES:
        raise ValueError(f"shrink must be one of {MODES}, got {mode!r}")
    _require_bnb()
    names = shrinkable_linears(model)
    for name in names:
        parent_name, child = name.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        old = getattr(parent, child)
        setattr(parent, child, bnb_linear(old, mode, torch.device(device) if device is not None else old.weight.device))
        del old
    return names
