"""Two ways to run the embedded GGUF model: llama.cpp (fast, grammar-constrained) or transformers.

Both expose the same small surface to :class:`~kimidoc.backends.embedded.Embedded`: the
special tokens, ``tokenize``, ``generate``, which yields ``(text, finish_reason)`` once per
generated token (``finish_reason`` is set on the last item only) and returns early once its
``cancel`` event is set, and ``score`` (log-probabilities of continuations). Neither is
thread-safe; the backend serialises calls.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import inspect
import json
import os
import re
import shutil
import tempfile
import threading
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Step = tuple[str, "str | None"]

# A 135M model loops on its own phrases without this; 1.1 over the last 64 tokens is llama.cpp's
# usual setting, applied by both engines so they sample alike.
REPEAT_PENALTY = 1.1
REPEAT_WINDOW = 64
# Prompt tokens per forward pass, which bounds the attention scores of a long prompt that extends a
# cached one; a prompt split in chunks prefills slower here (1.6x at 384), so chunks are large and a
# cancellation is seen between decoder layers instead (see ``TransformersEngine._check_cancel``).
PREFILL_CHUNK = 1024


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


class LlamaCppEngine:
    """llama-cpp-python over the GGUF file; tool calls are constrained by a JSON-schema grammar."""

    name = "llama.cpp"
    constrains_json = True

    def __init__(self, gguf: Path, *, threads: int | None = None, n_ctx: int | None = None) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(gguf), n_ctx=n_ctx or 0, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        # Free the model while the interpreter is still whole: llama-cpp-python's own finaliser
        # fails (and prints a traceback) when it runs during interpreter shutdown.
        weakref.finalize(self, self.llm.close)
        self.context_window = int(self.llm.n_ctx())
        self.bos_token = self._piece(self.llm.token_bos())
        self.eos_token = self._piece(self.llm.token_eos())
        self._stop_ids = {self.llm.token_eos(), *self.tokenize("<|im_end|>")[-1:]}

    def _piece(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) if text else []

    def generate(
        self,
        prompt_ids: list[int],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        seed: int | None,
        grammar: str | None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Step]:
        from llama_cpp import LlamaGrammar

        if seed is not None:
            self.llm.set_seed(seed)
        constrained = LlamaGrammar.from_string(grammar, verbose=False) if grammar else None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        n = 0
        for token in self.llm.generate(
            prompt_ids,
            top_k=top_k,
            top_p=top_p,
            min_p=0.0,
            temp=temperature,
            repeat_penalty=REPEAT_PENALTY,
            grammar=constrained,
        ):
            if token in self._stop_ids:
                yield decoder.decode(b"", final=True), "stop"
                return
            n += 1
            text = decoder.decode(self.llm.detokenize([token]))
            if n >= max_tokens:
                yield text + decoder.decode(b"", final=True), "length"
                return
            yield text, None
            if cancel is not None and cancel.is_set():
                return
        yield decoder.decode(b"", final=True), "stop"

    def score(self, prefix_ids: list[int], options: list[list[int]]) -> list[float]:
        """As :meth:`TransformersEngine.score`. Tokens are evaluated one at a time, since llama.cpp
        keeps only the last position's logits unless the model was opened with ``logits_all``."""
        import numpy as np

        def logprobs() -> Any:
            row = np.asarray(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float64)
            return row - (row.max() + np.log(np.exp(row - row.max()).sum()))

        self.llm.reset()
        self.llm.eval(prefix_ids)
        first = logprobs()
        scores = []
        for option in options:
            if not option:
                raise ValueError("an option has no tokens")
            total = float(first[option[0]])
            for prev, token in zip(option, option[1:]):
                self.llm.eval([prev])
                total += float(logprobs()[token])
            self.llm.n_tokens = len(prefix_ids)  # rewind to the shared prefix
            scores.append(total)
        return scores


def tool_grammar(call_schema: dict[str, Any], *, forced: bool) -> str:
    """GBNF for a reply: forced, exactly one call object; else free text or a ``<tool_call>`` block.

    Free text may not start with ``<``, so a reply that opens a tool call must finish it as JSON
    that fits the declared schemas.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    rules = json_schema_to_gbnf(json.dumps(call_schema))
    if forced:
        return rules
    rules = re.sub(r"^root ::=", "kd-call ::=", rules, flags=re.M)
    return (
        "root ::= kd-calls | kd-text\n"
        'kd-calls ::= "<tool_call>" [ \\n]* "[" [ \\n]* kd-call ([ \\n]* "," [ \\n]* kd-call)* [ \\n]* "]" [ \\n]* "</tool_call>"\n'
        "kd-text ::= [^<] [^\\x00]*\n" + rules
    )


class TransformersEngine:
    """transformers over the GGUF's float32 dequantisation, greedy or sampled.

    Dequantising the GGUF takes tens of seconds, so the first load writes the result (weights as
    safetensors, config, tokenizer) to a cache directory (:func:`weights_cache_dir`) and later
    loads memory-map it in about a second. The KV cache of the last prompt is kept, so a call
    whose prompt extends the previous one (the next agent step, a :meth:`score` after a reply)
    only prefills the new tokens.
    """

    name = "transformers"
    constrains_json = False

    def __init__(self, gguf: Path, *, n_ctx: int | None = None, cache_dir: Path | None = None) -> None:
        import torch

        self.torch = torch
        self.tokenizer, self.model, self.loaded_from = _load_transformers(
            gguf, weights_cache_dir(gguf) if cache_dir is None else cache_dir
        )
        self.context_window = int(n_ctx or getattr(self.model.config, "max_position_embeddings", 8192))
        self.bos_token = self.tokenizer.bos_token or ""
        self.eos_token = self.tokenizer.eos_token or ""
        # transformers renamed ``past_key_values`` to ``cache`` (5.2x); use whichever this version takes.
        self._cache_kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self._im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self._stop_ids = {i for i in (self.tokenizer.eos_token_id, self._im_end) if isinstance(i, int) and i >= 0}
        self._kv: Any = None
        self._kv_ids: list[int] = []  # the tokens whose keys and values ``_kv`` holds, in order
        self._cancel: threading.Event | None = None  # the running generation's, checked before every layer
        for layer in self.model.model.layers:
            layer.register_forward_pre_hook(self._check_cancel)

    def _check_cancel(self, module: Any, args: Any) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise _Cancelled  # the half-updated KV cache is dropped by ``_forward``

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _prefill(self, ids: list[int], cancel: threading.Event | None) -> Any:
        """Logits after ``ids`` (a non-empty list), reusing the kept KV cache for their longest
        shared prefix; None when ``cancel`` was set before the end."""
        from transformers.cache_utils import Cache

        shared = common_prefix(self._kv_ids, ids[:-1])  # at least one token must run to get logits
        if self._kv is None or shared == 0:
            self._kv, self._kv_ids = Cache(layer_class_to_replicate=_growing_layer()), []
        elif shared < len(self._kv_ids):
            self._kv.crop(shared - len(self._kv_ids))
            del self._kv_ids[shared:]
        logits = None
        self._cancel = cancel
        try:
            for start in range(shared, len(ids), PREFILL_CHUNK):
                logits = self._forward(ids[start : start + PREFILL_CHUNK], last_only=True)
        except _Cancelled:
            return None
        finally:
            self._cancel = None
        return logits

    def _forward(self, ids: list[int], *, last_only: bool = False) -> Any:
        """Run ``ids`` after the kept cache; their logits, one row per token (only the last row
        with ``last_only``: the vocabulary projection of a whole prompt costs a quarter of its prefill)."""
        torch = self.torch
        # Appended before the call: if it raises, the cache is dropped as a whole on the next use.
        self._kv_ids.extend(ids)
        try:
            out = self.model(
                input_ids=torch.tensor([ids]),
                use_cache=True,
                logits_to_keep=1 if last_only else 0,
                **{self._cache_kw: self._kv},
            )
        except BaseException:
            self._kv, self._kv_ids = None, []
            raise
        return out.logits[0].float()

    def generate(
        self,
        prompt_ids: list[int],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        seed: int | None,
        grammar: str | None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Step]:
        """Tokens after ``prompt_ids``; stops quietly, before the next forward pass, once
        ``cancel`` is set."""
        torch = self.torch
        gen = torch.Generator()
        if seed is not None:
            gen.manual_seed(seed)
        else:
            gen.seed()
        out: list[int] = []
        shown = 0
        with torch.inference_mode():
            logits = self._prefill(prompt_ids, cancel)
            while logits is not None:
                last = _penalize_repeats(torch, logits[-1], (prompt_ids + out)[-REPEAT_WINDOW:])
                token = _sample(torch, last, temperature, top_p, top_k, gen)
                if token in self._stop_ids:
                    yield "", "stop"
                    return
                out.append(token)
                text = self.tokenizer.decode(out, skip_special_tokens=False)
                if len(out) >= max_tokens:
                    yield text[shown:], "length"
                    return
                # A character split over tokens decodes to U+FFFD until its last byte arrives.
                piece = "" if text.endswith("\ufffd") else text[shown:]
                shown += len(piece)
                yield piece, None
                if cancel is not None and cancel.is_set():
                    return
                logits = self._forward([token])

    def score(self, prefix_ids: list[int], options: list[list[int]]) -> list[float]:
        """Summed log-probability of each token list in ``options`` following ``prefix_ids``
        (non-empty): the prefix runs once, each option is a short pass over the cached prefix."""
        torch = self.torch
        scores = []
        with torch.inference_mode():
            first = torch.log_softmax(self._prefill(prefix_ids, None)[-1], -1)
            for option in options:
                if not option:
                    raise ValueError("an option has no tokens")
                total = float(first[option[0]])
                if len(option) > 1:
                    rows = torch.log_softmax(self._forward(option[:-1]), -1)
                    total += float(rows[torch.arange(len(option) - 1), torch.tensor(option[1:])].sum())
                    self._kv.crop(1 - len(option))
                    del self._kv_ids[len(prefix_ids) :]
                scores.append(total)
        return scores


def _penalize_repeats(torch: Any, logits: Any, recent: list[int]) -> Any:
    """llama.cpp's repeat penalty, so both engines sample alike: recent tokens' logits are divided
    (positive) or multiplied (negative) by ``REPEAT_PENALTY``."""
    if not recent or REPEAT_PENALTY == 1.0:
        return logits
    idx = torch.tensor(sorted(set(recent)))
    picked = logits[idx]
    logits[idx] = torch.where(picked > 0, picked / REPEAT_PENALTY, picked * REPEAT_PENALTY)
    return logits


def _sample(torch: Any, logits: Any, temperature: float, top_p: float, top_k: int, gen: Any) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if 0 < top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, 0) - sorted_probs < top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=gen))


class _Cancelled(Exception):
    """Raised inside a forward pass whose generation was cancelled."""


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@functools.cache
def _growing_layer() -> type:
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """transformers' dynamic KV layer, but grown by doubling a buffer instead of concatenating:
        ``torch.cat`` copies the whole cache at every token, which was over half of decode time."""

        _kbuf: Any = None
        _vbuf: Any = None

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = self.get_seq_length()
            m = n + key_states.shape[-2]
            if self._kbuf is None or m > self._kbuf.shape[-2]:
                room = max(m, 2 * (0 if self._kbuf is None else self._kbuf.shape[-2]), 256)
                kbuf = key_states.new_empty(*key_states.shape[:-2], room, key_states.shape[-1])
                vbuf = value_states.new_empty(*value_states.shape[:-2], room, value_states.shape[-1])
                if n:
                    kbuf[..., :n, :] = self.keys
                    vbuf[..., :n, :] = self.values
                self._kbuf, self._vbuf = kbuf, vbuf
            self._kbuf[..., n:m, :] = key_states
            self._vbuf[..., n:m, :] = value_states
            # Views: ``crop`` (inherited) shortens them, and the next update overwrites what it cut.
            self.keys, self.values = self._kbuf[..., :m, :], self._vbuf[..., :m, :]
            return self.keys, self.values

    return GrowingLayer


def weights_cache_dir(gguf: Path) -> Path:
    """Where the dequantised copy of ``gguf`` is cached: ``$KIMIDOC_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/kimidoc``, else ``~/.cache/kimidoc``; one folder per GGUF file (by path,
    size and modification time) and transformers version (its GGUF conversion may change)."""
    import transformers

    root = os.environ.get("KIMIDOC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kimidoc"
    )
    st = gguf.stat()
    key = json.dumps([str(gguf.resolve()), st.st_size, st.st_mtime_ns, transformers.__version__])
    return Path(root) / "embedded" / f"{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


_MARKER = "kimidoc-weights.json"  # written last: a folder without it was never finished


def _load_transformers(gguf: Path, cache: Path) -> tuple[Any, Any, str]:
    """Tokenizer and model for ``gguf``, from ``cache`` when it holds a finished copy, else from
    the GGUF (then written to ``cache``). Returns them and where they came from ("cache" or "gguf").
    A cache that cannot be read is rebuilt and one that cannot be written is skipped, with a
    warning either way: the cache only saves time, it never stops the model from loading."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (cache / _MARKER).is_file():
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(cache))
            model, info = AutoModelForCausalLM.from_pretrained(
                str(cache), dtype=torch.float32, output_loading_info=True
            )
            wrong = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
            if wrong:
                raise ValueError(f"weights do not match the model: {wrong}")
            return tokenizer, model.eval(), "cache"
        except Exception as exc:  # any damage: rebuild from the GGUF
            warnings.warn(
                f"embedded model cache {cache} is unreadable ({type(exc).__name__}: {exc}); rebuilding it from {gguf.name}",
                stacklevel=3,
            )
            shutil.rmtree(cache, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    try:
        _write_cache(tokenizer, model, gguf, cache)
    except OSError as exc:
        warnings.warn(
            f"embedded model cache {cache} could not be written ({type(exc).__name__}: {exc}); the next load dequantises {gguf.name} again (set KIMIDOC_CACHE_DIR to a writable folder)",
            stacklevel=3,
        )
    return tokenizer, model, "gguf"


def _write_cache(tokenizer: Any, model: Any, gguf: Path, cache: Path) -> None:
    """Write into a fresh sibling folder and rename it into place, so a reader sees all or nothing
    and two processes writing at once cannot mix their files."""
    from safetensors.torch import save_file

    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}-", dir=cache.parent))
    try:
        # ``save_pretrained`` refuses a model loaded from GGUF, so the tensors are written directly;
        # a tied output head is the embedding and is stored once.
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the copy is plain float32
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        tokenizer.save_pretrained(str(tmp))
        (tmp / _MARKER).write_text(json.dumps({"gguf": str(gguf), "size": gguf.stat().st_size}))
        try:
            os.replace(tmp, cache)
        except OSError:
            if not (cache / _MARKER).is_file():  # not another process's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
