"""Write-ahead-log cost: encode + append (+ fsync per policy) of 1000-record batches, and replay.

    python benchmarks/wal_append.py <scratch dir> [batches]

Prints log records/s per fsync policy (4 writer threads, as receivers run) and the replay rate.
"""
from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

from otelproc.batch import LogBatch
from otelproc.telemetry import Telemetry
from otelproc.wal import WalConfig, WriteAheadLog, encode_batch


def main() -> None:
    root = Path(sys.argv[1])
    n_batches = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    batch = LogBatch.from_records([{"body": f"GET /api/v1/items/{i} 200 {i % 97}ms user=u{i % 13}", "service": "api",
                                    "time_ns": 1_790_000_000_000_000_000 + i, "attributes": {"http.route": "/items"}}
                                   for i in range(1000)])
    print(f"batch: 1000 records, {len(encode_batch(batch))} bytes encoded")
    for policy in ("none", "interval", "always"):
        d = root / f"wal-{policy}"
        shutil.rmtree(d, ignore_errors=True)
        wal = WriteAheadLog(d, WalConfig(directory=str(root), fsync=policy), Telemetry(), policy)
        wal.open()

        def writer(k: int) -> None:
            for _ in range(k):
                seq = wal.append(encode_batch(batch), len(batch))
                wal.sync(seq)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=writer, args=(n_batches // 4,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        dt = time.perf_counter() - t0
        wal.close()
        print(f"fsync={policy:8s}: {n_batches * 1000 / dt:,.0f} log records/s append ({dt:.2f}s for {n_batches} batches)")
        wal2 = WriteAheadLog(d, WalConfig(directory=str(root), fsync=policy), Telemetry(), policy)
        t0 = time.perf_counter()
        plan = wal2.open()
        n = sum(len(b) for _, b in plan.batches())
        dt = time.perf_counter() - t0
        wal2.close()
        print(f"             replay: {n / dt:,.0f} log records/s ({n} records)")
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
