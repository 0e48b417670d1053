"""Cluster CA, per-party TLS identities and cluster.toml; trusts its runner, keys stay per party.

Security assumption: whoever runs `init_cluster` is trusted to mint identities, and each party's
private key (`party-<i>.key`, mode 0600) reaches only that party; the CA key (`ca.key`) must not be
copied to party machines. Peers are authenticated solely by a certificate chaining to this CA whose
name is "privinfer-party-<i>".
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import secrets
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from privinfer.errors import PrivinferError

__all__ = [
    "ClusterConfig",
    "ClusterConfigError",
    "PartyConfig",
    "DEFAULT_HOSTS",
    "init_cluster",
    "load_cluster",
    "party_name",
    "parse_hostport",
]

DEFAULT_HOSTS = ["127.0.0.1:29400", "127.0.0.1:29401", "127.0.0.1:29402"]
CLUSTER_FILE = "cluster.toml"
_NAME_PREFIX = "privinfer-party-"


class ClusterConfigError(PrivinferError):
    """cluster.toml or a file it names is missing, malformed or inconsistent."""


def party_name(party_id: int) -> str:
    """The name a party's certificate carries (CN and DNS SAN): 'privinfer-party-<i>'."""
    return f"{_NAME_PREFIX}{int(party_id)}"


def party_id_from_name(name: str) -> int | None:
    """Inverse of `party_name`; None when `name` is not a party name."""
    if not name.startswith(_NAME_PREFIX):
        return None
    rest = name[len(_NAME_PREFIX) :]
    if not rest.isdigit() or (len(rest) > 1 and rest[0] == "0"):
        return None
    return int(rest)


def parse_hostport(text: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); raises ClusterConfigError."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterConfigError(f"'{text}' is not a host:port address.")
    return host, int(port)


@dataclass(frozen=True)
class PartyConfig:
    """One party: where peers reach it, where it listens, and its TLS identity files."""

    party_id: int
    host: str
    port: int
    cert: Path
    key: Path
    listen_host: str
    listen_port: int

    @property
    def name(self) -> str:
        return party_name(self.party_id)


@dataclass(frozen=True)
class ClusterConfig:
    """A loaded cluster.toml (paths resolved relative to its folder)."""

    path: Path
    cluster_id: bytes  # 16 random bytes, public; binds sessions to this cluster
    ca_cert: Path
    parties: tuple[PartyConfig, ...]

    @property
    def n_parties(self) -> int:
        return len(self.parties)

    def party(self, party_id: int) -> PartyConfig:
        for p in self.parties:
            if p.party_id == party_id:
                return p
        raise ClusterConfigError(f"cluster {self.path} has no party {party_id}.")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _toml_str(s: str) -> str:
    out = s.replace("\\", "\\\\").replace('"', '\\"')
    if any(ord(c) < 0x20 for c in out):
        raise ClusterConfigError("cluster paths and hosts must not contain control characters.")
    return f'"{out}"'


def _make_ca(cluster_hex: str, now: _dt.datetime, days: int):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "privinfer"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"privinfer cluster CA {cluster_hex[:12]}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_party_cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    name: str,
    *,
    days: int = 30,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A fresh P-256 key and a CA-signed certificate with CN and DNS SAN `name` (TLS client+server)."""
    now = _dt.datetime.now(_dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "privinfer"),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def init_cluster(
    out_dir: str | os.PathLike[str],
    hosts: list[str] | None = None,
    *,
    listen: list[str] | None = None,
    valid_days: int = 30,
    overwrite: bool = False,
) -> ClusterConfig:
    """Create `out_dir` with cluster.toml, ca.pem/ca.key and party-<i>.pem/.key for each host.

    `hosts[i]` is where peers connect to party i ("host:port"; default 3 parties on 127.0.0.1);
    `listen[i]`, if given, is where party i binds (e.g. behind a delaying relay). Refuses to
    overwrite an existing cluster.toml unless `overwrite`.
    """
    hosts = list(DEFAULT_HOSTS if hosts is None else hosts)
    if len(hosts) < 2:
        raise ClusterConfigError("a cluster needs at least 2 parties.")
    if listen is not None and len(listen) != len(hosts):
        raise ClusterConfigError("listen must name one address per party.")
    addrs = [parse_hostport(h) for h in hosts]
    binds = [parse_hostport(h) for h in listen] if listen is not None else addrs
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    toml_path = out / CLUSTER_FILE
    if toml_path.exists() and not overwrite:
        raise ClusterConfigError(f"{toml_path} already exists; pass overwrite=True to replace it.")

    cluster_id = secrets.token_bytes(16)
    now = _dt.datetime.now(_dt.UTC)
    ca_key, ca_cert = _make_ca(cluster_id.hex(), now, valid_days)
    (out / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(out / "ca.key", _key_pem(ca_key))

    lines = [
        "# privinfer cluster, written by privinfer.net.cluster.init_cluster",
        "# Each party needs cluster.toml, ca.pem and only its own party-<i>.pem/.key.",
        "# ca.key mints identities: keep it off the party machines.",
        "version = 1",
        f"cluster_id = {_toml_str(cluster_id.hex())}",
        f"ca_cert = {_toml_str('ca.pem')}",
        "",
    ]
    for i, ((host, port), (lhost, lport)) in enumerate(zip(addrs, binds, strict=True)):
        key, cert = make_party_cert(ca_key, ca_cert, party_name(i), days=valid_days)
        (out / f"party-{i}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(out / f"party-{i}.key", _key_pem(key))
        lines += [
            "[[party]]",
            f"id = {i}",
            f"host = {_toml_str(host)}",
            f"port = {port}",
            f"listen_host = {_toml_str(lhost)}",
            f"listen_port = {lport}",
            f"cert = {_toml_str(f'party-{i}.pem')}",
            f"key = {_toml_str(f'party-{i}.key')}",
            "",
        ]
    toml_path.write_text("\n".join(lines), encoding="utf-8")
    return load_cluster(toml_path)


def _need(table: dict, key: str, kind: type, where: str):
    if key not in table:
        raise ClusterConfigError(f"{where} lacks '{key}'.")
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ClusterConfigError(f"{where}: '{key}' must be a {kind.__name__}.")
    return value


def load_cluster(path: str | os.PathLike[str]) -> ClusterConfig:
    """Read cluster.toml (or a folder holding it); checks parties 0..n-1 and that files exist."""
    p = Path(path)
    if p.is_dir():
        p = p / CLUSTER_FILE
    if not p.is_file():
        raise ClusterConfigError(f"cluster file {p} does not exist.")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ClusterConfigError(f"cluster file {p} is not valid TOML ({exc}).") from None
    base = p.parent.resolve()
    where = str(p)
    version = data.get("version", 1)
    if version != 1:
        raise ClusterConfigError(f"{where}: unsupported cluster file version {version!r}.")
    cid_hex = _need(data, "cluster_id", str, where)
    try:
        cluster_id = bytes.fromhex(cid_hex)
    except ValueError:
        cluster_id = b""
    if len(cluster_id) != 16:
        raise ClusterConfigError(f"{where}: cluster_id must be 32 hex digits.")
    ca_cert = base / _need(data, "ca_cert", str, where)
    raw_parties = data.get("party")
    if not isinstance(raw_parties, list) or not raw_parties:
        raise ClusterConfigError(f"{where} defines no [[party]] tables.")
    parties: dict[int, PartyConfig] = {}
    for k, t in enumerate(raw_parties):
        if not isinstance(t, dict):
            raise ClusterConfigError(f"{where}: party entry {k} is not a table.")
        pid = _need(t, "id", int, f"{where} party entry {k}")
        pw = f"{where} party {pid}"
        host = _need(t, "host", str, pw)
        port = _need(t, "port", int, pw)
        lhost = t.get("listen_host", host)
        lport = t.get("listen_port", port)
        if not isinstance(lhost, str) or not isinstance(lport, int):
            raise ClusterConfigError(f"{pw}: listen_host/listen_port malformed.")
        for prt in (port, lport):
            if not 0 < prt < 65536:
                raise ClusterConfigError(f"{pw}: port {prt} out of range.")
        if pid in parties:
            raise ClusterConfigError(f"{where} defines party {pid} twice.")
        parties[pid] = PartyConfig(
            party_id=pid,
            host=host,
            port=port,
            cert=base / _need(t, "cert", str, pw),
            key=base / _need(t, "key", str, pw),
            listen_host=lhost,
            listen_port=lport,
        )
    n = len(parties)
    for i in range(n):
        if i not in parties:
            raise ClusterConfigError(f"{where} is missing party {i} (ids must be 0..{n - 1}).")
    if n < 2:
        raise ClusterConfigError(f"{where}: a cluster needs at least 2 parties.")
    if not ca_cert.is_file():
        raise ClusterConfigError(f"{where}: CA certificate {ca_cert} does not exist.")
    return ClusterConfig(
        path=p.resolve(),
        cluster_id=cluster_id,
        ca_cert=ca_cert,
        parties=tuple(parties[i] for i in range(n)),
    )


def is_allowed_target(host: str) -> bool:
    """Whether tooling here may aim traffic at `host`: loopback or the netns test range only."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    if ip.is_loopback:
        return True
    from privinfer.net.netns import TEST_NETWORK  # local import: netns is optional tooling

    return ip in ipaddress.ip_network(TEST_NETWORK)


def free_ports(n: int) -> list[int]:
    """n currently free loopback TCP ports (for local clusters, tests and benchmarks)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
