#!/usr/bin/env python3
"""Checks the code's shape (issues #7 and #18): prints which top-level modules each top-level
module of src/ imports (`crate::...`), and fails if one imports a module above it in the layering
that src/lib.rs documents, if the files of src/rotation/ import each other in a cycle (they must
read bottom-up, in the order rotation/mod.rs lists), or if a source file grows past MAX_LINES
(the Client model and its conversions excepted: they mirror Auth0's schema field for field)."""
import pathlib, re, sys

# Lowest first: a module may import only modules listed before it.
LAYERS = ["audit", "trace", "metrics", "work", "upstream", "rotation", "auth0", "vault", "webhook", "auth", "listener", "grpc", "telemetry", "cli", "config", "app"]
# Standalone: imports nothing of the service (the emulator is a test double of Auth0).
STANDALONE = ["emulator"]

MAX_LINES = 600
LONG_BY_NATURE = {"src/rotation/client.rs", "src/grpc/convert.rs"}

repo = pathlib.Path(__file__).resolve().parent.parent
root = repo / "src"

def top_modules_used(text):
    used = set()
    for block in re.findall(r"use\s+crate::\{(.*?)\};", text, re.S):
        # Drop nested groups until only the top-level items are left: `a::{b, c}, d` -> `a::, d`.
        while True:
            flat = re.sub(r"\{[^{}]*\}", "", block)
            if flat == block:
                break
            block = flat
        for item in block.split(","):
            name = re.split(r"[:\s]", item.strip())[0]
            if name:
                used.add(name)
    for m in re.findall(r"crate::([a-z_0-9]+)", text):
        used.add(m)
    used.discard("proto")  # generated code, declared in lib.rs
    return used

graph, bad = {}, []
for module in LAYERS + STANDALONE:
    files = list((root / module).rglob("*.rs")) if (root / module).is_dir() else [root / f"{module}.rs"]
    used = set()
    for f in files:
        used |= top_modules_used(f.read_text())
    used.discard(module)
    graph[module] = sorted(used)
    allowed = set(LAYERS[: LAYERS.index(module)]) if module in LAYERS else set()
    for u in used:
        if u not in allowed:
            bad.append(f"{module} imports {u}")
for module, used in graph.items():
    print(f"{module:10} -> {', '.join(used) or '(nothing)'}")

def without_tests(text):
    """The text before its `#[cfg(test)] mod tests` (test code may import anything)."""
    return re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]

def rotation_graph():
    """File -> the files of src/rotation/ it imports (`super::file`, `crate::rotation::file`,
    or a name mod.rs re-exports from a file). `steps/mod.rs` is `steps`."""
    rot = root / "rotation"
    names = {}
    for f in rot.rglob("*.rs"):
        rel = f.relative_to(rot)
        if rel.parts[0] == "tests" or rel.name == "mod.rs" and len(rel.parts) == 1:
            continue
        name = str(rel.with_suffix("")).removesuffix("/mod")
        names[name] = f
    # Names mod.rs re-exports, by the file that defines them.
    exported = {}
    for file, items in re.findall(r"pub use (\w+)::\{?([^;]*?)\}?;", (rot / "mod.rs").read_text()):
        for item in re.sub(r"\{[^}]*\}", "", items).split(","):
            if item.strip():
                exported[item.strip()] = file
    graph = {}
    for name, f in names.items():
        text = without_tests(f.read_text())
        here = name.split("/")[0] if "/" in name else ""
        used = set()
        paths = []
        for block in re.findall(r"use\s+(super|crate::rotation)::\{(.*?)\};", text, re.S):
            base, items = block
            while True:
                flat = re.sub(r"\{[^{}]*\}", "", items)
                if flat == items:
                    break
                items = flat
            paths += [(base, i.strip()) for i in items.split(",") if i.strip()]
        # `use crate::{audit::Origin, rotation::{a, b::C}}`
        for items in re.findall(r"\brotation::\{((?:[^{}]|\{[^{}]*\})*)\}", text):
            items = re.sub(r"\{[^{}]*\}", "", items)
            paths += [("crate::rotation", i.strip()) for i in items.split(",") if i.strip()]
        paths += re.findall(r"(super|crate::rotation)::(\w+)", text)
        for base, item in paths:
            head = re.split(r"[:\s]", item)[0]
            if base == "super" and here and name != here:
                candidates = [f"{here}/{head}", here]
            else:
                candidates = [head]
            for c in candidates:
                if c in names:
                    used.add(c)
                    break
            else:
                if head in exported and exported[head] in names:
                    used.add(exported[head])
        # A directory module's own children.
        if name in {n.split("/")[0] for n in names if "/" in n}:
            used |= {n for n in names if n.startswith(name + "/") and
                     re.search(rf"\bmod {n.split('/')[1]};", text)}
        used.discard(name)
        graph[name] = used
    return graph

def cycle(graph):
    """One import cycle, if there is any."""
    state = {}
    def visit(n, path):
        state[n] = "open"
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                return path[path.index(m):] + [m]
            if m not in state:
                found = visit(m, path + [m])
                if found:
                    return found
        state[n] = "done"
        return None
    for n in sorted(graph):
        if n not in state:
            found = visit(n, [n])
            if found:
                return found
    return None

def listed_order():
    """The files of rotation/ as its mod.rs lists them under "Reading order": name -> place."""
    lines = (root / "rotation" / "mod.rs").read_text().split("# Reading order")[1].splitlines()
    doc = "\n".join(l[4:] for l in lines[1:] if l.startswith("//!")) if lines else ""
    doc = doc.split("\nmod ")[0]
    place = {}
    for n, bullet in enumerate(re.split(r"\n- ", doc)[1:]):
        for name in re.findall(r"`(\w+)`", bullet.split(":")[0]):
            place.setdefault(name, n)
    return place

graph = rotation_graph()
found = cycle(graph)
if found:
    bad.append("rotation/ files import each other in a cycle: " + " -> ".join(found))
place = listed_order()
for name, used in sorted(graph.items()):
    top = name.split("/")[0]
    if top not in place:
        bad.append(f"rotation/mod.rs does not list {top} in its reading order")
        continue
    for u in sorted(used):
        if u.split("/")[0] != top and place.get(u.split("/")[0], 10**6) >= place[top]:
            bad.append(f"rotation/{name} imports {u}, which rotation/mod.rs lists after it")

for f in sorted(list(root.rglob("*.rs")) + list((repo / "tests").rglob("*.rs")) + list((repo / "benches").rglob("*.rs"))):
    name = str(f.relative_to(repo))
    lines = f.read_text().count("\n")
    if lines > MAX_LINES and name not in LONG_BY_NATURE:
        bad.append(f"{name} has {lines} lines (more than {MAX_LINES})")
if bad:
    print("layout check failed:\n  " + "\n  ".join(bad))
    sys.exit(1)
