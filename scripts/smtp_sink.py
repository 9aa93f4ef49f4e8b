#!/usr/bin/env python3
"""A real SMTP server for local runs and tests: accepts every mail and stores
each message as one .eml file (written to a temp name, then renamed).

With --http-port it also serves the stored mail over HTTP, for clients that
cannot read the folder (the e2e scenario, when the sink runs in a pod):
  GET /latest?to=ADDRESS   the newest message to ADDRESS, raw (404 if none)
  GET /healthz             200
"""
import argparse
import os
import sys
import time

from aiosmtpd.controller import Controller


class Store:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd API)
        self.count += 1
        name = f"{time.time_ns():020d}-{self.count:06d}.eml"
        tmp = os.path.join(self.directory, f".{name}.tmp")
        with open(tmp, "wb") as f:
            f.write(envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode())
        os.replace(tmp, os.path.join(self.directory, name))
        print(f"stored {name} from {envelope.mail_from} to {','.join(envelope.rcpt_tos)}", flush=True)
        return "250 Message accepted for delivery"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--http-port", type=int, default=0, help="serve stored mail over HTTP (0: off)")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    controller = Controller(Store(args.dir), hostname=args.host, port=args.port)
    controller.start()
    print(f"smtp sink on {args.host}:{args.port}, mail in {args.dir}", flush=True)
    http = _serve_http(args.host, args.http_port, args.dir) if args.http_port else None
    try:
        _wait_forever()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
        if http is not None:
            http.shutdown()
    return 0


def _newest_to(directory: str, address: str):
    """The raw bytes of the newest stored message whose To header names address."""
    import email
    from email import policy

    for name in sorted((n for n in os.listdir(directory) if n.endswith(".eml")), reverse=True):
        with open(os.path.join(directory, name), "rb") as f:
            raw = f.read()
        to = email.message_from_bytes(raw, policy=policy.default).get("To", "")
        if address.lower() in str(to).lower():
            return raw
    return None


def _serve_http(host: str, port: int, directory: str):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlparse

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            url = urlparse(self.path)
            if url.path == "/healthz":
                return self._send(200, b"ok\n", "text/plain")
            if url.path == "/latest":
                address = (parse_qs(url.query).get("to") or [""])[0]
                if not address:
                    return self._send(400, b"to= is required\n", "text/plain")
                raw = _newest_to(directory, address)
                if raw is None:
                    return self._send(404, b"no mail to that address\n", "text/plain")
                return self._send(200, raw, "message/rfc822")
            return self._send(404, b"not found\n", "text/plain")

        def _send(self, status, body, content_type):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"mail over HTTP on {host}:{port}", flush=True)
    return server


def _wait_forever() -> None:
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


if __name__ == "__main__":
    sys.exit(main())
