"""The package's import graph, built from the source (AST): no cycles, layers point one way."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

SRC = ROOT / "src"
PACKAGE = "fhir_cyclo"

# Higher layers may import lower ones, never the other way round; a package imports its own
# layer's packages only where the package graph stays acyclic (checked below).
LAYERS: dict[str, int] = {
    "cli": 3,
    "export": 2,
    "validation": 2,
    "scoring": 2,
    "report": 2,
    "server": 2,
    "importing": 2,
    "readers": 1,
    "mappers": 1,
    "fhir": 1,
    "client": 1,
    "core": 0,
}
# Imports between packages of one layer, each with its direction: any other is wrong-way
# (mappers reading the case-file reader, scoring writing reports, ...).
SAME_LAYER: dict[tuple[str, str], str] = {
    ("fhir", "mappers"): "Bundles are built from the mappers' resources",
    ("report", "scoring"): "reports render scores",
}
# `fhir_cyclo/__init__.py` (the docstring only) and `fhir_cyclo/__main__.py` (runs cli.main).
TOP_LEVEL = {PACKAGE: 0, f"{PACKAGE}.__main__": 3}

# Imports inside functions, each with the start-up cost it saves. Key: (importing module,
# imported module or a prefix of it, "." meaning every fhir_cyclo module below the prefix).
_FEATURE = (
    "a command loads its feature (pydantic models, fhir.resources, the tables) only when it "
    "runs: `--help`, `--version` and usage errors stay under 0.15 s"
)
_STDLIB = (
    "orjson (json, uuid, platform), hashlib (OpenSSL) and tomllib cost ~15 ms together, paid "
    "by --help/--version if imported with the command modules"
)
_JOSE = "PyJWT + cryptography cost ~40 ms of every start-up; only a SMART client signs"
_R4B = "fhir.resources R4B loads ~1 s of models; only the runs that validate with it load it"
_UCUM = "ucumvert builds its UCUM grammar (~0.3 s); only a unit not in the tables needs it"
ALLOWED_IN_FUNCTIONS: dict[tuple[str, str], str] = {
    **{
        (f"{PACKAGE}.cli.{command}", f"{PACKAGE}."): _FEATURE
        for command in (
            "export",
            "validate",
            "push",
            "score",
            "bulk_export",
            "import_cmd",
            "load",
            "sandbox",
            "options",
        )
    },
    (f"{PACKAGE}.cli.app", "importlib.metadata"): (
        "importlib.metadata loads email, csv, zipfile (~30 ms): only --version reads it"
    ),
    (f"{PACKAGE}.cli.push", "hashlib"): _STDLIB,
    (f"{PACKAGE}.cli.push", "orjson"): _STDLIB,
    (f"{PACKAGE}.cli.score", "orjson"): _STDLIB,
    (f"{PACKAGE}.cli.options", "tomllib"): _STDLIB,
    (f"{PACKAGE}.client.smart", "jwt"): _JOSE,
    (f"{PACKAGE}.client.smart", "cryptography"): _JOSE,
    (f"{PACKAGE}.core.units", "ucumvert"): _UCUM,
    (f"{PACKAGE}.fhir.bundle", "fhir.resources"): _R4B,
    (f"{PACKAGE}.fhir.r4b", "fhir.resources"): _R4B,
    (f"{PACKAGE}.fhir.r4b", "fhir_core"): _R4B,
    (f"{PACKAGE}.fhir.r4b", "pydantic"): "TypeAdapter is built only with the R4B models",
    (f"{PACKAGE}.scoring.extract", "fhir.resources"): _R4B,
    (f"{PACKAGE}.scoring.extract", f"{PACKAGE}.fhir.r4b"): _R4B + " (score --strict)",
    (f"{PACKAGE}.validation.fhir_input", "fhir.resources"): _R4B,
    (f"{PACKAGE}.validation.fhir_input", "pydantic"): "imported with the R4B models it reports on",
    (f"{PACKAGE}.report.html", "jinja2"): "jinja2 (~60 ms) only for --report",
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a name imported from a module counts as the module)
    line: int
    in_function: bool
    type_only: bool  # under `if TYPE_CHECKING:`: never runs, so it cannot make a cycle


def _modules(src: Path = SRC) -> dict[str, Path]:
    out = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(
    node: ast.AST, *, in_function: bool, type_only: bool
) -> Iterator[tuple[ast.AST, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function, type_only
        inner_fn = in_function or isinstance(
            child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        inner_tc = type_only or (isinstance(child, ast.If) and _is_type_checking(child))
        yield from _walk(child, in_function=inner_fn, type_only=inner_tc)


def imports(modules: dict[str, Path]) -> list[Import]:
    """Every import in every module (module level and inside functions), targets resolved."""
    out = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node, in_function, type_only in _walk(
            ast.parse(path.read_text(encoding="utf-8")), in_function=False, type_only=False
        ):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor if is_package else anchor[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    # Outside the package a name may be a module too (`from importlib import
                    # metadata`): kept whole, the allow-list matches it by prefix.
                    inside = base.split(".")[0] == PACKAGE
                    targets.append(sub if sub in modules or not inside else base)
            for target in targets:
                out.append(Import(name, target, node.lineno, in_function, type_only))
    return out


def package_of(module: str) -> str:
    parts = module.split(".")
    return module if len(parts) < 2 or module in TOP_LEVEL else parts[1]


def layer_of(module: str) -> int:
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    return LAYERS[package_of(module)]


def internal(imps: list[Import], modules: dict[str, Path]) -> list[Import]:
    return [i for i in imps if i.target.split(".")[0] == PACKAGE and i.target in modules]


def module_graph(imps: list[Import], modules: dict[str, Path]) -> dict[str, set[str]]:
    """Runtime edges. Importing `a.b.c` also runs `a.b/__init__` (re-exports can close a
    cycle), except where the importer lives in that package already."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in internal(imps, modules):
        if imp.type_only:
            continue
        graph[imp.source].add(imp.target)
        parts = imp.target.split(".")
        for n in range(2, len(parts)):
            parent = ".".join(parts[:n])
            if parent in modules and not (imp.source + ".").startswith(parent + "."):
                graph[imp.source].add(parent)
    for node, targets in graph.items():
        targets.discard(node)
    return graph


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for source, targets in graph.items():
        edges = out.setdefault(package_of(source), set())
        edges.update(package_of(t) for t in targets if package_of(t) != package_of(source))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one node, as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan; the graph is small, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_path_in(sorted(c), graph) for c in components]


def _path_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A concrete cycle through the component's first node (breadth-first back to it)."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    return component


def render(graph: dict[str, set[str]]) -> str:
    """The package-level graph, highest layer first: `cli -> export, scoring, ...`."""
    order = sorted(graph, key=lambda p: (-LAYERS.get(p, TOP_LEVEL.get(p, 0)), p))
    return "\n".join(
        f"  {p} (layer {LAYERS.get(p, TOP_LEVEL.get(p, 0))}) -> {', '.join(sorted(graph[p])) or '-'}"
        for p in order
    )


@pytest.fixture(scope="module")
def source() -> tuple[dict[str, Path], list[Import]]:
    modules = _modules()
    return modules, imports(modules)


def _explain(graph: dict[str, set[str]]) -> str:
    return "\npackage import graph:\n" + render(package_graph(graph))


def test_no_import_cycles(source: tuple[dict[str, Path], list[Import]]) -> None:
    modules, imps = source
    graph = module_graph(imps, modules)
    found = cycles(graph)
    assert not found, (
        "import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in found) + _explain(graph)
    )
    pkg_cycles = cycles(package_graph(graph))
    assert not pkg_cycles, (
        "package cycles:\n" + "\n".join("  " + " -> ".join(c) for c in pkg_cycles) + _explain(graph)
    )


def test_layers_point_one_way(source: tuple[dict[str, Path], list[Import]]) -> None:
    modules, imps = source
    wrong = [
        f"  {i.source}:{i.line} (layer {layer_of(i.source)}) imports {i.target} "
        f"(layer {layer_of(i.target)})"
        for i in internal(imps, modules)
        if layer_of(i.target) > layer_of(i.source)
    ]
    # core is the bottom: it imports nothing of fhir_cyclo outside core (not even same-layer).
    wrong += [
        f"  {i.source}:{i.line} (core) imports {i.target}"
        for i in internal(imps, modules)
        if package_of(i.source) == "core" and package_of(i.target) != "core"
    ]
    # Within a layer, only the directions listed in SAME_LAYER.
    wrong += [
        f"  {i.source}:{i.line} imports {i.target} ({package_of(i.source)} -> "
        f"{package_of(i.target)} is not in SAME_LAYER)"
        for i in internal(imps, modules)
        if package_of(i.source) != package_of(i.target)
        and layer_of(i.source) == layer_of(i.target)
        and (package_of(i.source), package_of(i.target)) not in SAME_LAYER
        and i.source not in TOP_LEVEL
    ]
    wrong = list(dict.fromkeys(wrong))  # `from x import a, b`: one line, not two
    assert not wrong, (
        "wrong-way imports:\n" + "\n".join(wrong) + _explain(module_graph(imps, modules))
    )


def test_every_module_belongs_to_a_layer(source: tuple[dict[str, Path], list[Import]]) -> None:
    modules, _ = source
    stray = [m for m in modules if m not in TOP_LEVEL and package_of(m) not in LAYERS]
    assert not stray, f"modules outside the layers (add their package to LAYERS): {stray}"


def _matches(imp: Import, source: str, prefix: str) -> bool:
    prefix = prefix.rstrip(".")
    return imp.source == source and (imp.target == prefix or imp.target.startswith(prefix + "."))


def _allowed(imp: Import) -> bool:
    return any(_matches(imp, source, prefix) for source, prefix in ALLOWED_IN_FUNCTIONS)


def test_imports_inside_functions_only_where_start_up_needs_them(
    source: tuple[dict[str, Path], list[Import]],
) -> None:
    _, imps = source
    hidden = [
        f"  {i.source}:{i.line} imports {i.target} inside a function"
        for i in imps
        if i.in_function and not _allowed(i)
    ]
    assert not hidden, (
        "imports inside functions that are not in ALLOWED_IN_FUNCTIONS (move them to the top "
        "of the module, or add an entry with the start-up cost it saves):\n" + "\n".join(hidden)
    )


def test_every_allow_list_entry_is_used(source: tuple[dict[str, Path], list[Import]]) -> None:
    # An entry nobody needs any more would let a new hidden import through unnoticed.
    _, imps = source
    used = {
        (source_, prefix)
        for source_, prefix in ALLOWED_IN_FUNCTIONS
        for i in imps
        if i.in_function and _matches(i, source_, prefix)
    }
    assert set(ALLOWED_IN_FUNCTIONS) - used == set()


def test_tools_are_never_imported_by_the_package(
    source: tuple[dict[str, Path], list[Import]],
) -> None:
    _, imps = source
    assert [f"{i.source}:{i.line}" for i in imps if i.target.split(".")[0] == "tools"] == []


@pytest.mark.parametrize(
    ("test_file", "generator"),
    [
        ("tests/unit/test_definitions.py", "tools.definitions"),
        ("tests/unit/test_reference_doc.py", "tools.reference"),
        ("tests/unit/test_units.py", "tools.unit_factors"),
    ],
)
def test_generators_in_tools_are_run_by_staleness_tests(test_file: str, generator: str) -> None:
    # Build-time generators live in tools/ (not shipped); their staleness tests must import
    # them from there, or a stale profiles/, docs/reference.md or unit_factors.yaml goes unseen.
    tree = ast.parse((ROOT / test_file).read_text(encoding="utf-8"))
    imported = {
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
        for name in (node.module, *(f"{node.module}.{a.name}" for a in node.names))
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert generator in imported
    assert (ROOT / (generator.replace(".", "/") + ".py")).is_file()


def test_the_checker_finds_a_cycle_and_a_wrong_way_import(tmp_path: Path) -> None:
    # The test above must be able to fail: a tiny package with both faults.
    pkg = tmp_path / PACKAGE
    (pkg / "core").mkdir(parents=True)
    (pkg / "readers").mkdir()
    (pkg / "__init__.py").write_text('"""x."""\n')
    (pkg / "core" / "__init__.py").write_text('"""x."""\n')
    (pkg / "readers" / "__init__.py").write_text('"""x."""\n')
    (pkg / "core" / "a.py").write_text("from fhir_cyclo.readers import b\n")
    (pkg / "readers" / "b.py").write_text("def f():\n    from fhir_cyclo.core.a import x\n")
    modules = _modules(tmp_path)
    imps = imports(modules)
    graph = module_graph(imps, modules)
    assert cycles(graph) == [["fhir_cyclo.core.a", "fhir_cyclo.readers.b", "fhir_cyclo.core.a"]]
    assert [
        i.target for i in internal(imps, modules) if layer_of(i.target) > layer_of(i.source)
    ] == ["fhir_cyclo.readers.b"]
    assert [i.in_function for i in imps] == [False, True]
