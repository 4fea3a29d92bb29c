"""DecodeGroup (hw/decode/group.py), DecodeEngine and DecodeAccel on Icarus and Verilator through
cocotb: one decode step with K and V in cocotbext-axi's AxiRamRead (random AR/R pauses),
bit-exact against the golden model, its AR requests exactly the golden read set
(sim/benches/bench_decode.py says what is checked), and broken variants caught.  DecodeAccel
(hw/decode/accel.py) is programmed and read through AXI4-Lite with cocotbext-axi's
AxiLiteMaster, a write while it is busy included."""

import dataclasses
import json

import pytest

from golden import token_picker as tp
from hw.config import HDPConfig
from hw.decode.accel import DecodeAccel
from hw.decode.engine import DecodeEngine
from hw.decode.group import DecodeGroup
from hw.decode.params import DecodeParams
from sim.runner import run_cocotb

pytestmark = pytest.mark.cocotb

CFG = tp.TokenPickerConfig()
# Cycles of the synthetic figures step with AxiRamRead unpaused (docs/token_picker.md).
CYCLES_NO_STALL = 852
ENGINE_CYCLES_NO_STALL = 1065


def run_step(simulator, build_dir, tmp_path, *, case="synthetic", group=3, d=16, n_cache=48,
             n=44, eps=1e-3, seed=7, stall=0.3, cfg=CFG, broken=None, engine=False, accel=False,
             write_while_busy=None, eps_v=0.0):
    p = DecodeParams(cfg, d=d, n_cache=n_cache, group=group)
    if accel:
        dut, name = DecodeAccel(p), "decode_accel"
    else:
        dut = (DecodeEngine if engine else DecodeGroup)(p)
        name = "decode_engine" if engine else "decode_group"
    if broken:
        setattr(dut.engine if accel and not broken.startswith("_hold") else dut, broken, False)
    spec = {"cfg": dataclasses.asdict(cfg), "d": d, "n_cache": n_cache, "group": group, "n": n,
            "eps": eps, "case": case, "seed": seed, "stall": stall, "engine": engine,
            "axil": accel, "write_while_busy": write_while_busy, "eps_v": eps_v}
    out = tmp_path / "figures.json"
    run_cocotb(unit=dut, cfg=HDPConfig(), name=name, simulator=simulator,
               test_module="sim.benches.bench_decode", build_dir=build_dir,
               extra_env={"HDPGEN_DECODE": json.dumps(spec), "HDPGEN_DECODE_OUT": out})
    return json.loads(out.read_text())


def test_decode_step_synthetic(simulator, build_dir, tmp_path):
    """Attention-like GQA step (3 heads: peaked, medium, diffuse) at eps = 1e-3 with stalls."""
    f = run_step(simulator, build_dir, tmp_path)
    assert f["k_words"] < f["k_words_dense"] and f["v_words"] < f["v_words_dense"]
    print(f"\n{simulator}: {f}")


@pytest.mark.parametrize("simulator", ["icarus"], indirect=True)
def test_decode_step_random_and_extreme(simulator, build_dir, tmp_path):
    """Full-range random integers (chunk 4) and extreme values with chunks 5 + 5 + 2."""
    run_step(simulator, build_dir, tmp_path, case="random", group=2, d=8, n_cache=32, n=29,
             eps=1e-2, seed=3, stall=0.5)
    cfg5 = tp.TokenPickerConfig(chunk_bits=5)
    run_step(simulator, build_dir / "x", tmp_path, case="extreme", group=1, d=8, n_cache=16,
             n=16, eps=0.05, seed=4, stall=0.2, cfg=cfg5)


@pytest.mark.parametrize("simulator", ["icarus"], indirect=True)
def test_broken_variant_is_caught(simulator, build_dir, tmp_path):
    """Reading every valid token's V row (pruned ones included) fails the AR check."""
    with pytest.raises(AssertionError, match="V row of token"):
        run_step(simulator, build_dir, tmp_path, broken="_v_union")


CFG_VLO = dataclasses.replace(CFG, v_lo_bits=4)


def test_engine_v_low_plane(simulator, build_dir, tmp_path):
    """V in two planes (``v_lo_bits = 4``), eps_v = 2e-2: the engine reads a kept token's low
    plane only where some head's eps_v test asks for it (the bench checks every AR request and
    that none touches another low plane), multiplies the others with their coarse value, and
    its outputs equal golden's, with stalls; it reads fewer V words than with eps_v = 0."""
    f = run_step(simulator, build_dir, tmp_path, engine=True, cfg=CFG_VLO, eps_v=2e-2)
    e = run_step(simulator, build_dir, tmp_path, engine=True, cfg=CFG_VLO, eps_v=0.0)
    assert f["out_match"] and f["reads_match"] and e["out_match"] and e["reads_match"]
    assert f["v_words"] < e["v_words"] and f["k_words"] == e["k_words"]
    print(f"\n{simulator}: eps_v 2e-2 {f['v_words']} V words, eps_v 0 {e['v_words']}")


@pytest.mark.parametrize("simulator", ["icarus"], indirect=True)
def test_group_v_low_plane_words_and_broken_rule(simulator, build_dir, tmp_path):
    """DecodeGroup with two V planes: the V words on m_axis (a row's high plane words, then its
    low plane words where read) equal memory; a group that reads every kept token's low plane
    (``_v_lo_rule`` off) fails the read check."""
    f = run_step(simulator, build_dir, tmp_path, cfg=CFG_VLO, eps_v=2e-2, case="random",
                 group=2, d=8, n_cache=32, n=29, eps=1e-2, seed=3, stall=0.5)
    assert f["out_match"] and f["reads_match"]
    with pytest.raises(AssertionError, match="V low plane of token"):
        run_step(simulator, build_dir / "broken", tmp_path, cfg=CFG_VLO, eps_v=2e-2,
                 broken="_v_lo_rule")


@pytest.mark.parametrize("simulator", ["icarus"], indirect=True)
def test_decode_figures(simulator, build_dir, tmp_path):
    """The figures of docs/token_picker.md ("RTL"): synthetic GQA step, eps = 1e-3, no stalls,
    from the RTL's counters (equal to golden's by the bench's own check)."""
    f = run_step(simulator, build_dir, tmp_path, stall=0.0)
    assert (f["k_words"], f["k_words_dense"], f["v_words"], f["v_words_dense"]) == \
        (216, 264, 84, 176)
    assert f["kept_q"] == [4, 12, 16] and f["kept_kv"] == 21
    assert f["cycles"] == CYCLES_NO_STALL
    e = run_step(simulator, build_dir / "engine", tmp_path, stall=0.0, engine=True)
    print(f"\ncycles {f['cycles']} (scores), {e['cycles']} (outputs)")
    assert (e["k_words"], e["v_words"], e["cycles"]) == (216, 84, ENGINE_CYCLES_NO_STALL)



def test_engine_synthetic(simulator, build_dir, tmp_path):
    """The whole step (softmax and P x V included): every head's outputs equal golden's out,
    the same reads and counters, with AR/R pauses and backpressure."""
    f = run_step(simulator, build_dir, tmp_path, engine=True)
    print(f"\n{simulator}: {f}")


@pytest.mark.parametrize("simulator", ["icarus"], indirect=True)
def test_engine_random_and_extreme(simulator, build_dir, tmp_path):
    run_step(simulator, build_dir, tmp_path, case="random", group=2, d=8, n_cache=32, n=29,
             eps=1e-2, seed=3, stall=0.5, engine=True)
    cfg5 = tp.TokenPickerConfig(chunk_bits=5)
    run_step(simulator, build_dir / "x", tmp_path, case="extreme", group=1, d=8, n_cache=16,
             n=16, eps=0.05, seed=4, stall=0.2, cfg=cfg5, engine=True)


@pytest.mark.parametrize("simulator", ["icarus"], indirect=True)
def test_engine_broken_rounding_is_caught(simulator, build_dir, tmp_path):
    """An engine whose output requantization truncates instead of rounding half up fails."""
    with pytest.raises(AssertionError, match="m_axis output differs"):
        run_step(simulator, build_dir, tmp_path, engine=True, broken="_round_out")


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus"], indirect=True)
def test_decode_figures_large(simulator, build_dir, tmp_path):
    """The larger figures row of docs/token_picker.md: N = 256, d = 64, n = 252, the whole
    engine (outputs checked bit for bit by the bench), no stalls (about 20 seconds).  K is
    centred per channel (``k_center``, the default): with K as it comes the same step reads
    the same words, keeps 183 tokens instead of 184 in the third head and takes 14553 cycles."""
    e = run_step(simulator, build_dir, tmp_path, d=64, n_cache=256, n=252, stall=0.0, engine=True)
    assert (e["k_words"], e["k_words_dense"], e["v_words"], e["v_words_dense"], e["cycles"]) == \
        (5896, 6048, 3504, 4032, 14557)
    assert e["kept_q"] == [70, 214, 184] and e["kept_kv"] == 219


@pytest.fixture(scope="module")
def accel_build_dir(tmp_path_factory):
    """One build of DecodeAccel per simulator for the tests below (the same Verilog)."""
    return tmp_path_factory.mktemp("accel-build")


def test_accel_step_via_registers(simulator, accel_build_dir, tmp_path):
    """DecodeAccel: eps_q, n, k_base, v_base, v_frac written through AXI4-Lite, one whole step
    with AR/R pauses and stream backpressure (outputs and AR requests checked against golden
    by the bench), then k_words, v_words, cycles and status read back through AXI4-Lite."""
    f = run_step(simulator, accel_build_dir, tmp_path, accel=True)
    assert f["out_match"] and f["reads_match"]
    assert (f["k_words"], f["v_words"]) == (f["k_words_golden"], f["v_words_golden"])
    assert f["k_words"] < f["k_words_dense"] and f["cycles"] > 0 and f["status"] == 0
    print(f"\n{simulator}: {f}")


def test_accel_write_while_busy(simulator, accel_build_dir, tmp_path):
    """Settings written while a step runs read back at once but take effect at the next
    step: step 1 equals golden with the settings it started with, step 2 (query sent again,
    nothing rewritten) equals golden with the new eps, n, v_frac and K and V at new bases."""
    f = run_step(simulator, accel_build_dir, tmp_path, accel=True, seed=11,
                 write_while_busy={"n": 37, "eps": 1e-2})
    s = f["second"]
    for g in (f, s):
        assert g["out_match"] and g["reads_match"] and g["status"] == 0
        assert (g["k_words"], g["v_words"]) == (g["k_words_golden"], g["v_words_golden"])
    assert s["n"] == 37 and f["n"] == 44
    assert (s["k_words"], s["v_words"]) != (f["k_words"], f["v_words"])
    print(f"\n{simulator}: first {f}\nsecond {s}")


@pytest.mark.parametrize("simulator", ["icarus"], indirect=True)
def test_accel_broken_hold_is_caught(simulator, build_dir, tmp_path):
    """An accelerator that passes register writes to a running step fails the check above
    (same n in both steps: a step whose n changes midway may never end)."""
    with pytest.raises(AssertionError, match="outside the K and V data|differ"):
        run_step(simulator, build_dir, tmp_path, accel=True, seed=11, broken="_hold_settings",
                 write_while_busy={"n": 44, "eps": 1e-2})
