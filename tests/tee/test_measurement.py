"""Tests for enclave identity measurement and its canonical encoding."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from privinfer.tee import measurement as m
from privinfer.tee.measurement import EnclaveIdentity, measure

SIGNER = ec.generate_private_key(ec.SECP384R1()).public_key()


def _tree(
    tmp_path: Path, code: dict[str, bytes], model: dict[str, bytes]
) -> tuple[Path, list[Path]]:
    root = tmp_path / "code"
    for rel, body in code.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    mdir = tmp_path / "model"
    mdir.mkdir(exist_ok=True)
    files = []
    for name, body in model.items():
        (mdir / name).write_bytes(body)
        files.append(mdir / name)
    return root, files


CODE = {"a.py": b"print(1)\n", "pkg/b.py": b"x = 2\n"}
MODEL = {"w.gguf": b"\x01" * 1000, "tok.json": b"{}"}
CONFIG = {"model": "smollm2", "max_tokens": 64}


def _identity(tmp_path: Path, code=CODE, model=MODEL, config=CONFIG, **kw) -> EnclaveIdentity:
    root, files = _tree(tmp_path, code, model)
    args = {"signer_public_key": SIGNER, "product_id": 7, "svn": 3} | kw
    return measure(config=config, model_files=files, code_root=root, **args)


def test_deterministic_and_round_trip(tmp_path: Path) -> None:
    a = _identity(tmp_path / "1")
    b = _identity(tmp_path / "2")
    assert a == b
    raw = a.to_bytes()
    assert len(raw) == m.IDENTITY_LEN == 248
    assert EnclaveIdentity.from_bytes(raw) == a
    assert a.measurement == m.combine_measurement(a.code, a.config, a.model)
    assert len(a.measurement) == 48  # SHA-384


def test_code_change_only_changes_code_component(tmp_path: Path) -> None:
    a = _identity(tmp_path / "1")
    b = _identity(tmp_path / "2", code={**CODE, "a.py": b"print(2)\n"})
    assert a.code != b.code and a.measurement != b.measurement
    assert (a.config, a.model) == (b.config, b.model)


def test_code_path_is_hashed(tmp_path: Path) -> None:
    a = _identity(tmp_path / "1")
    b = _identity(tmp_path / "2", code={"a.py": CODE["a.py"], "pkg/c.py": CODE["pkg/b.py"]})
    assert a.code != b.code


def test_config_change_and_canonical_order(tmp_path: Path) -> None:
    a = _identity(tmp_path / "1")
    reordered = dict(reversed(list(CONFIG.items())))
    assert m.hash_config(reordered) == a.config
    b = _identity(tmp_path / "2", config={**CONFIG, "max_tokens": 65})
    assert a.config != b.config and (a.code, a.model) == (b.code, b.model)
    assert m.canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()
    with pytest.raises(ValueError):
        m.canonical_json({"x": float("nan")})


def test_model_change_only_changes_model_component(tmp_path: Path) -> None:
    a = _identity(tmp_path / "1")
    b = _identity(tmp_path / "2", model={**MODEL, "w.gguf": b"\x01" * 999 + b"\x02"})
    assert a.model != b.model and (a.code, a.config) == (b.code, b.config)


def test_model_hash_streams_and_is_order_independent(tmp_path: Path) -> None:
    big = bytes(range(256)) * 5000  # > 1 MiB chunk
    _, files = _tree(tmp_path, {}, {"big.bin": big, "small.bin": b"s"})
    h = m.hash_model(files)
    assert h == m.hash_model(list(reversed(files)))
    # Reference computation of the documented construction.
    ref = hashlib.sha384(m.lp(b"privinfer-model-v1") + struct.pack(">I", 2))
    for name, body in sorted({"big.bin": big, "small.bin": b"s"}.items()):
        ref.update(
            m.lp(name.encode()) + struct.pack(">Q", len(body)) + hashlib.sha384(body).digest()
        )
    assert h == ref.digest()


def test_duplicate_model_names_rejected(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "w").write_bytes(b"1")
    (tmp_path / "y" / "w").write_bytes(b"2")
    with pytest.raises(ValueError):
        m.hash_model([tmp_path / "x" / "w", tmp_path / "y" / "w"])


def test_signer_svn_debug_product_are_separate_fields(tmp_path: Path) -> None:
    a = _identity(tmp_path / "1")
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    b = _identity(tmp_path / "2", signer_public_key=other, svn=4, debug=True, product_id=8)
    assert a.measurement == b.measurement
    assert a.signer != b.signer and m.signer_id(SIGNER) == a.signer
    assert b.to_bytes()[100:104] == b"\0\0\0\1"
    assert EnclaveIdentity.from_bytes(b.to_bytes()) == b


def test_from_bytes_rejects_bad_encodings(tmp_path: Path) -> None:
    raw = bytearray(_identity(tmp_path).to_bytes())
    with pytest.raises(ValueError):
        EnclaveIdentity.from_bytes(bytes(raw[:-1]))
    with pytest.raises(ValueError):
        EnclaveIdentity.from_bytes(bytes(raw) + b"\0")
    flags = bytearray(raw)
    flags[101] = 0x80
    with pytest.raises(ValueError):
        EnclaveIdentity.from_bytes(bytes(flags))
    inconsistent = bytearray(raw)
    inconsistent[0] ^= 1
    with pytest.raises(ValueError):
        EnclaveIdentity.from_bytes(bytes(inconsistent))
    comp = bytearray(raw)
    comp[200] ^= 1  # model component no longer matches the measurement
    with pytest.raises(ValueError):
        EnclaveIdentity.from_bytes(bytes(comp))


def test_svn_range_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        _identity(tmp_path, svn=1 << 16)


def test_default_code_root_is_privinfer_package() -> None:
    root = m.package_root()
    assert (root / "tee" / "measurement.py").is_file()
    h = m.hash_code()
    assert len(h) == 48
    assert h == m.hash_code(root)
    assert h != m.hash_code(root, ["tee/measurement.py"])
