"""The simulator's import graph is a straight line: presets -> spaces -> types -> physics -> engine
-> env -> (traces) -> tasks -> trace tasks -> registry; no module imports one above it. The tools
(grading, rollout, evaluation, baselines, tune, report, vector, trace_analysis) sit above the line:
they may import it, nothing on it imports them."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "gymjax"
PHYSICS = ("numerics", "roofline", "speculation", "deployment", "queues", "workload", "accounting", "observation", "reward")
LINE = ("presets", "spaces", "types", *(f"physics.{m}" for m in PHYSICS), "engine", "env", "traces", "tasks", "trace_tasks", "registry")


def _gymjax_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gymjax"):
            mod = node.module.removeprefix("gymjax").removeprefix(".")
            out |= {f"{mod}.{a.name}".strip(".") for a in node.names} if mod in ("", "physics") else {mod}
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("gymjax.") for a in node.names if a.name.startswith("gymjax.")}
    return out


def test_each_module_imports_only_modules_below_it():
    rank = {m: i for i, m in enumerate(LINE)}
    for m in LINE:
        path = ROOT / (m.replace(".", "/") + ".py")
        for dep in _gymjax_imports(path):
            assert dep in rank, f"{m} imports {dep}, which is not on the line"
            assert rank[dep] < rank[m], f"{m} imports {dep}, which is above it"
