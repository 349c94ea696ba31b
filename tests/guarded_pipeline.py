"""`aft-pipeline` with every connection beyond loopback refused and recorded (run as a script by the suite).

    python tests/guarded_pipeline.py ATTEMPTS_FILE [aft-pipeline arguments...]

The same entry point a user's `aft-pipeline` calls (flows.cli.main), in a process whose socket.connect and
getaddrinfo refuse any address but loopback and append each attempt to ATTEMPTS_FILE as it happens (so an
attempt is on disk even if the run dies). A Comet API key may be set in the environment: Comet stays offline
(tasks.tracking.comet_online is made False), so the suite can check that the key is never written anywhere.
"""

from __future__ import annotations

import socket
import sys

ATTEMPTS = sys.argv[1]
_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo


def _loopback(host: object) -> bool:
    return str(host) in ("127.0.0.1", "::1", "localhost") or str(host).startswith("127.")


def _record(what: str) -> None:
    with open(ATTEMPTS, "a", encoding="utf-8") as f:
        f.write(what + "\n")


def _guarded_connect(sock: socket.socket, address):  # type: ignore[no-untyped-def]
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        _record(f"connect {address}")
        raise ConnectionRefusedError(f"test: no network beyond loopback ({address})")
    return _connect(sock, address)


def _guarded_getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    if host is not None and not _loopback(host):
        _record(f"resolve {host}")
        raise socket.gaierror(f"test: no name lookups beyond loopback ({host})")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo

if __name__ == "__main__":
    open(ATTEMPTS, "w").close()
    import tasks.tracking
    from flows.cli import main

    tasks.tracking.comet_online = lambda: False  # a key is present; the run stays offline
    sys.exit(main(sys.argv[2:]))
