"""Helpers for the reliability tests: generated certificates, OTLP payloads, a TCP proxy that
can be cut, and a ClickHouse-HTTP shim over chDB in its own process."""
from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

from tests.otlp_util import make_request


def make_certs(d: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl CLI)."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=otelproc test CA")
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "localhost"), ("client", "otelproc-test-client")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        extra = ["-extfile", "san.cnf"] if name == "server" else []
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", *extra)
    # a second CA whose client certificate must be refused
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2",
        "-subj", "/CN=rogue")
    return {k: str(d / f) for k, f in (("ca", "ca.pem"), ("server_cert", "server.pem"), ("server_key", "server.key"),
                                        ("client_cert", "client.pem"), ("client_key", "client.key"),
                                        ("rogue_cert", "rogue.pem"), ("rogue_key", "rogue.key"))}


def payload(first: int, n: int, service: str = "rel") -> bytes:
    """Protobuf request with n records whose bodies are 'msg-<i>' for i in first..first+n-1."""
    return make_request([f"msg-{i}" for i in range(first, first + n)], service=service,
                        attrs={"k": "v"}).SerializeToString()


class CuttableProxy:
    """A TCP forwarder to ``target``; ``cut()`` closes the listener and every connection
    (clients then get connection refused), ``restore()`` listens on the same port again."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._lsock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.port = 0
        self.restore()

    def restore(self) -> None:
        import time

        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.time() + 10
        while True:
            try:
                s.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        s.listen(64)
        self.port = s.getsockname()[1]
        self._lsock = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, lsock: socket.socket) -> None:
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            with self._lock:
                self._conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        if self._lsock is not None:
            try:
                self._lsock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            self._lsock.close()
            self._lsock = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.cut()


SHIM = r'''
"""ClickHouse-HTTP shim over chDB (environment.md section 3c), with URL settings passed to chDB."""
import gzip, json, re, sys, threading, uuid, zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit
import chdb

TRANSPORT = {"query", "database", "default_format", "session_id", "session_timeout", "session_check",
             "query_id", "user", "password", "compress", "decompress", "enable_http_compression",
             "wait_end_of_query", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
             "client_protocol_version", "quota_key", "buffer_size", "add_http_cors_header"}
INSERT_RE = re.compile(r"^\s*(INSERT\s+INTO\s+.*?)\s+FORMAT\s+(\w+)\s*$", re.I | re.S)
CODE_RE = re.compile(r"Code:\s*(\d+)")

def _decode_body(data, enc):
    if not enc or enc == "identity": return data
    if enc == "gzip": return gzip.decompress(data)
    if enc == "deflate": return zlib.decompress(data)
    if enc == "lz4":
        import lz4.frame; out = []
        while data:
            d = lz4.frame.LZ4FrameDecompressor(); out.append(d.decompress(data)); data = d.unused_data
        return b"".join(out)
    if enc == "zstd":
        try: from compression import zstd
        except ImportError: from backports import zstd
        return zstd.decompress(data)
    raise ValueError(enc)

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    path_ = ":memory:"
    def log_message(self, *a): pass
    def _send(self, code, body, headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items(): self.send_header(k, v)
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self): self._handle(b"")
    def do_POST(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or ""):
            parts = []
            while (n := int(self.rfile.readline().split(b";")[0], 16)):
                parts.append(self.rfile.read(n)); self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""): pass
            raw = b"".join(parts)
        else:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._handle(_decode_body(raw, self.headers.get("Content-Encoding")))
    def _handle(self, body):
        url = urlsplit(self.path)
        if url.path in ("/ping", "/"):
            if url.path == "/ping" or (not url.query and not body):
                return self._send(200, b"Ok.\n", {"Content-Type": "text/plain"})
        qs = dict(parse_qsl(url.query, keep_blank_values=True))
        params = {k[6:]: v for k, v in qs.items() if k.startswith("param_")}
        settings = {k: v for k, v in qs.items() if k not in TRANSPORT and not k.startswith("param_")}
        query, data = qs.get("query"), None
        if query is None and body[:16].lstrip()[:6].upper() == b"INSERT" and b"\n" in body:
            i = body.index(b"\n"); query, data = body[:i].decode(), body[i + 1:]
        elif query is None: query = body.decode()
        elif body: data = body
        hdr = {"X-ClickHouse-Query-Id": qs.get("query_id") or str(uuid.uuid4()), "X-ClickHouse-Timezone": "UTC",
               "X-ClickHouse-Server-Display-Name": "chdb-shim"}
        conn = chdb.connect(self.path_ + ("?" + urlencode(settings) if settings else ""))
        try:
            if qs.get("database"): conn.query(f"USE `{qs['database']}`")
            m = INSERT_RE.match(query) if data is not None else None
            if m:
                with conn.send_insert(m.group(1), m.group(2)) as ins:
                    ins.append(data); res = ins.finish()
                hdr["X-ClickHouse-Summary"] = json.dumps({"written_rows": str(res.rows_written)})
                return self._send(200, b"", hdr)
            if data is not None: query = query + "\n" + data.decode()
            r = conn.query(query, qs.get("default_format", "TabSeparated"), params=params)
            out = r.bytes() if hasattr(r, "bytes") else bytes(r)
            hdr["Content-Type"] = "application/octet-stream"
            return self._send(200, out, hdr)
        except Exception as e:
            msg = str(e); code = CODE_RE.search(msg)
            hdr["X-ClickHouse-Exception-Code"] = code.group(1) if code else "1000"
            return self._send(500, (msg + "\n").encode(), hdr)
        finally:
            conn.close()

if __name__ == "__main__":
    path, port_file = sys.argv[1], sys.argv[2]
    Handler.path_ = path
    keep = chdb.connect(path)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler); srv.daemon_threads = True
    open(port_file, "w").write(str(srv.server_address[1]))
    srv.serve_forever()
'''


class ChdbShim:
    """The shim in its own process (its own chDB engine and data directory)."""

    def __init__(self, tmp: Path):
        import os
        import sys
        import time

        tmp.mkdir(parents=True, exist_ok=True)
        script = tmp / "chdb_shim.py"
        script.write_text(SHIM)
        port_file = tmp / "shim.port"
        self.log = tmp / "shim.log"
        self.proc = subprocess.Popen([sys.executable, str(script), str(tmp / "shimdata"), str(port_file)],
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT, env=dict(os.environ))
        deadline = time.time() + 60
        while not port_file.exists() or not port_file.read_text():
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError("chDB shim did not start:\n" + self.log.read_text()[-3000:])
            time.sleep(0.05)
        self.port = int(port_file.read_text())

    def query(self, sql: str) -> str:
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/", data=sql.encode(), method="POST")
        return urllib.request.urlopen(req, timeout=60).read().decode()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
