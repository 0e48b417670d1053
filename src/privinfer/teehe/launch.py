"""Start the refresh enclave: isolated and measured (tee/launch.py), as its own user, on a TCP port.

Security assumption: the launcher (the operator's `privinfer tee+he serve`, or a test) is
untrusted for the data; as for `tee serve`, run as root it starts the enclave as the system user
`privinfer-enclave` (tee/isolation.py), which alone can read the platform directory afterwards;
`insecure_same_user=True` keeps one user (the threat rows then say so). The enclave dies with its
launcher (net/lifetime.py). The launcher holds the HE server's side of the enclave's 2-party CA
(`enclave-certs`: enclave = party 0, server = party 1); whoever holds the CA key is trusted to
mint server identities, which may ask for refreshes (never for a key: keys come only from
clients, over attested channels).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from privinfer.errors import InputError, PrivinferError
from privinfer.he.transport import Connection, TransportError, ensure_identities
from privinfer.net.cluster import ClusterConfig, load_cluster
from privinfer.teehe.protocol import MODULE


@dataclass
class RefreshEnclave:
    """A running refresh enclave: its process, address and the CA its clients (servers) use."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    certs: Path

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def connect_enclave(
    cluster: ClusterConfig, host: str, port: int, timeout_s: float = 10.0
) -> Connection:
    """The HE server's mutual-TLS connection to a refresh enclave (it must be party 0 of the CA)."""
    from privinfer.he.transport import connect

    try:
        return connect(cluster, host, port, timeout_s)
    except TransportError:
        raise TransportError(f"Could not reach the refresh enclave at {host}:{port}.") from None


def ensure_platform(platform_dir: Path) -> Path:
    """Create the software platform if absent; returns the root certificate clients pin."""
    from privinfer.tee.platform import ROOT_CERT, init_platform

    if not platform_dir.exists():
        platform_dir.parent.mkdir(parents=True, exist_ok=True)
        init_platform(platform_dir, export_root_to=platform_dir.parent / "root_cert.pem")
    root = platform_dir.parent / "root_cert.pem"
    if not root.exists():
        root.write_bytes((platform_dir / ROOT_CERT).read_bytes())
    return root


def start(
    platform_dir: Path,
    certs: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    insecure_same_user: bool = False,
    enclave_user: str | None = None,
    quotes: str = "software",
    log: Path | None = None,
    ready_timeout_s: float = 120.0,
) -> RefreshEnclave:
    """Launch the refresh enclave and wait until it answers over mutual TLS."""
    from privinfer.net.lifetime import spawn
    from privinfer.tee import launch
    from privinfer.tee.enclave_link import enclave_user as pick_user
    from privinfer.tee.measurement import package_root

    run_as = pick_user(insecure_same_user, enclave_user)
    listener = socket.create_server((host, port))
    bound = listener.getsockname()[1]
    cluster = ensure_identities(certs, bound)
    args = ["--platform", str(platform_dir), "--certs", str(certs)]
    args += ["--socket-fd", str(listener.fileno()), "--quotes", quotes]
    if run_as is not None:
        args += ["--run-as", f"{run_as[0]}:{run_as[1]}"]
    cmd = launch.command(package_root().parent, args, launch.bootstrap_for(MODULE))
    err = open(log, "ab") if log is not None else None  # noqa: SIM115 - handed to the child
    try:
        proc = spawn(cmd, stdin=subprocess.DEVNULL, stderr=err, env=launch.ENV,
                     pass_fds=(listener.fileno(),), cwd="/")  # fmt: skip
    finally:
        listener.close()
        if err is not None:
            err.close()
    enclave = RefreshEnclave(proc, host, bound, certs)
    deadline = time.monotonic() + ready_timeout_s
    while True:
        if proc.poll() is not None:
            raise PrivinferError("The refresh enclave exited during start-up (see its log).")
        try:
            conn = connect_enclave(cluster, host, bound, timeout_s=5.0)
            try:
                conn.send("HLTH")
                conn.recv("HLTH")
                return enclave
            finally:
                conn.close()
        except (TransportError, InputError):
            if time.monotonic() > deadline:
                enclave.stop()
                raise PrivinferError("The refresh enclave did not become ready in time.") from None
            time.sleep(0.3)


def load_enclave_cluster(certs: Path) -> ClusterConfig:
    return load_cluster(certs)


def serve_with_enclave(
    model: object,
    folder: Path,
    port: int,
    *,
    host: str = "127.0.0.1",
    enclave_url: str | None = None,
    enclave_certs: Path | None = None,
    insecure_same_user: bool = False,
    ranges: object = None,
    ready: object = None,
    max_sessions: int = 4,
) -> None:
    """`privinfer tee+he serve`: start a local refresh enclave (unless `enclave_url` names one,
    reached with `enclave_certs`), then serve clients. `folder` holds the clients' CA (`certs`),
    the enclave's CA, the software platform and its root (`root_cert.pem`, which clients pin),
    and the stored jobs (ciphertexts and error sentences only)."""
    from privinfer.he.transport import ensure_identities as client_identities
    from privinfer.net.cluster import parse_hostport
    from privinfer.teehe.server import serve

    folder.mkdir(parents=True, exist_ok=True)
    cluster = client_identities(folder / "certs", port)
    enclave: RefreshEnclave | None = None
    try:
        if enclave_url is None:
            ensure_platform(folder / "platform")
            enclave = start(folder / "platform", folder / "enclave-certs",
                            insecure_same_user=insecure_same_user, log=None)  # fmt: skip
            target = (load_cluster(enclave.certs), enclave.host, enclave.port)
            (folder / "enclave.json").write_text(
                json.dumps({"host": enclave.host, "port": enclave.port, "pid": enclave.proc.pid})
            )
        else:
            if enclave_certs is None:
                raise InputError("--enclave-url needs --enclave-certs (the enclave's CA folder).")
            ehost, eport = parse_hostport(enclave_url.removeprefix("tls://"))
            target = (load_cluster(enclave_certs), ehost, eport)
        serve(model, cluster, host, port, target, folder / "jobs", ready=ready,  # type: ignore[arg-type]
              ranges=ranges, max_sessions=max_sessions)  # type: ignore[arg-type]  # fmt: skip
    finally:
        if enclave is not None:
            enclave.stop()
