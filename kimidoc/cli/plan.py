"""``kimidoc plan``: will K2.6 run on this machine, where does each part go, and how fast can it decode?"""

from __future__ import annotations

import argparse
import json
from typing import Any

from kimidoc.cli.exits import EXIT_OK
from kimidoc.placement import DEFAULT_CONTEXT, Machine, inventory_from_config, machine_for, plan, read_config
from kimidoc.placement.plan import plan_for_checkpoint

GB = 1e9


def add_parser(sub: Any) -> None:
    p = sub.add_parser("plan", help="show where each part of the model would go on a machine, without loading weights")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--model",
        metavar="DIR",
        help="checkpoint folder (reads config.json and the shard headers only): "
        "prints the plan `kimidoc ask --model DIR` runs with the same flags",
    )
    src.add_argument(
        "--config", metavar="FILE", help="a config.json; default: the shipped Kimi K2.6 config", default="k2.6"
    )
    p.add_argument(
        "--gpu-memory",
        action="append",
        metavar="SIZE",
        help="per GPU, repeatable or NxSIZE (e.g. 24GiB, 8x141GB; default: free memory of each visible GPU)",
    )
    p.add_argument(
        "--cpu-memory", metavar="SIZE", help="RAM for weights (e.g. 768GiB; default: available RAM less a reserve)"
    )
    disk = p.add_mutually_exclusive_group()
    disk.add_argument(
        "--disk-cache",
        metavar="DIR",
        help="allow a disk tier for routed experts, kept converted in DIR (sized by its free space)",
    )
    disk.add_argument("--disk-memory", metavar="SIZE", help="allow a disk tier of this size")
    p.add_argument(
        "--context",
        type=int,
        default=DEFAULT_CONTEXT,
        help=f"tokens of latent cache to reserve (default {DEFAULT_CONTEXT})",
    )
    p.add_argument(
        "--shrink", choices=["int8", "nf4"], help="store attention / shared-expert / dense linears with bitsandbytes"
    )
    p.add_argument(
        "--quantize-experts",
        action="store_true",
        help="a BF16-only checkpoint whose routed experts are quantized to INT4 on load",
    )
    p.add_argument(
        "--int4-layout",
        choices=["checkpoint", "torch"],
        help="how RAM holds INT4 experts: the checkpoint's bytes (CPUs with AVX512-VNNI) or PyTorch's layout "
        "(a zero beside each scale, 10%% more); default: as this CPU does",
    )
    p.add_argument("--routing-stats", metavar="FILE", help="expert routing frequencies saved by a previous run")
    p.add_argument("--gpu-bandwidth", type=float, default=1.0e12, help="bytes/s per GPU (default 1e12; H200 ~4.8e12)")
    p.add_argument("--cpu-bandwidth", type=float, help="bytes/s of RAM reads (default: measured on this machine)")
    p.add_argument("--disk-bandwidth", type=float, default=3.0e9, help="bytes/s of disk reads (default 3e9, NVMe)")
    p.add_argument("--json", action="store_true", help="print the plan summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kimidoc.placement.bandwidth import measure_read_bandwidth
    from kimidoc.placement.stats import load_routing_stats

    measured = args.cpu_bandwidth is None
    machine = machine_for(args.gpu_memory, args.cpu_memory, args.disk_cache, args.disk_memory)
    machine.gpu_bandwidth = args.gpu_bandwidth
    machine.cpu_bandwidth = measure_read_bandwidth() if measured else args.cpu_bandwidth
    machine.disk_bandwidth = args.disk_bandwidth
    if args.int4_layout:
        machine.int4_native = args.int4_layout == "checkpoint"
    freq = load_routing_stats(args.routing_stats) if args.routing_stats else None
    options = dict(context=args.context, shrink=args.shrink, expert_freq=freq, quantize_experts=args.quantize_experts)
    if args.model:  # exactly what LocalKimi / load_placed will run (vision parts included)
        p = plan_for_checkpoint(args.model, machine, vision=True, **options)
    else:
        config = read_config(args.config)
        p = plan(config, inventory_from_config(config), machine, **options)
    summary = p.summary()
    summary["cpu_bandwidth"] = machine.cpu_bandwidth
    summary["cpu_bandwidth_measured_here"] = measured
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    print(plan_table(summary, machine))
    return EXIT_OK


def plan_table(s: dict[str, Any], machine: Machine) -> str:
    from rich.console import Console
    from rich.table import Table

    devices = sorted(
        {d for part in s["bytes_by_part"].values() for d in part}, key=lambda d: (d == "disk", d == "cpu", d)
    )
    table = Table(title="Where each part goes (GB)")
    table.add_column("part")
    for d in devices:
        table.add_column(d, justify="right")
    table.add_column("total", justify="right")
    labels = {
        "routed_expert": "routed experts (INT4)",
        "attention": "MLA attention",
        "shared_expert": "shared experts + routers",
        "dense_mlp": "dense MLP (layer 0)",
        "lm_head": "lm_head + final norm",
        "embed": "embeddings",
        "vision": "MoonViT vision tower",
        "projector": "mm_projector",
    }
    for part, per in sorted(s["bytes_by_part"].items(), key=lambda kv: -sum(kv[1].values())):
        table.add_row(
            labels.get(part, part),
            *[f"{per.get(d, 0) / GB:,.2f}" if per.get(d) else "" for d in devices],
            f"{sum(per.values()) / GB:,.2f}",
        )
    console = Console(record=True, width=100)
    with console.capture() as cap:
        console.print(table)
        console.print(
            f"latent cache: {s['latent_cache_bytes_per_token']:,} bytes per token; "
            f"{s['latent_cache_bytes'] / GB:,.2f} GB at {s['context_tokens']:,} tokens on {', '.join(s['latent_cache_device'])}"
        )
        console.print(
            "routed experts by device: " + ", ".join(f"{d} {n:,}" for d, n in s["routed_experts_by_device"].items())
        )
        console.print(
            "INT4 experts: the checkpoint's bytes in RAM and on disk, PyTorch's layout on GPUs"
            if s["int4_native_in_ram"]
            else "INT4 experts: PyTorch's layout (a zero beside each scale) in RAM, on disk and on GPUs"
        )
        reads = ", ".join(f"{d} {b / GB:,.2f} GB" for d, b in s["bytes_read_per_token"].items())
        src = "measured here" if s["cpu_bandwidth_measured_here"] else "given"
        console.print(f"bytes read per decode token: {reads}")
        console.print(
            f"decode ceiling: {s['decode_tokens_per_s_ceiling']:,.2f} tokens/s (GPU {machine.gpu_bandwidth / GB:,.0f} GB/s, "
            f"RAM {machine.cpu_bandwidth / GB:,.1f} GB/s {src}, disk {machine.disk_bandwidth / GB:,.1f} GB/s)"
        )
        for w in s["warnings"]:
            console.print(f"[yellow]warning:[/yellow] {w}")
    return cap.get()
