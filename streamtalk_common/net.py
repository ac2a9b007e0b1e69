"""Loopback ports for services started on the fly (tests, AutoRTC)."""

from __future__ import annotations

import socket


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port free right now (TCP by default; `socket.SOCK_DGRAM` for UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair(step: int, kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port P with P + step free too (a stack's second LiveKit node listens 10
    above the first, its second agent worker one above the first)."""
    while True:
        port = free_port(kind)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port + step))
            except OSError:
                continue
        return port
