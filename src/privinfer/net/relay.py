"""Delaying TCP relay for latency emulation; sees only ciphertext, targets only local/test nets.

Security assumption: the relay is test/benchmark tooling that sees only ciphertext (party links
are TLS end to end) and it refuses targets outside 127.0.0.0/8 and the netns test range, so it can
never be pointed at another machine. This kernel has no netem; the relay emulates one-way latency
(both directions, so a ping-pong through it costs ~2x delay more) and optionally a bandwidth cap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import selectors
import socket
import threading
import time
from types import TracebackType

from privinfer.net.cluster import ClusterConfig, is_allowed_target, parse_hostport

__all__ = ["DelayRelay", "start_cluster_relays"]

_READ = 256 << 10


def _addr(a: str | tuple[str, int]) -> tuple[str, int]:
    return parse_hostport(a) if isinstance(a, str) else (a[0], int(a[1]))


class DelayRelay:
    """Forward TCP connections from `listen` to `target`, each chunk `one_way_delay_s` late.

    Order is preserved per direction. With `rate_bytes_per_s`, chunks also leave no faster than
    that rate (a serialization delay per direction and connection). Use as a context manager or
    call start()/stop(); `address` is the bound (host, port) (port 0 picks a free one).
    """

    def __init__(
        self,
        listen: str | tuple[str, int],
        target: str | tuple[str, int],
        one_way_delay_s: float,
        *,
        rate_bytes_per_s: float | None = None,
    ) -> None:
        self.listen = _addr(listen)
        self.target = _addr(target)
        if not is_allowed_target(self.target[0]) or not is_allowed_target(self.listen[0]):
            raise ValueError("relay addresses must be loopback or in the netns test range")
        if one_way_delay_s < 0 or (rate_bytes_per_s is not None and rate_bytes_per_s <= 0):
            raise ValueError("delay must be >= 0 and rate > 0")
        self.delay = float(one_way_delay_s)
        self.rate = rate_bytes_per_s
        self.address: tuple[str, int] = self.listen
        self.bytes_forwarded = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle
    def start(self) -> DelayRelay:
        self._thread = threading.Thread(target=self._main, name="privinfer-relay", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise OSError(f"relay could not listen on {self.listen[0]}:{self.listen[1]}") from (
                self._error
            )
        return self

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> DelayRelay:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the event loop thread
    def _main(self) -> None:
        try:
            # select() rather than epoll: epoll rounds timeouts up to whole milliseconds, which
            # turns a 0.5 ms one-way delay into 1+ ms and a 1 ms LAN RTT into 2.3 ms.
            factory = lambda: asyncio.SelectorEventLoop(selectors.SelectSelector())  # noqa: E731
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported through start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, self.listen[0], self.listen[1])
        self.address = server.sockets[0].getsockname()[:2]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        t_writer: asyncio.StreamWriter | None = None
        try:
            try:
                t_reader, t_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return
            for w in (c_writer, t_writer):
                sock = w.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.gather(self._pipe(c_reader, t_writer), self._pipe(t_reader, c_writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (c_writer, t_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def pump_in() -> None:
            try:
                while True:
                    data = await src.read(_READ)
                    q.put_nowait((loop.time() + self.delay, data))
                    if not data:
                        return
            except OSError:
                q.put_nowait((loop.time() + self.delay, b""))

        async def pump_out() -> None:
            next_free = 0.0
            while True:
                due, data = await q.get()
                if self.rate is not None and data:
                    next_free = max(due, next_free) + len(data) / self.rate
                    due = next_free
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        if dst.can_write_eof():
                            dst.write_eof()
                    return
                dst.write(data)
                self.bytes_forwarded += len(data)
                await dst.drain()

        await asyncio.gather(pump_in(), pump_out())


def start_cluster_relays(
    cluster: ClusterConfig, one_way_delay_s: float, *, rate_bytes_per_s: float | None = None
) -> list[DelayRelay]:
    """One started relay per listening party: advertised host:port -> listen_host:listen_port.

    Make the cluster with `init_cluster(..., hosts=relay addresses, listen=real addresses)`; every
    pair's connection then crosses exactly one relay (the dialled party's). Stop them when done.
    """
    relays: list[DelayRelay] = []
    try:
        for p in cluster.parties[:-1]:  # the last party dials everyone and listens nowhere
            if (p.host, p.port) == (p.listen_host, p.listen_port):
                raise ValueError(f"party {p.party_id} has no separate listen address for a relay")
            relays.append(
                DelayRelay(
                    (p.host, p.port),
                    (p.listen_host, p.listen_port),
                    one_way_delay_s,
                    rate_bytes_per_s=rate_bytes_per_s,
                ).start()
            )
    except BaseException:
        for r in relays:
            r.stop()
        raise
    return relays


def main(argv: list[str] | None = None) -> None:
    """`python -m privinfer.net.relay --listen H:P --target H:P --delay-ms 10 [--rate-mbit 100]`."""
    ap = argparse.ArgumentParser(prog="python -m privinfer.net.relay", description=main.__doc__)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--delay-ms", type=float, required=True, help="one-way delay")
    ap.add_argument("--rate-mbit", type=float, default=None)
    a = ap.parse_args(argv)
    rate = a.rate_mbit * 1e6 / 8 if a.rate_mbit else None
    with DelayRelay(a.listen, a.target, a.delay_ms / 1000, rate_bytes_per_s=rate) as r:
        print(f"relay {r.address[0]}:{r.address[1]} -> {a.target} (+{a.delay_ms} ms)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
