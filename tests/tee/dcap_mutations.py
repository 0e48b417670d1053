"""Deterministic mutations of real DCAP quotes, by field class, for the dcap-qvl differential test.

Each `Case` is one input: quote bytes, the collateral (None: parse-only comparison) and the
verification time, with `vector` and `kind` naming where it came from. Everything is derived
from `random.Random(seed)`, so the same seed gives the same cases.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from privinfer.tee.evidence.dcap import parse_quote

BEGIN = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class Vector:
    name: str
    quote: bytes
    collateral: bytes | None
    at: datetime


@dataclass(frozen=True)
class Case:
    vector: str
    kind: str
    quote: bytes
    collateral: bytes | None
    at: datetime


def regions(quote: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges [start, end) of each field class of a well-formed quote."""
    q = parse_quote(quote)
    body_end = len(q.signed)
    sig = body_end + 4
    qe = sig + 128 + (6 if q.version >= 4 else 0)
    auth = qe + 384 + 64 + 2
    pem = auth + len(q.qe_auth) + 6
    return {
        "header": (0, 48),
        "body": (body_end - len(q.body), body_end),
        "signature": (sig, sig + 64),
        "attestation_key": (sig + 64, sig + 128),
        "qe_report": (qe, qe + 384),
        "qe_report_signature": (qe + 384, qe + 448),
        "qe_auth_data": (auth, auth + len(q.qe_auth)),
        "cert_chain": (pem, pem + len(q.cert_data)),
    }


def which_cert(pem: bytes, pos: int) -> str:
    """Which certificate of a leaf -> CA -> root PEM chain holds byte `pos`."""
    starts = [i for i in range(len(pem)) if pem.startswith(BEGIN, i)]
    index = sum(1 for s in starts if s <= pos) - 1
    return ("leaf", "ca", "root")[max(index, 0)]


def flip(data: bytes, pos: int, bit: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= 1 << bit
    return bytes(out)


def with_chain(quote: bytes, pem: bytes) -> bytes:
    """The quote with its PEM PCK chain replaced and every enclosing size fixed up."""
    q = parse_quote(quote)
    qe_part = q.qe_report + q.qe_report_sig + struct.pack("<H", len(q.qe_auth)) + q.qe_auth
    qe_part += struct.pack("<HI", 5, len(pem)) + pem
    sig = q.signature + q.attest_key
    sig += struct.pack("<HI", 6, len(qe_part)) + qe_part if q.version >= 4 else qe_part
    return q.signed + struct.pack("<I", len(sig)) + sig + bytes(q.padding_len)


def chain_swaps(quote: bytes) -> Iterator[tuple[str, bytes]]:
    """Certificate-level mutations of the PCK chain: reorder, drop, duplicate."""
    certs = [BEGIN + c for c in parse_quote(quote).cert_data.split(BEGIN)[1:]]
    leaf, ca, root = certs[0], certs[1], certs[2]
    yield "chain_reversed", with_chain(quote, root + ca + leaf)
    yield "chain_ca_first", with_chain(quote, ca + leaf + root)
    yield "chain_no_root", with_chain(quote, leaf + ca)
    yield "chain_no_ca", with_chain(quote, leaf + root)
    yield "chain_leaf_twice", with_chain(quote, leaf + leaf + ca + root)
    yield "chain_ca_as_leaf", with_chain(quote, ca + root)


def mutations(v: Vector, rnd: random.Random, flips_per_class: int) -> Iterator[Case]:
    """The seeded mutations of one vector (its unchanged form first)."""

    def case(kind: str, data: bytes, at: datetime | None = None) -> Case:
        return Case(v.name, kind, data, v.collateral, at or v.at)

    yield case("original", v.quote)
    for name, (start, end) in regions(v.quote).items():
        for _ in range(flips_per_class):
            pos = rnd.randrange(start, end)
            kind = f"flip_{name}"
            if name == "cert_chain":
                kind += "_" + which_cert(v.quote[start:end], pos - start)
            yield case(kind, flip(v.quote, pos, rnd.randrange(8)))
    q = parse_quote(v.quote)
    quote_end = len(v.quote) - q.padding_len
    for _ in range(flips_per_class):
        yield case("truncate", v.quote[: rnd.randrange(quote_end)])
    yield case("truncate_last_byte", v.quote[: quote_end - 1])
    for n in (1, 70, rnd.randrange(2, 4096)):
        yield case("append_zero", v.quote + bytes(n))
    for n in (1, 70, rnd.randrange(2, 4096)):
        tail = bytearray(n)
        tail[rnd.randrange(n)] = rnd.randrange(1, 256)
        yield case("append_nonzero", v.quote + bytes(tail))
    for kind, data in chain_swaps(v.quote):
        yield case(kind, data)
    if v.collateral is not None:
        yield case("time_far_future", v.quote, v.at + timedelta(days=3650))
        yield case("time_after_collateral", v.quote, v.at + timedelta(days=40))
        yield case("time_before_collateral", v.quote, v.at - timedelta(days=40))
