"""The LeOPArd front end in golden.model and in calibration: a ``front_end = leopard``
configuration through :mod:`golden.model` equals :func:`golden.leopard.leopard_head_int` bit for
bit; calibration mode ``leopard`` (the value is ``leopard_th``, a logit): its checks, what
``apply_setting`` makes of it, calibration files applied per layer by ``hdpgen golden``, the
calibrate grid and search; the kept entry fraction and bits ratio of :mod:`hdpgen.textset`.  The
tests at the end run the real model (extra ``eval``; skipped without torch, as in
``tests/test_calibrate_eval.py``)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from golden import leopard as lp
from golden import model
from hdpgen import calibration as cal
from hdpgen.cli import main
from hdpgen.cmd_calibrate import calibrate, grid
from hdpgen.common import CliError, write_json
from hdpgen.textset import TextEvaluator, summarize
from hw.presets import preset
from sim.fixtures import fixture_path, load_fixture

DEFAULT = preset("default")
LEOPARD = preset("leopard")


def _doc(values, mode="leopard", hpl=12):
    return {"format": cal.FORMAT, "version": cal.VERSION, "mode": mode, "values": list(values),
            "heads_per_layer": hpl, "target_cos": 0.99,
            "config": {"block_rows": 2, "block_cols": 2, "criterion": "max", "causal": False}}


def _write(tmp_path, doc, name="cal.json"):
    p = tmp_path / name
    write_json(p, doc)
    return p


@pytest.fixture(scope="module")
def long_q():
    fx = load_fixture("long")
    return fx, model.quantize_qkv(fx["q"], fx["k"], fx["v"], LEOPARD)


# ---------------------------------------------------------------- golden dispatch
@pytest.mark.parametrize("th", [-1.0625, 0.0, 1.5])
def test_golden_model_runs_the_leopard_front_end_bit_for_bit(long_q, th):
    fx, (q, k, v) = long_q
    cfg = LEOPARD.replace(leopard_th=th)
    n = fx["valid_len"]
    lstats = []
    for h in range(q.shape[0]):
        r = model.attention_head_int(q[h], k[h], v[h], cfg, n)
        want = lp.leopard_head_int(q[h], k[h], v[h], cfg, lp.config_threshold(cfg), n)
        assert isinstance(r, model.LeopardHeadResult) and isinstance(r, model.HeadResult)
        for name in ("mask", "entry_keep", "scores", "probs", "acc", "out_int", "th", "bits",
                     "terminated"):
            assert np.array_equal(getattr(r, name), getattr(want, name)), (h, name)
        for key in ("valid_pairs", "kept_entries", *model.LEOPARD_COUNTS):
            assert r.stats[key] == want.stats[key], (h, key)
        assert r.stats["mac_pv"] == want.stats["mac_pv"]
        # the occupancy map: a valid block is "kept" when it holds a kept entry
        occ = np.zeros_like(r.block_keep)
        for i, j in zip(*np.nonzero(r.entry_keep)):
            occ[i // cfg.block_rows, j // cfg.block_cols] = True
        assert np.array_equal(r.block_keep, occ) and r.head_keep
        assert r.stats["blocks_kept"] == occ.sum() <= r.stats["blocks_valid"]
        lstats.append(want.stats)
    # the float entry points and the totals
    res = model.attention(fx["q"], fx["k"], fx["v"], cfg, n)
    ref = lp.leopard_attention(fx["q"], fx["k"], fx["v"], cfg, lp.config_threshold(cfg), n)
    assert np.array_equal(res["out_int"], ref["out_int"])
    tot, want = res["stats"], lp.summarize(lstats)
    assert tot["kept_entry_fraction"] == want["kept_fraction"]
    assert tot["bits_ratio"] == want["bits_ratio"] < 1.0
    assert tot["early_fraction"] == want["early_fraction"]
    assert tot["mac_integer_pass"] == tot["mac_cross"] == tot["mac_ff"] == 0


def test_the_threshold_really_reaches_the_dispatch(long_q):
    fx, (q, k, v) = long_q
    n = fx["valid_len"]
    lo = model.attention_head_int(q[5], k[5], v[5], LEOPARD.replace(leopard_th=-2.0), n)
    hi = model.attention_head_int(q[5], k[5], v[5], LEOPARD.replace(leopard_th=1.0), n)
    assert hi.stats["kept_entries"] < lo.stats["kept_entries"]
    assert hi.stats["bits_processed"] < lo.stats["bits_processed"]
    # the HDP path with the same sizes is not the leopard one
    hdp = model.attention_head_int(q[5], k[5], v[5], DEFAULT, n)
    assert not isinstance(hdp, model.LeopardHeadResult) and "bits_dense" not in hdp.stats


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize("value, needle", [
    (64.0625, "leopard value leopard_th (a logit) must be in [-64, 64]"),
    (-65.0, "must be in [-64, 64]"),
    (0.1, "a multiple of 1/16, not 0.1"),
    (-1.03125, "a multiple of 1/16"),
    ("0.5", "leopard value must be a number"),
    (True, "must be a number"),
    (float("nan"), "must be a number"),
])
def test_bad_leopard_values_name_the_rule(value, needle):
    with pytest.raises(ValueError) as exc:
        cal.check_value("leopard", value, DEFAULT)
    assert needle in str(exc.value)


def test_good_leopard_values_and_parse_setting():
    for v in (-64, -1.0625, 0, 0.5, 64):
        assert cal.check_value("leopard", v) == float(v)
    assert cal.parse_setting("leopard=-1.0625", DEFAULT) == ("leopard", -1.0625)
    with pytest.raises(CliError, match="multiple of 1/16"):
        cal.parse_setting("leopard=0.3", DEFAULT)
    assert "leopard" in cal.MODES


def test_apply_setting_switches_the_head_to_the_leopard_front_end():
    base = DEFAULT.replace(approx="drop_ff", head_prune=True, prune_mode="topk")
    rule = cal.apply_setting(base, "leopard", -0.5, 30)
    c = rule.cfg
    assert (c.front_end, c.prune_mode, c.approx, c.head_prune, c.leopard_th) == \
        ("leopard", "off", "exact", False, -0.5)
    assert c.seq_len == base.seq_len and c.block_rows == base.block_rows
    # from a leopard base only the threshold changes
    assert cal.apply_setting(LEOPARD, "leopard", 2.0, 30).cfg == LEOPARD.replace(leopard_th=2.0)
    with pytest.raises(ValueError, match="multiple of 1/16"):
        cal.apply_setting(DEFAULT, "leopard", 0.01, 30)


def test_configured_setting_of_a_leopard_configuration():
    assert cal.configured_setting(LEOPARD) == ("leopard", LEOPARD.leopard_th)
    assert cal.configured_setting(LEOPARD.replace(leopard_th=3.0)) == ("leopard", 3.0)
    assert cal.configured_setting(DEFAULT) == ("mass", DEFAULT.eps)


def test_the_preset_holds_the_measured_uniform_value():
    # docs/leopard.md, "Calibration": the largest uniform threshold keeping the evaluation
    # texts at cosine >= 0.99 (mean and minimum)
    assert LEOPARD.leopard_th == -1.0625 and LEOPARD.front_end == "leopard"


# ---------------------------------------------------------------- files
def test_leopard_calibration_round_trips_and_applies_per_layer(tmp_path):
    values = (-6.0, -2.5625, -1.0625, 0.0, 0.5, 4.0)
    p = _write(tmp_path, _doc(values))
    c = cal.load_calibration(p, DEFAULT, heads=72)
    assert c.mode == "leopard" and c.values == values and c.n_layers == 6
    rules = cal.head_rules(DEFAULT, c, 72, 30)
    for h in range(72):
        assert rules[h].cfg.front_end == "leopard" and rules[h].cfg.leopard_th == values[h // 12]
    # a file written from the loaded data reads back the same
    p2 = _write(tmp_path, c.data, "again.json")
    assert cal.load_calibration(p2, DEFAULT, heads=72).values == values


@pytest.mark.parametrize("values, needle", [
    ([0.0, 0.0, 0.1, 0.0, 0.0, 0.0], "values[2] (layer 2): leopard value leopard_th"),
    ([0.0, 0.0, 0.0, 0.0, 0.0, 100.0], "values[5] (layer 5): leopard value"),
])
def test_bad_leopard_files_name_the_layer(tmp_path, values, needle):
    p = _write(tmp_path, _doc(values))
    with pytest.raises(CliError) as exc:
        cal.load_calibration(p, DEFAULT, heads=72)
    assert needle in str(exc.value)


def test_golden_applies_each_layers_threshold_to_its_heads(capsys, tmp_path):
    values = (-3.0, -1.0625, 0.0, 0.5, 1.0, 2.0)
    p = _write(tmp_path, _doc(values))
    out = tmp_path / "o.npz"
    code = main(["golden", "--qkv", str(fixture_path("long")), "--calibration", str(p),
                 "--out", str(out)])
    text, err = capsys.readouterr()
    assert code == 0, err
    assert "leopard kept entries" in text and "bits processed" in text
    fx = load_fixture("long")
    n = fx["valid_len"]
    with np.load(out) as z:
        out_int = z["out_int"]
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["calibration"]["mode"] == "leopard"
    regs = rep["calibration"]["registers_per_head"]
    differs = 0
    for h in range(0, 72, 5):
        cfg = cal.apply_setting(DEFAULT, "leopard", values[h // 12], n).cfg
        want = lp.leopard_head(fx["q"][h], fx["k"][h], fx["v"][h], cfg, lp.config_threshold(cfg), n)
        assert np.array_equal(out_int[h], want.out_int), h
        assert regs[h] == {"leopard_th": values[h // 12], "th_int": lp.config_threshold(cfg)}
        other = cfg.replace(leopard_th=values[(h // 12 + 1) % 6])
        o = lp.leopard_head(fx["q"][h], fx["k"][h], fx["v"][h], other,
                            lp.config_threshold(other), n)
        differs += not np.array_equal(o.out_int, out_int[h])
    assert differs > 0  # the layers' values really differ in what they give
    st = rep["stats"]
    assert 0 < st["kept_entry_fraction"] < 1 and 0 < st["bits_ratio"] < 1


# ---------------------------------------------------------------- calibrate's grid and search
def test_leopard_grid_is_least_pruning_first_at_register_resolution():
    g = grid("leopard")
    assert g[0] == -6.0 and g[-1] == 6.0 and len(g) == 193
    assert all(b - a == 1 / 16 for a, b in zip(g, g[1:]))  # increasing threshold = more pruning
    for v in g:
        cal.check_value("leopard", v)
    assert LEOPARD.leopard_th in g


class FakeLeopardEvaluator:
    """Cosine drops by w[l] * (share of layer l pruned), the share growing with the threshold
    from 0 at -6 to 1 at +6; records the values it is asked for."""

    def __init__(self, weights, texts=3):
        self.w, self.n_layers = np.asarray(weights, float), len(weights)
        self.counts = [10 + 40 * i for i in range(texts)]
        self.asked = []

    def evaluate(self, mode, values, label=""):
        assert mode == "leopard"
        self.asked.append(list(values))
        pruned = (np.asarray(values, float) + 6) / 12
        t = len(self.counts)
        ent = np.tile(np.round(1000 * (1 - pruned)).astype(np.int64), (t, 1))
        full = np.full((t, self.n_layers), 1000, np.int64)
        return {"cos": 1 - float((self.w * pruned).sum()) * np.linspace(0.5, 1.0, t),
                "kept": full, "valid": full, "kept_entries": ent, "valid_pairs": full,
                "bits": 4 * ent + 4 * full, "bits_dense": 8 * full, "values": list(values)}


def test_calibrate_leopard_starts_at_the_least_pruning_value_and_is_locally_maximal():
    ev = FakeLeopardEvaluator([0.002, 0.02, 0.001, 0.05, 0.004, 0.01])
    found = calibrate(ev, "leopard", 0.99, say=lambda m: None)
    g = grid("leopard")
    assert ev.asked[0] == [g[0]] * 6
    assert ev.asked[1] == [g[len(g) // 2]] * 6  # then bisection
    s = summarize(ev.evaluate("leopard", found["values"]), ev.counts)
    assert s["cos_mean"] >= 0.99 and s["cos_min"] >= 0.99
    assert found["achieved"]["kept_entry_fraction"] < found["uniform"]["achieved"][
        "kept_entry_fraction"]
    assert found["achieved"]["bits_ratio"] < found["uniform"]["achieved"]["bits_ratio"]
    assert len(set(found["values"])) > 1
    for layer in range(6):
        i = g.index(found["values"][layer])
        trial = list(found["values"])
        trial[layer] = g[i + 1]
        s = summarize(ev.evaluate("leopard", trial), ev.counts)
        assert min(s["cos_mean"], s["cos_min"]) < 0.99, (layer, trial)


def test_textset_summary_reports_entries_and_bits_for_leopard():
    ev = FakeLeopardEvaluator([0.0] * 6, texts=2)
    res = ev.evaluate("leopard", [0.0] * 6)  # half of every layer pruned
    s = summarize(res, ev.counts)
    assert s["kept_entry_fraction"] == 0.5 and s["kept_block_fraction"] == 1.0
    assert s["bits_ratio"] == 0.75 and s["kept_entry_per_layer"] == [0.5] * 6
    assert s["buckets"]["<=16"]["kept_entry_fraction"] == 0.5
    assert s["per_text"][0]["kept_entry_fraction"] == 0.5
    res.pop("bits_dense")  # an HDP result: no bits figure
    assert "bits_ratio" not in summarize(res, ev.counts)


def test_unpruned_reference_of_a_leopard_base_is_the_hdp_path():
    ns = SimpleNamespace(cfg=LEOPARD)
    c = TextEvaluator._rule(ns, "off", None, 10).cfg
    assert (c.front_end, c.prune_mode, c.approx) == ("hdp", "off", "exact")
    assert TextEvaluator._rule(ns, "leopard", -1.0, 10).cfg == LEOPARD.replace(leopard_th=-1.0)


# ---------------------------------------------------------------- early input checks
def test_calibrate_leopard_refuses_an_approximation_and_hdp_modes_on_a_leopard_preset(
        capsys, tmp_path):
    (tmp_path / "t.txt").write_text("One text.\n")
    base = ["calibrate", "--sentences", str(tmp_path / "t.txt"), "--target-cos", "0.99",
            "--out", str(tmp_path / "c.json")]
    assert main([*base, "--mode", "leopard", "--approx", "drop_ff"]) == 2
    err = capsys.readouterr().err
    assert "--approx must be exact or left out, not drop_ff" in err
    assert len(err.strip().splitlines()) == 1
    assert main([*base, "--mode", "mass", "--preset", "leopard"]) == 2
    err = capsys.readouterr().err
    assert "front_end is leopard; use --mode leopard" in err
    assert not (tmp_path / "c.json").exists()


def test_eval_refuses_a_bad_leopard_setting_before_any_work(capsys, tmp_path):
    (tmp_path / "t.txt").write_text("One text.\n")
    code = main(["eval", "--sentences", str(tmp_path / "t.txt"), "--json",
                 str(tmp_path / "e.json"), "--setting", "leopard=0.3"])
    err = capsys.readouterr().err
    assert code == 2 and "leopard value leopard_th (a logit)" in err and "1/16" in err
    assert not (tmp_path / "e.json").exists()


# ---------------------------------------------------------------- the real model (extra eval)
def test_small_leopard_calibration_meets_target_and_eval_reproduces_it(minilm_shared, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("Rain fell on the old tin roof all night long.\nThe bakery opens at six.\n")
    calf = tmp_path / "cal.json"
    code = main(["calibrate", "--sentences", str(texts), "--target-cos", "0.99",
                 "--mode", "leopard", "--out", str(calf), "--quiet"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(calf.read_text())
    assert doc["mode"] == "leopard" and len(doc["values"]) == 6
    assert doc["search"]["grid"] == {"least": -6.0, "most": 6.0, "points": 193}
    ach = doc["achieved"]
    assert ach["cos_mean"] >= 0.99 and ach["cos_min"] >= 0.99
    assert ach["kept_entry_fraction"] <= doc["uniform"]["achieved"]["kept_entry_fraction"] < 1
    assert 0 < ach["bits_ratio"] < 1
    out = tmp_path / "e.json"
    capsys.readouterr()
    code = main(["eval", "--sentences", str(texts), "--json", str(out), "--calibration", str(calf)])
    text = capsys.readouterr().out
    assert code == 0 and "kept entries" in text
    ev = json.loads(out.read_text())
    assert ev["settings"]["mode"] == "leopard" and ev["settings"]["values"] == doc["values"]
    for key in ("cos_mean", "cos_min", "kept_entry_fraction", "bits_ratio"):
        assert ev[key] == pytest.approx(ach[key], abs=1e-12), key
    # one uniform value on the command line equals the configured leopard preset's
    u = tmp_path / "u.json"
    p = tmp_path / "p.json"
    assert main(["eval", "--sentences", str(texts), "--json", str(u), "--setting",
                 f"leopard={LEOPARD.leopard_th}"]) == 0
    assert main(["eval", "--sentences", str(texts), "--json", str(p), "--preset", "leopard"]) == 0
    eu, ep = json.loads(u.read_text()), json.loads(p.read_text())
    assert ep["settings"]["source"] == "configuration" and ep["settings"]["mode"] == "leopard"
    for key in ("cos_mean", "cos_min", "kept_entry_fraction", "bits_ratio"):
        assert eu[key] == ep[key], key
