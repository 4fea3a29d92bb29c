"""The documentation cannot drift from the code.

* ``docs/registers.md``: every register of :func:`hw.top.register_map` is in its table with the
  right address, access and default-preset width, and the table names no other register.
* ``docs/*.md``: every dotted reference to a function or class of the project resolves.
* ``README.md``: its Python-API example runs (tiny preset, one head, Icarus) and its links
  to ``docs/`` exist.
* No tracked file points to reference texts outside the repository.
"""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hw.presets import preset
from hw.top import register_map

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"


# ------------------------------------------------------------------------------ registers
def register_rows(text: str) -> list[dict]:
    """Rows of the register-map table: ``| 0x000 | `name` | RW | width | ...``."""
    rows = []
    for line in text.splitlines():
        m = re.match(r"\|\s*(0x[0-9A-Fa-f]+)\s*\|\s*`(\w+)`\s*\|\s*(RW|RO)\s*\|\s*(\d+)\s*\|", line)
        if m:
            rows.append({"addr": int(m[1], 16), "name": m[2], "access": m[3], "width": int(m[4])})
    return rows


def test_register_table_matches_register_map():
    rows = register_rows((DOCS / "registers.md").read_text())
    regs = register_map(preset("default"))
    assert [r["name"] for r in rows] == [r.name for r in regs], \
        "docs/registers.md lists other registers (or another order) than hw.top.register_map"
    for row, reg in zip(rows, regs):
        assert row["addr"] == reg.addr, f"{reg.name}: doc says {row['addr']:#x}, code {reg.addr:#x}"
        assert row["access"] == ("RW" if reg.rw else "RO"), reg.name
        assert row["width"] == reg.width, f"{reg.name}: default width {row['width']} != {reg.width}"


def test_register_table_parser_sees_every_row():
    """The parser is not vacuous: a table row with a wrong address is caught."""
    text = (DOCS / "registers.md").read_text().replace("| 0x024 | `status`", "| 0x028 | `status`")
    rows = register_rows(text)
    assert {r["name"]: r["addr"] for r in rows}["status"] == 0x28


# ------------------------------------------------------------------------------ references
def dotted_refs(text: str) -> set[str]:
    """``golden.x.f``, ``hw.x.f``, ``sim.x.f``, ``hdpgen.x.f`` written in backticks."""
    return set(re.findall(r"`((?:golden|hw|sim|hdpgen|synth)(?:\.\w+)+)(?:\(\))?`", text))


def resolve(ref: str) -> bool:
    parts = ref.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("doc", ["spec.md", "registers.md", "toolchain.md"])
def test_doc_references_resolve(doc):
    refs = dotted_refs((DOCS / doc).read_text())
    assert refs, f"docs/{doc} cites no function"
    missing = sorted(r for r in refs if not resolve(r))
    assert not missing, f"docs/{doc} cites what does not exist: {missing}"


def test_doc_paths_exist():
    """Repository paths written in backticks in docs/*.md and README.md exist."""
    missing = []
    for f in [*DOCS.glob("*.md"), README]:
        for p in re.findall(r"`((?:hw|golden|sim|synth|hdpgen|bench|tests|docs)/[\w./-]*\w)`",
                            f.read_text()):
            if not (ROOT / p).exists():
                missing.append(f"{f.name}: {p}")
    assert not missing, missing


def test_readme_links_to_docs():
    text = README.read_text()
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert {"docs/spec.md", "docs/registers.md", "docs/toolchain.md"} <= set(links)
    for link in links:
        assert (ROOT / link).is_file(), link


# ------------------------------------------------------------------------------ no outside refs
#: split so that this file does not match itself
OUTSIDE = [re.escape(s) for s in ("../" + "shared", "shared/" + "ALGORITHM", "shared/" + "TOOLCHAIN",
                                   "shared/" + "STYLE")] + [r"issue\s+" + "notes"]


def test_no_tracked_file_points_outside_the_repository():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
                           ).stdout.decode().split("\0")
    pattern = re.compile("|".join(OUTSIDE), re.IGNORECASE)
    hits = []
    for name in filter(None, files):
        path = ROOT / name
        if not path.is_file():
            continue          # deleted in the working tree
        data = path.read_bytes()
        if b"\0" in data[:4096]:
            continue          # binary
        for no, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{name}:{no}: {line.strip()}")
    assert not hits, "tracked files refer to texts users do not have:\n" + "\n".join(hits)


# ------------------------------------------------------------------------------ README example
def readme_example() -> str:
    """The fenced ``python`` block of the README's "Python API" section."""
    text = README.read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert m, "README.md: no ```python block under '## Python API'"
    return m[1]


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", ["icarus"], indirect=True)
def test_readme_example_runs(simulator, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert (tmp_path / "build" / "example" / "verilog" / "softmax_unit.v").is_file()
    assert "cycles:" in proc.stdout
