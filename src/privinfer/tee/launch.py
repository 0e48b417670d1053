"""Measured launch of the enclave interpreter: its isolated command line, the runtime it may load,
and the start-up check that it loaded nothing else.

Security assumption: the software platform has no hardware that measures what runs, so the
enclave measures itself before it serves, and fails closed. It is started as
`python -I -B -X pycache_prefix=<a path nobody can create>` with a fixed, scrubbed environment:
no PYTHON* variables, no user site, no script directory on sys.path, no bytecode read or
written (every module compiles from the source that was hashed). What it may load is measured
into the identity's `code` component (`runtime_digest`): the interpreter binary and libpython,
the standard library's sources and extension modules, every `.pth` file in the site directories
(they run at start-up), the RECORD file of each distribution in `DISTRIBUTIONS`, and the launch
flags, bootstrap and environment. At start-up, after the model, the engine and one attestation
ran, `verify_loaded` refuses any loaded module, or any mapped shared object, that is outside that
set, and checks each distribution file in use against its RECORD hash; afterwards an audit hook
refuses every new import. Shared objects of the operating system (/lib, /usr/lib) and the kernel
are not measured. Paths (where the source and the environment live) are not part of the
measurement; their contents are.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import site
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from privinfer.errors import SecurityError

# Python looks for (and, without -B, would write) bytecode under this prefix only; nobody can
# create anything under /proc, so no cached bytecode is ever read.
NO_PYCACHE = "/proc/privinfer-no-pycache"
FLAGS = ("-I", "-B", "-X", f"pycache_prefix={NO_PYCACHE}")
ENV: dict[str, str] = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
# argv after the flags: -c BOOTSTRAP SOURCE_ROOT enclave-args...
BOOTSTRAP = (
    "import sys;sys.path.insert(0,sys.argv.pop(1));"
    "from privinfer.tee.enclave import main;sys.exit(main(sys.argv[1:]))"
)
# Third-party distributions the enclave may import from (what the plain engine, the GGUF
# loader, the tokenizer and the crypto need; setuptools for its start-up .pth hook).
DISTRIBUTIONS = (
    "cffi",
    "cryptography",
    "gguf",
    "jinja2",
    "markupsafe",
    "numpy",
    "pyyaml",
    "setuptools",
    "tokenizers",
    "torch",
    "tqdm",
    "typing-extensions",
)
_STDLIB_SKIP = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter", "turtledemo",
     "ensurepip", "lib2to3", "__pycache__"}
)  # fmt: skip
SYSTEM_LIB_DIRS = ("/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/")


class LaunchError(SecurityError):
    """The enclave was not launched as measured, or loaded something outside its measured set."""


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _sha384(path: Path | str) -> bytes:
    h = hashlib.sha384()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def bootstrap_for(module: str) -> str:
    """The bootstrap that runs `module.main` (the tee enclave's, or another measured program's,
    such as the tee+he refresh enclave, privinfer.teehe.enclave)."""
    return BOOTSTRAP.replace("privinfer.tee.enclave", module)


def command(
    source_root: Path | str, enclave_args: Iterable[str], bootstrap: str = BOOTSTRAP
) -> list[str]:
    """The enclave's command line: this interpreter, isolated, running the measured bootstrap."""
    return [sys.executable, *FLAGS, "-c", bootstrap, str(source_root), *enclave_args]


def stdlib_dir() -> Path:
    return Path(os.__file__).resolve().parent


def interpreter_files() -> list[Path]:
    """The interpreter binary and any libpython next to the base installation."""
    exe = Path(os.path.realpath(sys.executable))
    libdir = Path(sys.base_prefix) / "lib"
    libs = sorted(p.resolve() for p in libdir.glob("libpython*.so*") if p.is_file())
    return [exe, *dict.fromkeys(libs)]


def _stdlib_files() -> list[Path]:
    root = stdlib_dir()
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _STDLIB_SKIP)
        out += [Path(dirpath, f) for f in sorted(filenames) if f.endswith((".py", ".so"))]
    return out


def site_dirs() -> list[Path]:
    return [Path(p).resolve() for p in site.getsitepackages() if os.path.isdir(p)]


def _distribution(name: str) -> Any:
    import importlib.metadata as md

    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=4)
def runtime_manifest(
    bootstrap: str = BOOTSTRAP, distributions: tuple[str, ...] = DISTRIBUTIONS
) -> dict[str, str]:
    """Named SHA-384 digests (hex) of everything the enclave's runtime consists of (module doc);
    another measured program passes its own bootstrap and distributions."""
    h = hashlib.sha384(_lp(b"privinfer-interpreter-v1"))
    for p in interpreter_files():
        h.update(_lp(p.name.encode()) + _sha384(p))
    manifest = {"interpreter": h.hexdigest()}
    root = stdlib_dir()
    h = hashlib.sha384(_lp(b"privinfer-stdlib-v1"))
    for p in _stdlib_files():
        h.update(_lp(p.relative_to(root).as_posix().encode()) + _sha384(p))
    manifest["stdlib"] = h.hexdigest()
    h = hashlib.sha384(_lp(b"privinfer-site-v1"))
    for d in site_dirs():
        for p in sorted(d.glob("*.pth")):
            h.update(_lp(p.name.encode()) + _sha384(p))
    manifest["site_pth"] = h.hexdigest()
    for name in distributions:
        dist = _distribution(name)
        record = dist.read_text("RECORD") if dist is not None else None
        if dist is None or record is None:
            manifest[f"dist:{name}"] = "absent"
        else:
            digest = hashlib.sha384(_lp(b"privinfer-dist-v1") + record.encode()).hexdigest()
            manifest[f"dist:{name}"] = f"{dist.version}:{digest}"
    launch = json.dumps({"flags": FLAGS, "bootstrap": bootstrap, "env": ENV}, sort_keys=True)
    manifest["launch"] = hashlib.sha384(launch.encode()).hexdigest()
    return manifest


def runtime_digest(
    bootstrap: str = BOOTSTRAP, distributions: tuple[str, ...] = DISTRIBUTIONS
) -> bytes:
    """SHA-384 over `runtime_manifest()`: the runtime part of the enclave's code measurement."""
    manifest = runtime_manifest(bootstrap, distributions)
    body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha384(_lp(b"privinfer-runtime-v1") + _lp(body)).digest()


# ---------------------------------------------------------------- checks inside the enclave


def check_isolated() -> None:
    """Refuse to run unless started the measured way (flags, no bytecode, scrubbed environment)."""
    f = sys.flags
    if not (f.isolated and f.ignore_environment and f.no_user_site and f.dont_write_bytecode):
        raise LaunchError("the enclave must be started isolated (python -I -B)")
    if sys.pycache_prefix != NO_PYCACHE:
        raise LaunchError("the enclave must be started with no bytecode cache")
    if dict(os.environ) != ENV:
        raise LaunchError("the enclave must be started with the scrubbed environment")


def _record_map(distributions: tuple[str, ...] = DISTRIBUTIONS) -> dict[str, tuple[str, str]]:
    """Absolute path -> (distribution, RECORD sha256 in urlsafe base64) of measured distributions."""
    out: dict[str, tuple[str, str]] = {}
    for name in distributions:
        dist = _distribution(name)
        if dist is None:
            continue
        for f in dist.files or ():
            if f.hash is not None and f.hash.mode == "sha256":
                out[os.path.normpath(str(dist.locate_file(f)))] = (name, f.hash.value)
    return out


def _matches_record(path: str, expected: str) -> bool:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode() == expected


def _mapped_objects() -> list[str]:
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    paths = {ln.split(None, 5)[5] for ln in lines if len(ln.split(None, 5)) == 6}
    return sorted(p for p in paths if p.startswith("/") and ".so" in os.path.basename(p))


def loaded_outside(
    source_root: Path,
    measured_code: Iterable[str],
    modules: Mapping[str, Any] | None = None,
    distributions: tuple[str, ...] = DISTRIBUTIONS,
) -> list[str]:
    """What this process loaded outside the measured set, one line each (empty: all measured).

    `measured_code` are the privinfer files (relative to `source_root`/privinfer) in the code
    hash. Distribution files are checked against their RECORD hashes here.
    """
    pkg = (Path(source_root) / "privinfer").resolve()
    code = {os.path.normpath(str(pkg / f)) for f in measured_code}
    std = str(stdlib_dir()) + os.sep
    sites = tuple(str(d) + os.sep for d in site_dirs())
    interp = {str(p) for p in interpreter_files()}
    records = _record_map(distributions)
    checked: dict[str, bool] = {}
    bad: list[str] = []

    def in_distribution(path: str, what: str) -> None:
        entry = records.get(path)
        if entry is None:
            bad.append(f"{what}: {path} is in no measured distribution")
        elif path not in checked:
            checked[path] = _matches_record(path, entry[1])
            if not checked[path]:
                bad.append(f"{what}: {path} differs from its {entry[0]} RECORD hash")

    for name, mod in sorted((modules if modules is not None else dict(sys.modules)).items()):
        f = getattr(mod, "__file__", None)
        if not isinstance(f, str) or not os.path.isabs(f):
            continue  # built-in, frozen, namespace package or a module object made in code
        path = os.path.normpath(os.path.realpath(f))
        if name == "privinfer" or name.startswith("privinfer."):
            if path not in code:
                bad.append(f"module {name}: {path} is not measured privinfer code")
        elif path.startswith(sites) or path in records:
            in_distribution(path, f"module {name}")
        elif path.startswith(std) and not set(Path(path).parts) & _STDLIB_SKIP:
            continue
        else:
            bad.append(f"module {name}: {path} is outside the measured runtime")
    for path in _mapped_objects():
        real = os.path.normpath(os.path.realpath(path))
        if real in interp or real.startswith(SYSTEM_LIB_DIRS):
            continue
        if real.startswith(std) and not set(Path(real).parts) & _STDLIB_SKIP:
            continue
        if real in records or real.startswith(sites):
            in_distribution(real, "shared object")
        else:
            bad.append(f"shared object {real} is outside the measured runtime")
    return bad


def forbid_new_imports() -> None:
    """From now on, importing any module not already loaded raises (an audit hook: permanent)."""

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "import" and args and args[0] not in sys.modules:
            raise LaunchError(f"the enclave refuses to import {args[0]} after its measurement")

    sys.addaudithook(hook)
