"""``bench/pruning_share.py``: the pruning logic's share of the top, as built and with one
pruner left out (an area estimate)."""

import json

import pytest

from bench import pruning_share as ps


def test_rows_share_and_saving_arithmetic():
    units = {"score_unit": 100, "head_detector": 10, "block_pruner": 50, "mass_pruner": 200}
    tops = {"as built": 1000, "without mass_pruner": 790, "without block_pruner": 940}
    rows = {r["top"]: r for r in ps.rows_of(units, tops)}
    assert rows["as built"]["share"] == pytest.approx(360 / 1000) and rows["as built"]["saved"] == 0
    assert rows["without mass_pruner"]["pruning_units"] == ["score_unit", "head_detector",
                                                            "block_pruner"]
    assert rows["without mass_pruner"]["share"] == pytest.approx(160 / 790)
    assert rows["without mass_pruner"]["saved"] == 210
    assert rows["without block_pruner"]["pruning_logic"] == 310
    assert rows["without block_pruner"]["share"] == pytest.approx(310 / 940)
    text = ps.table(list(rows.values()), units)
    assert "| without mass_pruner | 790 | 210 | 160 | 20.3% |" in text
    assert "mass_pruner 200" in text


def test_bad_configurations_are_refused_before_any_work():
    with pytest.raises(ValueError, match="front_end must be hdp .* not 'leopard'"):
        ps.config_of("leopard", [])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        ps.config_of("tiny", ["seq_len"])
    with pytest.raises(ValueError, match="seq_len"):
        ps.config_of("tiny", ["seq_len=0"])


def test_the_variants_tops():
    """The mass pruner is left out by configuration; the block pruner's stub is in place only
    while asked for."""
    import hw.top
    cfg = ps.config_of("default", [])
    assert ps.variant_config(cfg, None) is cfg
    no_mass = ps.variant_config(cfg, "mass_pruner")
    assert (no_mass.mass_pruner, no_mass.prune_mode) == (False, "topk")
    assert ps.variant_config(cfg.replace(prune_mode="threshold"), "mass_pruner").prune_mode \
        == "threshold"
    real = hw.top.BlockPruner
    with ps.block_pruner_stubbed(True):
        assert hw.top.BlockPruner is not real
    assert hw.top.BlockPruner is real
    with pytest.raises(RuntimeError), ps.block_pruner_stubbed(True):
        raise RuntimeError
    assert hw.top.BlockPruner is real


def test_end_to_end_on_tiny(tmp_path, capsys):
    """Real Yosys runs: leaving a pruner out removes about its own logic from the top, and the
    stubbed top still holds every other unit."""
    out = tmp_path / "o"
    assert ps.main(["--preset", "tiny", "-j", "2", "-o", str(out)]) == 0
    data = json.loads((out / "pruning_share.json").read_text())
    units = data["units"]
    rows = {r["top"]: r for r in data["rows"]}
    assert set(units) == {"score_unit", "head_detector", "block_pruner", "mass_pruner"}
    for left_out in ("mass_pruner", "block_pruner"):
        r = rows[f"without {left_out}"]
        assert left_out not in r["pruning_units"]
        # what the top loses is the pruner's own logic, give or take the glue around it
        assert 0.7 * units[left_out] < r["saved"] < 1.3 * units[left_out] + 50
        assert r["top_logic"] > r["pruning_logic"]
    assert rows["as built"]["saved"] == 0
    assert "bench/pruning_share.py" in data["provenance"]["command"]
    assert "| as built |" in capsys.readouterr().out
