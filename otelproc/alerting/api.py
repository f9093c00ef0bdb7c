"""A small HTTP API, shaped like Alertmanager's v2, so ``amtool``-style scripts and people can work with silences.

    GET    /api/v2/alerts              active alerts with state (active / suppressed) and silencedBy / inhibitedBy
    GET    /api/v2/silences            every silence with its state (pending / active / expired)
    POST   /api/v2/silences            {"matchers": [{"name", "value", "isRegex", "isEqual"}], "startsAt"?, "endsAt",
                                        "createdBy", "comment", "id"? (update)}  -> {"silenceID": ...}
    GET    /api/v2/silence/{id}
    DELETE /api/v2/silence/{id}        expire it
    GET    /-/ready, /-/healthy
"""
from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from otelproc.alerting.matchers import Matcher

__all__ = ["AlertAPI", "parse_time"]

log = logging.getLogger("otelproc.alerting")
MAX_BODY_BYTES = 1 << 20


def parse_time(value: Any, key: str) -> float:
    """RFC 3339 (``2024-05-01T10:00:00Z``, fractions and offsets allowed) -> unix seconds."""
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected an RFC 3339 time string, got {value!r}")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"{key}: not an RFC 3339 time: {value!r}") from None


class AlertAPI:
    def __init__(self, engine: Any, endpoint: str):
        host, _, port = endpoint.rpartition(":")
        self.engine = engine
        self._server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self._server.server_address[:2]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="alert-api", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def _handler_class(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # no per-request logs
                pass

            def _json(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, code: int, message: str) -> None:
                self._json(code, {"code": code, "message": message})

            def do_GET(self) -> None:
                eng = api.engine
                now = eng.clock()
                path = self.path.split("?", 1)[0]
                if path in ("/-/ready", "/-/healthy"):
                    return self._json(200, {"status": "ok"})
                if path == "/api/v2/alerts":
                    return self._json(200, eng.active_alerts())
                if path == "/api/v2/silences":
                    return self._json(200, [s.to_api(now) for s in eng.silences.list()])
                if path.startswith("/api/v2/silence/"):
                    s = eng.silences.get(path.rsplit("/", 1)[1])
                    return self._json(200, s.to_api(now)) if s else self._error(404, "silence not found")
                self._error(404, f"no such endpoint: GET {path}")

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                if path != "/api/v2/silences":
                    return self._error(404, f"no such endpoint: POST {path}")
                length = int(self.headers.get("Content-Length") or 0)
                if length <= 0 or length > MAX_BODY_BYTES:
                    return self._error(400, f"body must be 1..{MAX_BODY_BYTES} bytes of JSON, got {length}")
                try:
                    body = json.loads(self.rfile.read(length))
                    if not isinstance(body, dict):
                        raise ValueError("expected a JSON object")
                    matchers_raw = body.get("matchers")
                    if not isinstance(matchers_raw, list) or not matchers_raw:
                        raise ValueError("matchers: a non-empty list is required")
                    matchers = [Matcher.from_api(m) for m in matchers_raw]
                    now = api.engine.clock()
                    starts = parse_time(body["startsAt"], "startsAt") if body.get("startsAt") else now
                    if "endsAt" not in body:
                        raise ValueError("endsAt: required")
                    ends = parse_time(body["endsAt"], "endsAt")
                    sid = api.engine.silences.add(matchers, starts, ends, now, str(body.get("createdBy", "")),
                                                  str(body.get("comment", "")), body.get("id") or None)
                except KeyError as e:
                    return self._error(404, f"silence {e.args[0]} not found")
                except (ValueError, TypeError) as e:
                    return self._error(400, str(e))
                self._json(200, {"silenceID": sid})

            def do_DELETE(self) -> None:
                path = self.path.split("?", 1)[0]
                if not path.startswith("/api/v2/silence/"):
                    return self._error(404, f"no such endpoint: DELETE {path}")
                try:
                    api.engine.silences.expire(path.rsplit("/", 1)[1], api.engine.clock())
                except KeyError:
                    return self._error(404, "silence not found")
                except ValueError as e:
                    return self._error(400, str(e))
                self._json(200, {})

        return Handler
