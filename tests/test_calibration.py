"""Per-layer calibration without torch: settings as fractions (apply_setting), the calibration
file's validation and round trip, which head gets which value in hdpgen golden (topk,
threshold, mass), the refusal of mass by simulate/run, the per-head registers of simulate
(real RTL on the tiny preset), the calibrate search on a synthetic evaluator, and the early
input checks of calibrate and eval --json."""

import json

import numpy as np
import pytest

from golden import mass_pruner, model
from hdpgen import calibration as cal
from hdpgen.cli import main
from hdpgen.cmd_calibrate import calibrate, grid
from hdpgen.common import CliError, write_json
from hdpgen.textset import summarize
from hw.presets import preset
from sim.fixtures import fixture_path, load_fixture

DEFAULT = preset("default")


def _doc(mode="threshold", values=(0.0, 0.25, 0.5, 0.75, 1.0, 0.5), hpl=12, **extra):
    return {"format": cal.FORMAT, "version": cal.VERSION, "mode": mode, "values": list(values),
            "heads_per_layer": hpl, "target_cos": 0.99,
            "config": {"block_rows": 2, "block_cols": 2, "criterion": "max", "causal": False},
            **extra}


def _write(tmp_path, doc, name="cal.json"):
    p = tmp_path / name
    if isinstance(doc, (dict, list)):
        write_json(p, doc)
    else:
        p.write_text(doc)
    return p


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize("mode, value, needle", [
    ("topk", 0.0, "k_frac must be in (0, 1]"),
    ("topk", 1.5, "k_frac must be in (0, 1]"),
    ("topk", 0.3, "multiple of 1/256"),
    ("threshold", 1.25, "rho must be in [0, 1]"),
    ("threshold", 0.001, "multiple of 2**-8"),
    ("mass", 1.0, "eps must be in [0, 1)"),
    ("mass", 0.05, "multiple of 1/256"),
    ("mass", "0.5", "must be a number"),
    ("mass", True, "must be a number"),
    ("bogus", 0.5, "mode must be one of topk, threshold, mass"),
])
def test_bad_values_name_the_rule(mode, value, needle):
    with pytest.raises(ValueError, match=None) as exc:
        cal.check_value(mode, value, DEFAULT)
    assert needle in str(exc.value)


def test_apply_setting_maps_fractions_to_todays_registers():
    # topk: ceil(k_frac_q * ceil(N / b_c) / 256), at least 1
    assert cal.apply_setting(DEFAULT, "topk", 0.5, 128).cfg.k_frac_q == 128
    assert cal.apply_setting(DEFAULT, "topk", 0.5, 30).cfg.k_frac_q == 128  # the same register
    assert cal.apply_setting(DEFAULT, "topk", 1 / 256, 4).cfg.k_frac_q == 1
    assert cal.apply_setting(DEFAULT, "topk", 1.0, 127).cfg.k_frac_q == 256
    r = cal.apply_setting(DEFAULT, "threshold", 0.25, 50)
    assert r.cfg.prune_mode == "threshold" and r.cfg.rho == 0.25
    r = cal.apply_setting(DEFAULT, "mass", 0.0625, 50)
    assert r.cfg.eps_q == 16 and r.cfg == DEFAULT.replace(prune_mode="mass", eps=0.0625)
    assert cal.configured_setting(r.cfg) == ("mass", 0.0625)
    assert cal.configured_setting(DEFAULT) == ("mass", DEFAULT.eps)
    assert cal.configured_setting(DEFAULT.replace(prune_mode="topk")) == ("topk", DEFAULT.k_frac)
    assert cal.configured_setting(DEFAULT.replace(prune_mode="threshold", rho=0.5)) == \
        ("threshold", 0.5)
    assert cal.configured_setting(DEFAULT.replace(prune_mode="off")) is None


def test_parse_setting():
    assert cal.parse_setting("mass=0.0625") == ("mass", 0.0625)
    for bad, needle in (("mass", "MODE=VALUE"), ("x=1", "MODE=VALUE"), ("topk=a", "number"),
                        ("topk=2", "k_frac must be in (0, 1]")):
        with pytest.raises(CliError, match=None) as exc:
            cal.parse_setting(bad)
        assert needle in str(exc.value)


# ---------------------------------------------------------------- files
def test_round_trip_and_head_to_layer_mapping(tmp_path):
    values = (1.0, 0.5, 0.25, 0.125, 0.0625, 1 / 256)
    p = _write(tmp_path, _doc("topk", values))
    c = cal.load_calibration(p, DEFAULT, heads=72)
    assert c.mode == "topk" and c.values == values and c.n_layers == 6
    rules = cal.head_rules(DEFAULT, c, 72, 128)
    for h in range(72):
        assert rules[h].cfg.k_frac == values[h // 12], h
    assert [rules[h].cfg.k_frac_q for h in (0, 11, 12, 23, 60, 71)] == [256, 256, 128, 128, 1, 1]


@pytest.mark.parametrize("doc, needle", [
    ("{not json", "not a JSON calibration file"),
    ([1, 2], "must hold a JSON object, not list"),
    (_doc(format="other"), "field 'format' must be 'hdpgen-calibration'"),
    (_doc(version=2), "field 'version' must be 1"),
    (_doc(mode="random"), "field 'mode' must be one of topk, threshold, mass, leopard, not "
                            "'random'"),
    (_doc(values=[]), "field 'values' must be a non-empty list"),
    (_doc(values=[0.5] * 5), "has 5 layers x 12 heads = 60 heads, but the data has 72 heads"),
    (_doc(hpl=0), "field 'heads_per_layer' must be a positive integer"),
    (_doc(values=[0.5, 0.5, 1.5, 0.5, 0.5, 0.5]), "values[2] (layer 2): threshold value rho"),
    (_doc("mass", [0.5, 0.5, 0.5, 0.5, 0.5, 1.0]), "values[5] (layer 5): mass value eps"),
    (_doc(config={"block_rows": 4}), "calibrated with block_rows = 4, but the configuration "
                                     "has block_rows = 2"),
])
def test_bad_files_are_one_clear_error(tmp_path, doc, needle):
    p = _write(tmp_path, doc)
    with pytest.raises(CliError) as exc:
        cal.load_calibration(p, DEFAULT, heads=72)
    assert needle in str(exc.value) and str(p) in str(exc.value)


def test_missing_or_directory_file(tmp_path):
    with pytest.raises(CliError, match="cannot read"):
        cal.load_calibration(tmp_path / "nope.json")
    with pytest.raises(CliError, match="is a directory"):
        cal.load_calibration(tmp_path)


# ---------------------------------------------------------------- golden
def _golden(capsys, tmp_path, calfile, data="long", *extra):
    out = tmp_path / "o.npz"
    code = main(["golden", "--qkv", str(fixture_path(data)), "--calibration", str(calfile),
                 "--out", str(out), *extra])
    _, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("mode, values", [
    ("threshold", (0.0, 0.25, 0.5, 0.75, 1.0, 0.5)),
    ("topk", (1.0, 0.5, 0.25, 0.75, 1 / 256, 0.5)),
    ("mass", (0.0, 0.0625, 0.125, 0.25, 0.5, 0.75)),
])
def test_golden_applies_each_layers_value_to_its_heads(capsys, tmp_path, mode, values):
    p = _write(tmp_path, _doc(mode, values))
    code, out, err = _golden(capsys, tmp_path, p)
    assert code == 0, err
    fx = load_fixture("long")
    n = fx["valid_len"]
    with np.load(out) as z:
        keep, out_int = z["block_keep"], z["out_int"]
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["calibration"]["mode"] == mode and rep["calibration"]["values"] == list(values)
    differs = 0
    for h in range(0, 72, 5):
        value = values[h // 12]
        rule = cal.apply_setting(DEFAULT, mode, value, n)
        if mode == "mass":
            # the hook against the mass pruner called directly
            r = model.attention_head(fx["q"][h], fx["k"][h], fx["v"][h], DEFAULT, n)
            m = mass_pruner.block_mass(mass_pruner.estimated_scores(r.a, r.k_q, DEFAULT), r.mask,
                                       DEFAULT)
            assert rule.cfg.prune_mode == "mass" and rule.cfg.eps == value
            want = mass_pruner.mass_keep(m, r.block_valid, r.diag, mass_pruner.eps_q_of(value))
            assert rep["calibration"]["registers_per_head"][h] == {"eps_q": round(value * 256)}
        else:
            want = model.attention_head(fx["q"][h], fx["k"][h], fx["v"][h], rule.cfg, n).block_keep
        assert np.array_equal(keep[h], want), (h, value)
        other = values[(h // 12 + 1) % 6]
        if other != value:
            o = model.attention_head(fx["q"][h], fx["k"][h], fx["v"][h],
                                     cal.apply_setting(DEFAULT, mode, other, n).cfg, n)
            differs += not np.array_equal(o.block_keep, keep[h])
    assert differs > 0  # the layers' values really differ in what they keep
    assert out_int.shape == (72, 30, 32)


def test_golden_rejects_a_calibration_for_other_data(capsys, tmp_path):
    p = _write(tmp_path, _doc())
    code = main(["golden", "--qkv", str(fixture_path("long")), "--calibration", str(p),
                 "--preset", "tiny", "--out", str(tmp_path / "o.npz")])
    assert code == 2 and not (tmp_path / "o.npz").exists()
    # 72 heads of data, 6 x 10 in the file
    p = _write(tmp_path, _doc(hpl=10), "c10.json")
    code, out, err = _golden(capsys, tmp_path, p)
    assert code == 2 and "6 layers x 10 heads = 60 heads, but the data has 72 heads" in err
    assert not out.exists()


# ---------------------------------------------------------------- simulate / run
def test_run_applies_a_mass_calibration(capsys, tmp_path):
    """A mass calibration runs through ``hdpgen run`` like the other modes: each head's eps
    register in the report."""
    p = _write(tmp_path, _doc("mass", [0.0625, 0.125, 0.0, 0.25, 0.5, 0.09375]))
    code = main(["run", "--data", "long", "--calibration", str(p), "-o", str(tmp_path / "r"),
                 "--no-sim", "--no-synth"])
    assert code == 0, capsys.readouterr().err


def test_run_rejects_wrong_layer_count_before_any_work(capsys, tmp_path, stub_verilog):
    p = _write(tmp_path, _doc("topk", [0.5] * 4))
    code = main(["run", "--data", "long", "--calibration", str(p), "-o", str(tmp_path / "r"),
                 "--no-sim", "--no-synth"])
    err = capsys.readouterr().err
    assert code == 2 and "4 layers x 12 heads = 48 heads, but the data has 72 heads" in err


def test_simulate_head_cfgs_must_only_change_registers(tmp_path):
    from sim.top_run import simulate
    cfg = preset("tiny")
    q = np.zeros((2, 8, cfg.head_dim), np.int64)
    with pytest.raises(ValueError, match="one entry per head"):
        simulate(cfg, q, q, q, 8, "icarus", tmp_path, head_cfgs=[cfg])
    with pytest.raises(ValueError, match="only in run-time fields"):
        simulate(cfg, q, q, q, 8, "icarus", tmp_path,
                 head_cfgs=[cfg, cfg.replace(qk_frac=cfg.qk_frac - 1)])


@pytest.mark.cocotb
def test_simulate_runs_each_head_with_its_layers_registers(capsys, tmp_path):
    """Real RTL (tiny preset): 3 layers x 2 heads with different threshold rho per layer,
    bit-exact against the golden model under the same per-head rules."""
    from sim.runner import simulator_missing
    sim = "verilator" if simulator_missing("verilator") is None else "icarus"
    if simulator_missing(sim):
        pytest.skip(simulator_missing(sim))
    cfg = preset("tiny")
    rng = np.random.default_rng(5)
    arrays = {x: rng.normal(0, 1.5, (6, cfg.seq_len, cfg.head_dim)).astype(np.float32)
              for x in "qkv"}
    arrays["n_heads"] = np.int64(2)
    np.savez(tmp_path / "in.npz", **arrays)
    doc = _doc("threshold", (0.0, 1.0, 0.5), hpl=2)
    doc["config"]["block_rows"], doc["config"]["block_cols"] = cfg.block_rows, cfg.block_cols
    doc["config"]["criterion"] = cfg.criterion
    p = _write(tmp_path, doc)
    out = tmp_path / "o.npz"
    code = main(["simulate", "--qkv", str(tmp_path / "in.npz"), "--preset", "tiny", "--sim", sim,
                 "--compare", "--calibration", str(p), "--out", str(out),
                 "--build-dir", str(tmp_path / "build")])
    stdout = capsys.readouterr().out
    assert code == 0 and "bit-exact" in stdout, stdout
    rep = json.loads(out.with_suffix(".json").read_text())
    assert [r["rho"] for r in rep["calibration"]["registers_per_head"]] == [0, 0, 1, 1, 0.5, 0.5]
    with np.load(out) as z:
        keep = z["block_keep"]
    # rho = 1 keeps fewer blocks than rho = 0 on these heads: the registers really differ
    assert keep[2:4].sum() < keep[0:2].sum()


# ---------------------------------------------------------------- calibrate's search
class FakeEvaluator:
    """A stand-in for TextEvaluator: cosine drops by w[l] * (pruned share of layer l)."""

    def __init__(self, weights, texts=3, offset=0.0):
        self.w, self.n_layers = np.asarray(weights, float), len(weights)
        self.offset = offset
        self.counts = [10 + 40 * i for i in range(texts)]
        self.calls = 0

    def evaluate(self, mode, values, label=""):
        self.calls += 1
        pruned = np.array([1 - v if mode == "topk" else v for v in values])
        drop = float((self.w * pruned).sum()) + self.offset
        t = len(self.counts)
        kept = np.tile(np.round(1000 * (1 - pruned)).astype(np.int64), (t, 1))
        return {"cos": 1 - drop * np.linspace(0.5, 1.0, t), "kept": kept,
                "valid": np.full((t, self.n_layers), 1000, np.int64), "values": list(values)}


@pytest.mark.parametrize("mode", ["topk", "threshold", "mass"])
def test_calibrate_search_is_feasible_and_locally_maximal(mode):
    ev = FakeEvaluator([0.002, 0.02, 0.001, 0.05, 0.004, 0.01])
    found = calibrate(ev, mode, 0.99, say=lambda m: None)
    g = grid(mode)
    s = summarize(ev.evaluate(mode, found["values"]), ev.counts)
    assert s["cos_mean"] >= 0.99 and s["cos_min"] >= 0.99
    assert found["achieved"]["kept_block_fraction"] <= found["uniform"]["achieved"][
        "kept_block_fraction"]
    assert len(set(found["values"])) > 1  # the cheap layers were pushed further
    for layer in range(6):  # one more grid step on any layer misses the target
        i = g.index(found["values"][layer])
        if i + 1 < len(g):
            trial = list(found["values"])
            trial[layer] = g[i + 1]
            s = summarize(ev.evaluate(mode, trial), ev.counts)
            assert min(s["cos_mean"], s["cos_min"]) < 0.99, (layer, trial)


def test_calibrate_says_when_no_value_meets_the_target():
    ev = FakeEvaluator([0.001] * 6, offset=0.02)
    with pytest.raises(CliError, match="even the least pruning value 0 gives cosine"):
        calibrate(ev, "threshold", 0.99, say=lambda m: None)


def test_calibrate_floor_rule_lets_a_text_below_target_keep_its_floor():
    ev = FakeEvaluator([0.002] * 6)
    floors = [0.95, 1.0, 1.0]
    found = calibrate(ev, "topk", 0.99, say=lambda m: None, floors=floors)
    res = ev.evaluate("topk", found["values"])
    assert res["cos"][0] >= 0.95 and res["cos"][1:].min() >= 0.99


# ---------------------------------------------------------------- early input checks
@pytest.mark.parametrize("argv, needle", [
    (["--target-cos", "0"], "--target-cos must be in (0, 1], not 0.0"),
    (["--target-cos", "1.5"], "--target-cos must be in (0, 1], not 1.5"),
    (["--sentences", "NOFILE"], "cannot read"),
    (["--sentences", "EMPTY"], "holds no texts"),
    (["--out", "DIR"], "--out"),
])
def test_calibrate_bad_input_is_one_line_before_any_work(capsys, tmp_path, argv, needle):
    (tmp_path / "t.txt").write_text("One text.\n")
    (tmp_path / "empty.txt").write_text("# only a comment\n\n")
    (tmp_path / "adir").mkdir()
    subst = {"NOFILE": str(tmp_path / "none.txt"), "EMPTY": str(tmp_path / "empty.txt"),
             "DIR": str(tmp_path / "adir")}
    base = {"--sentences": str(tmp_path / "t.txt"), "--target-cos": "0.99",
            "--out": str(tmp_path / "c.json")}
    for i in range(0, len(argv), 2):
        base[argv[i]] = subst.get(argv[i + 1], argv[i + 1])
    code = main(["calibrate", *[x for kv in base.items() for x in kv]])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "c.json").exists()


def test_eval_one_setting_bad_input_before_any_work(capsys, tmp_path):
    (tmp_path / "t.txt").write_text("One text.\n")
    bad = _write(tmp_path, _doc(values=[0.5] * 3))
    for argv, needle in (
            (["--calibration", str(bad)], "3 layers x 12 heads = 36 heads, but the data has 72"),
            (["--setting", "mass=2"], "eps must be in [0, 1)"),
            (["--setting", "topk=0.5", "--calibration", str(bad)], "not both"),
            (["--sentences", str(tmp_path / "none.txt")], "cannot read")):
        args = ["eval", "--sentences", str(tmp_path / "t.txt"), "--json", str(tmp_path / "e.json"),
                *argv]
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2 and needle in err, (argv, err)
        assert not (tmp_path / "e.json").exists()


@pytest.fixture
def stub_verilog(monkeypatch):
    """Replace Verilog generation (tens of seconds) by a one-line file per unit."""
    import hw.export

    def fake(name, cfg, out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{name}.v").write_text(f"// {name}\n")
    monkeypatch.setattr(hw.export, "export_verilog", fake)


def test_run_with_calibration_gets_its_own_report_folder(capsys, tmp_path, stub_verilog):
    p = _write(tmp_path, _doc("threshold", (0.0, 0.25, 0.5, 0.5, 0.25, 0.0)))
    code = main(["run", "--data", "long", "--calibration", str(p), "-o", str(tmp_path / "r"),
                 "--no-sim", "--no-synth"])
    assert code == 0, capsys.readouterr().err
    (folder,) = [d for d in (tmp_path / "r").iterdir() if not d.name.startswith(".")]
    assert folder.name.startswith("default-cal")
    rep = json.loads((folder / "report.json").read_text())
    regs = rep["registers"]["calibration"]["registers_per_head"]
    assert [regs[h]["rho"] for h in (0, 12, 24, 36, 48, 60)] == [0.0, 0.25, 0.5, 0.5, 0.25, 0.0]
    assert rep["registers"]["prune_mode"] == "threshold"
