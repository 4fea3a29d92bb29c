"""Shape rules of the hardware code that a reviewer would otherwise check by hand."""

import ast
from pathlib import Path

HW = Path(__file__).resolve().parent.parent / "hw"
MAX_LINES = 150


def test_no_hw_function_over_150_lines():
    """A stage or unit is built from methods a reader can hold in view: none over 150 lines
    (the old top's 650-line elaborate mixed four state machines)."""
    long = []
    for path in sorted(HW.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{path.relative_to(HW.parent)}:{node.lineno} {node.name} ({n})")
    assert not long, "functions over 150 lines: " + ", ".join(long)
