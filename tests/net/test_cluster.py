"""cluster.toml + cluster CA: files, permissions, certificate names, and clear load errors."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from privinfer.errors import PrivinferError
from privinfer.net.cluster import (
    ClusterConfigError,
    init_cluster,
    load_cluster,
    parse_hostport,
    party_id_from_name,
    party_name,
)


def test_init_writes_cluster(tmp_path: Path) -> None:
    c = init_cluster(tmp_path, ["127.0.0.1:7000", "127.0.0.1:7001", "[::1]:7002"])
    assert c.n_parties == 3
    data = tomllib.loads((tmp_path / "cluster.toml").read_text())
    assert [p["id"] for p in data["party"]] == [0, 1, 2]
    assert (c.party(2).host, c.party(2).port) == ("::1", 7002)
    assert (c.party(0).listen_host, c.party(0).listen_port) == ("127.0.0.1", 7000)
    ca = x509.load_pem_x509_certificate(c.ca_cert.read_bytes())
    assert ca.subject == ca.issuer
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"
    for p in c.parties:
        mode = stat.S_IMODE(p.key.stat().st_mode)
        assert mode == 0o600, oct(mode)
        cert = x509.load_pem_x509_certificate(p.cert.read_bytes())
        cert.verify_directly_issued_by(ca)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert cn == party_name(p.party_id) == f"privinfer-party-{p.party_id}"
        assert san.get_values_for_type(x509.DNSName) == [cn]
        assert cert.public_key().curve.name == "secp256r1"
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert load_cluster(tmp_path) == load_cluster(tmp_path / "cluster.toml") == c


def test_listen_addresses_and_no_overwrite(tmp_path: Path) -> None:
    c = init_cluster(
        tmp_path, ["127.0.0.1:1", "127.0.0.1:2"], listen=["127.0.0.1:11", "127.0.0.1:12"]
    )
    assert (c.party(1).port, c.party(1).listen_port) == (2, 12)
    with pytest.raises(ClusterConfigError, match="already exists"):
        init_cluster(tmp_path)
    c2 = init_cluster(tmp_path, overwrite=True)
    assert c2.n_parties == 3 and c2.cluster_id != c.cluster_id


def test_default_is_three_loopback_parties(tmp_path: Path) -> None:
    c = init_cluster(tmp_path)
    assert [p.host for p in c.parties] == ["127.0.0.1"] * 3


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.replace("[[party]]\nid = 1", "[[party]]\nid = 7"), "missing party 1"),
        (lambda s: s + "\n[[party\n", "not valid TOML"),
        (lambda s: s.replace('cluster_id = "', 'cluster_id = "zz'), "cluster_id"),
        (lambda s: s.replace("port = 29401", "port = 0"), "out of range"),
        (lambda s: s.replace("[[party]]\nid = 1", "[[party]]\nid = 0"), "twice"),
        (lambda s: s.replace('host = "127.0.0.1"\nport = 29402', "port = 29402"), "lacks 'host'"),
        (lambda s: s.replace('ca_cert = "ca.pem"', 'ca_cert = "nope.pem"'), "CA certificate"),
    ],
)
def test_load_errors(tmp_path: Path, edit, message: str) -> None:
    init_cluster(tmp_path)
    f = tmp_path / "cluster.toml"
    f.write_text(edit(f.read_text()))
    with pytest.raises(ClusterConfigError, match=message) as info:
        load_cluster(f)
    assert isinstance(info.value, PrivinferError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ClusterConfigError, match="does not exist"):
        load_cluster(tmp_path / "nothing.toml")
    with pytest.raises(ClusterConfigError, match="has no party 5"):
        init_cluster(tmp_path / "c").party(5)


def test_hostport_and_names() -> None:
    assert parse_hostport("[::1]:80") == ("::1", 80)
    assert parse_hostport("h.example:1") == ("h.example", 1)
    for bad in ("nohost", ":80", "h:0", "h:99999", "h:x"):
        with pytest.raises(ClusterConfigError):
            parse_hostport(bad)
    assert party_id_from_name("privinfer-party-12") == 12
    assert party_id_from_name("privinfer-party-01") is None
    assert party_id_from_name("evil-party-1") is None
