#!/usr/bin/env python3
"""Lists the `crate::X` imports of each top-level module of src/ and reports import cycles.

Usage: python3 scripts/module_cycles.py [SRC_DIR]   (exit 1 when a cycle exists)
A top-level module is src/X.rs or src/X/; comment lines are skipped, test code counts.
"""
import re
import sys
from pathlib import Path

src = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
modules = {p.stem: [p] for p in src.glob("*.rs") if p.stem not in ("lib", "main")}
for directory in (d for d in src.iterdir() if d.is_dir()):
    modules[directory.name] = sorted(directory.rglob("*.rs"))

single = re.compile(r"\bcrate::(\w+)")
grouped = re.compile(r"\bcrate::\{([^}]*)\}", re.S)


def imports(files):
    found = set()
    for path in files:
        code = "\n".join(l for l in path.read_text().splitlines() if not l.lstrip().startswith("//"))
        found.update(single.findall(code))
        for group in grouped.findall(code):
            found.update(re.findall(r"^\s*(\w+)", part)[0] for part in group.split(",") if part.strip())
    return found


graph = {name: sorted((imports(files) & modules.keys()) - {name}) for name, files in modules.items()}
for name in sorted(graph):
    print(f"{name:12} -> {', '.join(graph[name]) or '(nothing)'}")


def strongly_connected(graph):
    """Tarjan: the groups of modules that reach each other."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [g for g in groups if len(g) > 1]


cycles = strongly_connected(graph)
if cycles:
    for group in cycles:
        print("cycle among: " + ", ".join(group))
    sys.exit(1)
print("no import cycles between top-level modules")
