#!/usr/bin/env python3
"""Draws the import graph between all modules of src/, at every depth, and reports its cycles.

Usage: python3 scripts/module_cycles.py [--tests] [SRC_DIR]   (exit 1 when a cycle exists)

Nodes. Every file module is a node, named by its path: src/cache/store.rs is `cache::store`;
src/cache/mod.rs (or src/cache.rs beside src/cache/) is `cache`; src/lib.rs is `crate`. An
inline `mod x { .. }` belongs to the file it is written in. src/main.rs is another crate (it
reaches the library as `parapet::`), so it is not a node.

Edges. A path that starts with `crate::`, `super::` or `self::`, in a `use` or anywhere in the
code, or that starts with the name of one of the module's own children (`store::lookup()` in
cache/mod.rs, `pub use store::Entry`), is an edge to the deepest module it names:
`crate::cache::store::Entry` is an edge to `cache::store`, `super::fill` in cache/store.rs an
edge to `cache::fill`, `super::get()` there an edge to `cache` (an item written in
cache/mod.rs belongs to `cache`). Groups are expanded (`super::{key, store::Tier}` names
`cache::key` and `cache::store`). So:
  - a child that uses an item of an ancestor has an edge to that ancestor;
  - a parent that uses or re-exports its child has an edge to it;
  - `mod child;` is a declaration, not an import: no edge;
  - a path back into the module itself is no edge.
A name a module only imports (`pub use negotiate::Encoding` in compress/mod.rs) is followed to
where it is written: `super::Encoding` in compress/metrics.rs is an edge to
`compress::negotiate`, not to `compress`, because it uses no code of compress/mod.rs. The
re-export itself stays an edge of compress/mod.rs.

Tests. Code under `#[cfg(test)]` (the `mod tests { use super::*; .. }` blocks, and test-only
file modules such as listen/quic/harness.rs) is left out: a test may reach its parent's
fixtures or a sibling's helpers without that being a dependency of the program. `--tests`
counts it too, to see what the tests add.

Comments and string and character literals are ignored; `super` counts inline modules
(`super::` inside `mod tests { }` is the file's own module).
"""
import re
import sys
from pathlib import Path

args = [a for a in sys.argv[1:] if a != "--tests"]
with_tests = "--tests" in sys.argv[1:]
src = Path(args[0] if args else "src")


def module_of(path):
    """The module path of a source file: ('cache', 'store') for src/cache/store.rs."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return tuple(parts)


files = {module_of(p): p for p in sorted(src.rglob("*.rs")) if p != src / "main.rs"}
modules = set(files)


def name(module):
    return "::".join(module) or "crate"


TOKEN = re.compile(
    r"""(?P<skip>\s+|//[^\n]*)
      | (?P<raw>b?r(?P<hashes>\#*)")
      | (?P<str>b?"(?:\\.|[^"\\])*")
      | (?P<char>b?'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])')
      | (?P<lifetime>'\w+)
      | (?P<ident>\$?[A-Za-z_]\w*)
      | (?P<sep>::)
      | (?P<punct>.)""",
    re.S | re.X,
)


def tokens(text):
    """Identifiers, `::` and punctuation; comments and literals dropped."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = 1, i + 2
            while depth and i < len(text):
                step = text[i : i + 2]
                depth += (step == "/*") - (step == "*/")
                i += 2 if step in ("/*", "*/") else 1
            continue
        m = TOKEN.match(text, i)
        if m.lastgroup == "raw":
            end = text.find('"' + m.group("hashes"), m.end())
            i = len(text) if end < 0 else end + 1 + len(m.group("hashes"))
            continue
        i = m.end()
        if m.lastgroup in ("ident", "sep", "punct"):
            out.append(m.group())
    return out


def closing(toks, i):
    """The index just past the `}` that closes the `{` at toks[i]."""
    depth = 0
    for j in range(i, len(toks)):
        depth += (toks[j] == "{") - (toks[j] == "}")
        if depth == 0:
            return j + 1
    return len(toks)


def is_word(tok):
    return re.match(r"[A-Za-z_]", tok) is not None


def paths_at(toks, i):
    """The paths written from toks[i] as (segments, the name they bind in a `use`), groups
    expanded; and the index after them."""
    segments, j = [toks[i]], i + 1
    while j + 1 < len(toks) and toks[j] == "::":
        if toks[j + 1] == "{":
            end, found, k = closing(toks, j + 1), [], j + 2
            while k < end - 1:
                if is_word(toks[k]):
                    inner, k = paths_at(toks, k)
                    found += [(segments + s, bound) for s, bound in inner]
                else:
                    k += 1
            return found, end
        if not is_word(toks[j + 1]):
            break
        segments.append(toks[j + 1])
        j += 2
    if segments[-1] == "self" and len(segments) > 1:
        segments.pop()
    bound = segments[-1]
    if j + 1 < len(toks) and toks[j] == "as":
        bound, j = toks[j + 1], j + 2
    return [(segments, bound)], j


def resolve(segments, here, depth=0, hops=0):
    """The deepest module a path names, seen from file module `here` inside `depth` inline
    modules and following imported names, with the segments left after it; None when the path
    leaves the crate (std::, a local name)."""
    base, rest = here, list(segments)
    if rest[0] == "crate":
        base, rest = (), rest[1:]
    elif rest[0] in ("super", "self"):
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super" and depth:
                depth -= 1
            elif rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    elif here + (rest[0],) not in modules or len(rest) == 1:
        return None
    found = base
    while rest and found + (rest[0],) in modules:
        found, rest = found + (rest[0],), rest[1:]
    imported = imports_of[found].get(rest[0]) if rest and found != here else None
    target = resolve(imported, found) if imported and hops < 8 else None
    if target is None:
        return found, rest
    module, left = target
    return resolve(["crate", *module, *left, *rest[1:]], (), 0, hops + 1)


def scan(module):
    """Each path of a module's non-test code as (segments, inline depth, bound name of a
    top-level `use`, or None); and the child file modules it declares under cfg(test)."""
    toks = tokens(files[module].read_text())
    found, test_children, inline, i = [], set(), [], 0
    while i < len(toks):
        t = toks[i]
        if toks[i : i + 7] == ["#", "[", "cfg", "(", "test", ")", "]"] and not with_tests:
            # Every cfg(test) item in src/ is a module: `mod tests { .. }` or `mod harness;`.
            j = toks.index("mod", i)
            if toks[j + 2] == ";":
                test_children.add(module + (toks[j + 1],))
                i = j + 3
            else:
                i = closing(toks, j + 2)
            continue
        if t == "{":
            inline.append(i >= 2 and toks[i - 2] == "mod")
        elif t == "}" and inline:
            inline.pop()
        elif t == "mod" and i + 2 < len(toks) and toks[i + 2] == ";":
            i += 3
            continue
        elif is_word(t) and i + 1 < len(toks) and toks[i + 1] == "::" and toks[i - 1] != "::":
            top_use = not inline and toks[i - 1] == "use"
            paths, i = paths_at(toks, i)
            found += [(s, sum(inline), bound if top_use else None) for s, bound in paths]
            continue
        i += 1
    return found, test_children


scanned, test_modules = {}, set()
for module in sorted(modules, key=len):
    if module not in test_modules:
        scanned[module], children = scan(module)
        test_modules |= children
imports_of = {m: {b: s for s, _, b in paths if b} for m, paths in scanned.items()}
for module in test_modules:
    imports_of.setdefault(module, {})

graph = {}
for module, paths in scanned.items():
    resolved = (resolve(segments, module, depth) for segments, depth, _ in paths)
    targets = {r[0] for r in resolved if r is not None} - {module}
    graph[module] = sorted(targets - test_modules, key=name)

width = max(len(name(m)) for m in graph)
for module in sorted(graph, key=name):
    print(f"{name(module):{width}} -> {', '.join(map(name, graph[module])) or '(nothing)'}")
if test_modules:
    print("test-only, left out: " + ", ".join(sorted(map(name, test_modules))))


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
            groups.append(sorted(group, key=name))

    for node in sorted(graph, key=name):
        if node not in index:
            visit(node)
    return [g for g in groups if len(g) > 1]


cycles = strongly_connected(graph)
for group in cycles:
    print("cycle among: " + ", ".join(map(name, group)))
    for module in group:
        inside = [name(t) for t in graph[module] if t in group]
        print(f"    {name(module)} -> {', '.join(inside)}")
if cycles:
    sys.exit(1)
print(f"no import cycles among {len(graph)} modules")
