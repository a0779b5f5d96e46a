"""LocalKimi end to end on tiny checkpoints built in the official format."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from kimidoc.backends.local import LocalKimi
from kimidoc.chat.parser import parse
from kimidoc.chat.template import encode_chat, render
from kimidoc.messages import accumulate, image_part
from kimidoc.model import generate
from kimidoc.testing import write_checkpoint
from kimidoc.testing.vision import write_multimodal_checkpoint

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def backend(tmp_path_factory) -> LocalKimi:
    return LocalKimi(write_checkpoint(tmp_path_factory.mktemp("k26")), dtype=torch.float32, max_tokens=6)


def test_tiny_checkpoint_answers_a_tool_call_request(backend):
    tok = backend.tokenizer
    prompt = encode_chat(tok, ASK, [WEATHER])
    assert backend.count_message_tokens(ASK, [WEATHER]) == len(prompt)
    assert backend.context_window == 262144 and {163585, 163586} <= backend.stop_ids

    reply = backend.complete(ASK, [WEATHER], temperature=0.0)
    # the same ids straight from the runtime, parsed, must be what the backend returned
    ids = generate(backend.model, prompt, max_new_tokens=6, temperature=0.0, stop_ids=tuple(backend.stop_ids))
    body = ids[:-1] if ids[-1] in backend.stop_ids else ids
    expected = parse(tok.decode(body), thinking=True, tools={"get_weather"})
    assert (reply.reasoning, reply.content, reply.tool_calls) == (
        expected.reasoning,
        expected.content,
        expected.tool_calls,
    )
    assert reply.usage.prompt_tokens == len(prompt) and reply.usage.completion_tokens == len(ids)
    assert reply.finish_reason == ("length" if ids[-1] not in backend.stop_ids else "stop")

    sampled = dict(temperature=1.0, top_p=0.95, seed=3, max_tokens=4)
    assert accumulate(backend.stream(ASK, [WEATHER], **sampled)) == backend.complete(ASK, [WEATHER], **sampled)


class ForcedLM(torch.nn.Module):
    """A test model whose logits spell a script: a scripted completion that runs through the real
    generate loop, tokenizer, parser and backend (the tiny model only lends its shapes). Each
    prefill (a new generate call) starts the next of ``scripts``."""

    def __init__(self, inner: torch.nn.Module, *scripts: list[int]) -> None:
        super().__init__()
        self.inner, self.scripts, self.call, self.step = inner, scripts, -1, 0
        self.vocab = inner.config.vocab_size

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.inner.embed(ids)

    def new_cache(self, *args, **kwargs):
        return self.inner.new_cache(*args, **kwargs)

    def forward(self, input_ids=None, *, inputs_embeds=None, cache=None, logits_to_keep=0):
        if inputs_embeds is not None:  # prefill: the next script
            self.call, self.step = self.call + 1, 0
        else:
            self.step += 1
        script = self.scripts[min(self.call, len(self.scripts) - 1)]
        logits = torch.full((1, 1, self.vocab), float("-inf"))
        logits[0, 0, script[min(self.step, len(script) - 1)]] = 0.0
        return logits


COMPLETION = (
    "The user wants weather.</think>Let me check."
    "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
    '{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|><|im_end|>'
)


def test_forced_completion_goes_from_messages_to_a_parsed_call(backend):
    tok = backend.tokenizer
    forced = tok.encode(COMPLETION)
    scripted = LocalKimi(backend.path, model=ForcedLM(backend.model, forced), tokenizer=tok)
    deltas = list(scripted.stream(ASK, [WEATHER], seed=0))
    kinds = [("r" if d.reasoning else "c" if d.content else "t" if d.tool_calls else "f") for d in deltas]
    assert kinds[-2:] == ["t", "f"] and kinds.index("c") > kinds.index("r")  # reasoning, content, then the call
    reply = accumulate(deltas)
    assert (reply.reasoning, reply.content) == ("The user wants weather.", "Let me check.")
    (call,) = reply.tool_calls
    assert (call.id, call.name, call.parsed_arguments()) == (
        "functions.get_weather:0",
        "get_weather",
        {"city": "Paris"},
    )
    assert reply.finish_reason == "tool_calls" and reply.invalid_tool_calls == []
    assert reply.usage.completion_tokens == len(forced)
    assert reply.usage.reasoning_tokens == forced.index(tok.token_id("</think>")) + 1

    # the next turn renders the call with its reasoning kept (interleaved thinking in the loop)
    follow = ASK + [
        reply.to_message(),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]  # no name: headed "tool"
    text = render(follow, [WEATHER])
    assert "<think>The user wants weather.</think>Let me check.<|tool_calls_section_begin|>" in text
    assert text.endswith(
        "<|im_system|>tool<|im_middle|>## Return of functions.get_weather:0\nsunny, 21 C<|im_end|><|im_assistant|>assistant<|im_middle|><think>"
    )

    # an undeclared tool comes back as an invalid call, not an exception
    reply = LocalKimi(backend.path, model=ForcedLM(backend.model, forced), tokenizer=tok).complete(ASK)
    assert reply.tool_calls == [] and "unknown tool" in reply.invalid_tool_calls[0].error


def test_stop_strings_end_content(backend):
    tok = backend.tokenizer
    forced = tok.encode("</think>one two three four<|im_end|>")
    reply = LocalKimi(backend.path, model=ForcedLM(backend.model, forced), tokenizer=tok).complete(ASK, stop=["three"])
    assert reply.content == "one two " and reply.finish_reason == "stop"


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (30, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def test_images_go_through_the_vision_tower(tmp_path, backend):
    path = write_multimodal_checkpoint(tmp_path / "mm")
    mm = LocalKimi(path, dtype=torch.float32, max_tokens=3)
    msgs = [{"role": "user", "content": [{"type": "text", "text": "What colour?"}, image_part(_png(56, 84))]}]
    reply = mm.complete(msgs, temperature=0.0)
    prompt = encode_chat(mm.tokenizer, msgs)
    assert prompt.count(mm.tokenizer.token_id("<|media_pad|>")) == 6
    assert reply.usage.prompt_tokens == len(prompt)

    from kimidoc.vision.preprocess import preprocess

    vision = preprocess([_png(56, 84)])
    ids = generate(
        mm.model,
        prompt,
        max_new_tokens=3,
        temperature=0.0,
        stop_ids=tuple(mm.stop_ids),
        inputs_embeds=lambda i, _e: mm.model.embed(i, vision),
    )
    assert reply.usage.completion_tokens == len(ids)
    body = ids[:-1] if ids[-1] in mm.stop_ids else ids
    assert reply.reasoning == parse(mm.tokenizer.decode(body)).reasoning

    with pytest.raises(ValueError, match="no vision tower"):
        backend.complete(msgs)


def test_tool_choice_forces_the_call_after_reasoning(backend):
    tok = backend.tokenizer

    def forced(*texts: str) -> LocalKimi:
        return LocalKimi(backend.path, model=ForcedLM(backend.model, *[tok.encode(t) for t in texts]), tokenizer=tok)

    named = {"type": "function", "function": {"name": "get_weather"}}
    # thinking: the model reasons up to </think>, then continues after the injected call opening
    reply = forced(
        "Rome, then.</think>", '{"city": "Rome"}<|tool_call_end|><|tool_calls_section_end|><|im_end|>'
    ).complete(ASK, [WEATHER], tool_choice=named, temperature=0.0)
    assert reply.reasoning == "Rome, then." and reply.content == ""
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("functions.get_weather:0", "get_weather", '{"city": "Rome"}')
    ]
    # a turn that ends without closing its reasoning still gets its call
    reply = forced("hmm<|im_end|>", '{"city": "Oslo"}<|tool_call_end|><|im_end|>').complete(
        ASK, [WEATHER], tool_choice=named
    )
    assert reply.reasoning == "hmm" and reply.tool_calls[0].arguments == '{"city": "Oslo"}'
    # instant mode, "required": the section is opened in the prompt, the model picks the tool
    reply = forced(
        "<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{}<|tool_call_end|><|im_end|>"
    ).complete(ASK, [WEATHER], tool_choice="required", thinking=False)
    assert reply.tool_calls[0].name == "get_weather" and reply.finish_reason == "tool_calls"
    with pytest.raises(ValueError, match="not among the tools"):
        backend.complete(ASK, [WEATHER], tool_choice={"type": "function", "function": {"name": "rm"}})
