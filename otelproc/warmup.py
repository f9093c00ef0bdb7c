"""Compile the Numba kernels before a command starts its clock (``otelproc warmup``, and the first
``serve`` / ``demo`` / ``report --demo`` / ``patterns FILE`` of an installation).

Numba compiles a kernel on its first call for the argument types of that call and caches the machine
code (``NUMBA_CACHE_DIR``, else ``__pycache__`` beside the kernels; see :func:`configure_cache`).
Calling the kernels one by one would have to repeat every argument type the product uses; instead
:func:`warm_up` runs the real data path on a short simulated run with incidents: OTLP protobuf and
JSON requests decoded by the receiver's decoders, then the ``patterns`` and ``anomaly`` processors
built from their config classes (detectors past their warm-up, so every detector runs), so whatever
the product calls is compiled here. A stamp (hash of the kernels' sources, the Numba and Python
versions) in the cache directory records a finished warm-up: later runs skip it at no cost.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

__all__ = ["configure_cache", "cache_directory", "is_warm", "warm_up"]

KERNELS = Path(__file__).resolve().parent / "kernels"
NS = 1_000_000_000
# event time of the warm-up run and the anomaly warm-up inside it: long enough that every detector
# runs on closed buckets after its warm-up, short enough to take a few seconds once compiled
SPAN_S = 40 * 60.0
ANOMALY_WARMUP_S = 10 * 60.0


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def configure_cache() -> None:
    """Choose where Numba caches compiled kernels, before Numba is imported.

    ``$NUMBA_CACHE_DIR`` if set; else ``__pycache__`` beside the kernels if writable (a venv, an
    editable checkout); else a user cache directory (``$XDG_CACHE_HOME/otelproc/numba`` or
    ``~/.cache/otelproc/numba``: a read-only site-packages); else a per-user temporary directory.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    if _writable_dir(KERNELS / "__pycache__"):
        return
    candidates = [Path(tempfile.gettempdir()) / f"otelproc-numba-{os.getuid() if hasattr(os, 'getuid') else 0}"]
    try:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        candidates.insert(0, base / "otelproc" / "numba")
    except RuntimeError:  # no home directory
        pass
    for candidate in candidates:
        if _writable_dir(candidate):
            os.environ["NUMBA_CACHE_DIR"] = str(candidate)
            return


def cache_directory() -> Path:
    """The directory holding the compiled kernels (after :func:`configure_cache`)."""
    return Path(os.environ["NUMBA_CACHE_DIR"]) if os.environ.get("NUMBA_CACHE_DIR") else KERNELS / "__pycache__"


def _stamp() -> Path:
    import numba

    # the kernels' sources decide what is compiled (a caller passing new argument types compiles that
    # signature on first use, as without a warm-up); their directory too, as Numba keys its cache entries
    # by source directory and installations may share a NUMBA_CACHE_DIR
    h = hashlib.sha256(f"{numba.__version__} {sys.version} {KERNELS}".encode())
    for p in sorted(KERNELS.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return cache_directory() / f"otelproc-warm-{h.hexdigest()[:16]}"


def is_warm() -> bool:
    """True when a warm-up of these kernels (this installation) finished with this cache directory."""
    return _stamp().is_file()


def _to_stderr(line: str) -> None:
    print(f"otelproc: {line}", file=sys.stderr, flush=True)


def warm_up(say: Callable[[str], None] = _to_stderr, force: bool = False) -> float:
    """Compile (or load from the cache) every kernel the data path calls; returns the seconds spent.

    Does nothing when :func:`is_warm` (unless ``force``). Otherwise it says so first (``say``: one
    line, stderr by default), as the first run on a machine takes a minute or more, and when done.
    """
    warm = is_warm()
    if warm and not force:
        return 0.0
    t0 = time.monotonic()
    say(f"running the kernel warm-up again (cache {cache_directory()}) ..." if warm else
        f"compiling kernels, first run only (about a minute of CPU time; cached in {cache_directory()}) ...")
    _run_data_path()
    seconds = time.monotonic() - t0
    try:
        _stamp().write_text(f"warm-up done in {seconds:.1f} s\n")
    except OSError:
        pass  # a read-only cache: the kernels still load from wherever Numba could write them
    say(f"kernels ready in {seconds:.0f} s")
    return seconds


class _Sink:
    def consume(self, batch) -> None:
        pass


def _run_data_path() -> None:
    """A short simulated run with incidents through the decoders and the mining and detection processors."""
    from otelproc.component import Context
    from otelproc.config import ConfigError, decode
    from otelproc.encode import encode_json, encode_protobuf
    from otelproc.processors import anomaly, patterns
    from otelproc.receivers.decode import decode_json, decode_protobuf
    from otelproc.simulate import Incident, Scenario, simulate
    from otelproc.telemetry import Telemetry

    errors: list[str] = []
    anomaly_cfg = decode(anomaly.factory.config_class,
                         {"resolutions": ["10s", "1m"], "warmup": f"{ANOMALY_WARMUP_S:g}s"}, "anomaly", errors)
    patterns_cfg = decode(patterns.factory.config_class, {}, "patterns", errors)
    if errors:
        raise ConfigError(errors)
    ctx = Context(telemetry=Telemetry())
    detect = anomaly.factory.create("anomaly", anomaly_cfg, _Sink(), ctx)
    mine = patterns.factory.create("patterns", patterns_cfg, detect, ctx)
    start_ns = (time.time_ns() - int(SPAN_S * NS)) // (60 * NS) * (60 * NS)
    third = SPAN_S / 3
    incidents = [Incident("error_burst", "checkout", third, third + 300), Incident("new_error_pattern", "payment", third, third + 300),
                 Incident("traffic_drop", "inventory", 2 * third, 2 * third + 300),
                 Incident("latency_creep", "frontend", third, SPAN_S)]
    scenario = Scenario(seed=7, duration_s=SPAN_S, batch_seconds=15.0, start_ns=start_ns, incidents=incidents)
    detect.start()
    mine.start()
    try:
        for i, batch in enumerate(simulate(scenario)):
            if not len(batch):
                continue
            decoded = decode_json(encode_json(batch)) if i == 0 else decode_protobuf(encode_protobuf(batch))
            mine.consume(decoded.batch)
    finally:
        mine.shutdown()
        detect.shutdown()
