"""OpenAICompatible against a real OpenAI-compatible server nobody here wrote.

llama-cpp-python's server (``python -m llama_cpp.server``) serves the embedded GGUF on a
loopback port the test picks, with its ``chatml-function-calling`` format so tools work.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from kimidoc.backends.embedded.engines import llama_cpp_available
from kimidoc.backends.embedded.model import locate
from kimidoc.backends.openai.client import OpenAICompatible
from kimidoc.messages import accumulate
from kimidoc.tools.schema import validate


def _server_importable() -> bool:
    if not llama_cpp_available():
        return False
    try:
        import llama_cpp.server.app  # noqa: F401  (needs the [server] extra: fastapi, uvicorn, sse-starlette)
    except ImportError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _server_importable(),
    reason="llama-cpp-python[server] is not installed (pip install 'llama-cpp-python[server]')",
)

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
QUESTION = [
    {
        "role": "user",
        "content": "The Zorblat river flows into Lake Mirren. Into which lake does the Zorblat river flow?",
    }
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(locate()),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--chat_format",
        "chatml-function-calling",
        "--n_ctx",
        "2048",
        "--n_threads",
        "2",
        "--verbose",
        "False",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not come up in 180 s: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_plain_answer_streamed_and_not(llama_server):
    b = OpenAICompatible(llama_server, timeout=120)  # model discovered from /v1/models
    msg = b.complete(QUESTION, temperature=0, max_tokens=24)
    assert b.model == "smollm2"
    assert "Mirren" in msg.content and msg.usage.prompt_tokens > 10 and msg.usage.completion_tokens > 0
    deltas = list(b.stream(QUESTION, temperature=0, max_tokens=24))
    assert len([d for d in deltas if d.content]) > 1
    folded = accumulate(deltas)
    assert folded.content == msg.content and folded.finish_reason == msg.finish_reason
    assert folded.usage.completion_tokens > 0


def test_tool_calls_streamed_and_not(llama_server):
    b = OpenAICompatible(llama_server, model="smollm2", timeout=120)
    choice = {"type": "function", "function": {"name": "lookup"}}
    msgs = [{"role": "user", "content": "Find facts about the Zorblat river."}]
    msg = b.complete(msgs, [LOOKUP], tool_choice=choice, temperature=0, max_tokens=48)
    assert [c.name for c in msg.tool_calls] == ["lookup"] and msg.finish_reason == "tool_calls"
    assert validate(msg.tool_calls[0].parsed_arguments(), LOOKUP["function"]["parameters"], "lookup") is None
    deltas = list(b.stream(msgs, [LOOKUP], tool_choice=choice, temperature=0, max_tokens=48))
    folded = accumulate(deltas)
    assert [c.name for c in folded.tool_calls] == ["lookup"]
    assert json.loads(folded.tool_calls[0].arguments) == json.loads(msg.tool_calls[0].arguments)


async def test_concurrent_async_requests(llama_server):
    b = OpenAICompatible(llama_server, model="smollm2", timeout=120, max_concurrency=4)
    prompts = [[{"role": "user", "content": f"Say the word {w}."}] for w in ("apple", "river", "stone", "cloud")]
    results = await asyncio.gather(*(b.acomplete(p, temperature=0, max_tokens=8) for p in prompts))
    await b.aclose()
    sequential = [b.complete(p, temperature=0, max_tokens=8).content for p in prompts]
    assert [r.content for r in results] == sequential
