"""The refresh enclave program (started only by teehe.launch, isolated and measured).

Security assumption: as for the tee enclave (tee/enclave.py, tee/isolation.py): it starts as
the launcher's user (root), checks it was launched isolated, loads the software platform (or a
hardware quote provider), its TLS identity and everything a session needs, refreshes once with a
throwaway key, checks that it loaded nothing outside its measurement, forbids further imports,
then drops to its own user (non-dumpable) before it accepts a connection. It serves HE servers
only, over mutual TLS (`he.transport`, the enclave's 2-party CA: enclave = party 0, HE server =
party 1); each connection is one session in its own forked process (`session.RefreshSession`),
which erases the key and exits at DONE, at any error, and when the connection drops (the server
was killed, or went away). The log (stderr) has one line per session start and end with an
enclave-local number, the outcome and the refresh count; never keys, values or client strings.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from privinfer.errors import PrivinferError, SecurityError
from privinfer.he.transport import Connection, PeerRefused, TransportError, handshake
from privinfer.net.lifetime import die_with
from privinfer.teehe.session import RefreshSession


def log(msg: str) -> None:
    sys.stderr.write(f"refresh-enclave: {msg}\n")
    sys.stderr.flush()


def run_session(conn: Connection, quotes: Any, identity: Any) -> tuple[str, int]:
    """Serve one server connection until DONE or it drops; returns (outcome, refreshes)."""
    sess = RefreshSession(quotes, identity)
    outcome = "dropped"
    try:
        while True:
            kind, meta, payload = conn.recv()
            if kind == "HLTH":
                conn.send("HLTH", {"measurement": identity.measurement.hex()})
            elif kind == "ATST":
                pub, quote = sess.attest(bytes.fromhex(str(meta.get("nonce", ""))))
                conn.send("ATST", {"session": sess.session_id.hex(), "pub": pub.hex()}, quote)
            elif kind == "KREL":
                ack, bundle = sess.release(bytes.fromhex(str(meta.get("pub", ""))), payload)
                sizes = {k: len(v) for k, v in bundle.items()}
                conn.send("KREL", {"ack": len(ack), "bundle": sizes, "locked": sess.locked},
                          ack + b"".join(bundle[k] for k in sizes))  # fmt: skip
            elif kind == "KEYS":
                steps, data = sess.galois(str(meta.get("session")), list(meta.get("steps", [])))
                conn.send("KEYS", {"steps": steps}, data)
            elif kind == "RFSH":
                conn.send("RFSH", {}, sess.refresh(str(meta.get("session")), payload))
            elif kind == "DONE":
                outcome = "done"
                conn.send("DONE", usage(sess))
                break
            else:
                raise SecurityError("Unexpected message for a refresh enclave.")
    except (TransportError, PeerRefused):
        outcome = "dropped"
    except PrivinferError as exc:  # the he client's sentences: no values in them
        outcome = f"refused ({type(exc).__name__})"
        _refuse(conn, str(exc))
    except (KeyError, ValueError, TypeError):
        outcome = "refused (malformed request)"
        _refuse(conn, "Malformed refresh-enclave request.")
    finally:
        refreshes = sess.refreshes
        sess.erase()
        conn.close()
    return outcome, refreshes


def usage(sess: RefreshSession) -> dict[str, float]:
    """This session process's CPU seconds (since its fork; Galois keys included), the CPU time
    per refresh, and its peak RSS: public counts."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "refreshes": sess.refreshes,
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
        "cpu_ms_per_refresh": round(1000 * sess.refresh_cpu_s / max(sess.refreshes, 1), 1),
        "peak_rss_mb": round(ru.ru_maxrss / 1024, 1),
    }


def _refuse(conn: Connection, message: str) -> None:
    try:
        conn.send("ERR", {"message": message})
    except TransportError:
        pass


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="privinfer refresh enclave (started by privinfer tee+he)")
    p.add_argument("--platform", required=True)
    p.add_argument("--certs", required=True, help="the enclave's 2-party CA folder (party 0)")
    p.add_argument("--socket-fd", type=int, required=True, help="listening TCP socket, inherited")
    p.add_argument("--run-as", default=None, metavar="UID:GID")
    p.add_argument("--quotes", choices=("software", "gramine", "tdx", "snp"), default="software")
    return p.parse_args(argv)


def _warm_up(quotes: Any, identity: Any) -> None:
    """One key release and refresh with a throwaway key: imports what sessions need."""
    import numpy as np

    from privinfer.he import wire
    from privinfer.he.ckks import PARAMS_16384, CkksContext
    from privinfer.he.refresh import Refresher
    from privinfer.tee.attestation import new_nonce
    from privinfer.tee.channel import RecordType, client_channel
    from privinfer.teehe.protocol import pack_key_release, unpack_ack

    owner = CkksContext.create_client(PARAMS_16384)
    sess = RefreshSession(quotes, identity)
    nonce = new_nonce()
    pub, quote = sess.attest(nonce)
    mine, chan = client_channel(pub, nonce, quote, sess.session_id)
    body = pack_key_release(PARAMS_16384.to_bytes(), owner.export_secret_key())
    ack, bundle = sess.release(mine, chan.seal(RecordType.DATA, bytes(body)))
    owner.session_id = unpack_ack(chan.open(ack)[1])
    server = CkksContext.from_public(bundle)

    class _Direct:
        def refresh(self, payload: bytes) -> bytes:
            return sess.refresh(sess.session_id.hex(), payload)

    ct = wire.unpack_ciphertexts(server, wire.pack_blobs(owner, [owner.encrypt_seeded(np.ones(4))]))
    Refresher(server, _Direct()).refresh([server.mod_switch_to(ct[0], 2)])
    sess.galois(sess.session_id.hex(), [1])
    sess.erase()


def _hardware_quotes(kind: str) -> Any:
    """The hardware quote provider `--quotes` names (None: the software platform)."""
    if kind == "gramine":
        from privinfer.tee.providers import GramineProvider

        return GramineProvider()
    if kind in ("tdx", "snp"):
        from privinfer.tee.tsm import hardware_provider

        return hardware_provider(kind)
    return None


def _start(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from privinfer.net.cluster import load_cluster
    from privinfer.net.tls import server_context
    from privinfer.tee.isolation import make_private
    from privinfer.tee.launch import check_isolated, loaded_outside
    from privinfer.tee.measurement import package_root
    from privinfer.tee.platform import Platform
    from privinfer.tee.providers import SoftwareProvider
    from privinfer.teehe.protocol import DISTRIBUTIONS, code_files, expected_identity

    check_isolated()
    hardware = _hardware_quotes(args.quotes)
    run_as = tuple(int(x) for x in args.run_as.split(":")) if args.run_as else None
    if run_as is not None:
        make_private(Path(args.platform), *run_as)
    platform = Platform(args.platform, owner=run_as[0] if run_as else os.geteuid())
    identity = expected_identity()
    quotes = hardware if hardware is not None else SoftwareProvider(platform)
    tls = server_context(load_cluster(Path(args.certs)), 0)
    _warm_up(quotes, identity)
    bad = loaded_outside(package_root().parent, code_files(), distributions=DISTRIBUTIONS)
    if bad:
        raise PrivinferError("loaded code outside the measurement: " + "; ".join(bad[:5]))
    return quotes, identity, tls


def _serve(sock: socket.socket, tls: Any, quotes: Any, identity: Any) -> None:
    master, number = os.getpid(), 0
    sock.settimeout(0.5)
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        try:
            raw, _ = sock.accept()
        except TimeoutError:
            continue
        number += 1
        if os.fork():
            raw.close()
            continue
        code = 0
        try:  # the session's process: dies with the enclave, exits when the session ends
            die_with(master)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            sock.close()
            t0 = time.perf_counter()
            conn = handshake(raw, tls)
            log(f"session {number} start")
            outcome, refreshes = run_session(conn, quotes, identity)
            took = time.perf_counter() - t0
            log(f"session {number} end: {outcome}, {refreshes} refreshes, {took:.1f} s; key erased")
        except BaseException:  # noqa: BLE001 - a session process never returns to the loop
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """The refresh enclave process (see the module docstring)."""
    from privinfer.tee.isolation import drop_to, watch_parent
    from privinfer.tee.launch import LaunchError, forbid_new_imports

    args = _args(argv)
    parent = os.getppid()
    threading.Thread(target=watch_parent, args=(parent,), daemon=True).start()
    t0 = time.perf_counter()
    try:
        quotes, identity, tls = _start(args)
        forbid_new_imports()
        if args.run_as:
            drop_to(*(int(x) for x in args.run_as.split(":")), parent)
    except (PrivinferError, LaunchError, ValueError, OSError) as exc:
        log(f"cannot start: {exc}")
        return 3
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sock = socket.socket(fileno=args.socket_fd)
    log(
        f"ready in {time.perf_counter() - t0:.1f} s; measurement "
        f"{identity.measurement.hex()[:16]}...; uid {os.getuid()}"
    )
    try:
        _serve(sock, tls, quotes, identity)
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
