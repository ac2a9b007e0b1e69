"""A user-space UDP relay that loses and delays datagrams: an impaired network path.

`tc netem` needs a kernel and privileges the test machines lack, so the tests put
LiveKit's media through this relay instead. It listens on one address; every client
address it hears from gets its own upstream socket towards the target, so the target
sees one peer per client and its answers find their way back. Each datagram, in
either direction, is dropped with probability `loss`, otherwise sent after a delay
drawn uniformly from 0..`jitter_ms`. Each datagram is delayed on its own, so two sent
close together may arrive swapped: reordering is part of the jitter, as on a real
path (a receiver's jitter buffer has to cope with both).

The relay runs its own event loop in a daemon thread, so a busy caller (a test's
loop decoding audio) does not add delay of its own. Counters (`forwarded`,
`dropped`) are per direction: "up" is client -> target, "down" target -> client.

    python -m tools.lossy_udp_relay --listen 127.0.0.2:7882 --target 127.0.0.1:7882 \
        --loss 0.05 --jitter-ms 30 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import threading
from collections import Counter
from collections.abc import Callable

Address = tuple[str, int]


def parse_address(text: str) -> Address:
    """`HOST:PORT` -> (host, port); a clear error for anything else."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT with a port in 1..65535, got {text!r}")
    return host, int(port)


class _Forward(asyncio.DatagramProtocol):
    """Hands every datagram a socket receives to `on_datagram(data, addr)`."""

    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.on_datagram(data, addr)


class _Upstream(_Forward):
    """One client's socket towards the target; what is sent before it is open waits."""

    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        super().__init__(on_datagram)
        self.transport: asyncio.DatagramTransport | None = None
        self._waiting: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for data in self._waiting:
            self.transport.sendto(data)  # type: ignore[union-attr]
        self._waiting.clear()

    def send(self, data: bytes) -> None:
        if self.transport is None:
            self._waiting.append(data)
        else:
            self.transport.sendto(data)


class LossyUdpRelay:
    """listen <-> target, dropping `loss` of the datagrams and delaying each by 0..`jitter_ms`."""

    def __init__(self, listen: Address, target: Address, *, loss: float = 0.0,
                 jitter_ms: float = 0.0, seed: int | None = None) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), got {loss}")
        if not 0.0 <= jitter_ms <= 10_000:
            raise ValueError(f"jitter_ms must be in [0, 10000], got {jitter_ms}")
        self.listen = listen
        self.target = target
        self.loss = loss
        self.jitter_s = jitter_ms / 1000.0
        self.forwarded: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lossy-udp-relay",
                                        daemon=True)
        self._listener: asyncio.DatagramTransport | None = None
        self._upstreams: dict[Address, _Upstream] = {}

    # -- life cycle (called from any thread) ----------------------------------------------

    def start(self) -> LossyUdpRelay:
        """Bind the listening socket (raises OSError when the address is taken) and run."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._bind(), self._loop).result(timeout=10)
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._unbind(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> LossyUdpRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def clients(self) -> int:
        """Client addresses seen so far (one upstream socket each)."""
        return len(self._upstreams)

    # -- the relay (on its own loop) ------------------------------------------------------

    async def _bind(self) -> None:
        self._listener, _ = await self._loop.create_datagram_endpoint(
            lambda: _Forward(self._from_client), local_addr=self.listen)

    async def _unbind(self) -> None:
        for transport in [self._listener, *(u.transport for u in self._upstreams.values())]:
            if transport is not None:
                transport.close()

    def _from_client(self, data: bytes, client: Address) -> None:
        upstream = self._upstreams.get(client)
        if upstream is None:
            self._upstreams[client] = upstream = _Upstream(
                lambda reply, _target: self._impair("down", reply,
                                                    lambda d: self._to_client(d, client)))
            self._loop.create_task(self._loop.create_datagram_endpoint(lambda: upstream,
                                                                       remote_addr=self.target))
        self._impair("up", data, upstream.send)

    def _to_client(self, data: bytes, client: Address) -> None:
        assert self._listener is not None
        self._listener.sendto(data, client)

    def _impair(self, direction: str, data: bytes, send: Callable[[bytes], None]) -> None:
        if self._random.random() < self.loss:
            self.dropped[direction] += 1
            return
        self.forwarded[direction] += 1
        delay = self._random.uniform(0.0, self.jitter_s)
        if delay > 0:
            self._loop.call_later(delay, send, data)
        else:
            send(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=parse_address, required=True,
                        help="HOST:PORT clients send to")
    parser.add_argument("--target", type=parse_address, required=True,
                        help="HOST:PORT datagrams go to")
    parser.add_argument("--loss", type=float, default=0.0, help="share of datagrams dropped, 0..1")
    parser.add_argument("--jitter-ms", type=float, default=0.0,
                        help="each datagram delayed 0..this")
    parser.add_argument("--seed", type=int, default=None, help="seed of the loss and delay draws")
    args = parser.parse_args(argv)
    try:
        relay = LossyUdpRelay(args.listen, args.target, loss=args.loss, jitter_ms=args.jitter_ms,
                              seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with relay:
        print(f"relaying {args.listen} -> {args.target}, loss {args.loss}, "
              f"jitter 0..{args.jitter_ms} ms", flush=True)
        stop.wait()
    print(f"forwarded {dict(relay.forwarded)} dropped {dict(relay.dropped)}", flush=True)


if __name__ == "__main__":
    main()
