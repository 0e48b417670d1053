"""Keeping the host out of the enclave: platform kinds, the enclave's own OS user, dropping to it.

Security assumption: on the software platform the only wall between the untrusted host and the
enclave's keys and memory is the operating system's user separation. `privinfer tee serve`
started as root runs the enclave as its own system user (default `privinfer-enclave`, created
if missing): the enclave starts as root, loads and checks everything, makes the platform and
data directories its user's alone (owner, 0700 directories, 0600 files), then drops to that user
for good (all uids and gids, no supplementary groups, not dumpable: no ptrace, no /proc/PID/mem
for anyone but root) before it accepts a connection. A host process running as any other
non-root user can then neither read the platform directory (so it cannot sign quotes or derive
sealing keys) nor read the enclave's memory. Root can do all of that: the software platform
does not protect against root. Running host and enclave as one user needs an explicit
`--insecure-same-user`, and the threat rows then say the host is not protected. On hardware
platforms (TDX, SEV-SNP) memory isolation and quoting come from the CPU, not from users.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from privinfer.errors import PrivinferError

DEFAULT_ENCLAVE_USER = "privinfer-enclave"
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4


@dataclass(frozen=True)
class PlatformKind:
    """What a TEE platform gives the enclave against its host (read by the threat rows)."""

    name: str
    hardware: bool  # memory isolation and quoting by the CPU
    isolation: str  # how the host is kept from the enclave's memory and keys
    assumption: str  # what must hold for that


# Every platform the threat rows know. `privinfer tee serve --platform` takes those with a
# provider in host.PROVIDERS (the software platform here; hardware providers plug in there).
PLATFORMS: dict[str, PlatformKind] = {
    "software": PlatformKind(
        "software",
        False,
        "the enclave runs as its own OS user; platform keys readable by that user only",
        "the host operator is not root and runs as another user than the enclave",
    ),
    "tdx": PlatformKind(
        "tdx",
        True,
        "Intel TDX: the CPU encrypts and isolates the trust domain's memory and signs its quotes",
        "Intel's CPU and quoting enclave are trusted; side channels out of scope",
    ),
    "snp": PlatformKind(
        "snp",
        True,
        "AMD SEV-SNP: the CPU encrypts and isolates the VM's memory and signs its reports",
        "AMD's CPU and secure processor are trusted; side channels out of scope",
    ),
    "sgx-gramine": PlatformKind(
        "sgx-gramine",
        True,
        "Intel SGX under Gramine: the CPU isolates the enclave's memory and signs its quotes",
        "Intel's CPU and quoting enclave are trusted; side channels out of scope",
    ),
}


# `privinfer tee serve --platform NAME` -> the enclave's `--quotes` provider: the software
# platform's key, the configfs TSM interface of a TDX or SEV-SNP guest (tee/tsm.py), or Gramine's
# /dev/attestation. A new provider plugs in with one entry here, its `--quotes` branch in
# enclave.py and its row in PLATFORMS, from which the threat rows follow.
PROVIDERS: dict[str, str] = {
    "software": "software",
    "tdx": "tdx",
    "snp": "snp",
    "sgx-gramine": "gramine",
}


def platform_kind(name: str) -> PlatformKind:
    try:
        return PLATFORMS[name]
    except KeyError:
        raise PrivinferError(
            f"unknown TEE platform {name!r}: use one of {', '.join(PLATFORMS)}"
        ) from None


def is_root() -> bool:
    return os.geteuid() == 0


def ensure_user(name: str) -> tuple[int, int]:
    """(uid, gid) of system user `name`, created (no home, no login shell) if it does not exist."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        if not is_root():
            raise PrivinferError(
                f"user {name!r} does not exist (only root can create it)"
            ) from None
        cmd = ["useradd", "--system", "--user-group", "--no-create-home"]
        cmd += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        try:
            pw = pwd.getpwnam(name)  # another launcher may have created it meanwhile
        except KeyError:
            raise PrivinferError(
                f"cannot create user {name!r}: {done.stderr.strip() or 'useradd failed'}"
            ) from None
    if pw.pw_uid == 0:
        raise PrivinferError(f"the enclave user {name!r} is root; pick an unprivileged user")
    return pw.pw_uid, pw.pw_gid


def make_private(directory: Path, uid: int, gid: int) -> None:
    """Give `directory` and everything in it to uid:gid, 0700 directories, 0600 files (links are
    neither followed nor changed). Refuses a tree with anything owned by a user other than root
    or uid: another user could have planted it (say, a platform whose secret it knows)."""
    entries = [Path(directory)]
    for dirpath, dirnames, filenames in os.walk(directory):
        entries += [Path(dirpath, n) for n in [*dirnames, *filenames]]
    stats = [(p, os.lstat(p)) for p in entries]
    for p, st in stats:
        if st.st_uid not in (0, uid):
            raise PrivinferError(f"{p} belongs to another user; refusing to use it")
    for p, st in reversed(stats):
        if stat.S_ISLNK(st.st_mode):
            continue
        os.lchown(p, uid, gid)
        os.chmod(p, 0o700 if stat.S_ISDIR(st.st_mode) else 0o600)


def _prctl(option: int, arg: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(option, arg, 0, 0, 0))


def drop_to(uid: int, gid: int, parent: int) -> None:
    """Become uid:gid for good and stay undumpable; re-arm death with `parent` (a change of
    credentials clears the parent-death signal). Raises if anything is left of the old ids."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _prctl(_PR_SET_DUMPABLE, 0)
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:
        os._exit(1)  # the host died while we changed ids
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise PrivinferError("the enclave could not drop its privileges")
    try:
        os.setresuid(0, 0, 0)
    except PermissionError:
        return
    raise PrivinferError("the enclave could regain root after dropping its privileges")


def watch_parent(parent: int) -> None:
    """Exit when `parent` is gone (a fallback to the parent-death signal; run in a thread)."""
    while True:
        if os.getppid() != parent:
            os._exit(0)  # the host is gone: so is this enclave (and its keys and plaintext)
        time.sleep(0.5)
