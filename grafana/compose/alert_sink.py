"""Alert sink of docker-compose.yml: the webhook, Slack-shaped webhook and email receivers of the demo.

Prints every notification it receives, one line each (`docker compose logs -f alert-sink`):
  HTTP  POST on port 9099, any path (/hook: otelproc's and Grafana's webhook; /slack/<team>: Slack JSON)
  SMTP  port 2525 (enough of RFC 5321 for Grafana's and otelproc's email senders; no auth, no TLS)
Standard library only: it runs in the plain python image.
"""
from __future__ import annotations

import json
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 4 << 20


def _summary(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:300].decode(errors="replace")
    if isinstance(doc, dict) and "alerts" in doc:  # Alertmanager / Grafana webhook payload
        return "; ".join(f"[{a.get('status', '?')}] {a.get('labels', {}).get('alertname', '?')} "
                         f"{a.get('annotations', {}).get('summary', '')}" for a in doc["alerts"])
    if isinstance(doc, dict) and ("text" in doc or "attachments" in doc):  # Slack message
        return doc.get("text") or "; ".join(a.get("text", "") for a in doc.get("attachments", []))
    return json.dumps(doc)[:300]


class Webhook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            self.send_error(413, "body too large")
            return
        print(f"http {self.path}: {_summary(self.rfile.read(n))}", flush=True)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, *args) -> None:
        pass


class Smtp(socketserver.StreamRequestHandler):
    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.reply("220 alert-sink ESMTP")
        rcpt: list[str] = []
        while line := self.rfile.readline(65536):
            cmd = line.decode(errors="replace").strip()
            verb = cmd.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 alert-sink")
            elif verb == "MAIL":
                rcpt = []
                self.reply("250 OK")
            elif verb == "RCPT":
                rcpt.append(cmd.split(":", 1)[-1].strip())
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                subject, size = "", 0
                while (data := self.rfile.readline(65536)) and data.rstrip(b"\r\n") != b".":
                    size += len(data)
                    if data.lower().startswith(b"subject:") and not subject:
                        subject = data.decode(errors="replace").split(":", 1)[1].strip()
                print(f"smtp to {', '.join(rcpt)}: {subject} ({size} bytes)", flush=True)
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            elif verb in ("RSET", "NOOP"):
                self.reply("250 OK")
            else:
                self.reply("502 not implemented")


class ThreadingTCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main(http_port: int = 9099, smtp_port: int = 2525) -> None:
    smtp = ThreadingTCPServer(("0.0.0.0", smtp_port), Smtp)
    threading.Thread(target=smtp.serve_forever, daemon=True).start()
    print(f"alert-sink: HTTP on {http_port}, SMTP on {smtp_port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", http_port), Webhook).serve_forever()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
