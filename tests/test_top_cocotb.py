"""The co-processor top in cocotb on Icarus and Verilator (bench: sim/benches/bench_top.py).

cocotbext-axi drives the AXI4-Stream ports (random pauses on both) and the AXI4-Lite registers.
Each test writes a job file of heads with per-head run-time settings; the bench checks every
output row, the head decision, H and the block masks against the golden model.
"""

import json
import random

import numpy as np
import pytest

from golden.model import attention_head_int, quantize_qkv
from hw.config import PRUNE_MODES
from hw.presets import preset
from sim.benches.bench_top import write_job
from sim.fixtures import load_fixture
from sim.runner import run_cocotb

pytestmark = pytest.mark.cocotb


#: Fixture heads (every head in the slow test): one per layer, spread over the head index.
#: Icarus simulates the default-preset top at only a few hundred cycles per second, so its
#: default run takes the first of them and Verilator's layers 0, 2 and 4; each head runs in
#: all six modes.
SUBSET = [0, 13, 26, 39, 52, 65]
SUBSET_ICARUS = SUBSET[:1]
SUBSET_VERILATOR = SUBSET[::2]


def fixture_job(cfg, heads):
    fx = load_fixture("medium")
    qs, ks, vs = [], [], []
    for h in heads:
        q, k, v = quantize_qkv(fx["q"][h], fx["k"][h], fx["v"][h], cfg)
        qs.append(q)
        ks.append(k)
        vs.append(v)
    return np.stack(qs), np.stack(ks), np.stack(vs), int(fx["valid_len"])


def mode_settings(cfg, q, k, v, n):
    """Dense, top-k, threshold, both with head pruning at the median H of these heads, and
    the mass rule at the default preset's eps."""
    hs = [attention_head_int(q[i], k[i], v[i], cfg, n).head_importance for i in range(len(q))]
    tau = int(np.median(hs))
    return [
        {"prune_mode": "off", "approx": "exact", "head_prune": False},
        {"prune_mode": "topk", "k_frac": 0.5, "approx": "drop_ff", "head_prune": False},
        {"prune_mode": "threshold", "rho": 0.5, "approx": "exact", "head_prune": False},
        {"prune_mode": "topk", "k_frac": 0.5, "head_prune": True, "tau_head": tau},
        {"prune_mode": "threshold", "rho": 0.25, "head_prune": True, "tau_head": tau},
        {"prune_mode": "mass", "eps": 0.109375, "approx": "exact", "head_prune": False},
    ]


def run_fixture(heads, simulator, build_dir, stall=0.3):
    cfg = preset("default")
    q, k, v, n = fixture_job(cfg, heads)
    modes = mode_settings(cfg, q, k, v, n)
    rep = len(modes)
    job = build_dir / "job.npz"
    write_job(job, np.repeat(k, rep, 0), np.repeat(q, rep, 0), np.repeat(v, rep, 0), n,
              [m for _ in heads for m in modes], stall=stall, seed=11)
    return run_cocotb(unit="top", cfg=cfg, test_module="sim.benches.bench_top",
                      simulator=simulator, build_dir=build_dir,
                      extra_env={"HDPGEN_TOP_JOB": job})


def test_top_fixture_subset(simulator, build_dir):
    run_fixture(SUBSET_ICARUS if simulator == "icarus" else SUBSET_VERILATOR, simulator, build_dir)


@pytest.mark.slow
def test_top_fixture_all_heads(simulator, build_dir):
    run_fixture(list(range(72)), simulator, build_dir)


@pytest.mark.parametrize("name", ["tiny", "odd"])
def test_top_random_configs_and_reset(name, simulator, build_dir):
    """Random data, lengths and settings on the preset, pauses on both streams, and a reset
    in the middle of the first head."""
    cfg = preset(name)
    rng = random.Random(hash(name) % 1000)
    nrng = np.random.default_rng(rng.randint(0, 1 << 30))
    heads = 8
    shape = (heads, cfg.seq_len, cfg.head_dim)
    qk_lo, qk_hi = -(1 << (cfg.qk_bits - 1)), 1 << (cfg.qk_bits - 1)
    v_lo, v_hi = -(1 << (cfg.v_bits - 1)), 1 << (cfg.v_bits - 1)
    q = nrng.integers(qk_lo, qk_hi, shape)
    k = nrng.integers(qk_lo, qk_hi, shape)
    v = nrng.integers(v_lo, v_hi, shape)
    lens = [rng.randint(1, cfg.seq_len) for _ in range(heads)]
    settings = []
    for i in range(heads):
        s = {"prune_mode": rng.choice(["off", "topk", "threshold", "mass"]),
             "eps": rng.randint(0, 255) / 256,
             "approx": rng.choice(["drop_ff", "exact", "comp"]), "causal": rng.random() < 0.3,
             "k_frac": rng.randint(1, 256) / 256,
             "rho": rng.randint(0, 1 << cfg.rho_frac) / (1 << cfg.rho_frac)}
        if i % 3 == 2:
            h = attention_head_int(q[i], k[i], v[i], cfg.replace(**s), lens[i]).head_importance
            s.update(head_prune=True, tau_head=min(cfg.h_max, h + rng.choice([0, 1])))
        settings.append(s)
    job = build_dir / "job.npz"
    write_job(job, k, q, v, lens, settings, stall=0.3, seed=5, reset_mid=True)
    res = run_cocotb(unit="top", cfg=cfg, test_module="sim.benches.bench_top",
                     simulator=simulator, build_dir=build_dir, extra_env={"HDPGEN_TOP_JOB": job})
    assert res.tests == 1
    json.dumps(settings)  # settings must stay JSON-serializable for the job file


def test_top_without_the_mass_pruner(simulator, build_dir):
    """A top built without the mass pruner (``mass_pruner = False``): random settings of the
    other modes, and the mode register's mass code, which runs as off (dense, and with head
    pruning); pauses on both streams."""
    cfg = preset("odd").replace(mass_pruner=False)
    nrng = np.random.default_rng(21)
    heads = 6
    shape = (heads, cfg.seq_len, cfg.head_dim)
    q, k = (nrng.integers(-(1 << (cfg.qk_bits - 1)), 1 << (cfg.qk_bits - 1), shape)
            for _ in range(2))
    v = nrng.integers(-(1 << (cfg.v_bits - 1)), 1 << (cfg.v_bits - 1), shape)
    mass_code = {"mode": PRUNE_MODES.index("mass")}
    settings = [{"prune_mode": "topk", "k_frac": 0.5}, {"prune_mode": "threshold", "rho": 0.25},
                {"prune_mode": "off", "approx": "exact", "regs": mass_code},
                {"prune_mode": "off", "head_prune": True, "tau_head": 0, "regs": mass_code},
                {"prune_mode": "topk", "k_frac": 0.25, "causal": True, "approx": "comp"},
                {"prune_mode": "off", "approx": "drop_ff", "regs": mass_code}]
    job = build_dir / "job.npz"
    write_job(job, k, q, v, [13, 9, 13, 11, 13, 5], settings, stall=0.3, seed=8)
    res = run_cocotb(unit="top", cfg=cfg, test_module="sim.benches.bench_top",
                     simulator=simulator, build_dir=build_dir, extra_env={"HDPGEN_TOP_JOB": job})
    assert res.tests == 1


# ---------------------------------------------------------------------- LeOPArd front end
LEO = {"front_end": "leopard", "prune_mode": "off", "approx": "exact", "head_prune": False}


@pytest.mark.parametrize("name", ["tiny", "odd"])
def test_top_leopard_random_and_reset(name, simulator, build_dir):
    """The top generated with the LeOPArd front end: random data (full range and small values
    whose scores sit near the threshold), lengths, thresholds, causal masking and no-ET heads,
    pauses on both streams and a reset in the middle of the first head.  The bench checks
    every output row and the engine's kept entries and bits read against golden.leopard."""
    cfg = preset(name).replace(**LEO, leopard_lanes=3)
    rng = random.Random(7 + len(name))
    nrng = np.random.default_rng(rng.randint(0, 1 << 30))
    heads = 8
    shape = (heads, cfg.seq_len, cfg.head_dim)
    qk_lo, qk_hi = -(1 << (cfg.qk_bits - 1)), 1 << (cfg.qk_bits - 1)
    q = nrng.integers(qk_lo, qk_hi, shape)
    k = nrng.integers(qk_lo, qk_hi, shape)
    v = nrng.integers(-(1 << (cfg.v_bits - 1)), 1 << (cfg.v_bits - 1), shape)
    q[::2] //= 8
    k[::2] //= 8
    lens = [rng.randint(1, cfg.seq_len) for _ in range(heads)]
    settings = [{"leopard_th": rng.randint(-16, 16) / 16, "causal": rng.random() < 0.3,
                 "no_et": int(i % 4 == 3)} for i in range(heads)]
    job = build_dir / "job.npz"
    write_job(job, k, q, v, lens, settings, stall=0.3, seed=6, reset_mid=True)
    res = run_cocotb(unit="top", cfg=cfg, test_module="sim.benches.bench_top",
                     simulator=simulator, build_dir=build_dir, extra_env={"HDPGEN_TOP_JOB": job})
    assert res.tests == 1


def test_top_leopard_minilm_heads(simulator, build_dir):
    """The leopard preset's top on real MiniLM heads (the 12-token capture), at three
    thresholds and once without early termination, with stalls."""
    cfg = preset("leopard")
    # Icarus one head, Verilator three (layers 0, 2 and 4): the random tests cover the rest
    heads = SUBSET[:1] if simulator == "icarus" else SUBSET[::2]
    q, k, v, n = fixture_job(cfg, heads)
    settings = [{"leopard_th": 0.0}, {"leopard_th": 0.5}, {"leopard_th": 1.5, "causal": True},
                {"leopard_th": 0.5, "no_et": 1}]
    rep = len(settings)
    job = build_dir / "job.npz"
    write_job(job, np.repeat(k, rep, 0), np.repeat(q, rep, 0), np.repeat(v, rep, 0), n,
              [s for _ in heads for s in settings], stall=0.3, seed=12)
    run_cocotb(unit="top", cfg=cfg, test_module="sim.benches.bench_top", simulator=simulator,
               build_dir=build_dir, extra_env={"HDPGEN_TOP_JOB": job})
