"""Run ``otelproc`` with a CPU-by-stage sampler: ``python benchmarks/stage_profiler.py OUT.json serve ...``.

Every ``INTERVAL`` s the sampler reads each Python thread's CPU clock
(``pthread_getcpuclockid``) and charges the CPU it used since the last sample to the
otelproc stage of the innermost matching frame of that thread's current stack (e.g. a
receiver thread inside ``receivers/decode.py`` -> "decode"). Native threads (chDB's
insert and merge pool, gRPC core) are not Python threads; the caller gets them as process
CPU minus the sum. The totals are written to OUT.json once a second and at exit.
(py-spy cannot attach on this machine: "Failed to find python version from target process".)
"""
from __future__ import annotations

import atexit
import collections
import json
import sys
import threading
import time

INTERVAL = 0.005
# innermost frame whose file path contains the key decides the stage
STAGES = (("receivers/decode.py", "decode"), ("kernels/otlp_wire.py", "decode"), ("kernels/otlp_gather.py", "decode"), ("receivers/otlp.py", "receive"),
          ("processors/patterns.py", "patterns"), ("otelproc/patterns/", "patterns"),
          ("kernels/tokenize.py", "patterns"), ("kernels/mask.py", "patterns"), ("kernels/cluster.py", "patterns"),
          ("processors/anomaly.py", "anomaly"), ("otelproc/anomaly/", "anomaly"), ("kernels/detectors.py", "anomaly"),
          ("kernels/series.py", "anomaly"), ("kernels/trend.py", "anomaly"),
          ("processors/alerting.py", "alerting"), ("otelproc/alerting/", "alerting"),
          ("processors/batch.py", "batch"), ("otelproc/batch.py", "batch"), ("store/arrow.py", "store: arrow build"),
          ("exporters/clickhouse.py", "store: insert"), ("otelproc/store/", "store: insert"),
          ("grpc/", "receive"), ("http/server.py", "receive"), ("socketserver.py", "receive"),
          ("gzip.py", "receive"), ("otelproc/pipeline.py", "pipeline"), ("otelproc/telemetry.py", "telemetry"))


def stage_of(frame) -> str:
    while frame is not None:
        path = frame.f_code.co_filename
        for key, stage in STAGES:
            if key in path:
                return stage
        frame = frame.f_back
    return "other python"


def sampler(out_path: str, stop: threading.Event) -> None:
    me = threading.get_ident()
    last: dict[int, float] = {}
    totals: dict[str, float] = collections.Counter()
    next_write = time.monotonic() + 1.0

    def write() -> None:
        with open(out_path, "w") as f:
            json.dump(dict(totals), f)

    atexit.register(write)
    while not stop.wait(INTERVAL):
        frames = sys._current_frames()
        for t in threading.enumerate():
            tid = t.ident
            if tid is None or tid == me or t.native_id is None:
                continue
            try:
                cpu = time.clock_gettime(time.pthread_getcpuclockid(tid))
            except (OSError, ProcessLookupError):
                continue
            prev = last.get(tid)
            last[tid] = cpu
            if prev is not None and cpu > prev:
                totals[stage_of(frames.get(tid))] += cpu - prev
        if time.monotonic() >= next_write:
            write()
            next_write = time.monotonic() + 1.0


def main() -> int:
    out_path, argv = sys.argv[1], sys.argv[2:]
    stop = threading.Event()
    threading.Thread(target=sampler, args=(out_path, stop), name="stage-profiler", daemon=True).start()
    from otelproc.cli import main as otelproc_main

    return otelproc_main(argv)


if __name__ == "__main__":
    sys.exit(main())
