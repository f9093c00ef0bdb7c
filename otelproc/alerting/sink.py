"""A recording HTTP endpoint for notifications: tests, the latency benchmark, and checking a
routing setup by hand (point a webhook/Slack receiver at it and watch what arrives).

    with WebhookSink() as sink:             # 127.0.0.1, a free port
        url = sink.url("/hook")
        ...
        req = sink.wait_for(1, timeout=5)[0]  # .path, .json, .received_perf, .received_at

``fail_next(n, status)`` makes the next n requests fail (retry tests); ``hold()`` /
``release()`` keep requests waiting (a receiver that hangs).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from otelproc.httpserver import Handler, Server

__all__ = ["WebhookSink", "ReceivedRequest"]


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    received_perf: float  # time.perf_counter() at arrival (same clock as Alert.detected_at)
    received_at: float    # unix seconds

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookSink:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.requests: list[ReceivedRequest] = []
        self._cond = threading.Condition()
        self._fail: list[int] = []
        self._held = threading.Event()
        self._held.set()
        sink = self

        class SinkHandler(Handler):
            def answer(self, method: str) -> None:
                if method != "POST":
                    return super().answer(method)
                body = self.read_body(64 << 20)
                perf, wall = time.perf_counter(), time.time()
                sink._held.wait()
                with sink._cond:
                    status = sink._fail.pop(0) if sink._fail else 200
                    if status < 300:
                        sink.requests.append(ReceivedRequest(self.path, dict(self.headers), body, perf, wall))
                        sink._cond.notify_all()
                self.send(status, b"ok" if status < 300 else b"injected failure")

        self._server = Server(f"{host}:{port}", SinkHandler, where="webhook sink", thread_name="webhook-sink")

    @property
    def port(self) -> int:
        return self._server.port

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._cond:
            self._fail.extend([status] * n)

    def hold(self) -> None:
        self._held.clear()

    def release(self) -> None:
        self._held.set()

    def wait_for(self, count: int, timeout: float = 10.0, path: str | None = None) -> list[ReceivedRequest]:
        """The first ``count`` successful requests (to ``path`` if given); raises TimeoutError with what arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.requests if path is None or r.path == path]
                if len(got) >= count:
                    return got[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"expected {count} request(s) to {path or 'any path'}, got {len(got)}: "
                                       f"{[r.body[:200] for r in got]}")
                self._cond.wait(left)

    def close(self) -> None:
        self._held.set()
        self._server.close()

    def __enter__(self) -> "WebhookSink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
