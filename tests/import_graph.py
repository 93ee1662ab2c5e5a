"""The import graph of the tfmodels package, read from the source (no module is imported).

Every `import` and `from ... import` statement counts, at module level and inside functions alike: an import
inside a function still runs, only later, and a cycle through it is a cycle in the design. How a statement
becomes an edge:
- `import tfmodels.a.b` -> tfmodels.a.b;
- `from tfmodels.a import b` -> tfmodels.a.b when b is a submodule (a file or package), else tfmodels.a (b is a
  name defined in module a, or in package a's __init__); relative imports are resolved first;
- the parent packages that Python initialises on the way (tfmodels, tfmodels.a) are not edges: a package
  __init__ is a dependency only of the modules that import it or take a name from it. Otherwise every module
  would depend on tfmodels/__init__.py, which imports everything, and the graph would say nothing.
Imports through importlib (registry's family discovery) are lookups by name at run time and are not edges.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "tfmodels"


def modules(root=ROOT, package=PACKAGE):
    """{module name: file path} of every module of the package."""
    found = {}
    for directory, dirs, files in os.walk(os.path.join(root, package)):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        for file_name in sorted(files):
            if not file_name.endswith(".py"):
                continue
            path = os.path.join(directory, file_name)
            parts = os.path.relpath(path, root)[:-len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imported(node, module, is_package, known):
    """The tfmodels modules an import statement depends on."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in known]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source not in known:
        return []
    targets = []
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        targets.append(submodule if submodule in known else source)
    return targets


def import_graph(root=ROOT, package=PACKAGE):
    """{module: {imported module: first line number}} over the package's modules."""
    known = modules(root, package)
    graph = {}
    for module, path in known.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        is_package = path.endswith("__init__.py")
        edges = graph.setdefault(module, {})
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(node, module, is_package, known):
                    if target != module:
                        edges.setdefault(target, node.lineno)
    return graph


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
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
