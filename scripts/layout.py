#!/usr/bin/env python3
"""Checks the code's shape (issue #7): prints which top-level modules each top-level module of
src/ imports (`crate::...`), and fails if one imports a module above it in the layering that
src/lib.rs documents, or if a source file grows past MAX_LINES (the Client model and its
conversions excepted: they mirror Auth0's schema field for field)."""
import pathlib, re, sys

# Lowest first: a module may import only modules listed before it.
LAYERS = ["audit", "trace", "metrics", "upstream", "rotation", "auth0", "vault", "webhook", "auth", "listener", "grpc", "telemetry", "cli", "config", "app"]
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
for f in sorted(list(root.rglob("*.rs")) + list((repo / "tests").rglob("*.rs")) + list((repo / "benches").rglob("*.rs"))):
    name = str(f.relative_to(repo))
    lines = f.read_text().count("\n")
    if lines > MAX_LINES and name not in LONG_BY_NATURE:
        bad.append(f"{name} has {lines} lines (more than {MAX_LINES})")
if bad:
    print("layout check failed:\n  " + "\n  ".join(bad))
    sys.exit(1)
