"""Network namespaces on a bridge (+tbf) for party networks; root, own objects, 198.18/15 only.

Security assumption: needs root and iproute2 and changes only objects it creates (namespaces named
with a random tag, veths and a bridge inside them); addresses come from 198.18.0.0/15 (RFC 2544
benchmark range) and exist only inside those namespaces, so nothing here can reach or disturb a
real network. Always use it as a context manager: teardown deletes every namespace it created.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from privinfer.net.lifetime import spawn

__all__ = ["TEST_NETWORK", "NetnsCluster", "NetnsError", "netns_available"]

TEST_NETWORK = "198.18.0.0/15"
_IP_TIMEOUT = 10


class NetnsError(RuntimeError):
    """An `ip`/`tc` command failed while building or using the namespaces."""


def _run(argv: Sequence[str]) -> None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=_IP_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(argv[:4])} ... failed ({type(exc).__name__})") from None
    if r.returncode != 0:
        raise NetnsError(f"'{' '.join(argv)}' failed: {r.stderr.strip()[:200]}")


@functools.cache
def netns_available() -> bool:
    """True when running as root with `ip` that can create and delete a namespace here."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"pvprobe{secrets.token_hex(3)}"
    try:
        _run(["ip", "netns", "add", probe])
    except NetnsError:
        return False
    try:
        _run(["ip", "netns", "del", probe])
    except NetnsError:
        pass
    return True


class NetnsCluster:
    """`n` namespaces, each with `eth0` at 198.18.<subnet>.<i+1>/24, joined by a bridge in a hub.

    `rate` (e.g. "100mbit", or one per namespace, None for unshaped) shapes each namespace's link
    with tbf in both directions (egress of eth0 and of its hub-side veth). Latency needs `privinfer.net.relay` (this kernel has no netem).
    """

    def __init__(
        self,
        n: int = 3,
        *,
        rate: str | Sequence[str | None] | None = None,
        burst: str = "32kbit",
        tbf_latency: str = "400ms",
        subnet: int = 0,
        prefix: str = "pvi",
    ) -> None:
        if not 1 <= n <= 250 or not 0 <= subnet <= 255:
            raise ValueError("need 1 <= n <= 250 namespaces and 0 <= subnet <= 255")
        self.n = n
        self.rates = list(rate) if isinstance(rate, (list, tuple)) else [rate] * n
        if len(self.rates) != n:
            raise ValueError("need one rate per namespace")
        self.rate = rate
        self.burst = burst
        self.tbf_latency = tbf_latency
        tag = secrets.token_hex(3)
        self.hub = f"{prefix}{tag}h"
        self.names = [f"{prefix}{tag}p{i}" for i in range(n)]
        self.addresses = [f"198.18.{subnet}.{i + 1}" for i in range(n)]
        for a in self.addresses:
            assert ipaddress.ip_address(a) in ipaddress.ip_network(TEST_NETWORK)
        self._created: list[str] = []

    def __enter__(self) -> NetnsCluster:
        try:
            self._build()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def _add_ns(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._created.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _build(self) -> None:
        self._add_ns(self.hub)
        _run(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.hub, "link", "set", "br0", "up"])
        for i, (name, addr) in enumerate(zip(self.names, self.addresses, strict=True)):
            self._add_ns(name)
            hv = f"h{i}"
            _run(
                ["ip", "-n", self.hub, "link", "add", hv, "type", "veth"]
                + ["peer", "name", "eth0", "netns", name]
            )
            _run(["ip", "-n", self.hub, "link", "set", hv, "master", "br0"])
            _run(["ip", "-n", self.hub, "link", "set", hv, "up"])
            _run(["ip", "-n", name, "addr", "add", f"{addr}/24", "dev", "eth0"])
            _run(["ip", "-n", name, "link", "set", "eth0", "up"])
            if self.rates[i]:
                for ns, dev in ((name, "eth0"), (self.hub, hv)):
                    _run(
                        ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root"]
                        + ["tbf", "rate", str(self.rates[i]), "burst", self.burst]
                        + ["latency", self.tbf_latency]
                    )

    def cleanup(self) -> None:
        """Delete every namespace this object created (their veths and bridge go with them)."""
        while self._created:
            name = self._created.pop()
            try:
                _run(["ip", "netns", "del", name])
            except NetnsError:
                pass

    def command(self, i: int, argv: Sequence[str]) -> list[str]:
        """The argv that runs `argv` inside namespace `i`."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        return ["ip", "netns", "exec", self.names[i], *argv]

    def popen(self, i: int, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside namespace `i` (kwargs as for subprocess.Popen); it dies with this
        process (`net.lifetime.spawn`: `ip netns exec` execs `argv` in place, which keeps the
        parent-death signal)."""
        return spawn(self.command(i, argv), **kwargs)

    def run(self, i: int, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run `argv` inside namespace `i` to completion (kwargs as for subprocess.run)."""
        kwargs.setdefault("timeout", 60)
        return subprocess.run(self.command(i, argv), **kwargs)
