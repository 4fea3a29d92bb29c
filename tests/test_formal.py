"""Bounded formal proofs of every stream unit with SymbiYosys (``sim.formal``).

Two property sets per unit, on the ``tiny`` preset (the stream rules also on ``odd``, the
softmax's also on ``tiny`` with the widest probabilities, ``prob_frac`` 16):

* ``stream``: the stream rules on every output (valid held and payload stable while stalled),
  assuming them of the environment on every input, run-time settings stable and legal.
  ``prove`` mode (k-induction: holds for traces of any length) where it closes.
* ``count``: the stream rules plus beat counts (nothing lost or duplicated, nothing owed after
  the stated drain time) and the unit's own assertions (e.g. the pruner's diagonal and exact
  top-k count).  ``bmc`` mode from reset with the stated depth: these properties relate harness
  counters to the unit's internal state, which k-induction cannot see without invariants.

Deliberately broken variants (subclasses, as in the other unit tests) must fail their proofs.
Deeper proofs, the pruner's counts on ``odd``, the default preset (and ``large`` for the
softmax: N = 512, P = 12) and the top are ``slow``.
Without the solver the tests skip, except with ``CI=true``, where they fail (like
``conftest.require_simulator``).
"""

import pytest
from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring

from hw.block_pruner import BlockPruner
from hw.head_detector import HeadDetector
from hw.presets import preset
from sim.formal import harness_for, run_proof, solver_missing, top_harness

# (unit, property set, preset) -> (mode, depth) in the default run
DEFAULT = {
    ("head_detector", "stream", "tiny"): ("prove", 4),
    ("head_detector", "count", "tiny"): ("prove", 2),
    ("block_pruner", "stream", "tiny"): ("prove", 2),
    ("block_pruner", "count", "tiny"): ("bmc", 8),
    ("block_pruner", "topk", "tiny"): ("bmc", 12),
    ("softmax_unit", "stream", "tiny"): ("prove", 2),
    ("softmax_unit", "count", "tiny"): ("bmc", 12),
    ("systolic_array", "stream", "tiny"): ("prove", 2),
    ("systolic_array", "count", "tiny"): ("bmc", 12),
    ("score_unit", "stream", "tiny"): ("bmc", 10),
    ("score_unit", "count", "tiny"): ("bmc", 10),
    # the k-induction proofs are cheap on ``odd`` too (about a second of solver time each)
    ("head_detector", "stream", "odd"): ("prove", 4),
    ("block_pruner", "stream", "odd"): ("prove", 2),
    ("softmax_unit", "stream", "odd"): ("prove", 2),
    ("systolic_array", "stream", "odd"): ("prove", 2),
    # the widest probabilities (P = 16: a 22-bit reciprocal, 11 divider steps) on tiny's rows
    ("softmax_unit", "stream", "tiny_p16"): ("prove", 2),
}

# deeper runs: (unit, property set, preset) -> (mode, depth); times measured on a loaded
# 2-core machine: pruner count 14: 150 s (16 since the pruner's registers I and P4: its
# covers need 2 more cycles), softmax 37: 400 s (the pipelined unit moves about
# twice the rows per cycle, so each step costs more than the 3-stage unit's 40 did), score
# stream 20: 90 s, score count 16: 80 s, systolic 16: 20 s, pruner on odd: 7 s and 18 s
SLOW = {
    ("block_pruner", "count", "tiny"): ("bmc", 16),
    ("block_pruner", "topk", "tiny"): ("bmc", 16),
    ("block_pruner", "count", "odd"): ("bmc", 10),
    ("softmax_unit", "count", "tiny"): ("bmc", 37),
    ("systolic_array", "count", "tiny"): ("bmc", 16),
    ("score_unit", "stream", "tiny"): ("bmc", 20),
    ("score_unit", "count", "tiny"): ("bmc", 16),
    # the stream rules by k-induction at the default preset's full size (2 s or less each)
    ("head_detector", "stream", "default"): ("prove", 4),
    ("head_detector", "count", "default"): ("prove", 2),
    ("block_pruner", "stream", "default"): ("prove", 2),
    ("softmax_unit", "stream", "default"): ("prove", 2),
    ("systolic_array", "stream", "default"): ("prove", 2),
    # and the softmax at the scale point: N = 512, P = 12 (24-bit reciprocal, 12 steps)
    ("softmax_unit", "stream", "large"): ("prove", 2),
}

# configurations the proofs name besides the presets: (preset, changes)
VARIANTS = {"tiny_p16": ("tiny", {"prob_frac": 16})}


def _config(name):
    base, changes = VARIANTS.get(name, (name, {}))
    return preset(base).replace(**changes)

# deep bmc runs whose depth reaches every cover statement of the harness (an output beat on
# every output, every beat balance drained after an output); the others stop before their
# drain time, so their ``_drains`` assertions are not exercised
COVERED = {("block_pruner", "count", "tiny"), ("block_pruner", "topk", "tiny")}


@pytest.fixture(autouse=True)
def _solver():
    from conftest import in_ci
    reason = solver_missing()
    if reason is not None:
        if in_ci():
            pytest.fail(f"{reason} (CI=true: a missing solver is an error)")
        pytest.skip(reason)


def _prove(tmp_path, unit, rules, mode, depth, cfg_name="tiny", dut=None):
    cfg = _config(cfg_name)
    h = harness_for(unit, cfg, rules=rules, dut=None if dut is None else dut(cfg))
    res = run_proof(h, f"{unit}_{rules}", mode=mode, depth=depth, workroot=tmp_path)
    print(f"{unit} {rules} {cfg_name}: {mode} depth {depth}: {res.status} in {res.seconds:.1f} s")
    return res


def _failures(res) -> str:
    return "\n".join(res.failed_assertions()) or res.log[-2000:]


@pytest.mark.parametrize("unit,rules,cfg_name", list(DEFAULT), ids=["-".join(k) for k in DEFAULT])
def test_proof(tmp_path, unit, rules, cfg_name):
    mode, depth = DEFAULT[unit, rules, cfg_name]
    res = _prove(tmp_path, unit, rules, mode, depth, cfg_name)
    assert res.passed, f"{unit} {rules} {cfg_name} ({mode} {depth}): {res.status}\n{_failures(res)}"


@pytest.mark.slow
@pytest.mark.parametrize("unit,rules,cfg_name", list(SLOW), ids=["-".join(k) for k in SLOW])
def test_proof_deep(tmp_path, unit, rules, cfg_name):
    """Deeper proofs; for the ``bmc`` ones in :data:`COVERED` also a ``cover`` run at the same
    depth that must reach every cover statement (an output beat on every output, every beat
    balance drained after an output), so the depth is enough for every assertion to matter."""
    mode, depth = SLOW[unit, rules, cfg_name]
    res = _prove(tmp_path, unit, rules, mode, depth, cfg_name)
    assert res.passed, f"{unit} {rules} {cfg_name} ({mode} {depth}): {res.status}\n{_failures(res)}"
    if (unit, rules, cfg_name) in COVERED:
        cov = _prove(tmp_path / "cover", unit, rules, "cover", depth, cfg_name)
        assert cov.unreached_covers() == [], f"not reached at depth {depth}"


@pytest.mark.slow
def test_top_stream_rules(tmp_path):
    """The top's stream rules on its AXI4-Stream output and AXI4-Lite B and R channels, the
    environment obeying them on AXI4-Stream in and AW, W, AR (registers may be written at any
    time).  ``bmc`` 24: the first ``m_axis`` beat is reachable at step 21 (a ``cover`` run), so
    stalls of it are in the proof; k-induction does not close (the score unit's output FIFO,
    as for the score unit alone)."""
    res = run_proof(top_harness(preset("tiny")), "top_stream", mode="bmc", depth=24,
                    workroot=tmp_path)
    print(f"top stream tiny: bmc depth 24: {res.status} in {res.seconds:.1f} s")
    assert res.passed, f"top stream (bmc 24): {res.status}\n{_failures(res)}"


# ---------------------------------------------------------------------------- broken variants
class _WithdrawingDetector(HeadDetector):
    """Deliberately broken: gives up a beat (valid low) after one stalled cycle."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        with m.If(self.keep_out.valid & ~self.keep_out.ready):
            m.d.sync += self.keep_out.valid.eq(0)
        return m


class _OverrunDetector(HeadDetector):
    """Deliberately broken: accepts a head while its stalled output register still holds the
    previous decision (that beat is overwritten, i.e. dropped)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.h_in.ready.eq(1)
        return m


class _WrappedPruner(BlockPruner):
    """The real pruner inside a wrapper that forwards every port, except the inputs named in
    ``HELD`` and the output fields that :meth:`tamper` drives instead."""

    HELD: tuple = ()

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = BlockPruner(self.cfg)
        for path, member, value in self.signature.flatten(self):
            other = inner
            for p in path:
                other = getattr(other, p) if isinstance(p, str) else other[p]
            if member.flow == wiring.In and path not in self.HELD:
                m.d.comb += other.eq(value)
            elif member.flow == wiring.Out:
                m.d.comb += value.eq(other)
        self.tamper(m, inner)
        return m

    def tamper(self, m: Module, inner: BlockPruner) -> None:
        raise NotImplementedError


class _NoDiagonalPruner(_WrappedPruner):
    """Deliberately broken: the real pruner with the diagonal block of every block-row cleared
    from its mask (column = row: square blocks, as in ``tiny``)."""

    def tamper(self, m, inner):
        mo = inner.mask_out.payload
        diag = Signal.like(mo.mask)
        # a later assignment to the same field overrides the forwarded one
        m.d.comb += [diag.eq(Const(1, len(mo.mask)) << mo.row),
                     self.mask_out.payload.mask.eq(mo.mask & ~diag)]


class _TopkAboveBudgetPruner(_WrappedPruner):
    """Deliberately broken: a quarter more budget in ``topk`` mode (``k_frac_q + 2**6``), so
    a row keeps more blocks than ``ceil(k_frac_q * n_valid / 2**8)``."""

    HELD = (("k_frac_q",),)

    def tamper(self, m, inner):
        m.d.comb += inner.k_frac_q.eq(self.k_frac_q + (1 << 6))


# fault -> (unit, property set, variant, mode, depth, text of the assertion(s) that may fail)
BROKEN = {
    "withdraws_valid": ("head_detector", "stream", _WithdrawingDetector, "prove", 4,
                        ("_valid_held",)),
    "drops_beat": ("head_detector", "count", _OverrunDetector, "bmc", 8,
                   ("_bounded", "_drains", "_no_output_unless_owed", "valid_iff_owed")),
    "drops_diagonal": ("block_pruner", "count", _NoDiagonalPruner, "bmc", 10, ("diagonal_kept",)),
    "keeps_above_budget": ("block_pruner", "topk", _TopkAboveBudgetPruner, "bmc", 12, ("topk_count",)),
}


@pytest.mark.parametrize("fault", list(BROKEN))
def test_broken_variant_fails(tmp_path, fault):
    """Each broken variant fails the proof that the real unit passes (``test_proof``), with a
    counterexample trace."""
    unit, rules, cls, mode, depth, expect = BROKEN[fault]
    res = _prove(tmp_path, unit, rules, mode, depth, dut=cls)
    assert not res.passed, f"{cls.__name__} was not caught"
    assert res.status == "FAIL", res.log[-2000:]
    failed = res.failed_assertions()
    print("\n".join(failed))
    assert any(e in line for e in expect for line in failed), \
        f"expected one of {expect} to fail, got {failed}"
