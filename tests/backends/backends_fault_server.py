"""A small chat-completions server for tests: answers predictably and fails on demand.

A real server will not return a 429 then succeed, send a 503, hang, or split a tool call across
chunks when a test asks; this one does. Each request takes the next queued action (thread-safe),
else echoes: the reply names the last user message, so mixed-up responses are caught. Replies
to messages of the form ``call NAME {json}`` are tool calls, streamed in small pieces.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FaultServer:
    def __init__(self) -> None:
        self.actions: deque[tuple[Any, ...]] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.models: list[dict[str, Any]] = [{"id": "fake-kimi-k2.6", "object": "model", "max_model_len": 32768}]
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # small SSE writes must not wait for delayed ACKs

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": server.models})
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    action = server.actions.popleft() if server.actions else ("echo",)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._act(action, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _act(self, action: tuple[Any, ...], body: dict[str, Any]) -> None:
                kind = action[0]
                if kind == "status":
                    _, code, headers = (action + ({},))[:3]
                    self._json(code, {"error": {"message": f"injected {code}", "type": "injected"}}, headers)
                elif kind == "hang":
                    time.sleep(action[1])
                    self.close_connection = True
                elif kind == "drop_mid_stream":
                    self._start_stream()
                    self._chunk(_sse(_chunk_obj({"content": "partial"})))
                    self.wfile.flush()
                    self.close_connection = True  # no terminating chunk: the client sees a broken stream
                elif kind == "content":
                    self._reply(body, action[1], [], action[2] if len(action) > 2 else "")
                elif kind == "raw_stream":
                    self._start_stream()
                    for piece in action[1]:
                        self._chunk(piece.encode())
                        self.wfile.flush()
                        time.sleep(0.002)
                    self._chunk(b"")
                else:
                    self._echo(body)

            def _echo(self, body: dict[str, Any]) -> None:
                last = next((m for m in reversed(body["messages"]) if m["role"] in ("user", "tool")), {"content": ""})
                text = (
                    last["content"]
                    if isinstance(last["content"], str)
                    else " ".join(p.get("text", "") for p in last["content"] if p.get("type") == "text")
                )
                if text.startswith("call ") and body.get("tools"):
                    _, name, args = text.split(" ", 2)
                    calls = [
                        {
                            "id": f"call_{name}_{len(server.requests)}",
                            "type": "function",
                            "function": {"name": name, "arguments": args},
                        }
                    ]
                    self._reply(body, "", calls, "")
                else:
                    self._reply(body, f"echo: {text}", [], "")

            def _reply(self, body: dict[str, Any], content: str, calls: list[dict[str, Any]], reasoning: str) -> None:
                usage = {
                    "prompt_tokens": 11,
                    "completion_tokens": 7 + len(reasoning),
                    "total_tokens": 18 + len(reasoning),
                    "completion_tokens_details": {"reasoning_tokens": len(reasoning)},
                }
                finish = "tool_calls" if calls else "stop"
                if not body.get("stream"):
                    msg: dict[str, Any] = {"role": "assistant", "content": content or None}
                    if reasoning:
                        msg["reasoning_content"] = reasoning
                    if calls:
                        msg["tool_calls"] = calls
                    self._json(
                        200,
                        {
                            "id": "x",
                            "object": "chat.completion",
                            "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                            "usage": usage,
                        },
                    )
                    return
                self._start_stream()
                pieces = [_chunk_obj({"role": "assistant", "content": ""})]
                pieces += [_chunk_obj({"reasoning_content": reasoning[i : i + 3]}) for i in range(0, len(reasoning), 3)]
                pieces += [_chunk_obj({"content": content[i : i + 4]}) for i in range(0, len(content), 4)]
                for idx, c in enumerate(calls):
                    pieces.append(
                        _chunk_obj(
                            {
                                "tool_calls": [
                                    {
                                        "index": idx,
                                        "id": c["id"],
                                        "type": "function",
                                        "function": {"name": c["function"]["name"], "arguments": ""},
                                    }
                                ]
                            }
                        )
                    )
                    args = c["function"]["arguments"]
                    pieces += [
                        _chunk_obj({"tool_calls": [{"index": idx, "function": {"arguments": args[i : i + 3]}}]})
                        for i in range(0, len(args), 3)
                    ]
                pieces.append(_chunk_obj({}, finish))
                if (body.get("stream_options") or {}).get("include_usage"):
                    pieces.append({"id": "x", "object": "chat.completion.chunk", "choices": [], "usage": usage})
                data = b"".join(_sse(p) for p in pieces) + b"data: [DONE]\n\n"
                # Cut the byte stream at odd places, so events and lines arrive split.
                for i in range(0, len(data), 97):
                    self._chunk(data[i : i + 97])
                self._chunk(b"")

            def _start_stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

            def _json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024  # hundreds of clients connect at once

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that time out hang up on purpose; a broken pipe here is expected

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def queue(self, *actions: tuple[Any, ...]) -> None:
        with self.lock:
            self.actions.extend(actions)


def _chunk_obj(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "x",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"
