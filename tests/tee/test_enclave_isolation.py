"""The enclave against its own host (issue 13, findings 1 and 2; clean shutdown).

One `privinfer tee serve` (tiny model) is started as root with an attacker's `sitecustomize.py` on
PYTHONPATH; its enclave runs as `privinfer-enclave`. Finding 1: an attacker running as another
non-root user (the host's user, `privinfer-test-host`) can neither load the platform (so cannot
sign quotes) nor derive sealing keys nor read the sealed model or the enclave's memory; the same
attack run as the enclave's own user (what `--insecure-same-user` allows) forges a quote that the
client's verifier accepts. Finding 2: the sitecustomize never runs in the enclave, and an enclave
started without the isolated launch refuses to start. Then SIGTERM stops host and enclave and
removes the socket folder; SIGKILL of another host still takes its enclave down.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights, write_gguf
from privinfer.tee.client import TeeClient, TeeResult
from privinfer.tee.isolation import DEFAULT_ENCLAVE_USER, ensure_user
from privinfer.tee.launch import BOOTSTRAP, LaunchError, loaded_outside
from privinfer.tee.local import LocalServer
from privinfer.tee.measurement import package_root
from privinfer.tee.protocol import enclave_code_files, expected_identity

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create users")
HOST_USER = "privinfer-test-host"
PROMPT = "Paris, the capital"

SITECUSTOMIZE = textwrap.dedent(
    """
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    open(os.path.join(here, "loaded-%d" % os.getpid()), "w").close()
    try:
        from privinfer.tee import channel
        _open = channel.SecureChannel.open
        def _spy(self, record):
            kind, data = _open(self, record)
            with open(os.path.join(here, "leak.bin"), "ab") as f:
                f.write(data)
            return kind, data
        channel.SecureChannel.open = _spy
    except Exception:
        pass
    """
)

# Runs as root up to the imports, then drops to the uid:gid in argv[1] and attacks (finding 1).
ATTACK = textwrap.dedent(
    """
    import json, os, sys
    from privinfer.tee.attestation import new_nonce, report_data, verify_attestation
    from privinfer.tee.channel import public_bytes
    from privinfer.tee.measurement import EnclaveIdentity
    from privinfer.tee.platform import KeyPolicy, Platform
    from privinfer.tee.policy import ANY, Policy
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    import tempfile
    from privinfer.tee.platform import init_platform
    uid, gid = (int(x) for x in sys.argv[1].split(":"))
    pdir, ddir, pid, identity_hex, root_pem = sys.argv[2:7]
    identity = EnclaveIdentity.from_bytes(bytes.fromhex(identity_hex))
    root = open(root_pem, "rb").read()
    def forge(pdir=pdir, root=root):
        plat = Platform(pdir)
        key = X25519PrivateKey.generate()
        nonce = new_nonce()
        quote = plat.quote(identity, report_data(public_bytes(key), nonce, b""))
        policy = Policy(allowed_measurements=frozenset({identity.measurement}), allowed_signers=ANY)
        return verify_attestation(quote, nonce, public_bytes(key), b"", root, policy).measurement.hex()
    # Warm up as root on a throw-away platform, so no lazy import fails after the drop.
    scratch = init_platform(os.path.join(tempfile.mkdtemp(), "p"))
    forge(scratch.directory, scratch.root_cert_pem())
    os.setgroups([]); os.setresgid(gid, gid, gid); os.setresuid(uid, uid, uid)
    out = {}
    def attempt(name, fn):
        try:
            out[name] = "ok:" + str(fn())[:40]
        except Exception as exc:
            out[name] = "refused:" + type(exc).__name__
    attempt("forge_quote", forge)
    attempt("sealing_key", lambda: Platform(pdir).derive_sealing_key(
        identity, key_policy=KeyPolicy.MEASUREMENT, svn=identity.svn, label=b"privinfer-seal-v1:model").hex())
    attempt("read_secret", lambda: open(os.path.join(pdir, "sealing_secret.bin"), "rb").read().hex())
    attempt("read_sealed_model", lambda: len(open(os.path.join(ddir, "model.sealed"), "rb").read(64)))
    attempt("read_enclave_memory", lambda: open(f"/proc/{pid}/mem", "rb").read(1))
    attempt("read_enclave_environ", lambda: open(f"/proc/{pid}/environ", "rb").read())
    print(json.dumps(out))
    """
)


def host_uid() -> tuple[int, int]:
    uid, gid = ensure_user(HOST_USER)
    assert pwd.getpwnam(DEFAULT_ENCLAVE_USER).pw_uid != uid
    return uid, gid


def enclave_of(host: subprocess.Popen[bytes]) -> psutil.Process:
    kids = [p for p in psutil.Process(host.pid).children() if "-I" in p.cmdline()]
    assert len(kids) == 1, kids
    return kids[0]


def socket_dir(enclave: psutil.Process) -> Path:
    paths = [c.laddr for c in enclave.net_connections(kind="unix") if c.laddr]
    assert len(paths) == 1, paths
    return Path(paths[0]).parent


@pytest.fixture(scope="module")
def world() -> Path:
    d = Path(tempfile.mkdtemp(prefix="privinfer-isolation-"))
    d.chmod(0o755)  # the attacker may walk up to the platform directory: only its own mode stops it
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_model(world: Path) -> Path:
    cfg = tiny_llama_config()
    path = write_gguf(world / "tiny.gguf", cfg, tiny_llama_weights(cfg))
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def server(world: Path, tiny_model: Path):
    attack = world / "attack"
    attack.mkdir()
    attack.chmod(0o777)
    (attack / "sitecustomize.py").write_text(SITECUSTOMIZE)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(attack), old]))
    log = open(world / "host.log", "wb")  # noqa: SIM115 - closed below
    srv = LocalServer(
        model=str(tiny_model),
        platform_dir=world / "platform",
        data_dir=world / "data",
        root=world / "root.pem",
        threads=1,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        srv.start()
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old
    srv.attack_dir = attack  # type: ignore[attr-defined]
    yield srv
    srv.stop()
    log.close()


def attack_as(uid_gid: tuple[int, int], srv: LocalServer, tiny: Path) -> dict[str, str]:
    ident = expected_identity(tiny)
    pid = enclave_of(srv.proc).pid  # type: ignore[arg-type]
    argv = [f"{uid_gid[0]}:{uid_gid[1]}", str(srv.platform_dir), str(srv.data_dir), str(pid)]
    argv += [ident.to_bytes().hex(), str(srv.root)]
    env = {"PYTHONPATH": str(package_root().parent), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", ATTACK, *argv], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_enclave_serves_as_its_own_user_and_answers(server: LocalServer, tiny_model: Path) -> None:
    enclave = enclave_of(server.proc)  # type: ignore[arg-type]
    assert enclave.uids().real == pwd.getpwnam(DEFAULT_ENCLAVE_USER).pw_uid
    assert {enclave.uids().effective, enclave.uids().saved} == {enclave.uids().real}
    for d in (server.platform_dir, server.data_dir):
        st = d.stat()
        assert st.st_uid == enclave.uids().real and st.st_mode & 0o777 == 0o700
    res = TeeResult()
    with TeeClient(server.url, root_cert=server.root, model_file=tiny_model) as c:
        out = list(c.generate(PROMPT, max_new_tokens=4, chat=False, result=res))
        assert c.attest().claims.measurement == expected_identity(tiny_model).measurement
    assert len(out) == len(res.token_ids) >= 1


def test_finding1_host_user_cannot_forge_quotes_or_unseal(
    server: LocalServer, tiny_model: Path
) -> None:
    out = attack_as(host_uid(), server, tiny_model)
    assert set(out.values()) == {"refused:PermissionError"}, out


def test_finding1_same_user_control_can_forge(server: LocalServer, tiny_model: Path) -> None:
    """What --insecure-same-user means: as the enclave's user the same attack succeeds, a forged
    quote passes the client's verifier (hence the threat rows say "host: not protected")."""
    pw = pwd.getpwnam(DEFAULT_ENCLAVE_USER)
    out = attack_as((pw.pw_uid, pw.pw_gid), server, tiny_model)
    expected = expected_identity(tiny_model).measurement.hex()[:40]
    assert out["forge_quote"] == "ok:" + expected and out["sealing_key"].startswith("ok:"), out
    assert out["read_enclave_memory"].startswith("refused:")  # not dumpable: even its own user


def test_finding2_sitecustomize_never_runs_in_the_enclave(server: LocalServer) -> None:
    attack: Path = server.attack_dir  # type: ignore[attr-defined]
    enclave = enclave_of(server.proc)  # type: ignore[arg-type]
    loaded = {p.name for p in attack.glob("loaded-*")}
    assert f"loaded-{server.proc.pid}" in loaded  # type: ignore[union-attr]  (the host ran it)
    assert f"loaded-{enclave.pid}" not in loaded
    assert not (attack / "leak.bin").exists()


def test_finding2_enclave_refuses_a_launch_that_is_not_isolated(world: Path) -> None:
    """The bootstrap run without -I/-B and with an attacker's PYTHONPATH: the sitecustomize
    runs (here it only leaves a mark), and the enclave refuses to start before it opens the
    platform. (Code that ran first could of course be anything: only the isolated launch, which
    never runs it, protects; this shows the enclave will not serve from any other launch.)"""
    attack = world / "attack-plain"
    attack.mkdir()
    (attack / "sitecustomize.py").write_text("open(__file__ + '.ran', 'w').close()\n")
    env = {"PYTHONPATH": str(attack), "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, "-c", BOOTSTRAP, str(package_root().parent)]
    argv += ["--platform", str(world / "platform"), "--data", str(world / "data")]
    argv += ["--socket-fd", "0"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "must be started isolated" in done.stderr
    assert (attack / "sitecustomize.py.ran").exists()


def test_finding2_unmeasured_module_is_named(tmp_path: Path) -> None:
    rogue = tmp_path / "rogue.py"
    rogue.write_text("")
    pkg = package_root()
    stub = type(sys)("rogue")
    stub.__file__ = str(rogue)
    extra = type(sys)("privinfer.cli.main")
    extra.__file__ = str(pkg / "cli" / "main.py")
    modules = {"rogue": stub, "privinfer.cli.main": extra, "json": sys.modules["json"]}
    bad = loaded_outside(pkg.parent, enclave_code_files(), modules)
    assert any("rogue" in b and "outside the measured runtime" in b for b in bad), bad
    assert any("privinfer.cli.main" in b and "not measured" in b for b in bad), bad
    assert not any(b.startswith("module json") for b in bad)
    assert issubclass(LaunchError, Exception)


def test_sigterm_stops_the_enclave_and_removes_its_socket_folder(server: LocalServer) -> None:
    enclave = enclave_of(server.proc)  # type: ignore[arg-type]
    sock_dir = socket_dir(enclave)
    assert sock_dir.is_dir()
    server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    assert server.proc.wait(20) == 0  # type: ignore[union-attr]
    enclave.wait(5)
    assert not sock_dir.exists()


def test_sigkill_of_the_host_kills_the_enclave(world: Path, tiny_model: Path) -> None:
    srv = LocalServer(
        model=str(tiny_model),
        platform_dir=world / "platform",
        data_dir=world / "data",
        root=world / "root.pem",
        threads=1,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    srv.start()
    enclave = enclave_of(srv.proc)  # type: ignore[arg-type]
    sock_dir = socket_dir(enclave)  # SIGKILL leaves the host no chance to remove it
    try:
        srv.proc.kill()  # type: ignore[union-attr]
        srv.proc.wait(10)  # type: ignore[union-attr]
        t0 = time.monotonic()
        enclave.wait(5)  # raises psutil.TimeoutExpired if it outlived its host
        assert time.monotonic() - t0 < 5
    finally:
        srv.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_enclave_refuses_a_platform_planted_by_another_user(tmp_path: Path) -> None:
    from privinfer.errors import PrivinferError
    from privinfer.tee.isolation import make_private
    from privinfer.tee.platform import init_platform

    planted = tmp_path / "platform"
    init_platform(planted)
    uid, gid = host_uid()
    os.chown(planted / "sealing_secret.bin", uid, gid)  # the host user knows this secret
    enclave = pwd.getpwnam(DEFAULT_ENCLAVE_USER)
    with pytest.raises(PrivinferError, match="belongs to another user"):
        make_private(planted, enclave.pw_uid, enclave.pw_gid)
    assert (planted / "sealing_secret.bin").stat().st_uid == uid  # nothing was changed
