"""One top-k budget for every command: ``k_frac`` of each block-row's valid blocks.

``hdpgen golden``, ``hdpgen simulate`` and ``hdpgen run`` program and compute the same budget,
``ceil(k_frac_q * n_valid / 2**8)`` per block-row (:func:`golden.pruner.row_budget`), so a short
input is pruned as a long one is and the three commands agree on the kept blocks.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from golden import model, pruner
from hdpgen.cli import main as cli_main
from hw.presets import preset

DATA = Path(__file__).parent / "data"


def _check_rows(block_keep, cfg, valid_len: int, causal: bool) -> None:
    """Every block-row keeps exactly max(n_diag, min(k_row, n_valid)) of its valid blocks."""
    valid = pruner.block_importance(np.zeros((valid_len, valid_len), np.int64),
                                    pruner.entry_mask(valid_len, valid_len, causal), cfg)[1]
    diag = pruner.diagonal_blocks(valid_len, valid_len, cfg)
    nbr, nbc = valid.shape
    for h, keep in enumerate(block_keep):
        keep = keep[:nbr, :nbc]
        assert not (keep & ~valid).any()
        for r in range(nbr):
            n_valid, n_diag = int(valid[r].sum()), int((diag[r] & valid[r]).sum())
            k_row = pruner.row_budget(cfg.k_frac_q, n_valid)
            assert int(keep[r].sum()) == max(n_diag, min(k_row, n_valid)), f"head {h} row {r}"


def test_golden_default_preset_prunes_a_real_30_token_input(tmp_path, capsys):
    """The default preset (the mass rule, eps = 28/256) prunes blocks of the 30-token MiniLM
    capture in every layer and keeps every diagonal block; its top-k register, selected with
    ``--set prune_mode=topk``, keeps ceil(172 * 15 / 256) = 11 of the 15 valid blocks of every
    block-row (an absolute budget of 48 blocks would keep them all)."""
    inp = DATA / "minilm_long.npz"
    with np.load(inp) as z:
        assert int(z["valid_len"]) == 30
    cfg = preset("default")
    assert cfg.prune_mode == "mass" and cfg.eps_q == 28
    out = tmp_path / "o.npz"
    assert cli_main(["golden", "--qkv", str(inp), "--out", str(out)]) == 0, capsys.readouterr().err
    with np.load(out) as z:
        keep = z["block_keep"]
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["config"]["prune_mode"] == "mass" and rep["config"]["eps"] == 0.109375
    valid_blocks = keep.shape[1] * keep.shape[2]
    per_layer = keep.reshape(6, 12, 15, 15).sum(axis=(1, 2, 3)) / (12 * valid_blocks)
    assert (per_layer < 0.9).all(), per_layer
    assert keep[:, np.arange(15), np.arange(15)].all()
    out = tmp_path / "t.npz"
    assert cli_main(["golden", "--qkv", str(inp), "--out", str(out), "--set",
                     "prune_mode=topk"]) == 0, capsys.readouterr().err
    assert cfg.k_frac == 0.671875 and cfg.k_frac_q == 172
    with np.load(out) as z:
        keep = z["block_keep"]
    assert int(keep.sum()) == keep.shape[0] * 15 * 11
    _check_rows(keep, cfg.replace(prune_mode="topk"), 30, False)


@pytest.mark.parametrize("k_frac, per_row", [(1 / 256, 1), (0.5, 8), (1.0, 15)])
def test_golden_budget_follows_k_frac_on_real_data(k_frac, per_row):
    """Per block-row budgets 1 (the diagonal), ceil(7.5) = 8 and all 15 on the 30-token input."""
    with np.load(DATA / "minilm_long.npz") as z:
        q, k, v = z["q"][:2], z["k"][:2], z["v"][:2]
    cfg = preset("default").replace(prune_mode="topk", k_frac=k_frac)
    res = model.attention(q, k, v, cfg, 30)
    assert [int(b.sum()) for b in res["block_keep"]] == [15 * per_row] * 2
    _check_rows(res["block_keep"], cfg, 30, False)


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", ["icarus"], indirect=True)
def test_golden_simulate_and_run_agree_on_the_kept_blocks(simulator, tmp_path, capsys):
    """Same input (7 of 8 tokens valid, causal: rows have 1 ... 4 valid blocks, so their
    budgets differ), same configuration: golden's, the RTL's (simulate) and run's kept blocks
    are the same, and every row keeps ceil(0.75 * its valid blocks)."""
    rng = np.random.default_rng(4)
    arrays = {x: rng.normal(0, 1.5, (2, 8, 4)).astype(np.float32) for x in "qkv"}
    inp = tmp_path / "in.npz"
    np.savez(inp, **arrays, valid_len=np.array(7))
    sets = ["--preset", "tiny", "--set", "causal=true", "--set", "k_frac=0.75"]
    cfg = preset("tiny").replace(causal=True, k_frac=0.75)

    gold = tmp_path / "g.npz"
    assert cli_main(["golden", "--qkv", str(inp), *sets, "--out", str(gold)]) == 0
    sim = tmp_path / "s.npz"
    assert cli_main(["simulate", "--qkv", str(inp), *sets, "--sim", simulator, "--out", str(sim),
                     "--build-dir", str(tmp_path / "b")]) == 0
    assert cli_main(["run", "--qkv", str(inp), *sets, "--sim", simulator, "--no-synth",
                     "-o", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    with np.load(gold) as g, np.load(sim) as s:
        g_keep, s_keep = g["block_keep"], s["block_keep"]
    assert np.array_equal(g_keep, s_keep)
    _check_rows(g_keep, cfg, 7, True)
    # rows with 1, 2, 3, 4 valid blocks keep 1, 2, 3, 3: fewer than the 10 valid blocks
    assert [int(k.sum()) for k in g_keep] == [9, 9]
    folder = next(p for p in (tmp_path / "run").iterdir() if p.name.startswith("tiny"))
    rep = json.loads((folder / "report.json").read_text())
    assert rep["registers"]["k_frac"] == 0.75
    assert rep["pruning"]["blocks_kept"] == int(g_keep.sum())
    assert rep["rtl"]["bit_exact"] is True and rep["rtl"]["mismatched_heads"] == 0
