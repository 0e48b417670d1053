"""A second opinion: privinfer and dcap-qvl (Phala-Network's DCAP verifier, Python bindings) on
every real DCAP vector and seeded mutations of each field class must agree on accept/reject,
except for the disagreements listed in EXPECTED, each with its reason.

Both sides get the same question: is the quote valid at time `at` with this collateral, and is
its TCB status one of STATUSES (every Intel status but Revoked; dcap-qvl's `verify` refuses
Revoked and platforms below every level itself)? The go-tdx-guest v5 quote has no matching
collateral (its TCB info is newer than the only QE identity published with it), so for it only
parsing is compared (`dcap_qvl.parse_quote` against `dcap.parse_quote`).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from privinfer.tee.claims import EvidenceRejected
from privinfer.tee.evidence.dcap import parse_quote
from privinfer.tee.evidence.detect import verify_evidence
from privinfer.tee.policy import ANY, Policy

from .dcap_mutations import Case, Vector, mutations

dcap_qvl = pytest.importorskip("dcap_qvl")

DATA = Path(__file__).parents[1] / "data" / "attestation"
SEED = 13
FLIPS_PER_CLASS = 9
STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
    }
)
POLICY = Policy(allowed_measurements=ANY, allowed_signers=ANY, allowed_tcb_statuses=STATUSES)
GO_SUFFIX = b"\nextra bytes(only for testing purpose)\n"


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


VECTORS = [
    Vector(
        "sgx_v3",
        read("sgx_quote_v3.dat"),
        read("sgx_quote_collateral.json"),
        datetime(2025, 7, 1, tzinfo=UTC),
    ),
    Vector(
        "tdx_v4_padded",
        read("dcap_qvl_tdx_quote_v4.dat"),
        read("dcap_qvl_tdx_quote_v4_collateral.json"),
        datetime(2025, 7, 1, tzinfo=UTC),
    ),
    Vector(
        "tdx_v5_unmatched",
        read("dcap_qvl_tdx_quote_v5_unmatched.dat"),
        read("dcap_qvl_tdx_quote_v5_unmatched_collateral.json"),
        datetime(2026, 3, 1, tzinfo=UTC),
    ),
    Vector(
        "tdx_v4_go",
        read("tdx_quote_v4.dat")[: -len(GO_SUFFIX)],
        read("tdx_quote_v4_collateral.json"),
        datetime(2023, 7, 1, tzinfo=UTC),
    ),
    Vector(
        "tdx_v5_go_parse_only", read("tdx_quote_v5.dat"), None, datetime(2026, 6, 1, tzinfo=UTC)
    ),
]

# Mutation kind -> why the two verifiers may answer differently. Every disagreement must have
# its kind listed here and must go the safe way (privinfer refuses what dcap-qvl accepts); every
# listed kind must disagree at least once (so the list cannot go stale). A listed kind may also
# agree: e.g. on the vectors whose TCB no level matches, both refuse every mutation.
EXPECTED: dict[str, str] = {
    "append_nonzero": "privinfer refuses non-zero bytes after the signature data (unsigned data "
    "riding along with a quote); dcap-qvl ignores whatever follows the quote",
    "chain_no_root": "privinfer pins Intel's root by the SHA-256 of its DER and needs that root at "
    "the end of the quote's PCK chain, as Intel's QE writes it; dcap-qvl carries the root "
    "certificate itself and completes a chain that lacks it",
    "chain_leaf_twice": "privinfer takes the chain exactly as leaf -> PCK CA -> root; dcap-qvl "
    "takes the first certificate as the leaf and builds a path from the rest, skipping extras",
    "flip_cert_chain_root": "a damaged copy of the root inside the quote: dcap-qvl ignores the "
    "quote's root copy (it trusts its own), privinfer finds the chain does not end at the pinned "
    "root (untrusted-root) or cannot parse it (malformed)",
}


def privinfer_accepts(c: Case) -> bool:
    try:
        if c.collateral is None:
            parse_quote(c.quote)
        else:
            verify_evidence(c.quote, policy=POLICY, at=c.at, collateral=c.collateral)
    except EvidenceRejected:
        return False
    return True


def dcap_qvl_accepts(c: Case) -> bool:
    try:
        if c.collateral is None:
            dcap_qvl.parse_quote(c.quote)
            return True
        coll = dcap_qvl.QuoteCollateralV3.from_json(c.collateral.decode())
        report = dcap_qvl.verify(c.quote, coll, int(c.at.timestamp()))
    except (ValueError, RuntimeError):
        return False
    return report.status in STATUSES


def all_cases() -> list[Case]:
    rnd = random.Random(SEED)
    return [case for v in VECTORS for case in mutations(v, rnd, FLIPS_PER_CLASS)]


def test_privinfer_and_dcap_qvl_agree_on_real_quotes_and_mutations() -> None:
    cases = all_cases()
    assert len(cases) >= 300
    agree, unexplained, seen = 0, [], set()
    for c in cases:
        ours, theirs = privinfer_accepts(c), dcap_qvl_accepts(c)
        if ours == theirs:
            agree += 1
        elif c.kind in EXPECTED and not ours:
            seen.add(c.kind)
        else:
            unexplained.append(f"{c.vector}/{c.kind}: privinfer {ours}, dcap-qvl {theirs}")
    print(
        f"\ndcap-qvl differential: {agree} of {len(cases)} cases agree; the other "
        f"{len(cases) - agree} are expected disagreements ({', '.join(sorted(seen))})"
    )
    assert not unexplained, unexplained
    assert seen == set(EXPECTED), f"listed but never seen: {set(EXPECTED) - seen}"


def test_originals_are_accepted_by_both_where_the_status_allows() -> None:
    originals = [c for c in all_cases() if c.kind == "original"]
    verdicts = {c.vector: (privinfer_accepts(c), dcap_qvl_accepts(c)) for c in originals}
    assert verdicts == {
        "sgx_v3": (True, True),
        "tdx_v4_padded": (True, True),
        "tdx_v5_unmatched": (False, False),  # below every TCB level
        "tdx_v4_go": (False, False),  # below every TCB level
        "tdx_v5_go_parse_only": (True, True),
    }


def test_mutations_are_deterministic() -> None:
    first, second = all_cases(), all_cases()
    assert [(c.kind, c.quote, c.at) for c in first] == [(c.kind, c.quote, c.at) for c in second]
