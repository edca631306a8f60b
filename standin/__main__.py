"""``python -m standin``: run the stand-in Requesty until SIGINT/SIGTERM.

Loopback only by default: the stand-in accepts a well-known token and (with ``--control``) an
unauthenticated control API, so exposing it to a network must be a deliberate choice.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from standin.server import is_loopback
from standin.state import StandIn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m standin", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099, help="0 picks a free port")
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("STANDIN_ADMIN_TOKEN"),
        help="token clients must send (default: $STANDIN_ADMIN_TOKEN)",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before every response")
    parser.add_argument(
        "--control", action="store_true", help="enable the unauthenticated /_standin/ control API (loopback only)"
    )
    parser.add_argument("--allow-remote", action="store_true", help="permit binding to a non-loopback address")
    args = parser.parse_args(argv)
    if not args.admin_token:
        parser.error("--admin-token (or STANDIN_ADMIN_TOKEN) is required")
    if not is_loopback(args.host):
        if not args.allow_remote:
            parser.error(f"refusing non-loopback host {args.host!r} without --allow-remote")
        if args.control:
            parser.error("--control is loopback-only")
    if args.latency < 0:
        parser.error("--latency must be >= 0")

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    standin = StandIn(
        host=args.host, port=args.port, admin_token=args.admin_token, latency=args.latency, control=args.control
    ).start()
    print(f"stand-in Requesty listening on {standin.base_url}", flush=True)
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
