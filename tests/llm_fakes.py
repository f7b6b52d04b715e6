"""Local HTTP servers that speak the OpenAI chat-completions and Ollama chat APIs.

Each server answers from a queue of scripted behaviours (a JSON answer, an HTTP status, a
hang, a raw body) and records every request body, so tests can count calls and inspect what
was sent. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def completion(content: str | None, finish_reason: str = "stop", refusal: str | None = None
               ) -> dict[str, Any]:
    """An OpenAI chat.completion body."""
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": None,
                         "message": {"role": "assistant", "content": content,
                                     "refusal": refusal}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def ollama_chat(content: str, done_reason: str = "stop") -> dict[str, Any]:
    """An Ollama /api/chat (non-streaming) body."""
    return {"model": "qwen2.5:14b-instruct", "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": content}, "done": True,
            "done_reason": done_reason, "total_duration": 1, "eval_count": 1}


class FakeServer:
    """A scripted server. Behaviours: ("json", body), ("status", code), ("hang", seconds),
    ("raw", text), ("echo_auth", code) (an error whose message repeats the Authorization
    header, as some servers do). When the queue is empty the ``default`` behaviour answers.
    ``on_request`` (if set) is called with each request body before it is answered."""

    def __init__(self, default: tuple[str, Any] = ("status", 500)):
        self.queue: deque[tuple[str, Any]] = deque()
        self.default = default
        self.on_request: Any = None
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append(json.loads(body or b"{}"))
                fake.headers.append(dict(self.headers))
                if fake.on_request is not None:
                    fake.on_request(fake.requests[-1])
                kind, arg = fake.queue.popleft() if fake.queue else fake.default
                if kind == "hang":
                    time.sleep(arg)
                    kind, arg = "status", 504
                if kind == "status":
                    self._send(arg, json.dumps({"error": {"message": "scripted", "code": arg}}))
                elif kind == "echo_auth":
                    msg = f"Incorrect API key provided: {self.headers.get('Authorization')}"
                    self._send(arg, json.dumps({"error": {"message": msg, "code": arg}}))
                elif kind == "json":
                    self._send(200, json.dumps(arg))
                else:
                    self._send(200, arg)

            def _send(self, code: int, text: str) -> None:
                data = text.encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def push(self, *behaviours: tuple[str, Any]) -> FakeServer:
        self.queue.extend(behaviours)
        return self

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
