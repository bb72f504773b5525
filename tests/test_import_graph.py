"""The package's modules form no circle, and none of the tool layers reaches up into the command line.

The graph is read from the source with `ast` (every `import`, at module level or inside a function, since a
function-level import is still a dependency), not by importing, so a circle hidden behind a lazy import counts too.
"""

import ast
from pathlib import Path

import modeling_ase_mllm

PACKAGE = Path(modeling_ase_mllm.__file__).parent
NAME = PACKAGE.name
# The layers below the command line: none of their modules may import `cli/`.
BELOW_CLI = ("evaluation", "inference", "data", "training")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """`module → the package's modules it imports`; `from pkg import name` counts as importing `pkg.name` when that
    is a module, else `pkg` (a package's `__init__`)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                submodules = [f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in modules]
                found = submodules or [source]
            else:
                continue
            for target in found:
                while target and target not in modules:  # `import a.b.c` of a non-module tail
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith(NAME):
                    targets.add(target)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_imports_it_must_judge():
    graph = import_graph()
    assert f"{NAME}.evaluation.predictions" in graph[f"{NAME}.evaluation.sharding"]
    assert f"{NAME}.inference.photos" in graph[f"{NAME}.inference.visualize"]
    assert f"{NAME}.cli.arguments" in graph[f"{NAME}.cli.evaluate"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_one_that_imports_it_back():
    assert circles(import_graph()) == []


def test_no_tool_layer_imports_the_command_line():
    def layer(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else None

    upward = sorted(f"{name} -> {target}" for name, targets in import_graph().items() if layer(name) in BELOW_CLI
                    for target in targets if layer(target) == "cli")
    assert upward == []
