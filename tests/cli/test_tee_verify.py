"""`privinfer tee verify` (run_verify) on the real samples: output, exit codes, JSON.

A rejection exits 3 (it exited 1 before the CLI's exit codes were unified: `privinfer --help`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from privinfer.cli.tee_verify import add_verify_arguments, run_verify

DATA = Path(__file__).parent.parent / "data" / "attestation"
SGX = str(DATA / "sgx_quote_v3.dat")
SNP = [
    str(DATA / "snp_attestation.bin"),
    "--certs",
    str(DATA / "vcek.der"),
    str(DATA / "ask_ark_milan.pem"),
]
NV = [str(DATA / "hopperAttestationReport.txt"), "--certs", str(DATA / "hopperCertChain.txt")]
MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
AT = ["--at", "2026-06-01T00:00:00Z"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="privinfer tee verify")
    add_verify_arguments(parser)
    rc = run_verify(parser.parse_args(argv))
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_sgx_ok_says_policy_is_any(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run([SGX, *AT], capsys)
    assert rc == 0 and out.startswith("OK: sgx")
    assert f"measurement: {MRENCLAVE}" in out
    assert "ANY measurement" in out and "NOT checked" in out


def test_sgx_with_allowed_measurement(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run([SGX, *AT, "--measurement", MRENCLAVE], capsys)
    assert rc == 0 and "ANY measurement" not in out


def test_wrong_measurement_rejected_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run([SGX, *AT, "--measurement", "00" * 32], capsys)
    assert rc == 3 and "measurement-not-allowed" in out and out.count("\n") == 1


def test_snp_debug_rejected_then_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run([*SNP, *AT], capsys)
    assert rc == 3 and "debug-enabled" in out
    rc, out = run([*SNP, *AT, "--allow-debug"], capsys)
    assert rc == 0 and "debug: True" in out


def test_nvidia_hex_file_with_type(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run([*NV, *AT, "--type", "nvidia"], capsys)
    assert rc == 3 and "debug-unknown" in out  # SPDM does not show the GPU's debug state
    rc, out = run([*NV, *AT, "--type", "nvidia", "--allow-unknown-debug"], capsys)
    assert rc == 0 and out.startswith("OK: nvidia") and "component index_64" in out
    assert "debug: unknown" in out


def test_json_output_and_rejection(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run([SGX, *AT, "--json", "--report-data", b"Hello, world!".hex()], capsys)
    doc = json.loads(out)
    assert rc == 0 and doc["ok"] and doc["claims"]["measurement"] == MRENCLAVE
    assert doc["policy"]["allowed_measurements"] == "any"
    rc, out = run([SGX, *AT, "--json", "--report-data", "00"], capsys)
    doc = json.loads(out)
    assert rc == 3 and doc == {
        "ok": False,
        "stage": "binding",
        "reason": "report-data-mismatch",
        "detail": "",
    }


def test_expired_time(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run([SGX, "--at", "2040-01-01"], capsys)
    assert rc == 3 and "expired" in out


def test_wrong_type_is_rejected_not_crashing(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run([SGX, *AT, "--type", "snp"], capsys)
    assert rc == 3 and "REJECTED" in out


def test_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run([str(tmp_path / "missing.bin")], capsys)[0] == 2
    assert run([SGX, "--at", "yesterday"], capsys)[0] == 2
    assert run([SGX, "--measurement", "xyz"], capsys)[0] == 2


def test_garbage_file_rejected(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 10)
    rc, out = run([str(junk)], capsys)
    assert rc == 3 and "unsupported" in out


def test_mutated_evidence_only_raises_evidence_rejected() -> None:
    """Truncations, byte flips and damaged certificates give named rejections, never raw errors."""
    import binascii
    import random
    import warnings
    from datetime import UTC, datetime

    from privinfer.tee.claims import EvidenceRejected
    from privinfer.tee.evidence.detect import verify_evidence
    from privinfer.tee.policy import ANY, Policy

    policy = Policy(
        allowed_measurements=ANY, allowed_signers=ANY, allow_debug=True, require_tcb=False
    )
    nv = binascii.unhexlify((DATA / "hopperAttestationReport.txt").read_bytes().strip())
    samples = [
        ((DATA / "sgx_quote_v3.dat").read_bytes(), []),
        ((DATA / "tdx_quote_v5.dat").read_bytes(), []),
        (
            (DATA / "snp_attestation.bin").read_bytes(),
            [(DATA / "vcek.der").read_bytes(), (DATA / "ask_ark_milan.pem").read_bytes()],
        ),
        (nv, [(DATA / "hopperCertChain.txt").read_bytes()]),
    ]
    rnd = random.Random(7)
    rejected, passed = 0, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for data, certs in samples:
            for _ in range(60):
                evidence, chain = bytearray(data), [bytearray(c) for c in certs]
                target = rnd.choice([evidence, *chain])
                target[rnd.randrange(len(target))] ^= 1 << rnd.randrange(8)
                cut = rnd.choice([len(evidence), rnd.randrange(len(evidence))])
                try:
                    verify_evidence(
                        bytes(evidence[:cut]),
                        certs=[bytes(c) for c in chain] or None,
                        policy=policy,
                        at=datetime(2026, 6, 1, tzinfo=UTC),
                    )
                except EvidenceRejected:
                    rejected += 1
                else:  # only unsigned, unused bytes (PEM padding) may change harmlessly
                    passed.append((len(evidence), cut))
    assert rejected >= 230, passed


def test_rejection_through_main_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    from privinfer.cli.main import main

    assert main(["tee", "verify", SGX, *AT, "--measurement", "00" * 32]) == 3
    assert "REJECTED" in capsys.readouterr().out
    assert main(["tee", "verify", SGX, *AT]) == 0


def padded_tdx_v4(tmp_path: Path, tail: bytes = b"") -> str:
    """The shared production TDX v4 quote (go-tdx-guest's text suffix removed) in a zero-padded
    5,006-byte buffer, as quote buffers come; `tail` is appended after the padding."""
    raw = (DATA / "tdx_quote_v4.dat").read_bytes()
    quote = raw[: -len(b"\nextra bytes(only for testing purpose)\n")]
    path = tmp_path / "tdx_v4_padded.dat"
    path.write_bytes(quote.ljust(5006, b"\0") + tail)
    return str(path)


def test_tdx_v4_zero_padded_passes_nonzero_byte_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, out = run([padded_tdx_v4(tmp_path), "--type", "tdx", *AT], capsys)
    assert rc == 0 and out.startswith("OK: tdx"), out
    assert "padding_bytes: 71" in out and "tcb_status: not checked" in out
    rc, out = run([padded_tdx_v4(tmp_path, b"\x01"), "--type", "tdx", *AT], capsys)
    assert rc == 3 and "trailing-bytes" in out


def test_collateral_enforces_the_tcb_policy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    at = ["--at", "2025-07-01T00:00:00Z"]
    coll = str(DATA / "sgx_quote_collateral.json")
    rc, out = run([SGX, *at, "--collateral", coll], capsys)
    assert (
        rc == 3 and "tcb-status-not-allowed" in out and "ConfigurationAndSWHardeningNeeded" in out
    )
    allow = ["--allow-tcb-status", "UpToDate", "ConfigurationAndSWHardeningNeeded"]
    rc, out = run([SGX, *at, "--collateral", coll, *allow], capsys)
    assert rc == 0 and "tcb_status: ConfigurationAndSWHardeningNeeded" in out
    rc, out = run([SGX, *at, "--collateral", coll, *allow, "--min-tcb-eval", "18"], capsys)
    assert rc == 3 and "tcb-too-old" in out


def test_collateral_directory_picks_by_fmspc(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in ("sgx_quote_collateral.json", "dcap_qvl_tdx_quote_v4_collateral.json"):
        (tmp_path / name).write_bytes((DATA / name).read_bytes())
    tdx = str(DATA / "dcap_qvl_tdx_quote_v4.dat")
    rc, out = run([tdx, "--at", "2025-07-01", "--collateral", str(tmp_path), "--json"], capsys)
    doc = json.loads(out)
    assert rc == 0 and doc["claims"]["extra"]["tcb_status"] == "UpToDate"
    assert doc["policy"]["require_tcb"] is True
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run([tdx, "--at", "2025-07-01", "--collateral", str(empty)], capsys)[0] == 2
