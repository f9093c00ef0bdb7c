"""The one retry helper: exponential back-off with jitter and one give-up rule, used by every retry loop
(the exporters, the pipeline's export stage with a write-ahead log, the alert notifiers).

The config keys and defaults are the Collector's configretry ones. Give-up rule: no new attempt once
``max_elapsed_time`` has passed since the first one (0 = until ``stop`` is set); the last wait is cut
so that the final attempt starts at that time. Permanent errors are never retried; a shutdown (``stop``)
ends the waiting at once. Ours rather than tenacity: the loop is 30 lines, a shutdown event must cut a
wait short, and the give-up must say why in the error.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from otelproc.component import PermanentError
from otelproc.config import Duration, setting

__all__ = ["RetryConfig", "RetryAfter", "GaveUp", "call_with_retry"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class RetryConfig:
    # the Collector's configretry keys and defaults
    enabled: bool = True
    initial_interval: Duration = setting(Duration(5.0), gt=0)
    max_interval: Duration = Duration(30.0)
    # give up after this long in total; 0 = retry until shutdown
    max_elapsed_time: Duration = setting(Duration(300.0), ge=0, hint="0 = until shutdown")
    multiplier: float = setting(1.5, ge=1)
    # each wait is interval * (1 +/- randomization_factor)
    randomization_factor: float = setting(0.5, ge=0, le=1)

    def validate(self) -> list[str]:
        if self.max_interval < self.initial_interval:
            return [f"max_interval: must be >= initial_interval ({self.initial_interval}s), got {self.max_interval}s"]
        return []


class RetryAfter(Exception):
    """A transient failure whose peer asked for a specific wait (HTTP 429/503 Retry-After)."""

    def __init__(self, message: str, delay: float):
        super().__init__(message)
        self.delay = delay


class GaveUp(Exception):
    """Retries ended without success: ``reason`` says why, ``last`` is the last failure, ``attempts`` how many."""

    def __init__(self, what: str, reason: str, last: BaseException, attempts: int):
        super().__init__(f"{what} failed, {reason}: {last}")
        self.reason, self.last, self.attempts = reason, last, attempts


def call_with_retry(fn: Callable[[], T], cfg: RetryConfig, what: str, stop: threading.Event, *,
                    permanent: Callable[[BaseException], bool] = lambda e: isinstance(e, PermanentError),
                    on_retry: Callable[[BaseException, int, float], None] | None = None) -> T:
    """``fn()`` until it succeeds. An error for which ``permanent`` is true is raised as it is; when retries
    end (disabled, max_elapsed_time, ``stop``) GaveUp is raised from the last error. ``on_retry(error,
    attempt, wait)`` is called before each wait."""
    start = time.monotonic()
    interval = float(cfg.initial_interval)
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            if permanent(exc):
                raise
            elapsed = time.monotonic() - start
            if not cfg.enabled:
                reason = "retry_on_failure is disabled"
            elif stop.is_set():
                reason = f"shutting down after {attempt} attempts (no more retries)"
            elif cfg.max_elapsed_time and elapsed >= cfg.max_elapsed_time:
                reason = f"giving up after {attempt} attempts in {elapsed:.1f}s (max_elapsed_time {cfg.max_elapsed_time:g}s)"
            else:
                reason = ""
            if reason:
                raise GaveUp(what, reason, exc, attempt) from exc
            jitter = 1.0 + cfg.randomization_factor * random.uniform(-1.0, 1.0)
            wait = min(exc.delay if isinstance(exc, RetryAfter) else interval * jitter, float(cfg.max_interval))
            if cfg.max_elapsed_time:
                wait = min(wait, max(0.0, cfg.max_elapsed_time - elapsed))
            if on_retry is not None:
                on_retry(exc, attempt, wait)
            log.warning("%s failed (attempt %d), retrying in %.2fs: %s", what, attempt, wait, exc)
            if stop.wait(wait):
                raise GaveUp(what, f"shutting down after {attempt} attempts (no more retries)", exc, attempt) from exc
            interval = min(interval * cfg.multiplier, float(cfg.max_interval))
