"""The generation loop: chunked prefill, then one :func:`~.decode.decode_step` per token.

Example::

    from kimidoc.model import load, generate
    model = load("/models/Kimi-K2.6")
    ids = generate(model, prompt_ids, max_new_tokens=256, temperature=1.0, top_p=0.95, seed=0,
                   stop_ids=(163586,), on_token=lambda t: print(t))

Passing the same :class:`~kimidoc.model.cache.LatentCache` (``cache=model.new_cache()``) to
successive calls reuses the longest common prefix of the cached and the new ``input_ids``, so a
multi-turn chat only prefills the new turn. When ``inputs_embeds`` is given (image features merged
in), the cache is cleared first: equal placeholder ids do not mean equal images.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence

import torch

from .cache import LatentCache
from .decode import decode_step
from .model import KimiForCausalLM

PREFILL_CHUNK = 2048

EmbedHook = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _text_model(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM inside a multimodal wrapper (its ``language_model``, the official name), or the
    model itself. Generation needs the plain token embeddings of a prompt whose image placeholders an
    ``inputs_embeds`` hook overwrites; the wrapper's own ``embed`` refuses placeholders without images."""
    return getattr(model, "language_model", model)


def sample(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> int:
    """Pick one token from ``logits`` ``[vocab]``: greedy at temperature 0, else top-k / top-p sampling
    (the same filters, in the same order, as transformers' logits warpers)."""
    if temperature <= 0:
        return int(logits.argmax())
    scores = logits.float() / temperature
    if top_k > 0 and top_k < scores.numel():
        kth = torch.topk(scores, top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(-1).cumsum(-1)
        remove = cumulative <= (1 - top_p)
        remove[-1] = False  # always keep the most likely token
        scores = scores.masked_fill(remove.scatter(0, order, remove), float("-inf"))
    probs = scores.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def prefill(
    model: torch.nn.Module,
    embeds: torch.Tensor,
    cache: LatentCache,
    chunk: int = PREFILL_CHUNK,
) -> torch.Tensor:
    """Run ``embeds`` ``[1, T, hidden]`` through the model in chunks; return the last position's logits."""
    logits = None
    for start in range(0, embeds.shape[1], chunk):
        logits = model(inputs_embeds=embeds[:, start : start + chunk], cache=cache, logits_to_keep=1)
    assert logits is not None, "prefill needs at least one token"
    return logits[0, -1]


def _id_list(input_ids: Sequence[int] | torch.Tensor) -> list[int]:
    """One prompt as a list of ids, from a list or from the 1-D / ``[1, T]`` tensor transformers
    users bring; anything else (a batch, floats) is refused with what was given."""
    if isinstance(input_ids, torch.Tensor):
        shape = tuple(input_ids.shape)
        if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
            raise TypeError(
                f"generate: input_ids must hold integer token ids, got a {input_ids.dtype} tensor of shape {shape}"
            )
        if input_ids.dim() == 2 and shape[0] == 1:
            input_ids = input_ids[0]
        if input_ids.dim() != 1:
            raise ValueError(
                f"generate: input_ids must be one sequence (a list, a 1-D tensor or a [1, T] tensor), got a tensor of shape {shape}; generate one prompt at a time"
            )
        return [int(t) for t in input_ids.tolist()]
    if isinstance(input_ids, (str, bytes)) or not isinstance(input_ids, Sequence):
        raise TypeError(f"generate: input_ids must be a list of token ids or a tensor, got {type(input_ids).__name__}")
    ids = []
    for t in input_ids:
        try:
            ids.append(operator.index(t))  # ints, numpy integers, 0-d integer tensors
        except TypeError:
            raise TypeError(
                f"generate: input_ids must be token ids (integers), found {t!r} ({type(t).__name__})"
            ) from None
    return ids


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    input_ids: Sequence[int] | torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
    stop_ids: tuple[int, ...] | list[int] = (),
    on_token: Callable[[int], bool | None] | None = None,
    inputs_embeds: torch.Tensor | EmbedHook | None = None,
    cache: LatentCache | None = None,
    prefill_chunk: int = PREFILL_CHUNK,
) -> list[int]:
    """Generate up to ``max_new_tokens`` after ``input_ids``; returns the new ids.

    A stop id ends generation and is included as the last returned id (so callers can tell a stop
    from running out of tokens); ``on_token`` is called with every new id and stops generation by
    returning ``False``. ``inputs_embeds`` is either the prompt's embeddings ``[T, hidden]`` (or
    ``[1, T, hidden]``) or a hook ``f(input_ids [1, T], embeds [1, T, hidden]) -> embeds`` that
    edits the token embeddings (e.g. to insert image features). ``input_ids`` is one prompt: a
    list of ids, a 1-D tensor or a ``[1, T]`` tensor.
    """
    input_ids = _id_list(input_ids)
    if not input_ids:
        raise ValueError("generate needs at least one input id")
    lm = _text_model(model)
    ids = torch.tensor([input_ids], device=lm.device)
    if cache is None:
        cache = lm.new_cache(capacity=len(input_ids) + max_new_tokens)
    if inputs_embeds is not None:
        cache.truncate(0)
    reuse = 0
    for a, b in zip(cache.tokens, input_ids):
        if a != b:
            break
        reuse += 1
    reuse = min(reuse, len(input_ids) - 1, cache.length)  # always feed at least one token for logits
    cache.truncate(reuse)
    cache.reserve(len(input_ids) + max_new_tokens)

    if inputs_embeds is None:
        embeds = lm.embed(ids[:, reuse:])
    elif callable(inputs_embeds):
        embeds = inputs_embeds(ids, lm.embed(ids))
    else:
        embeds = inputs_embeds.reshape(1, len(input_ids), -1)
    logits = prefill(lm, embeds.to(lm.dtype), cache, prefill_chunk)
    cache.tokens = list(input_ids)

    generator = None
    if temperature > 0:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(seed if seed is not None else torch.seed())
    stops = set(stop_ids)
    out: list[int] = []
    for step in range(max_new_tokens):
        token = sample(logits.cpu(), temperature=temperature, top_p=top_p, top_k=top_k, generator=generator)
        out.append(token)
        if (on_token is not None and on_token(token) is False) or token in stops or step == max_new_tokens - 1:
            break
        if isinstance(lm, KimiForCausalLM):
            logits = decode_step(lm, token, cache)
        else:  # any other causal LM with the same call (tests script one this way)
            logits = lm(torch.tensor([[token]], device=lm.device), cache=cache)[0, -1]
        cache.tokens.append(token)
    return out
