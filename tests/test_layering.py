"""The import layering of src/privinfer, checked on the AST of every module.

Layers (a package's layer is that of its first component under `privinfer`):
- face: the top package `privinfer` itself, `api`, `cli`, `serve`, `bench`, `modes` (and `modes_*`);
- engines: `mpc`, `he`, `tee`, `engines` (the plain reference engine), `mpc_he`, `twopc`,
  `teehe` (a hybrid: it combines the engines named in HYBRIDS);
- base: `models`, `net`, `security`, `errors`.

Rules:
(a) no module outside the face imports the face;
(b) an engine package imports no other engine package, except `privinfer.engines.plain` and, for
    a hybrid engine, the engines it combines (HYBRIDS);
(c) `models`, `net` and `errors` import no engine; `security` may (it derives figures from their
    parameters), and none of the base imports the face (a);
(d) `modes` imports engines and base, not `api`, `cli`, `bench` or the top package; `api` imports
    modes, engines and base, not `cli`, `bench` or the top package.

(e) crypto libraries are imported in one place each: `tenseal` only by the scheme adapters in
    `TENSEAL_ADAPTERS` (one module per scheme: CKKS in `he.ckks`, BFV in `twopc.bfv`).

Every `import` counts, at module level or inside a function, relative ones resolved;
`import privinfer` and `from privinfer import name` (a name that is not a submodule) count as
importing the top package.
Packages that are in no layer (e.g. `server`) are held to rule (a) only.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path

TOP = "privinfer"
FACE = {"api", "cli", "bench", "modes", "serve"}
ENGINES = {"mpc", "he", "tee", "engines", "mpc_he", "twopc", "teehe"}
HYBRIDS = {"teehe": {"he", "tee"}}  # hybrid engine -> the engines it combines
BASE = {"models", "net", "security", "errors"}
PLAIN_ENGINE = "privinfer.engines.plain"

RULE_A = "a: only the face imports the face"
RULE_B = "b: engine packages do not import each other (privinfer.engines.plain excepted)"
RULE_C = "c: models, net and errors import no engine"
RULE_D_MODES = "d: modes imports engines and base, not api, cli, bench or the top package"
RULE_D_API = "d: api imports modes, engines and base, not cli, bench or the top package"

SRC = Path(__file__).resolve().parents[1] / "src"
TENSEAL_ADAPTERS = {"privinfer.he.ckks", "privinfer.twopc.bfv"}


def component(module: str) -> str:
    """The first component under the top package (`mpc` for privinfer.mpc.ops); TOP for the top."""
    parts = module.split(".")
    if len(parts) == 1:
        return TOP
    return "modes" if parts[1].startswith("modes_") else parts[1]


def layer(module: str) -> str | None:
    """'face', 'engine', 'base', or None for a package in no layer."""
    comp = component(module)
    if comp == TOP or comp in FACE:
        return "face"
    if comp in ENGINES:
        return "engine"
    if comp in BASE:
        return "base"
    return None


def modules_under(src_root: Path) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package) for every .py file under src_root/privinfer."""
    out: dict[str, tuple[Path, bool]] = {}
    for path in sorted((src_root / TOP).rglob("*.py")):
        rel = path.relative_to(src_root).with_suffix("")
        is_pkg = rel.name == "__init__"
        parts = rel.parts[:-1] if is_pkg else rel.parts
        out[".".join(parts)] = (path, is_pkg)
    return out


def imported_modules(
    tree: ast.AST, module: str, is_pkg: bool, known: set[str]
) -> Iterator[tuple[str, int]]:
    """(absolute privinfer module, line) for every import in `tree`, nested ones included.

    `from A import n` yields A.n where that is a module of the tree, else A (so
    `from privinfer import modes` is an edge to privinfer.modes, `from privinfer import load` one
    to the top package).
    """
    package = module if is_pkg else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            whole = False
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    yield sub, node.lineno
                else:
                    whole = True
            if whole:
                yield base, node.lineno


def rule_broken(source: str, target: str) -> str | None:
    """The rule that the edge source -> target breaks, or None."""
    src_comp, dst_comp = component(source), component(target)
    if src_comp == dst_comp:
        return None
    src_layer, dst_layer = layer(source), layer(target)
    if src_layer != "face" and dst_layer == "face":
        return RULE_A
    if src_layer == "engine" and dst_layer == "engine":
        if target == PLAIN_ENGINE or target.startswith(PLAIN_ENGINE + "."):
            return None
        if dst_comp in HYBRIDS.get(src_comp, set()):
            return None
        return RULE_B
    if src_comp in {"models", "net", "errors"} and dst_layer == "engine":
        return RULE_C
    if src_comp == "modes" and dst_comp in {TOP, "api", "cli", "bench"}:
        return RULE_D_MODES
    if src_comp == "api" and dst_comp in {TOP, "cli", "bench"}:
        return RULE_D_API
    return None


def layering_violations(src_root: Path) -> list[str]:
    """Every edge under src_root/privinfer that breaks a rule, as 'module -> imported (rule)'."""
    mods = modules_under(src_root)
    known = set(mods)
    found: set[str] = set()
    for module, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target, _line in imported_modules(tree, module, is_pkg, known):
            if target != TOP and not target.startswith(TOP + "."):
                continue
            rule = rule_broken(module, target)
            if rule is not None:
                found.add(f"{module} -> {target} ({rule})")
    return sorted(found)


def test_source_tree_respects_the_layers() -> None:
    bad = layering_violations(SRC)
    assert not bad, "imports that break the layering:\n" + "\n".join(bad)


def _write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_checker_names_each_upward_or_sideways_edge(tmp_path: Path) -> None:
    for pkg in ["", "mpc/", "he/", "engines/", "models/", "security/", "bench/", "server/"]:
        _write(tmp_path, f"privinfer/{pkg}__init__.py")
    for mod in ["api", "cli", "modes", "modes_he", "errors"]:
        _write(tmp_path, f"privinfer/{mod}.py")
    _write(tmp_path, "privinfer/engines/plain.py")
    _write(tmp_path, "privinfer/mpc/ops.py", "from privinfer.models import llama\n")
    _write(
        tmp_path,
        "privinfer/mpc/x.py",
        """\
        from privinfer.engines.plain import PlainOps  # allowed: the reference engine
        from . import ops  # allowed: same package
        from privinfer.errors import InputError  # allowed: base


        def run():
            from privinfer.api import load  # (a), inside a function

            return load
        """,
    )
    _write(tmp_path, "privinfer/mpc/y.py", "from .. import load\n")  # (a): the top package
    _write(tmp_path, "privinfer/he/z.py", "import privinfer.mpc.ops\n")  # (b)
    _write(tmp_path, "privinfer/models/llama.py", "from ..he import z\n")  # (c)
    _write(tmp_path, "privinfer/security/report.py", "from privinfer.he import z\n")  # allowed
    _write(tmp_path, "privinfer/server/app.py", "import privinfer\n")  # (a): no layer
    _write(tmp_path, "privinfer/modes_he.py", "from privinfer.modes import x\nfrom . import api\n")
    _write(  # `from privinfer import modes` is an edge to the modes package, which api may use
        tmp_path, "privinfer/api.py", "from privinfer import modes, load\nimport privinfer.bench\n"
    )
    _write(tmp_path, "privinfer/cli.py", "import privinfer.api\nfrom privinfer.bench import x\n")

    assert layering_violations(tmp_path) == sorted(
        [
            f"privinfer.mpc.x -> privinfer.api ({RULE_A})",
            f"privinfer.mpc.y -> privinfer ({RULE_A})",
            f"privinfer.he.z -> privinfer.mpc.ops ({RULE_B})",
            f"privinfer.models.llama -> privinfer.he.z ({RULE_C})",
            f"privinfer.server.app -> privinfer ({RULE_A})",
            f"privinfer.modes_he -> privinfer.api ({RULE_D_MODES})",
            f"privinfer.api -> privinfer ({RULE_D_API})",
            f"privinfer.api -> privinfer.bench ({RULE_D_API})",
        ]
    )


def tenseal_importers(src_root: Path) -> set[str]:
    """Modules under src_root/privinfer that import tenseal (at any depth of the module)."""
    found = set()
    for module, (path, is_pkg) in modules_under(src_root).items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target, _line in imported_modules(tree, module, is_pkg, set()):
            if target == "tenseal" or target.startswith("tenseal."):
                found.add(module)
    return found


def test_tenseal_is_imported_by_the_scheme_adapters_only(tmp_path: Path) -> None:
    assert tenseal_importers(SRC) == TENSEAL_ADAPTERS
    _write(tmp_path, "privinfer/__init__.py")
    _write(tmp_path, "privinfer/twopc/__init__.py")
    _write(tmp_path, "privinfer/twopc/x.py", "def f():\n    import tenseal.sealapi as s\n")
    assert tenseal_importers(tmp_path) == {"privinfer.twopc.x"}
