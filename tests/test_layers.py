"""Imports only point down (docs/extending.md, "Layers"): every `ladalit` module belongs to one layer, imports
(top-level and inside functions, read from the source with `ast`) go to its own layer or one below, and no two
modules import each other, directly or through others."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ladalit"

# Bottom first. A module imports only from its own layer or the ones before it.
LAYERS = [
    "ladalit.registry",    # method names -> "module:NAME" of their roles, imported lazily by name: no ladalit imports
    "ladalit.data",        # records, loaders, the federated split
    "ladalit.scale",       # FSDP2, offload, data parallel rows, vLLM, model shapes
    "ladalit.core",        # what every method runs on: config, participants, training, messages, results
    "ladalit.method",      # LaDa
    "ladalit.baselines",   # the other methods
    "ladalit.demo",        # the CPU proving ground: synthetic task, zoo, oracle; registers its sources with core
    "ladalit.components",  # imports every module that registers something with core
    "ladalit.reporting",   # after a run: plots, reports, export, W&B, the generated docs tables
    "ladalit.run",         # the command line
    "ladalit.federation",  # the Flower deployment, on top of the command line's run
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for i, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py LAYERS: place it there")


def resolve(target: str, modules: set[str]) -> str:
    """The module a dotted name refers to: itself, or its longest prefix that is a module."""
    while target not in modules and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def imports(source: str, modules: set[str]) -> list[tuple[int, str, bool]]:
    """(line, ladalit module imported, inside a function?) for every import of `ladalit` in the source."""
    out = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((child.lineno, resolve(a.name, modules), in_function) for a in child.names
                           if a.name.split(".")[0] == "ladalit")
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module \
                    and child.module.split(".")[0] == "ladalit":
                # `from ladalit.core import config` imports the module ladalit.core.config
                out.extend((child.lineno, resolve(f"{child.module}.{a.name}", modules), in_function)
                           for a in child.names)
            visit(child, inner)

    visit(ast.parse(source), False)
    return out


def graph() -> dict[str, list[tuple[str, int, str]]]:
    """module -> [(imported module, line, file)] over the whole package, top-level and in-function."""
    files = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if p != PACKAGE / "__init__.py"}  # empty
    modules = set(files)
    return {m: [(t, line, str(p.relative_to(PACKAGE.parent))) for line, t, _ in imports(p.read_text(), modules) if t != m]
            for m, p in files.items()}


def upward_imports(g) -> list[str]:
    bad = []
    for m, edges in g.items():
        for t, line, file in edges:
            if t in g and layer_of(t) > layer_of(m):
                bad.append(f"{file}:{line} imports {t} ({LAYERS[layer_of(m)]} is below {LAYERS[layer_of(t)]})")
    return bad


def cycles(g) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a list of modules."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w, _, _ in g.get(v, []):
            if w not in g:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def describe(g, comp: list[str]) -> str:
    inside = set(comp)
    edges = [f"{file}:{line} imports {t}" for m in comp for t, line, file in g[m] if t in inside]
    return "cycle between " + ", ".join(comp) + ": " + "; ".join(edges)


def test_every_module_is_in_a_layer_and_imports_only_its_own_layer_or_below():
    g = graph()
    assert len(g) > 50  # the walk found the package
    for m in g:
        layer_of(m)
    bad = upward_imports(g)
    assert not bad, "imports that point up:\n" + "\n".join(bad)


def test_no_two_modules_import_each_other_directly_or_through_others():
    g = graph()
    found = cycles(g)
    assert not found, "\n".join(describe(g, c) for c in found)


def test_the_checks_catch_an_upward_import_and_a_cycle_inside_a_function():
    """The walk sees imports inside function bodies and names the file and line."""
    g = {"ladalit.core.a": [("ladalit.demo.z", 7, "ladalit/core/a.py")],
         "ladalit.demo.z": [("ladalit.core.b", 3, "ladalit/demo/z.py")],
         "ladalit.core.b": [("ladalit.core.a", 9, "ladalit/core/b.py")]}
    assert upward_imports(g) == ["ladalit/core/a.py:7 imports ladalit.demo.z (ladalit.core is below ladalit.demo)"]
    assert cycles(g) == [["ladalit.core.a", "ladalit.core.b", "ladalit.demo.z"]]
    source = "import torch\n\ndef f():\n    from ladalit.demo import zoo\n    import ladalit.core.config\n"
    assert imports(source, {"ladalit.demo.zoo", "ladalit.core.config"}) == [
        (4, "ladalit.demo.zoo", True), (5, "ladalit.core.config", True)]
