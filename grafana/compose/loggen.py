"""Log generator of docker-compose.yml: appends realistic multi-service lines to a file the
collector tails. Line format (parsed by grafana/compose/otelcol.yaml):
    2026-01-01T00:00:00.000Z INFO checkout Order 123 placed ... latency=42ms
Standard library only (runs in the plain python image)."""
import os
import random
import sys
import time
from datetime import datetime, timezone

LINES = [
    ("frontend", "INFO", 14.0, "GET /api/{path} HTTP/1.1 200 took {lat}ms"),
    ("frontend", "WARN", 0.2, "Slow request to /api/{path}, retrying in {n} ms"),
    ("frontend", "ERROR", 0.1, "upstream connect error or disconnect/reset before headers to 10.0.{a}.{b}:8080"),
    ("checkout", "INFO", 4.0, "Order {n} placed for customer {hex} latency={lat}ms"),
    ("checkout", "ERROR", 0.05, "Failed to reserve stock for order {n}: timeout after {lat} ms"),
    ("payment", "INFO", 3.0, "Payment authorization for txn {hex} completed, duration: {lat} ms"),
    ("payment", "ERROR", 0.05, "Card processor returned error code {a} for txn {hex}"),
    ("inventory", "INFO", 5.0, "Query on table stock executed, elapsed {lat} ms, rows={a}"),
]


def main() -> int:
    path = os.environ.get("LOGGEN_FILE", "/var/log/demo/app.log")
    scale = float(os.environ.get("LOGGEN_RATE_SCALE", "1.0"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = random.Random(int(os.environ.get("LOGGEN_SEED", "1")))
    with open(path, "a", buffering=1) as out:
        while True:
            t0 = time.time()
            for service, sev, rate, fmt in LINES:
                for _ in range(int(rng.expovariate(1.0) * rate * scale + 0.5)):
                    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
                    body = fmt.format(path=rng.choice(["cart", "user", "items"]), lat=int(rng.lognormvariate(3.5, 0.3)),
                                      n=rng.randint(1000, 99999), hex=f"{rng.getrandbits(32):08x}",
                                      a=rng.randint(1, 254), b=rng.randint(1, 254))
                    out.write(f"{now} {sev} {service} {body}\n")
            time.sleep(max(0.0, 1.0 - (time.time() - t0)))


if __name__ == "__main__":
    sys.exit(main())
