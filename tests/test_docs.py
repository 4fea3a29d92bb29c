"""The documentation cannot drift from the code.

* ``docs/registers.md``: every register of :func:`hw.top.register_map` is in its table with the
  right address, access and default-preset width, and the table names no other register; so is
  every register of :func:`hw.decode.accel.register_map` in ``docs/token_picker.md``.
* ``docs/*.md``: every dotted reference to a function or class of the project resolves.
* ``README.md``: its Python-API example runs (tiny preset, one head, Icarus) and its links
  to ``docs/`` exist.
* No tracked file points to reference texts outside the repository.
* ``docs/spec.md`` is complete: one head re-implemented from it alone matches the golden model.
"""

import importlib
import math
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


LEOPARD_HEADING = "### A top generated with the LeOPArd front end"


def test_register_table_matches_register_map():
    hdp_text, leo_text = (DOCS / "registers.md").read_text().split(LEOPARD_HEADING)
    _check_register_rows(register_rows(hdp_text), register_map(preset("default")))
    # the LeOPArd top's table lists the registers the HDP top does not have
    hdp_names = {r.name for r in register_map(preset("default"))}
    _check_register_rows(register_rows(leo_text),
                         [r for r in register_map(preset("leopard")) if r.name not in hdp_names])


def _check_register_rows(rows, regs):
    assert [r["name"] for r in rows] == [r.name for r in regs], \
        "docs/registers.md lists other registers (or another order) than hw.top.register_map"
    for row, reg in zip(rows, regs):
        assert row["addr"] == reg.addr, f"{reg.name}: doc says {row['addr']:#x}, code {reg.addr:#x}"
        assert row["access"] == ("RW" if reg.rw else "RO"), reg.name
        assert row["width"] == reg.width, f"{reg.name}: default width {row['width']} != {reg.width}"


def test_decode_accel_register_table_matches_register_map():
    """docs/token_picker.md's DecodeAccel table: names, order, addresses, access and the
    widths of the build it names (default formats, N = 48, 32-bit m_axi addresses)."""
    from golden.token_picker import TokenPickerConfig
    from hw.decode import accel
    from hw.decode.params import DecodeParams

    text = (DOCS / "token_picker.md").read_text()
    section = text.split("### Registers of `DecodeAccel`", 1)[1].split("\n## ", 1)[0]
    _check_register_rows(register_rows(section),
                         accel.register_map(DecodeParams(TokenPickerConfig(), d=16, n_cache=48)))


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


# ------------------------------------------------------------------------------ spec completeness
# One head re-implemented from docs/spec.md alone, in plain Python integers, without golden/:
# if the specification missed a rule, this would disagree with the golden model somewhere.


def spec_head(q, k, v, cfg, L):
    """q, k, v: float lists (N x d). Returns (out_int rows, block keep, head kept)."""
    N, d = len(q), len(q[0])
    B, F, Bv, Fv = cfg.qk_bits, cfg.qk_frac, cfg.v_bits, cfg.v_frac
    P, W, E = cfg.prob_frac, cfg.exp_bits, cfg.exp_frac
    br, bc = cfg.block_rows, cfg.block_cols

    def quant(x, bits, frac):
        r = round(x * 2 ** frac)            # Python round: half to even
        return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, r))
    qq = [[quant(x, B, F) for x in row] for row in q]
    kq = [[quant(x, B, F) for x in row] for row in k]
    vq = [[quant(x, Bv, Fv) for x in row] for row in v]

    def split(x):  # x_I, x_F
        return x >> F, x - ((x >> F) << F)
    qs = [[split(x) for x in row] for row in qq]
    ks = [[split(x) for x in row] for row in kq]
    A = [[sum(qs[i][e][0] * ks[j][e][0] for e in range(d)) for j in range(N)] for i in range(N)]
    X = [[sum(qs[i][e][0] * ks[j][e][1] + qs[i][e][1] * ks[j][e][0] for e in range(d))
          for j in range(N)] for i in range(N)]
    C = [[sum(qs[i][e][1] * ks[j][e][1] for e in range(d)) for j in range(N)] for i in range(N)]
    valid = [[i < L and j < L and (not cfg.causal or j <= i) for j in range(N)] for i in range(N)]
    nbr, nbc = -(-N // br), -(-N // bc)

    def entries(r, c):
        return [(i, j) for i in range(r * br, min(N, r * br + br))
                for j in range(c * bc, min(N, c * bc + bc)) if valid[i][j]]
    bvalid = [[bool(entries(r, c)) for c in range(nbc)] for r in range(nbr)]
    imp = [[0] * nbc for _ in range(nbr)]
    for r in range(nbr):
        for c in range(nbc):
            a = [A[i][j] for i, j in entries(r, c)]
            if a:
                imp[r][c] = {"abs_sum": sum(map(abs, a)), "sum": sum(a), "max": max(a)}[cfg.criterion]
    H = sum(abs(A[i][j]) for i in range(N) for j in range(N) if valid[i][j])
    hk = (not cfg.head_prune) or H >= cfg.tau_head
    diag = [[False] * nbc for _ in range(nbr)]
    for i in range(min(N, L)):
        diag[i // br][i // bc] = True
    keep = [[False] * nbc for _ in range(nbr)]
    if hk:
        for r in range(nbr):
            cols = [c for c in range(nbc) if bvalid[r][c]]
            if cfg.prune_mode == "off":
                for c in cols:
                    keep[r][c] = True
                continue
            for c in cols:
                keep[r][c] = diag[r][c]
            if cfg.prune_mode == "topk":
                budget = math.ceil(cfg.k_frac * len(cols)) - sum(keep[r])
                others = sorted((c for c in cols if not keep[r][c]), key=lambda c: (-imp[r][c], c))
                for c in others[:max(0, budget)]:
                    keep[r][c] = True
            else:
                if not cols:
                    continue
                one = 1 << cfg.rho_frac
                rq = round(cfg.rho * one)
                n, S, M = len(cols), sum(imp[r][c] for c in cols), max(imp[r][c] for c in cols)
                for c in cols:
                    if imp[r][c] * n * one >= rq * M * n + (one - rq) * S:
                        keep[r][c] = True
    ek = [[valid[i][j] and keep[i // br][j // bc] for j in range(N)] for i in range(N)]
    scale = round(math.log2(math.e) / math.sqrt(d) * 2.0 ** (16 + E - 2 * F))
    lut = [round(2.0 ** (W - f / 2 ** E)) for f in range(2 ** E)]
    dmax = -(-(((W + 1) << E) << 16) // scale)
    G = max(0, (cfg.seq_len - 1).bit_length()) + 2
    out = []
    for i in range(N):
        js = [j for j in range(N) if ek[i][j]]
        S = {j: (A[i][j] << 2 * F) + (X[i][j] << F) + (C[i][j] if cfg.approx == "exact" else 0)
             for j in js}
        p = [0] * N
        if js:
            m = max(S.values())
            e = {}
            for j in js:
                t = (min(m - S[j], dmax) * scale) >> 16
                e[j] = lut[t % (1 << E)] >> min(t >> E, W + 1)
            R = (1 << (W + P + G)) // sum(e.values())
            for j in js:
                p[j] = (e[j] * R + (1 << (W + G - 1))) >> (W + G)
        sh = P + Fv - cfg.out_frac
        row = []
        for col in range(d):
            acc = sum(p[j] * vq[j][col] for j in range(N))
            o = (acc + (1 << (sh - 1))) >> sh if sh > 0 else acc << -sh
            row.append(max(-(1 << (cfg.out_bits - 1)), min((1 << (cfg.out_bits - 1)) - 1, o)))
        out.append(row)
    return out, keep, hk


def test_spec_reimplementation_matches_golden():
    import numpy as np

    from golden.model import attention_head
    rng = np.random.default_rng(5)
    for name, trials in (("tiny", 24), ("odd", 24), ("default", 3)):
        base = preset(name)
        for trial in range(trials):
            ch = {"prune_mode": ["off", "topk", "threshold"][trial % 3],
                  "criterion": ["abs_sum", "sum", "max"][(trial // 3) % 3],
                  "approx": ["drop_ff", "exact"][(trial // 9) % 2], "causal": trial % 4 == 3,
                  "head_prune": trial % 5 == 2}
            cfg = base.replace(**ch)
            n = 24 if name == "default" else int(rng.integers(1, cfg.seq_len + 1))
            valid_len = int(rng.integers(1, n + 1))
            one = 1 << cfg.rho_frac
            k_frac = int(rng.integers(1, 257)) / 256
            coarse = trial % 2 == 0
            if coarse:   # all tokens valid and a budget between diagonal and all: ties matter
                n = valid_len = 24 if name == "default" else cfg.seq_len
                k_frac = 0.5 + 1 / 256
            rho = [0.0, 1.0][trial // 2 % 2] if coarse else int(rng.integers(0, one + 1)) / one
            cfg = cfg.replace(k_frac=k_frac, rho=rho)
            scale = float(rng.choice([0.5, 2.0, 8.0]))
            q, k, v = (rng.normal(scale=scale, size=(n, cfg.head_dim)) for _ in range(3))
            if coarse:   # few distinct values: equal block importances
                q, k = (rng.integers(-2, 3, size=(n, cfg.head_dim)).astype(float) for _ in range(2))
            if cfg.head_prune:   # a threshold near the head's importance: either side happens
                h = attention_head(q, k, v, cfg.replace(head_prune=False), valid_len).head_importance
                cfg = cfg.replace(tau_head=max(0, min(cfg.h_max, h + int(rng.integers(-2, 3)))))
            gold = attention_head(q, k, v, cfg, valid_len)
            out, keep, head_kept = spec_head(q.tolist(), k.tolist(), v.tolist(), cfg, valid_len)
            where = f"{name} trial {trial}: {cfg}"
            assert head_kept == gold.head_keep, where
            assert np.array_equal(np.array(keep, bool), gold.block_keep), where
            assert np.array_equal(np.array(out, np.int64), gold.out_int), where
