"""Cycle model of the whole co-processor top (``hw/top.py``) for one head.

:func:`head_cycles` predicts the top's ``cycles`` register (first input beat to last output
beat, inclusive) from the configuration, ``valid_len``, the golden keep masks and the head
decision, for an input stream at full rate (one row per cycle whenever the top is ready) and
an output that is always ready.  It is a replay of the top's *control* only, no datapath:

1. **Load** (:func:`load_phase`, cycle by cycle): the ``3L`` K, Q and V rows at full rate
   (cycles ``0 .. 3L-1``).  The :class:`~hw.score_unit.ScoreUnit` takes K from the stream and
   Q from the top's Q memory through a feeder (row ``i`` is readable the cycle after it is
   written and reaches ``q_in`` from a register two cycles later) at its own pace: a double
   buffer of one block-row, block-row ``r + 1`` loads while ``r`` issues one block every
   :func:`hw.score_unit.block_cycles` cycles (``int_lanes`` products per cycle).  A block is
   on the pruner's input ``pipeline_depth + 2`` cycles after its last pass
   (:func:`hw.score_unit.pipeline_depth`); a block-row's keep mask leaves the pruner
   :func:`hw.block_pruner.mask_latency` cycles after the row's last block; the head decision
   comes ``h_out`` (``pipeline_depth + 1`` cycles after the last pass) + 1 cycle
   (:class:`~hw.head_detector.HeadDetector`).
   A *dense* head (pruning ``off`` and head pruning off, the baseline) runs no integer pass:
   the ``3L`` rows load at full rate, there are no masks to wait for (every valid block is
   kept) and the array forms the whole score.
2. Without head pruning the stages start 2 cycles after the last V row and the score stage
   reads each query row only once its block-row's mask has arrived (the integer pass overlaps
   the array work; not at all in a dense head).  With head pruning the top first waits for
   every mask and the decision; a pruned head then sends ``L`` zero rows, one per cycle.
   After the last output row the top waits for the integer pass to be over (``FINISH``; at
   once in a dense head), then ``DONE`` latches ``cycles``.
3. The three stages of the top run on row groups of ``R`` queries, replayed cycle by
   cycle (:func:`run_phase`) with the top's exact start rules (S starts ``g`` when M has
   finished ``g - 2`` and P ``g - 3``; M starts ``g`` when S has finished it and P ``g - 2``;
   P starts ``g`` when M has finished it):

   * S: ``R + 2`` cycles reading Q rows and masks (a row waits for its mask; the memories'
     outputs are registered), 1 union, 1 iterator init, then the key loader (``C`` slots, one
     per cycle, plus 3 cycles to settle: the K memory's output is registered too) double-
     buffered against the tile runner (``head_dim`` depth steps per tile on the array, each
     a beat into a two-entry operand skid that the arbiter takes from: the runner waits only
     while the skid holds two); the
     group's gathered keys are the keys ``j < L`` of the block columns kept by any of its block-
     rows, ``C`` per tile; then it waits for the last score result (``array_latency + 2 (R -
     1)`` cycles after the tile's last beat, :func:`sim.cycle_model.predict_cycles`'s rule).
   * M: the softmax feeder (3-stage) into the :class:`~hw.softmax_unit.SoftmaxUnit`, whose
     stages are replayed register by register by :class:`sim.cycles_softmax.SoftmaxReplay`:
     a row of ``n`` entries every ``max(n + 1, ceil(recip_width / 2) + 1)`` cycles, first
     probability ``2n + ceil(recip_width / 2) + 14`` cycles after the row's first score; M
     waits until the group's
     last probability has left the unit.
   * P: ``ceil(head_dim / C)`` P x V tiles of depth = the group's gathered keys (six-stage feeder),
     then the results, then ``nrows`` output beats.

   S and P share the array tile by tile, P first; the array's issue rules (a tile's last beat
   at least ``2R - 1`` cycles after the previous one; credit for a tile's ``R`` result rows)
   are those of :func:`sim.cycle_model.predict_cycles`.

The model is exact (equal ``cycles`` and ``array_cycles``) against the top of ``hw/top.py`` at the
time of writing, checked by ``tests/test_top_cycles.py`` in Amaranth's simulator and by
:func:`validate_against_rtl` on Verilator; since it replays the top's control, a change to the
top's stage rules needs the same change here (the test then names the head and both counts).

:func:`ideal_cycles` is the array work with perfect packing: every multiply-accumulate issued
(the gathered keys of every group, score and P x V, ``head_dim`` deep) divided by ``R x C``;
:func:`array_busy` the cycles the array accepts a beat (the top's ``array_cycles`` register).
"""

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.block_pruner import mask_latency
from hw.config import HDPConfig
from hw.mass_pruner import mass_mask_latency

from .cycles.arbiter import ArrayModel
from .cycles.pv import PVModel
from .cycles.score import ScoreModel
from .cycles.softmax import SoftmaxStageModel

__all__ = ["head_cycles", "ideal_cycles", "array_busy", "head_plan", "HeadPlan", "GroupPlan",
           "load_phase", "LoadTimes", "run_phase", "validate_against_rtl", "head_valid_len"]


@dataclass(frozen=True)
class GroupPlan:
    i0: int          # first query row
    nrows: int       # query rows of the group (< R only for the last group)
    nkept: int       # gathered keys (union of the group's block-rows' kept columns, j < L)


@dataclass(frozen=True)
class HeadPlan:
    valid_len: int
    kept: bool       # head kept (False: L zero rows, no array work)
    mode: str        # pruning mode the pruner runs ("off" for dense)
    hprune: bool     # head pruning on (the stages wait for the head decision)
    groups: tuple[GroupPlan, ...]


def head_valid_len(head) -> int:
    """``valid_len`` of a :class:`golden.model.HeadResult` (row ``i`` has a valid entry
    ``(i, 0)`` exactly when ``i < valid_len``, causal or not)."""
    return int(np.asarray(head.mask)[:, 0].sum())


def head_plan(cfg: HDPConfig, head, dense: bool) -> HeadPlan:
    """Row groups and their gathered keys for one golden head.

    ``dense``: the baseline run (pruning off, head pruning off): every valid block is kept.
    Otherwise the golden keep masks and head decision (as computed under ``cfg``)."""
    L = head_valid_len(head)
    if dense:
        keep = np.asarray(head.block_valid, bool)
        kept, mode, hprune = True, "off", False
    else:
        keep = np.asarray(head.block_keep, bool)
        kept, mode, hprune = bool(head.head_keep), cfg.prune_mode, cfg.head_prune
    R, br, bc = cfg.array_rows, cfg.block_rows, cfg.block_cols
    col_of_key = np.arange(L) // bc
    groups = []
    if kept:
        for i0 in range(0, L, R):
            nrows = min(R, L - i0)
            brs = sorted({i // br for i in range(i0, i0 + nrows)})
            union = keep[brs].any(axis=0)
            nkept = int(union[col_of_key].sum())
            groups.append(GroupPlan(i0, nrows, nkept))
    return HeadPlan(L, kept, mode, hprune, tuple(groups))


# ------------------------------------------------------------------------------ load phase
@dataclass(frozen=True)
class LoadTimes:
    v_last: int                  # cycle of the last V row (cycle 0 = the first K row)
    mask_valid: tuple[int, ...]  # cycle each block-row's keep mask is on the pruner's output
    keep_valid: int              # cycle the head decision is on the head detector's output


def load_phase(cfg: HDPConfig, valid_len: int, mode: str, dense: bool = False) -> LoadTimes:
    """Input rows, integer pass, masks and head decision of one head (cycle 0 = first K row).

    The rows load at full rate (last V row at cycle ``3L - 1``); the top's Q feeder, the
    ScoreUnit's Q double buffer and its block issue are replayed cycle by cycle: a block
    takes :func:`hw.score_unit.block_cycles` consecutive cycles (passes, ``ceil(head_dim /
    int_lanes)``), the next block, block column or block-row follows its last pass; a block is
    on the pruner's input ``pipeline_depth + 2`` cycles after its last pass
    (:func:`hw.score_unit.pipeline_depth`: ``PIPELINE_DEPTH`` = 8 with one pass per block, 9
    with several); a block-row's mask leaves the pruner 5 (``off``) or ``ceil(L / b_c) + 4``
    (``topk``, ``threshold``) cycles after its last block (BlockPruner docstring); ``h_out``
    is valid ``pipeline_depth + 1`` cycles after the last block's last pass and the head
    detector answers 1 cycle later.

    ``dense`` (pruning and head pruning off): no integer pass; the ``3L`` rows load at full
    rate (last V row at cycle ``3L - 1``) and there are no masks and no head decision (every
    ``mask_valid`` is -1, ``keep_valid`` -1: nothing to wait for)."""
    from hw.score_unit import PIPELINE_DEPTH, block_cycles, pipeline_depth
    L, br, bc = valid_len, cfg.block_rows, cfg.block_cols
    n_pass = block_cycles(cfg)   # cycles per block (the ScoreUnit's passes)
    m_cols = -(-L // bc)
    n_brows = -(-L // br)
    if dense:
        return LoadTimes(3 * L - 1, (-1,) * n_brows, -1)
    t = L                        # K rows at cycles 0 .. L-1, Q rows L .. 2L-1, V 2L .. 3L-1
    q_cnt = q_sub = 0
    q_full = q_done = False
    qf_v, qf_i = False, 0        # the top's Q feeder (Q memory -> register -> ScoreUnit.q_in)
    qo_v = False                 # its output register
    have_row = False
    col = pss = 0                # block column, pass of the block
    row_end: list[int] = []      # cycle of the last pass of each block-row's last block
    while len(row_end) < n_brows:
        q_avail = min(max(t - L, 0), L)       # Q rows written before cycle t
        q_ready = not q_full and not q_done
        q_fire = qo_v and q_ready
        take = not qo_v or q_ready
        adv = not qf_v or take
        if take:
            qo_v = qf_v
        if adv:
            qf_v = qf_i < q_avail
            qf_i += qf_v
        blk_end = have_row and pss == n_pass - 1   # a block's last pass
        last_col = blk_end and col == m_cols - 1
        load = q_full and (not have_row or last_col)
        if q_fire:
            q_cnt += 1
            if q_cnt >= L:
                q_done = True
            if q_sub == br - 1 or q_cnt >= L:
                q_sub, q_full = 0, True
            else:
                q_sub += 1
        if have_row and not blk_end:
            pss += 1
        if blk_end:
            pss = 0
            if last_col:
                row_end.append(t)
                col, have_row = 0, False
            else:
                col += 1
        if load:
            q_full, have_row = False, True
        t += 1
    lat = mass_mask_latency(cfg, m_cols) if mode == "mass" else mask_latency(mode, m_cols)
    sel = pipeline_depth(cfg) - PIPELINE_DEPTH   # the K selection stage of several passes
    blk_lat = PIPELINE_DEPTH + sel + 2    # last pass -> block on the ScoreUnit's blk_out
    h_lat = PIPELINE_DEPTH + sel + 1      # last block's last pass -> h_out valid
    return LoadTimes(3 * L - 1, tuple(e + blk_lat + lat for e in row_end),
                     row_end[-1] + h_lat + 1)


# ------------------------------------------------------------------------------ run phase
def run_phase(cfg: HDPConfig, groups: tuple[GroupPlan, ...], L: int, t0: int,
              mask_valid: tuple[int, ...], trace: list | None = None) -> tuple[int, int]:
    """Replay the S / M / P stages (:mod:`sim.cycles`) from the first ``RUN`` cycle ``t0``
    (``mask_valid``: cycle each block-row's mask leaves the pruner); returns the cycle of the
    last output beat and the number of beats the array accepted.  ``trace`` (a list)
    receives ``(cycle, stage, new state)`` for every state change."""
    arr = ArrayModel(cfg)
    S = ScoreModel(cfg, L, [g.nkept for g in groups], mask_valid)
    M = SoftmaxStageModel(cfg, [(g.nkept, g.nrows) for g in groups])
    P = PVModel(cfg, L, [(g.nkept, g.nrows, g.i0) for g in groups])
    t = t0
    while True:
        # combinational outputs of the current registers
        s_fire, p_fire, op_valid, op_last, grant_s = arr.arbitrate(
            S.op_valid, S.op_last, P.op_valid, P.op_last)
        s_res, p_res = arr.results(t)
        m_done, p_done = M.done, P.done
        last_out = p_done and P.last
        fifo_ready = bool(S.fifo)
        m_valid, m_group = M.out_valid, M.out_g
        p_take = P.takes(m_valid)
        before = (S.state, M.state, P.state)
        # next registers
        arr.step(t, op_valid, s_fire or p_fire, op_last, grant_s)
        S.step(t, s_fire, s_res, m_done, p_done)
        M.step(S.fifo, fifo_ready, p_done, p_take)
        P.step(p_fire, p_res, m_valid, m_group)
        if last_out:
            return t, arr.beats
        if trace is not None:
            for name, old, new in zip(("s_state", "m_state", "p_state"), before,
                                      (S.state, M.state, P.state)):
                if new != old:
                    trace.append((t + 1, name, new))
        t += 1
        if t - t0 > 100_000_000:
            raise AssertionError("top cycle model: no end")


# ------------------------------------------------------------------------------ public API
@functools.lru_cache(maxsize=4096)
def _cycles(cfg: HDPConfig, plan: HeadPlan) -> tuple[int, int]:
    """``(cycles, array beats)`` of one head.  A pure function of the configuration and the
    plan, so it is cached: every dense head of one length has the same plan, and a sweep
    asks for it once per head (72 times per point on the bundled data)."""
    L = plan.valid_len
    # the top's dense path: pruning off and head pruning off (either approximation mode)
    lt = load_phase(cfg, L, plan.mode, dense=plan.mode == "off" and not plan.hprune)
    flags = max(lt.mask_valid[-1], lt.keep_valid) + 1   # masks_done & keep_done visible
    if plan.hprune:
        c = max(lt.v_last + 1, flags)   # INT_WAIT waits for the head decision
        if not plan.kept:
            return c + L + 1, 0         # ZERO: L zero rows from c + 1, then DONE
        t0 = c + 1
    else:
        t0 = lt.v_last + 2              # INT_WAIT for one cycle; S follows the masks
    last, beats = run_phase(cfg, plan.groups, L, t0, lt.mask_valid)
    finish = max(last + 1, flags)       # FINISH waits for the integer pass to be over
    return finish + 1, beats


def head_cycles(cfg: HDPConfig, head, dense: bool) -> int:
    """Predicted ``cycles`` register of the top for one head (:class:`golden.model.HeadResult`
    computed under ``cfg``): the dense baseline (``dense=True``: pruning and head pruning off)
    or the configured pruning (``dense=False``: the golden keep masks and head decision)."""
    return _cycles(cfg, head_plan(cfg, head, dense))[0]


def array_busy(cfg: HDPConfig, head, dense: bool) -> int:
    """Predicted ``array_cycles`` register: beats the array accepts for the head (score tiles
    ``head_dim`` deep, ``ceil(head_dim / C)`` P x V tiles as deep as the gathered keys)."""
    plan = head_plan(cfg, head, dense)
    nu = -(-cfg.head_dim // cfg.array_cols)
    return sum(-(-g.nkept // cfg.array_cols) * cfg.head_dim + nu * g.nkept for g in plan.groups)


def ideal_cycles(cfg: HDPConfig, head, dense: bool) -> float:
    """Multiply-accumulate steps the top issues on the array (each gathered key of each query
    row: ``head_dim`` for its score and ``head_dim`` for P x V) divided by ``R x C``: the
    cycles of a perfectly packed, never idle array doing the same work."""
    plan = head_plan(cfg, head, dense)
    macs = sum(g.nrows * g.nkept * 2 * cfg.head_dim for g in plan.groups)
    return macs / (cfg.array_rows * cfg.array_cols)


# ------------------------------------------------------------------------------ validation
def validate_against_rtl(cfgs, data, out_dir, simulator: str = "verilator",
                         heads: int = 4, report: list | None = None) -> float:
    """Worst relative disagreement ``|model - RTL| / RTL`` of the ``cycles`` register over
    ``cfgs`` x the first ``heads`` heads of ``data`` (a mapping with float ``q``, ``k``, ``v``
    and optional ``valid_len``, as :func:`sim.fixtures.load_fixture` returns), dense and
    pruned, simulated with :func:`sim.top_run.simulate` (one cached build per hardware
    configuration under ``out_dir``).  ``report`` (a list) receives one dict per head."""
    from golden.model import attention_head_int, quantize_qkv

    from .top_run import simulate, split_runtime
    q, k, v = (np.asarray(data[x])[:heads] for x in ("q", "k", "v"))
    n = q.shape[1]
    vl = int(data.get("valid_len") or n)
    worst = 0.0
    for cfg in cfgs:
        hw_cfg, _ = split_runtime(cfg)
        key = hashlib.sha256(hw_cfg.to_json().encode()).hexdigest()[:12]
        build = Path(out_dir) / f"{simulator}_{key}"
        dense_cfg = cfg.replace(prune_mode="off", approx="exact", head_prune=False)
        for run_cfg, dense in ((dense_cfg, True), (cfg, False)):
            q_q, k_q, v_q = quantize_qkv(q, k, v, run_cfg)
            res, _ = simulate(run_cfg, q_q, k_q, v_q, vl, simulator, build)
            for h in range(q_q.shape[0]):
                gold = attention_head_int(q_q[h], k_q[h], v_q[h], run_cfg, vl)
                model = head_cycles(run_cfg, gold, dense=dense)
                rtl = int(res["cycles"][h])
                err = abs(model - rtl) / rtl
                worst = max(worst, err)
                if report is not None:
                    report.append({"config": run_cfg.to_dict(), "dense": dense, "head": h,
                                   "model": model, "rtl": rtl, "rel_error": err})
    return worst
