"""The layering of the tree, read from the import statements (ast; nothing is imported):

  (a) no import circle among the modules of `bitlinear/`, nor among those of the benchmark suite
      `profile/bench/`, of any length, counting imports inside functions too;
  (b) `bitlinear/` imports only itself, its native module `_bitlinear`, the standard library and
      the third-party modules of THIRD_PARTY (a dependency or an optional one, each with why);
      never the benchmarks (profile/) or the tests, and it loads no code by path (no
      spec_from_file_location, SourceFileLoader, runpy, sys.path edits);
  (c) the benchmarks, tools and CI scripts (profile/, .ci/) import bitlinear's public modules only:
      no `bitlinear._name` (import or attribute), except INTERNAL_USES, each with why; and never
      the tests. The tests may import internals: they test them.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent

# third-party top-level modules bitlinear/ may import, and why
THIRD_PARTY = {
    "torch": "the dependency the package extends",
    "numpy": "a dependency (torch's NumPy interop)",
    "tqdm": "a dependency: progress bars (deploy of large models, the demo)",
    "transformers": "optional: bitlinear.hf (Hugging Face loading and quantizer registration), "
                    "bitlinear.attention (registration, SDPA fallback)",
    "safetensors": "optional: bitlinear.hf and save_deployed / load_deployed checkpoints",
    "accelerate": "optional: transformers' device-map loading",
    "sklearn": "optional: the demo's bundled digits data set",
}
NATIVE = {"_bitlinear"}  # this project's own C extension, built next to the package
# bitlinear/ never imports these top-level names: the benchmarks, their probes, the tests
FORBIDDEN = {"profile", "bench", "hw", "tests", "conftest", "gpu_selfcheck", "check_vnni_disasm"}
# (file under ROOT, "bitlinear._name") -> why a benchmark or tool needs that internal
INTERNAL_USES = {
    ("profile/decode_side.py", "bitlinear._ext"):
        "whether the CPU path in use has a SIMD lookup kernel (native lut_status(1)[0]), to leave "
        "out the lookup variant where it has none; the public cpu_lut_used() says whether a call "
        "reads the layout, not whether a kernel exists",
}


# ------------------------------------------------------------------------------ the import graph
def module_name(path: Path, base: Path, package: str) -> str:
    """`package.sub` for base/sub.py; `package` for base/__init__.py."""
    rel = path.relative_to(base).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([package, *parts])


def imports(tree: ast.AST, name: str, is_pkg: bool) -> Iterator[Tuple[int, str, List[str]]]:
    """(line, module, names imported from it) of every import statement, at any depth, relative
    ones resolved against module `name` (a package's __init__ is `is_pkg`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                mod = ".".join(parts + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield node.lineno, mod, [a.name for a in node.names]


def plugin_names(tree: ast.AST) -> List[str]:
    """The module names of a `_PLUGINS = ("a.b", ...)` tuple (bitlinear/cli.py imports them with
    importlib): edges the import statements do not show."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_PLUGINS"
                                                for t in node.targets):
            out += [e.value for e in getattr(node.value, "elts", [])
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return out


def package_graph(base: Path, package: str) -> Tuple[Dict[str, Set[str]], Dict[str, ast.AST]]:
    """module -> the modules of the same package it imports (anywhere in its code), and the
    parsed trees. `from pkg import x` is an edge to pkg.x where that is a module, else to pkg."""
    trees, files = {}, {}
    for path in sorted(base.rglob("*.py")):
        name = module_name(path, base, package)
        trees[name] = ast.parse(path.read_text(), str(path))
        files[name] = path
    graph: Dict[str, Set[str]] = {m: set() for m in trees}
    for name, tree in trees.items():
        is_pkg = files[name].name == "__init__.py"
        for _, mod, names in imports(tree, name, is_pkg):
            targets = [mod] + [f"{mod}.{n}" for n in names]
            hits = [t for t in targets[1:] if t in trees]
            if mod in trees and len(hits) < len(names):
                hits.append(mod)  # some names are attributes of mod itself
            graph[name].update(h for h in hits if h != name)
        graph[name].update(p for p in plugin_names(tree) if p in trees and p != name)
    return graph, trees


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import circle as [a, b, ..., a], or None (depth-first search, colours)."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(m: str) -> Optional[List[str]]:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


# ------------------------------------------------------------------------------------- the tests
def test_find_cycle_finds_a_circle_of_any_length():
    """The checker itself: a planted circle of three is found and printed in order."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"x2"}, "x2": {"x"}, "y": set()}) == ["x", "x2", "x"]


def test_package_graph_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("def f():\n    from . import b\n    return b\n")
    (pkg / "b.py").write_text("from pkg import a\nfrom . import VERSION\n")
    graph, _ = package_graph(pkg, "pkg")
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a", "pkg"}}
    assert find_cycle(graph) == ["pkg", "pkg.a", "pkg.b", "pkg"]


def test_no_import_circle_in_the_package():
    graph, _ = package_graph(ROOT / "bitlinear", "bitlinear")
    assert "bitlinear.nn" in graph and graph["bitlinear.cli"] >= {"bitlinear.bench", "bitlinear.demo"}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle in bitlinear/: " + " -> ".join(cycle)


def test_no_import_circle_in_the_benchmark_suite():
    graph, _ = package_graph(ROOT / "profile" / "bench", "bench")
    assert graph["bench.cpu"] >= {"bench.harness", "bench.timing", "bench.train"}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle in profile/bench/: " + " -> ".join(cycle)


def _path_loading(tree: ast.AST) -> Iterator[Tuple[int, str]]:
    """Code that loads modules by path or edits the import path."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr in ("spec_from_file_location", "SourceFileLoader", "run_path",
                             "module_from_spec"):
                yield node.lineno, node.attr
            if (node.attr == "path" and isinstance(node.value, ast.Name)
                    and node.value.id == "sys"):
                yield node.lineno, "sys.path"
        elif isinstance(node, ast.alias) and node.name in ("runpy", "imp"):
            yield getattr(node, "lineno", 0), node.name


def package_violations() -> List[str]:
    _, trees = package_graph(ROOT / "bitlinear", "bitlinear")
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for name, tree in trees.items():
        where = f"bitlinear/{name.split('.', 1)[1] if '.' in name else '__init__'}.py"
        for line, mod, _ in imports(tree, name, name == "bitlinear"):
            top = mod.split(".")[0]
            if top in FORBIDDEN:
                bad.append(f"{where}:{line} imports {mod} (benchmarks and tests import the "
                           f"package, never the reverse)")
            elif top != "bitlinear" and top not in stdlib and top not in NATIVE \
                    and top not in THIRD_PARTY:
                bad.append(f"{where}:{line} imports {mod}: not the standard library, torch, "
                           f"or an allowed optional dependency (THIRD_PARTY)")
        for line, what in _path_loading(tree):
            bad.append(f"{where}:{line} uses {what}: the package loads no code by path")
    return bad


def test_package_imports_only_itself_stdlib_and_its_dependencies():
    bad = package_violations()
    assert not bad, "\n".join(bad)


def _internal_uses(tree: ast.AST) -> Iterator[Tuple[int, str]]:
    """(line, "bitlinear._name") of every import of a private bitlinear module or name, and of
    every attribute `bitlinear._name`."""
    for line, mod, names in imports(tree, "__main__", False):
        parts = mod.split(".")
        if parts[0] != "bitlinear":
            continue
        private = next((p for p in parts[1:] if p.startswith("_")), None)
        if private:
            yield line, f"bitlinear.{private}"
        for n in names:
            if len(parts) == 1 and n.startswith("_") and not n.startswith("__"):
                yield line, f"bitlinear.{n}"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "bitlinear" and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            yield node.lineno, f"bitlinear.{node.attr}"


def outside_violations() -> List[str]:
    tests_modules = {p.stem for p in (ROOT / "tests").rglob("*.py")} | {"tests"}
    bad = []
    files = sorted((ROOT / "profile").rglob("*.py")) + sorted((ROOT / ".ci").rglob("*.py"))
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), rel)
        for line, what in _internal_uses(tree):
            if (rel, what) not in INTERNAL_USES:
                bad.append(f"{rel}:{line} uses {what}, an internal of the package (use the public "
                           f"API, or add it to INTERNAL_USES with why)")
        for line, mod, _ in imports(tree, "__main__", False):
            if mod.split(".")[0] in tests_modules:
                bad.append(f"{rel}:{line} imports {mod} from tests/")
    return bad


def test_benchmarks_and_tools_use_the_public_api():
    bad = outside_violations()
    assert not bad, "\n".join(bad)
    # every allowance is still needed (a stale one would hide nothing, but would mislead)
    for rel, what in INTERNAL_USES:
        tree = ast.parse((ROOT / rel).read_text())
        assert what in {w for _, w in _internal_uses(tree)}, f"{rel} no longer uses {what}"
