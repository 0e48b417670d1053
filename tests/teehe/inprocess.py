"""A refresh enclave session in this process (software platform in a temp folder), reached
through the same relay messages the tee+he server forwards, for tests that play a party."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from privinfer.he.ckks import PARAMS_16384, CkksContext
from privinfer.he.session import HeClient
from privinfer.tee.platform import init_platform
from privinfer.tee.providers import SoftwareProvider
from privinfer.teehe.client import Trust, release_key
from privinfer.teehe.protocol import expected_identity
from privinfer.teehe.session import RefreshSession


class Relay:
    """Plays the server's relay between `release_key` and an in-process RefreshSession."""

    def __init__(self, sess: RefreshSession) -> None:
        self.sess, self.sent, self.bundle = sess, [], None
        self._reply: tuple[str, dict, bytes] | None = None

    def send(self, kind: str, meta: dict[str, Any] | None = None, payload: bytes = b"") -> None:
        self.sent.append(kind)
        meta = meta or {}
        if kind == "ATST":
            pub, quote = self.sess.attest(bytes.fromhex(meta["nonce"]))
            self._reply = ("ATST", {"session": self.sess.session_id.hex(), "pub": pub.hex()}, quote)
        elif kind == "KREL":
            ack, self.bundle = self.sess.release(bytes.fromhex(meta["pub"]), payload)
            self._reply = ("KREL", {}, ack)

    def recv(self, expect: str | None = None) -> tuple[str, dict, bytes]:
        assert self._reply is not None and self._reply[0] == expect
        out, self._reply = self._reply, None
        return out


def platform(folder: Path) -> tuple[SoftwareProvider, Path]:
    plat = init_platform(folder / "platform", export_root_to=folder / "root.pem")
    return SoftwareProvider(plat), folder / "root.pem"


def released(folder: Path) -> tuple[HeClient, RefreshSession, CkksContext]:
    """A client whose key went to an in-process enclave session; (client, session, the
    server's public context from the enclave's bundle)."""
    quotes, root = platform(folder)
    sess = RefreshSession(quotes, expected_identity())
    client = HeClient.create(PARAMS_16384)
    relay = Relay(sess)
    release_key(relay, client, Trust.for_root(root))  # type: ignore[arg-type]
    return client, sess, CkksContext.from_public(relay.bundle)
