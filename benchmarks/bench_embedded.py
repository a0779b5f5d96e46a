"""The embedded default's speed on this machine: load, prefill, decode, one ``ask``-sized call.

1. Load, in fresh processes sharing an empty cache folder: the first dequantises the GGUF (and
   writes the safetensors cache), the second reads the cache. Timed to the end of a first forward
   pass (memory-mapped weights are read then), imports included.
2. Prefill and decode tokens/s of the transformers engine, side by side in one process on the same
   prompt: the engine's own path (chunked prefill, last-row logits, KV cache grown in place) vs the
   previous one (one prefill pass with every row's logits, ``DynamicCache`` grown by ``torch.cat``),
   in float32 and bfloat16.
3. One call shaped like ``kimidoc ask``: a prompt of ``--prompt`` tokens and an answer of up to
   ``--tokens`` tokens, end to end through :class:`Embedded`, then ``choose`` among 5 options.

The machine is shared: read the ratios within one run, and the load average printed with them.

    python3 benchmarks/bench_embedded.py [--prompt 1300] [--tokens 64] [--skip-load]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_LOAD_CHILD = """
import time
start = time.perf_counter()
import torch
from kimidoc.backends.embedded.engines import TransformersEngine
from kimidoc.backends.embedded.model import locate
engine = TransformersEngine(locate())
with torch.inference_mode():
    engine.model(input_ids=torch.tensor([engine.tokenize("Hello")]))
print(engine.loaded_from, time.perf_counter() - start)
"""


def load_avg() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


def bench_load() -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "KIMIDOC_CACHE_DIR": cache, "PYTHONPATH": str(ROOT), "KIMIDOC_PROGRESS": "0"}
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, "-c", _LOAD_CHILD], env=env, capture_output=True, text=True, check=True
            )
            source, seconds = out.stdout.split()
            print(
                f"[load] from {source:5s}: {float(seconds):6.1f} s to a first forward pass, imports included ({load_avg()})",
                flush=True,
            )


def _prompt_ids(engine, n: int) -> list[int]:
    text = "The Zorblat river is 42 km long and flows into Lake Mirren; it freezes every January. "
    ids = engine.tokenize(text * (n // 10 + 1))
    return ids[:n]


def bench_speed(prompt_tokens: int, tokens: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache
    from transformers.cache_utils import Cache

    from kimidoc.backends.embedded.engines import PREFILL_CHUNK, TransformersEngine, _growing_layer, weights_cache_dir
    from kimidoc.backends.embedded.model import locate

    engine = TransformersEngine(locate())
    ids = _prompt_ids(engine, prompt_tokens)
    # A second copy read from the weights cache (the engine's own model carries its cancellation hooks).
    bf16 = AutoModelForCausalLM.from_pretrained(str(weights_cache_dir(locate())), dtype=torch.bfloat16).eval()
    models = {"float32": engine.model, "bfloat16": bf16}
    kw = engine._cache_kw

    def run(model, new: bool) -> tuple[float, float]:
        with torch.inference_mode():
            start = time.perf_counter()
            if new:
                cache = Cache(layer_class_to_replicate=_growing_layer())
                for i in range(0, len(ids), PREFILL_CHUNK):
                    logits = model(
                        input_ids=torch.tensor([ids[i : i + PREFILL_CHUNK]]), logits_to_keep=1, **{kw: cache}
                    ).logits
            else:
                cache = DynamicCache()
                logits = model(input_ids=torch.tensor([ids]), **{kw: cache}).logits
            prefill = time.perf_counter() - start
            token = int(logits[0, -1].argmax())
            start = time.perf_counter()
            for _ in range(tokens):
                token = int(model(input_ids=torch.tensor([[token]]), **{kw: cache}).logits[0, -1].argmax())
            return len(ids) / prefill, tokens / (time.perf_counter() - start)

    run(models["float32"], True)  # warm-up: first touch of the memory-mapped weights
    rows = {}
    for dtype, model in models.items():
        for new in (True, False):
            rows[dtype, new] = run(model, new)
            name = "engine (chunked, grown in place)" if new else "before (one pass, torch.cat)"
            print(
                f"[speed] {dtype:8s} {name:34s} prefill {rows[dtype, new][0]:7.1f} tok/s   decode {rows[dtype, new][1]:6.2f} tok/s   ({len(ids)}-token prompt, {load_avg()})",
                flush=True,
            )
    new, old = rows["float32", True], rows["float32", False]
    print(
        f"[speed] float32 engine vs before: prefill {new[0] / old[0]:.2f}x, decode {new[1] / old[1]:.2f}x;  bfloat16 vs float32 (engine): prefill {rows['bfloat16', True][0] / new[0]:.2f}x, decode {rows['bfloat16', True][1] / new[1]:.2f}x"
    )


def bench_ask(prompt_tokens: int, tokens: int) -> None:
    from kimidoc.backends.embedded import Embedded

    backend = Embedded(engine="transformers")
    engine = backend.engine
    words = engine.tokenizer.decode(_prompt_ids(engine, prompt_tokens - 60))
    question = [
        {"role": "system", "content": "Answer from the passages, quoting the figure."},
        {"role": "user", "content": f"Passages:\n{words}\n\nQuestion: How long is the Zorblat river?"},
    ]
    start = time.perf_counter()
    msg = backend.complete(question, temperature=0, max_tokens=tokens)
    took = time.perf_counter() - start
    print(
        f"[ask] {msg.usage.prompt_tokens}-token prompt, {msg.usage.completion_tokens}-token answer: {took:5.1f} s ({load_avg()}) -> {msg.content[:60]!r}",
        flush=True,
    )
    start = time.perf_counter()
    scores = backend.choose(question, ["1", "2", "3", "4", "5"])
    print(
        f"[ask] choose among 5 options after it (prompt cached): {time.perf_counter() - start:5.2f} s; best {scores.index(max(scores)) + 1}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", type=int, default=1300)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--skip-load", action="store_true")
    args = ap.parse_args()
    if not args.skip_load:
        bench_load()
    bench_speed(args.prompt, args.tokens)
    bench_ask(args.prompt, args.tokens)


if __name__ == "__main__":
    main()
