"""Retry with exponential back-off and jitter, shared by exporters (the Collector's configretry keys
and defaults, and its retry_sender's rules).

Permanent errors are never retried; each give-up says why; a shutdown stops waiting.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from otelproc.component import PermanentError
from otelproc.config import Duration

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class RetryConfig:
    # the Collector's configretry keys and defaults
    enabled: bool = True
    initial_interval: Duration = Duration(5.0)
    max_interval: Duration = Duration(30.0)
    # give up after this long in total; 0 = retry until shutdown
    max_elapsed_time: Duration = Duration(300.0)
    multiplier: float = 1.5
    # each wait is interval * (1 +/- randomization_factor)
    randomization_factor: float = 0.5

    def validate(self) -> list[str]:
        out = []
        if self.initial_interval <= 0:
            out.append(f"initial_interval: must be > 0, got {self.initial_interval}s")
        if self.max_interval < self.initial_interval:
            out.append(f"max_interval: must be >= initial_interval ({self.initial_interval}s), got {self.max_interval}s")
        if self.max_elapsed_time < 0:
            out.append(f"max_elapsed_time: must be >= 0 (0 = until shutdown), got {self.max_elapsed_time}s")
        if self.multiplier < 1:
            out.append(f"multiplier: must be >= 1, got {self.multiplier}")
        if not 0 <= self.randomization_factor <= 1:
            out.append(f"randomization_factor: must be between 0 and 1, got {self.randomization_factor}")
        return out


class RetryAfter(Exception):
    """A transient failure whose peer asked for a specific wait (HTTP 429/503 Retry-After)."""

    def __init__(self, message: str, delay: float):
        super().__init__(message)
        self.delay = delay


def call_with_retry(fn: Callable[[], T], cfg: RetryConfig, what: str, stop: threading.Event,
                    on_retry: Callable[[BaseException], None] | None = None) -> T:
    """Run ``fn`` until it succeeds, raises PermanentError, retries run out, or ``stop`` is set.

    The last error is re-raised when giving up.
    """
    start = time.monotonic()
    interval = float(cfg.initial_interval)
    attempt = 0
    while True:
        try:
            return fn()
        except PermanentError:
            raise
        except Exception as exc:
            attempt += 1
            elapsed = time.monotonic() - start
            if not cfg.enabled:
                raise
            if cfg.max_elapsed_time and elapsed >= cfg.max_elapsed_time:
                log.error("%s: giving up after %d attempts in %.1fs: %s", what, attempt, elapsed, exc)
                raise
            if stop.is_set():
                log.error("%s: giving up at shutdown after %d attempts: %s", what, attempt, exc)
                raise
            jitter = 1.0 + cfg.randomization_factor * random.uniform(-1.0, 1.0)
            delay = exc.delay if isinstance(exc, RetryAfter) else interval * jitter
            delay = min(delay, float(cfg.max_interval))
            if cfg.max_elapsed_time:
                delay = min(delay, max(0.0, cfg.max_elapsed_time - elapsed))
            if on_retry is not None:
                on_retry(exc)
            log.warning("%s failed (attempt %d), retrying in %.2fs: %s", what, attempt, delay, exc)
            stop.wait(delay)
            interval = min(interval * cfg.multiplier, float(cfg.max_interval))
