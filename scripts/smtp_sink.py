#!/usr/bin/env python3
"""A real SMTP server for local runs and tests: accepts every mail and stores
each message as one .eml file (written to a temp name, then renamed)."""
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
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    controller = Controller(Store(args.dir), hostname=args.host, port=args.port)
    controller.start()
    print(f"smtp sink on {args.host}:{args.port}, mail in {args.dir}", flush=True)
    try:
        _wait_forever()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
    return 0


def _wait_forever() -> None:
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


if __name__ == "__main__":
    sys.exit(main())
