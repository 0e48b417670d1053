"""Emulated party networks (none/lan/wan) for benchmarks: netns + tbf + delaying relay, measured.

Assumptions: `lan`/`wan` need root and `ip netns` (Linux). Each host is a fresh network namespace
from `NetnsCluster` (198.18.0.0/15 addresses that exist only inside it); bandwidth is tbf on its
veths (this kernel has no netem) and latency is a `DelayRelay` running inside the dialled host's
namespace, so every host-to-host connection crosses one relay holding each chunk RTT/2 each
way (it splits TCP: long-RTT slow start is not modelled). `none` is plain loopback. Only loopback
and the namespaces' own addresses are used; RTT and bandwidth are measured between hosts 0 and 1
on the parties' path; processes, relays and namespaces are torn down on exit, error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from privinfer.errors import InputError, PrivinferError
from privinfer.net.cluster import ClusterConfig, free_ports, init_cluster, is_allowed_target
from privinfer.net.lifetime import spawn
from privinfer.net.netns import NetnsCluster, netns_available
from privinfer.net.relay import DelayRelay

__all__ = [
    "PROFILES",
    "NetProfile",
    "NetemError",
    "NetemUnavailableError",
    "NetworkSetup",
    "emulated_links",
    "emulated_network",
    "emulated_pair",
    "emulation_available",
]

PUBLIC_PORT = 29400  # the relayed address peers dial (on the namespace's address)
LISTEN_PORT = 29500  # where the service binds (the namespace's own loopback)
_CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class NetProfile:
    """A network to emulate: round-trip time and bandwidth targets (None = not shaped)."""

    name: str
    rtt_ms: float | None
    rate_mbit: float | None
    burst: str = "32kbit"  # tbf bucket


PROFILES: dict[str, NetProfile] = {
    "none": NetProfile("none", None, None),
    "lan": NetProfile("lan", 1.0, 1000.0, burst="2mbit"),
    "wan": NetProfile("wan", 20.0, 100.0, burst="64kbit"),
}


class NetemUnavailableError(PrivinferError):
    """Network emulation was asked for where it cannot run (not root, or no `ip netns`)."""


class NetemError(PrivinferError):
    """The emulated network was built but could not be measured or used."""


def _is_root() -> bool:
    return os.geteuid() == 0


def emulation_available() -> bool:
    """True when lan/wan emulation can run here: root and a working `ip netns`."""
    return _is_root() and netns_available()


def get_profile(profile: str | NetProfile) -> NetProfile:
    """The profile named `profile` (none, lan, wan), or `profile` itself."""
    if isinstance(profile, NetProfile):
        return profile
    if profile not in PROFILES:
        raise InputError(f"unknown network profile {profile!r}; use one of {', '.join(PROFILES)}.")
    return PROFILES[profile]


def _enter_netns(name: str) -> None:
    """Move the calling thread (only) into network namespace `name`."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into network namespace {name} failed")
    finally:
        os.close(fd)


def _in_netns(name: str, fn: Callable[[], DelayRelay]) -> DelayRelay:
    """Run `fn` in a fresh thread inside namespace `name`; threads it starts stay there."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            _enter_netns(name)
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    t = threading.Thread(target=body, name="privinfer-netem-setns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class NetworkSetup:
    """Hosts 0..n-1 of an emulated network: addresses for a cluster file and process launching.

    `hosts[i]` is the "addr:port" peers dial to reach host i's service, `listen[i]` where that
    service binds inside host i, `addresses[i]` host i's IP; `measured` the targets and the
    RTT/bandwidth measured between hosts 0 and 1."""

    def __init__(
        self, profile: NetProfile, n_hosts: int, host_profiles: Sequence[NetProfile] | None = None
    ) -> None:
        if n_hosts < 1:
            raise InputError("an emulated network needs at least 1 host.")
        if host_profiles is not None and len(host_profiles) != n_hosts:
            raise InputError("per-host profiles need one profile per host.")
        self.profile = profile
        # per-host links: host i's link rate, and the one-way delay of the relay in front of
        # host i's service (so a connection to host i sees host i's RTT)
        self.host_profiles = list(host_profiles) if host_profiles else None
        self.n_hosts = n_hosts
        self.netns: NetnsCluster | None = None
        self.relays: list[DelayRelay] = []
        self.relay_delay_s = 0.0
        self.addresses: list[str] = []
        self.hosts: list[str] = []
        self.listen: list[str] = []
        self.measured: dict[str, Any] = {
            "profile": profile.name,
            "rtt_ms_measured": None,
            "bandwidth_mbit_measured": None,
            "rtt_ms_target": profile.rtt_ms,
            "bandwidth_mbit_target": profile.rate_mbit,
        }
        self._procs: list[subprocess.Popen[Any]] = []

    def build(self) -> None:
        """Create namespaces and relays (lan/wan) or pick free loopback ports (none)."""
        p = self.profile
        if p.rtt_ms is None and p.rate_mbit is None:
            self.addresses = ["127.0.0.1"] * self.n_hosts
            self.hosts = [f"127.0.0.1:{port}" for port in free_ports(self.n_hosts)]
            self.listen = list(self.hosts)
            return
        hps = self.host_profiles or [p] * self.n_hosts
        rates = [f"{h.rate_mbit:g}mbit" if h.rate_mbit is not None else None for h in hps]
        self.netns = NetnsCluster(self.n_hosts, rate=rates, burst=p.burst)
        self.netns.__enter__()
        self.addresses = list(self.netns.addresses)
        assert all(is_allowed_target(a) for a in self.addresses), self.addresses
        self.hosts = [f"{a}:{PUBLIC_PORT}" for a in self.addresses]
        self.listen = [f"127.0.0.1:{LISTEN_PORT}"] * self.n_hosts
        self.relay_delay_s = (p.rtt_ms or 0.0) / 2000.0
        for i, (addr, name) in enumerate(zip(self.addresses, self.netns.names, strict=True)):
            delay = (hps[i].rtt_ms or 0.0) / 2000.0 if self.host_profiles else self.relay_delay_s
            relay = DelayRelay((addr, PUBLIC_PORT), ("127.0.0.1", LISTEN_PORT), delay)
            self.relays.append(_in_netns(name, relay.start))

    def set_relay_delay(self, one_way_delay_s: float) -> None:
        """Change every relay's one-way delay (takes effect for the next chunk)."""
        self.relay_delay_s = max(0.0, one_way_delay_s)
        for r in self.relays:
            r.delay = self.relay_delay_s

    def close(self) -> None:
        """Kill started processes, stop relays, delete namespaces; each step runs regardless."""
        first: BaseException | None = None
        for step in (self._stop_procs, self._stop_relays, self._delete_netns):
            try:
                step()
            except BaseException as exc:  # noqa: BLE001 - finish the teardown, then re-raise
                first = first or exc
        if first is not None:
            raise first

    def _stop_procs(self) -> None:
        procs, self._procs = self._procs, []
        live = [p for p in procs if p.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        for p in live:
            try:
                p.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)

    def _stop_relays(self) -> None:
        if self.relays:  # let connections of just-killed processes drain (quiet relay stop)
            time.sleep(2 * self.relay_delay_s + 0.05)
        while self.relays:
            self.relays.pop().stop()

    def _delete_netns(self) -> None:
        net, self.netns = self.netns, None
        if net is not None:
            net.cleanup()

    def init_cluster(self, out_dir: str | os.PathLike[str], **kwargs: Any) -> ClusterConfig:
        """A party cluster (party i on host i) whose links all cross this network."""
        return init_cluster(out_dir, self.hosts, listen=self.listen, **kwargs)

    def command(self, i: int, argv: Sequence[str]) -> list[str]:
        """The argv that runs `argv` in host `i`."""
        if not 0 <= i < self.n_hosts:
            raise IndexError(i)
        if self.netns is None:
            return list(argv)
        cmd = self.netns.command(i, argv)  # absolute `ip`, so a caller's env needs no PATH
        return [shutil.which(cmd[0]) or cmd[0], *cmd[1:]]

    def popen(
        self, i: int, argv: Sequence[str], env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> subprocess.Popen[Any]:
        """Start `argv` in host `i` (own process group; killed at teardown if still running)."""
        kwargs.setdefault("process_group", 0)
        proc = spawn(self.command(i, argv), env=env, **kwargs)
        self._procs.append(proc)
        return proc

    def _probe(
        self, n_pings: int, bulk_bytes: int, pair: tuple[int, int] = (0, 1)
    ) -> dict[str, Any]:
        if self.n_hosts < 2:
            raise NetemError("measuring the network needs at least 2 hosts.")
        a, b = pair
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        argv = [sys.executable, "-c", _PROBE, str(n_pings), str(bulk_bytes)]
        server = self.popen(b, [*argv, "server", *self.listen[b].rsplit(":", 1)], **pipes)
        client = None
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                raise NetemError("the network probe's server did not start.")
            client = self.popen(a, [*argv, "client", *self.hosts[b].rsplit(":", 1)], **pipes)
            out, err = client.communicate(timeout=60)
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            if client.returncode != 0 or not lines:
                raise NetemError(f"the network probe failed: {err.strip()[-300:]}")
            return json.loads(lines[-1])
        except subprocess.TimeoutExpired:
            raise NetemError("the network probe timed out.") from None
        finally:
            for q in [q for q in (client, server) if q is not None]:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    q.communicate(timeout=2)
                q.kill()  # no-op when it has exited
                q.wait(5)
            self._procs = [p for p in self._procs if p not in (client, server)]

    def measure(
        self, *, n_pings: int = 20, bulk_bytes: int | None = None, calibrate: bool = True
    ) -> dict[str, Any]:
        """Measure RTT (TCP ping-pong, median) and bandwidth (bulk 0->1) between hosts 0 and 1.

        With `calibrate` and an RTT target, the relays' one-way delay is first set from the RTT
        with no added delay and corrected once from a second ping-only probe, so that the measured
        RTT (relay and endpoint overhead included) matches the target."""
        p = self.profile
        if bulk_bytes is None:
            rate = (p.rate_mbit or 1000.0) * 1e6 / 8
            bulk_bytes = int(min(8 << 20, max(1 << 20, rate * 0.25)))
        base = None
        if calibrate and p.rtt_ms is not None and self.relays:
            self.set_relay_delay(0.0)
            base = statistics.median(self._probe(n_pings, 0)["rtts"][3:]) * 1000
            self.set_relay_delay((p.rtt_ms - base) / 2000.0)
            got = statistics.median(self._probe(n_pings, 0)["rtts"][3:]) * 1000
            self.set_relay_delay(self.relay_delay_s - (got - p.rtt_ms) / 2000.0)
        res = self._probe(n_pings, bulk_bytes)
        rtts = [r * 1000 for r in res["rtts"][3:]]
        bw = res["bytes"] * 8 / res["seconds"] / 1e6 if res["seconds"] > 0 else None
        self.measured.update(
            {
                "rtt_ms_measured": round(statistics.median(rtts), 3),
                "bandwidth_mbit_measured": round(bw, 1) if bw is not None else None,
                "rtt_ms_min": round(min(rtts), 3),
                "rtt_ms_max": round(max(rtts), 3),
                "rtt_ms_base": round(base, 3) if base is not None else None,
                "relay_one_way_delay_ms": round(self.relay_delay_s * 1000, 3),
                "bulk_bytes": bulk_bytes,
                "n_hosts": self.n_hosts,
            }
        )
        return dict(self.measured)

    def measure_link(self, a: int, b: int, *, n_pings: int = 20, bulk_bytes: int = 4 << 20) -> dict:
        """RTT (median) and bandwidth a -> b, uncalibrated (per-host links)."""
        res = self._probe(n_pings, bulk_bytes, (a, b))
        rtts = [r * 1000 for r in res["rtts"][3:]]
        bw = res["bytes"] * 8 / res["seconds"] / 1e6 if res["seconds"] > 0 else None
        return {
            "rtt_ms_measured": round(statistics.median(rtts), 3),
            "bandwidth_mbit_measured": round(bw, 1) if bw is not None else None,
        }


@contextlib.contextmanager
def emulated_links(host_profiles: Sequence[str | NetProfile]) -> Iterator[NetworkSetup]:
    """Hosts with a link profile each (host i's rate, and the RTT of connections to host i),
    e.g. (wan, wan, lan): a client on WAN dials a server, which dials a peer on LAN. Each link
    between two hosts is then shaped at the slower rate of the two. Measured: 0 -> 1 and
    1 -> 2 (three hosts or more). Needs root."""
    profs = [get_profile(p) for p in host_profiles]
    if not emulation_available():
        raise NetemUnavailableError("per-link network emulation needs root and `ip netns`.")
    setup = NetworkSetup(profs[1], len(profs), host_profiles=profs)
    try:
        setup.build()
        links = {"0->1": setup.measure_link(0, 1)}
        if len(profs) > 2:
            links["1->2"] = setup.measure_link(1, 2)
        setup.measured.update(
            {
                "profile": "+".join(p.name for p in profs),
                "links": links,
                "per_host": [
                    {"name": p.name, "rtt_ms_target": p.rtt_ms, "rate_mbit_target": p.rate_mbit}
                    for p in profs
                ],
            }  # fmt: skip
        )
        yield setup
    finally:
        setup.close()


_SetupCtx = contextlib.AbstractContextManager[NetworkSetup]


@contextlib.contextmanager
def emulated_network(
    profile: str | NetProfile, n_hosts: int, *, measure: bool = True, calibrate: bool = True
) -> Iterator[NetworkSetup]:
    """Build the network `profile` for `n_hosts` hosts, measure it (n_hosts >= 2), tear it down.

    `none` uses loopback and needs no privileges; `lan` and `wan` raise NetemUnavailableError
    unless root with a working `ip netns`.
    """
    prof = get_profile(profile)
    if (prof.rtt_ms, prof.rate_mbit) != (None, None) and not emulation_available():
        raise NetemUnavailableError(
            f"network emulation needs root and `ip netns` (Linux network namespaces), so profile "
            f"'{prof.name}' cannot run here; run as root or use profile 'none'."
        )
    setup = NetworkSetup(prof, n_hosts)
    try:
        setup.build()
        if measure and n_hosts >= 2:
            setup.measure(calibrate=calibrate)
        yield setup
    finally:
        setup.close()


def emulated_pair(profile: str | NetProfile, **kwargs: Any) -> _SetupCtx:
    """The HE case: host 0 is the client, host 1 the server (same API, n_hosts=2)."""
    return emulated_network(profile, 2, **kwargs)


# argv: n_pings bulk_bytes (server|client) HOST PORT; stdlib only, so it starts fast.
_PROBE = r"""
import json, socket, sys, time
n, total, role, host, port = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:5], int(sys.argv[5])
if role == "server":
    srv = socket.create_server((host, port), backlog=1)
    srv.settimeout(30)
    print("ready", flush=True)
    c = srv.accept()[0]
else:
    c = socket.create_connection((host, port), timeout=30)
c.settimeout(60)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def rx(k, first=None):
    b = bytearray()
    while len(b) < k:
        d = c.recv(min(k - len(b), 1 << 20))
        if not d:
            sys.exit("peer closed")
        b += d
        if first is None:
            first = (time.monotonic(), len(b))
    return b, first, time.monotonic()
if role == "server":
    for _ in range(n):
        c.sendall(rx(64)[0])
    _, (t0, n0), t1 = rx(total) if total else (b"", (0.0, 0), 0.0)
    c.sendall((json.dumps({"bytes": total - n0, "seconds": t1 - t0}) + "\n").encode())
    c.recv(1)
else:
    rtts = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.sendall(b"p" * 64)
        rx(64)
        rtts.append(time.perf_counter() - t0)
    c.sendall(bytes(total))
    res = json.loads(c.makefile("rb").readline())
    print(json.dumps({**res, "rtts": rtts}), flush=True)
"""
