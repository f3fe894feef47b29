#!/usr/bin/env python3
"""Fail when a file of a crate imports a file that imports it back, directly or around a loop.

A file's module comes from its place under `src/` (`lib.rs`/`main.rs` = the crate root,
`a.rs` or `a/mod.rs` = `a`, `a/b.rs` = `a::b`). A `crate::`, `super::` or `self::` path in a
file's code (comments and strings removed) that names another module, or an item in it, is an
import of that module's file. Imports between a module and its own ancestors or descendants are
how Rust nests modules and are not counted. Any other loop is a cycle.

    python3 scripts/check_cycles.py            # every crate under crates/ and benches/
    python3 scripts/check_cycles.py -v         # also print each crate's import edges

Exit 1 when a cycle exists; each is printed with the imports that close it.
"""
import os
import re
import sys

ROOTS = ("crates", "benches")
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def clean(text):
    """Source without comments, string and char literals (so paths inside them don't count)."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r'r(#*)".*?"\1', '""', text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text, flags=re.S)
    text = re.sub(r"'(?:\\.|[^'\\\n])'", "' '", text)
    return re.sub(r"//[^\n]*", " ", text)


def expand(text, pos):
    """Every path that starts at text[pos:], with `{a, b::c}` groups expanded."""
    segs = []
    while True:
        m = re.compile(r"\s*(" + IDENT + r"|\*)\s*").match(text, pos)
        if not m:
            return [segs]
        segs.append(m.group(1))
        pos = m.end()
        if not text.startswith("::", pos):
            return [segs]
        pos += 2
        m = re.compile(r"\s*\{").match(text, pos)
        if m:
            depth, start, i, parts = 1, m.end(), m.end(), []
            while i < len(text) and depth:
                c = text[i]
                if c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                if depth == 0 or (c == "," and depth == 1):
                    parts.append(text[start:i])
                    start = i + 1
                i += 1
            out = []
            for part in parts:
                for tail in expand(part, 0):
                    out.append(segs + tail)
            return out


def module_path(src, file):
    parts = os.path.relpath(file, src)[:-3].split(os.sep)
    if parts == ["lib"] or parts == ["main"]:
        return ()
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def crate_edges(src):
    files = {}
    for d, _, names in os.walk(src):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(d, n)
                files[module_path(src, p)] = p
    edges = {m: {} for m in files}
    for mod, path in files.items():
        with open(path, encoding="utf-8", errors="replace") as f:
            text = clean(f.read())
        found = []
        for m in re.finditer(r"\bcrate\s*::", text):
            found += expand(text, m.end())
        for m in re.finditer(r"\b((?:super\s*::\s*)+)", text):
            up = m.group(1).count("super")
            base = list(mod[: max(len(mod) - up, 0)])
            found += [base + t for t in expand(text, m.end())]
        for m in re.finditer(r"\bself\s*::", text):
            found += [list(mod) + t for t in expand(text, m.end())]
        for segs in found:
            target = next(
                (tuple(segs[:k]) for k in range(len(segs), -1, -1) if tuple(segs[:k]) in files),
                None,
            )
            if target is None or target == mod:
                continue
            if target[: len(mod)] == mod or mod[: len(target)] == target:
                continue  # a module and its own ancestor or descendant
            name = segs[len(target)] if len(segs) > len(target) else "(module)"
            edges[mod].setdefault(target, set()).add(name)
    return files, edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def main():
    verbose = "-v" in sys.argv[1:]
    top = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    found = 0
    crates = 0
    for root in ROOTS:
        for d, dirs, names in os.walk(os.path.join(top, root)):
            dirs[:] = [x for x in dirs if x not in ("target", "tests", "benches")]
            if "Cargo.toml" not in names:
                continue
            src = os.path.join(d, "src")
            if not os.path.isdir(src):
                src = d if any(n.endswith(".rs") for n in names) else None
            if src is None:
                continue
            crates += 1
            files, edges = crate_edges(src)
            rel = lambda m: os.path.relpath(files[m], top)  # noqa: E731
            if verbose:
                for a in sorted(edges):
                    for b, names_ in sorted(edges[a].items()):
                        print(f"{rel(a)} -> {rel(b)}: {', '.join(sorted(names_))}")
            for comp in cycles(edges):
                found += 1
                print(f"cycle {found}: {', '.join(rel(m) for m in comp)}")
                for a in comp:
                    for b, names_ in sorted(edges[a].items()):
                        if b in comp:
                            print(f"  {rel(a)} -> {rel(b)}: {', '.join(sorted(names_))}")
    print(f"{crates} crates, {found} import cycle(s) between files")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
