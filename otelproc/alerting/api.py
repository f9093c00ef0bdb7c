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
from datetime import datetime
from typing import Any

from otelproc.alerting.matchers import Matcher
from otelproc.httpserver import Handler, Server

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
        self.engine = engine
        self._endpoint = endpoint
        self._server: Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "AlertAPI.start() first"
        return self._server.host, self._server.port

    def start(self) -> None:
        handler = type("_BoundHandler", (_Handler,), {"api": self})
        self._server = Server(self._endpoint, handler, where="processors::alerting::api_endpoint",
                              thread_name="alert-api", empty_host="127.0.0.1")

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


class _Handler(Handler):
    api: AlertAPI

    def _json(self, code: int, body: Any) -> None:
        self.send(code, json.dumps(body).encode(), "application/json")

    def refuse(self, status: int, message: str, reason: str = "") -> None:
        self._json(status, {"code": status, "message": message})

    def answer(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        handler = {"GET": self._get, "POST": self._post, "DELETE": self._delete}.get(method)
        if handler is None:
            return self.refuse(405, f"method {method} not allowed")
        handler(path)

    def _get(self, path: str) -> None:
        eng = self.api.engine
        now = eng.clock()
        if path in ("/-/ready", "/-/healthy"):
            return self._json(200, {"status": "ok"})
        if path == "/api/v2/alerts":
            return self._json(200, eng.active_alerts())
        if path == "/api/v2/silences":
            return self._json(200, [s.to_api(now) for s in eng.silences.list()])
        if path.startswith("/api/v2/silence/"):
            s = eng.silences.get(path.rsplit("/", 1)[1])
            return self._json(200, s.to_api(now)) if s else self.refuse(404, "silence not found")
        self.refuse(404, f"no such endpoint: GET {path}")

    def _post(self, path: str) -> None:
        if path != "/api/v2/silences":
            return self.refuse(404, f"no such endpoint: POST {path}")
        raw = self.read_body(MAX_BODY_BYTES)
        if not raw:
            return self.refuse(400, f"body must be 1..{MAX_BODY_BYTES} bytes of JSON, got 0")
        engine = self.api.engine
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            matchers_raw = body.get("matchers")
            if not isinstance(matchers_raw, list) or not matchers_raw:
                raise ValueError("matchers: a non-empty list is required")
            matchers = [Matcher.from_api(m) for m in matchers_raw]
            now = engine.clock()
            starts = parse_time(body["startsAt"], "startsAt") if body.get("startsAt") else now
            if "endsAt" not in body:
                raise ValueError("endsAt: required")
            ends = parse_time(body["endsAt"], "endsAt")
            sid = engine.silences.add(matchers, starts, ends, now, str(body.get("createdBy", "")),
                                      str(body.get("comment", "")), body.get("id") or None)
        except KeyError as e:
            return self.refuse(404, f"silence {e.args[0]} not found")
        except (ValueError, TypeError) as e:
            return self.refuse(400, str(e))
        self._json(200, {"silenceID": sid})

    def _delete(self, path: str) -> None:
        if not path.startswith("/api/v2/silence/"):
            return self.refuse(404, f"no such endpoint: DELETE {path}")
        try:
            self.api.engine.silences.expire(path.rsplit("/", 1)[1], self.api.engine.clock())
        except KeyError:
            return self.refuse(404, "silence not found")
        except ValueError as e:
            return self.refuse(400, str(e))
        self._json(200, {})
