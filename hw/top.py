"""The hdpgen co-processor: one attention head at a time, AXI4-Stream in and out, AXI4-Lite
registers.  Golden twin: :func:`golden.model.attention_head_int`.
"""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.leopard import config_threshold

from .axil import AxiLiteRegs, AxiLiteSignature, AxiStreamSignature, Reg
from .block_pruner import BlockPruner
from .config import APPROX_MODES, EPS_BITS, PRUNE_MODES, HDPConfig, signed_width, unsigned_width
from .head_detector import HeadDetector
from .leopard_engine import LeopardEngine, th_range
from .mass_pruner import MassPruner
from .score_unit import ScoreUnit
from .softmax_unit import SoftmaxUnit
from .stages.arbiter import ArrayArbiter
from .stages.common import (
    Dims,
    fine_layout,
    group_layout,
    in_lane_width,
    key_layout,
    out_lane_width,
    qk_mem_row,
    v_mem_row,
)
from .stages.leopard_gather import LeopardGather
from .stages.loader import Loader
from .stages.pv import PVStage
from .stages.score import ScoreStage
from .stages.softmax import SoftmaxStage
from .systolic import SystolicArray

__all__ = ["Top", "REG_ADDR_WIDTH", "in_lane_width", "out_lane_width",
           "in_row_layout", "out_row_layout", "register_map", "register_values",
           "pack_input_rows", "unpack_output_row"]

#: AXI4-Lite address bits of the register map.
REG_ADDR_WIDTH = 12


def in_row_layout(cfg: HDPConfig) -> data.ArrayLayout:
    """One ``s_axis`` beat: a K, Q or V row, ``head_dim`` sign-extended lanes (element 0 in the
    low lane).  The top reads the low ``qk_bits`` (K, Q) or ``v_bits`` (V) of each lane."""
    return data.ArrayLayout(signed(in_lane_width(cfg)), cfg.head_dim)


def out_row_layout(cfg: HDPConfig) -> data.ArrayLayout:
    """One ``m_axis`` beat: an output row, ``head_dim`` sign-extended ``out_bits`` values
    (``out_frac`` fraction bits)."""
    return data.ArrayLayout(signed(out_lane_width(cfg)), cfg.head_dim)


def register_map(cfg: HDPConfig) -> list[Reg]:
    """The AXI4-Lite register map (byte addresses; reset values from the configuration).  The
    registers of a front end the top was not generated with are absent (they read 0)."""
    if cfg.front_end == "leopard":
        return _leopard_register_map(cfg)
    return [
        Reg("mode", 0x00, 2, True, PRUNE_MODES.index(cfg.prune_mode)),
        Reg("approx", 0x04, unsigned_width(len(APPROX_MODES) - 1), True,
            APPROX_MODES.index(cfg.approx)),
        Reg("causal", 0x08, 1, True, int(cfg.causal)),
        Reg("head_prune", 0x0C, 1, True, int(cfg.head_prune)),
        Reg("k_frac_q", 0x10, cfg.k_frac_width, True, cfg.k_frac_q),
        Reg("rho_q", 0x14, cfg.rho_frac + 1, True, cfg.rho_q),
        Reg("tau_head", 0x18, cfg.h_width, True, cfg.tau_head),      # 0x18 and 0x1C if > 32 bits
        Reg("valid_len", 0x20, cfg.valid_len_width, True, cfg.seq_len),
        Reg("status", 0x24, 3, False),          # bit 0 busy, bit 1 done, bit 2 head_kept
        Reg("cycles", 0x28, 32, False),         # first input beat .. last output beat, last head
        Reg("array_cycles", 0x2C, 32, False),   # cycles the MAC array was busy, last head
        Reg("head_imp", 0x30, max(cfg.h_width, 1), False),  # H of the last head (0x30, 0x34)
        Reg("kept_keys", 0x38, 32, False),      # sum over row groups of issued key columns
        Reg("heads_done", 0x3C, 32, False),     # heads completed since reset
        Reg("mask_sel", 0x40, unsigned_width(max(cfg.n_block_rows - 1, 1)), True, 0),
        Reg("eps_q", 0x44, EPS_BITS, True, cfg.eps_q),   # mass mode: eps * 2**8
        # keep mask of block-row mask_sel of the last head (bit c = block column c kept),
        # ceil(n_block_cols / 32) words from 0x100
        Reg("mask_data", 0x100, cfg.n_block_cols, False),
    ]


def _leopard_register_map(cfg: HDPConfig) -> list[Reg]:
    th_w = signed_width(*th_range(cfg))
    return [
        Reg("causal", 0x08, 1, True, int(cfg.causal)),
        Reg("valid_len", 0x20, cfg.valid_len_width, True, cfg.seq_len),
        Reg("status", 0x24, 3, False),          # bit 0 busy, bit 1 done, bit 2 head kept (1)
        Reg("cycles", 0x28, 32, False),
        Reg("array_cycles", 0x2C, 32, False),
        Reg("kept_keys", 0x38, 32, False),      # sum over row groups of gathered keys
        Reg("heads_done", 0x3C, 32, False),
        # threshold in units of q_q.k_q (two's complement), clamped to th_range by the driver
        Reg("leopard_th", 0x48, th_w, True, leopard_th_code(cfg)),
        Reg("no_et", 0x4C, 1, True, 0),         # 1: every entry reads all its bits (baseline)
        Reg("kept_entries", 0x50, 32, False),   # entries kept by the engine, last head
        Reg("bits_read", 0x54, 32, False),      # bits of k the lanes read, last head
        Reg("fe_cycles", 0x58, 32, False),      # the engine's cycles, last head
    ]


def leopard_th_code(cfg: HDPConfig) -> int:
    """The ``leopard_th`` register's value for ``cfg.leopard_th``: the integer threshold
    (:func:`golden.leopard.config_threshold`) clamped to the engine's range (which changes no
    decision), as an unsigned two's complement code."""
    lo, hi = th_range(cfg)
    th = min(max(config_threshold(cfg), lo), hi)
    return th & ((1 << signed_width(lo, hi)) - 1)


class Top(wiring.Component):
    """The co-processor: runs whole attention heads, bit-exact with
    :func:`golden.model.attention_head_int`.

    Ports (flattened names in the exported Verilog)
    -----------------------------------------------
    s_axis : ``s_axis__tdata/tvalid/tready/tlast``, AXI4-Stream in, one row per beat
        (:func:`in_row_layout`): the ``L`` K rows, then the ``L`` Q rows, then the ``L`` V rows
        of one head (``L`` = register ``valid_len``); ``tlast`` is not required (the count
        decides) but a source should set it on the last V row.
    m_axis : ``m_axis__tdata/tvalid/tready/tlast``, AXI4-Stream out: the ``L`` output rows of
        the head (:func:`out_row_layout`), ``tlast`` on the last.  Rows ``>= L`` of golden's
        output are all zero and are not sent.
    s_axil : ``s_axil__awaddr`` ..., AXI4-Lite slave (:mod:`hw.axil`), 12 address bits,
        :func:`register_map`: writable ``mode`` (index in ``PRUNE_MODES``), ``approx``
        (index in ``APPROX_MODES``), ``causal``, ``head_prune``, ``k_frac_q``, ``rho_q``,
        ``tau_head``, ``valid_len``, ``mask_sel``; read-only ``status`` (bit 0 busy, 1 done,
        2 head kept), ``cycles`` (last head, first input beat to last output beat),
        ``array_cycles`` (beats the array accepted), ``head_imp`` (H; 0 after a dense head,
        which computes no ``A``), ``kept_keys`` (key
        columns issued, summed over row groups), ``heads_done``, ``mask_data`` (keep mask of
        block-row ``mask_sel`` of the last head; after a dense head its block validity, which
        is golden's keep mask with pruning off).  Reset values come from the configuration.
        Run-time registers are sampled when a head's first beat arrives; writes during a head
        act on the next head.

    Cocotb drivers: ``AxiStreamBus.from_prefix(dut, "s_axis_")`` (cocotbext-axi joins prefix
    and name with ``_``, giving ``s_axis__tdata``), ``AxiLiteBus.from_prefix(dut, "s_axil_")``.

    Phases of one head
    ------------------
    A head is *dense* (the baseline every speedup is measured against) when ``mode`` is
    ``off`` and ``head_prune`` is 0, in either approximation mode; otherwise it is *pruned*.

    1. *load* (:class:`~hw.stages.loader.Loader`): the ``3L`` input rows go into the K, Q, V
       memories at full rate (one row per cycle).  In a pruned head K rows also go into the
       :class:`~hw.score_unit.ScoreUnit`, which takes the Q rows from the Q memory through a
       feeder at its own pace, so the integer pass runs during and after the Q and V loads
       without ever holding the input stream.  Its blocks go to the
       :class:`~hw.block_pruner.BlockPruner`, or in mass mode to the
       :class:`~hw.mass_pruner.MassPruner` (keep masks into a memory, one word per
       block-row; ``cfg.mass_pruner`` false builds no mass pruner, and the mode register's
       mass code runs as off); ``H`` goes to the :class:`~hw.head_detector.HeadDetector`.
       The integer pass's ``A`` is not stored (that would take ``N^2`` words): the array
       forms the whole score of every kept entry in the same ``head_dim`` steps, ``S = acc``.
       A dense head runs no integer pass: the score unit, pruner and head detector stay
       idle, the ``3L`` rows load at full rate (one per cycle), every valid block is kept
       (golden's block validity: ``c b_c < L``, and ``c b_c <= `` the block-row's last query
       when causal).
    2. A pruned head outputs ``L`` zero rows; it costs no array cycle.
    3. Otherwise the ``L`` query rows are cut into *row groups* of ``R = array_rows`` rows,
       and three stages run concurrently on successive groups:

       * **S** (score, :class:`~hw.stages.score.ScoreStage`): the group's Q rows
         (registers) and its block-rows' masks (dense: the block validity, no waiting); the key
         columns kept by ANY of the group's block-rows (the union of their masks; exactly one
         block-row when ``array_rows == block_rows``, the co-design rule; with more rows per
         tile than per block a tile carries the union, which is correct but skips less) are
         gathered ``C`` at a time into score tiles of ``R x C`` scores, depth ``head_dim``.  A
         pruned block column is never issued, so pruned blocks cost no array cycle.
       * **M** (softmax, :class:`~hw.stages.softmax.SoftmaxStage`): each row of the group
         through the
         :class:`~hw.softmax_unit.SoftmaxUnit`, feeding only the gathered entries with
         ``S = acc`` and keep = the row's own block-row mask
         & causal ``j <= i``
         (entries of the union that the row's own mask prunes cost one softmax cycle and
         give p = 0).  The softmax streams one entry per cycle.
       * **P** (P x V, :class:`~hw.stages.pv.PVStage`): tiles of ``R`` rows x ``C`` output
         dimensions, depth = the gathered keys only; requantized
         (:func:`golden.pv.requantize`: round half up, saturate) into an output buffer and
         sent.

       S and P share the array tile by tile (:class:`~hw.stages.arbiter.ArrayArbiter`, P
       first).  A group's descriptor (:func:`~hw.stages.common.group_layout`) goes S -> M
       through a two-entry FIFO and M -> P through a register.  Keys are banked three ways,
       fine scores and probabilities two ways, and a stage frees a bank with a ``done``
       strobe that the writer counts as a credit: S starts group ``g`` when M has finished
       ``g - 2`` and P ``g - 3``, M starts ``g`` when S has finished it and P has finished
       ``g - 2``, P starts ``g`` when M has finished it.

    Operands per PE step (:class:`~hw.systolic.SystolicArray`, ``acc += (a0 b0 << F) + a1 b1``):
    score tiles ``(q_I, k_q, q_F, k_q)`` (``exact``: ``q_q . k_q``) or ``(q_I, k_q, q_F,
    k_I << F)`` (``drop_ff``: ``(A << 2F) + 2^F X``), dense or pruned alike; P x V
    ``(0, 0, p, v)``.

    Registers hold their value for the next head; the top samples them when a head's first
    beat arrives.  ``cycles`` counts from that beat to the last output beat.

    Cycle accounting (input at full rate, output always ready; exact model
    :func:`sim.top_cycles.head_cycles`): a dense head loads in ``3L`` cycles, starts the
    stages 2 cycles after the last V row and ends 2 cycles after its last output row
    (``FINISH`` does not wait); a pruned head loads in ``3L`` cycles too, its
    score stage waits for each block-row's mask (with head pruning: for every mask and the
    head decision) and ``FINISH`` waits for the integer pass to be over.
    """

    def __init__(self, cfg: HDPConfig):
        if not isinstance(cfg, HDPConfig):
            raise TypeError(f"cfg must be an HDPConfig, not {cfg!r}")
        self._cfg = cfg
        self._regs = register_map(cfg)
        super().__init__({
            "s_axis": In(AxiStreamSignature(in_lane_width(cfg) * cfg.head_dim)),
            "m_axis": Out(AxiStreamSignature(out_lane_width(cfg) * cfg.head_dim)),
            "s_axil": In(AxiLiteSignature(REG_ADDR_WIDTH)),
        })

    @property
    def cfg(self) -> HDPConfig:
        return self._cfg

    @property
    def registers(self) -> dict[str, int]:
        """Register name -> byte address."""
        return {r.name: r.addr for r in self._regs}

    # ------------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        self._leo = self._cfg.front_end == "leopard"
        self._build_registers(m)
        self._build_memories(m)
        if self._leo:
            self._build_leopard_front(m)
        else:
            self._build_integer_pass(m)
        self._build_stages(m)
        self._build_sequencer(m)
        return m

    def _build_registers(self, m):
        """AXI4-Lite registers, the run-time values sampled at a head's start, the status."""
        cfg = self._cfg
        m.submodules.regs = regs = AxiLiteRegs(self._regs, addr_width=REG_ADDR_WIDTH)
        wiring.connect(m, wiring.flipped(self.s_axil), regs.s_axil)
        S = Signal
        r = self._r = {
            "mode": S(2), "approx": S(unsigned_width(len(APPROX_MODES) - 1)), "causal": S(),
            "hprune": S(), "kq": S(cfg.k_frac_width), "eps": S(EPS_BITS), "mass": S(),
            "rho": S(cfg.rho_frac + 1), "tau": S(cfg.h_width),
            "L": S(unsigned_width(cfg.seq_len)), "drop_ff": S(), "comp": S(), "dense": S(),
            "busy": S(), "done": S(), "head_kept": S(), "cyc": S(32), "arr_cyc": S(32),
            "st_cycles": S(32), "st_arr": S(32), "head_imp": S(cfg.h_width),
            "kept_keys": S(32), "st_kept": S(32), "heads_done": S(32),
            "masks_done": S(), "keep_done": S(),
            "mask_rows": S(unsigned_width(max(cfg.n_block_rows - 1, 1)) + 2),
            # LeOPArd front end
            "th": S(signed(signed_width(*th_range(cfg)))), "no_et": S(),
            "kent": S(32), "st_kent": S(32), "st_bits": S(32), "st_fe": S(32),
        }
        # dense head (the baseline): no pruning, no head pruning.  No integer pass: the array
        # forms the whole score, every valid block is kept.
        m.d.comb += [
            regs.status.eq(Cat(r["busy"], r["done"], r["head_kept"])),
            regs.cycles.eq(r["st_cycles"]), regs.array_cycles.eq(r["st_arr"]),
            regs.kept_keys.eq(r["st_kept"]), regs.heads_done.eq(r["heads_done"]),
        ]
        if self._leo:
            # exact scores, no block pruning, no head pruning: drop_ff, comp, dense, mass and
            # hprune stay 0
            m.d.comb += [regs.kept_entries.eq(r["st_kent"]), regs.bits_read.eq(r["st_bits"]),
                         regs.fe_cycles.eq(r["st_fe"])]
        else:
            m.d.comb += [
                # comp: the drop_ff operands, plus each key's compensation in the softmax stage
                r["drop_ff"].eq(r["approx"] != APPROX_MODES.index("exact")),
                r["comp"].eq(r["approx"] == APPROX_MODES.index("comp")),
                r["dense"].eq((r["mode"] == PRUNE_MODES.index("off")) & ~r["hprune"]),
                r["mass"].eq(r["mode"] == PRUNE_MODES.index("mass")),
                regs.head_imp.eq(r["head_imp"]),
            ]
        with m.If(r["busy"]):
            m.d.sync += r["cyc"].eq(r["cyc"] + 1)
        self._regs_mod = regs

    def _build_memories(self, m):
        """The memories between the stages (each stage reaches them through port interfaces):
        K, Q, V rows; keep masks; gathered keys (three banks: S writes group g while M reads
        g - 1 and P g - 2); fine scores and probabilities (two banks)."""
        cfg, d = self._cfg, Dims.of(self._cfg)
        mem = self._mem = {}
        for name, shape in (("k", qk_mem_row(cfg)), ("q", qk_mem_row(cfg)),
                            ("v", v_mem_row(cfg))):
            m.submodules[f"{name}mem"] = mem[name] = Memory(shape=shape, depth=d.N, init=[])
        # per-key compensation (approx = comp): small, read asynchronously (LUT RAM)
        m.submodules.compmem = mem["comp"] = Memory(shape=unsigned(cfg.comp_width), depth=d.N,
                                                    init=[])
        if not self._leo:
            m.submodules.maskmem = mem["mask"] = Memory(shape=unsigned(d.nbc), depth=d.nbr,
                                                        init=[])
        m.submodules.keymem = mem["key"] = Memory(shape=key_layout(cfg), depth=3 * d.N, init=[])
        m.submodules.finemem = mem["fine"] = Memory(shape=fine_layout(cfg),
                                                    depth=2 * d.n_words, init=[])
        for r in range(d.R):
            m.submodules[f"probmem_{r}"] = mem[f"prob{r}"] = Memory(
                shape=unsigned(cfg.prob_width), depth=2 * d.N, init=[])

    def _build_integer_pass(self, m):
        """Score unit -> block pruner or mass pruner (keep masks into the mask memory) and
        head detector."""
        cfg, r, regs = self._cfg, self._r, self._regs_mod
        m.submodules.score = sc = ScoreUnit(cfg)
        m.submodules.pruner = pr = BlockPruner(cfg)
        mp = None           # cfg.mass_pruner false: no mass pruner (the mass code runs as off)
        if cfg.mass_pruner:
            m.submodules.mass_pruner = mp = MassPruner(cfg)
        m.submodules.headdet = hd = HeadDetector(cfg)
        self._sc = sc
        mass = r["mass"]
        m.d.comb += [
            sc.valid_len.eq(r["L"]), sc.causal.eq(r["causal"]),
            pr.mode.eq(r["mode"]), pr.k_frac_q.eq(r["kq"]), pr.rho_q.eq(r["rho"]),
            pr.valid_len.eq(r["L"]), hd.head_prune.eq(r["hprune"]), hd.tau_head.eq(r["tau"]),
        ] + ([] if mp is None else [
            mp.valid_len.eq(r["L"]), mp.causal.eq(r["causal"]), mp.eps_q.eq(r["eps"]),
        ])
        # blocks -> the mode's pruner (their A is not kept: the array forms the whole score);
        # the mass pruner also sees the K rows the score unit takes (its key sums)
        blk, imp = sc.blk_out.payload, pr.imp_in.payload
        to_pr = [imp.imp.eq(blk.imp), imp.valid.eq(blk.valid), imp.row.eq(blk.row),
                 imp.col.eq(blk.col), imp.last_col.eq(blk.last_col), imp.last.eq(blk.last)]
        if mp is None:
            m.d.comb += [pr.imp_in.valid.eq(sc.blk_out.valid),
                         sc.blk_out.ready.eq(pr.imp_in.ready)] + to_pr
        else:
            m.d.comb += [
                pr.imp_in.valid.eq(sc.blk_out.valid & ~mass),
                mp.blk_in.valid.eq(sc.blk_out.valid & mass), mp.blk_in.payload.eq(blk),
                sc.blk_out.ready.eq(Mux(mass, mp.blk_in.ready, pr.imp_in.ready)),
            ] + to_pr + [
                mp.k_in.valid.eq(sc.k_in.valid & sc.k_in.ready & mass),
                mp.k_in.payload.eq(sc.k_in.payload),
            ]
        wiring.connect(m, sc.h_out, hd.h_in)
        mask_wr = self._mem["mask"].write_port()
        mask_rd_reg = self._mem["mask"].read_port()
        mask_v = Signal()
        mask_o = Signal.like(pr.mask_out.payload)
        if mp is None:
            m.d.comb += [pr.mask_out.ready.eq(1), hd.keep_out.ready.eq(1),
                         mask_v.eq(pr.mask_out.valid), mask_o.eq(pr.mask_out.payload)]
        else:
            m.d.comb += [
                pr.mask_out.ready.eq(1), mp.mask_out.ready.eq(1), hd.keep_out.ready.eq(1),
                mask_v.eq(pr.mask_out.valid | mp.mask_out.valid),
                mask_o.eq(Mux(mass, mp.mask_out.payload, pr.mask_out.payload)),
            ]
        m.d.comb += [
            mask_wr.addr.eq(mask_o.row), mask_wr.data.eq(mask_o.mask), mask_wr.en.eq(mask_v),
            mask_rd_reg.addr.eq(regs.mask_sel),
        ]
        with m.If(mask_v):
            m.d.sync += r["mask_rows"].eq(r["mask_rows"] + 1)
        with m.If(mask_v & mask_o.last):
            m.d.sync += r["masks_done"].eq(1)
        with m.If(hd.keep_out.valid):
            m.d.sync += [r["keep_done"].eq(1), r["head_kept"].eq(hd.keep_out.payload)]
        with m.If(sc.h_out.valid & sc.h_out.ready):
            m.d.sync += r["head_imp"].eq(sc.h_out.payload)
        self._mask_rd_reg = mask_rd_reg

    def _build_leopard_front(self, m):
        """The LeOPArd engine (K rows from the loader, Q rows from its feeder with the
        head's threshold), built ``kept_only``: its kept entries and row markers go to the
        gather stage; the top counts the kept entries, the engine the bits read."""
        cfg, r = self._cfg, self._r
        m.submodules.leopard = eng = LeopardEngine(cfg, kept_only=True)
        self._eng = eng
        m.d.comb += [eng.valid_len.eq(r["L"]), eng.causal.eq(r["causal"]),
                     eng.no_et.eq(r["no_et"])]
        res = eng.res_out
        with m.If(res.valid & res.ready):      # kept entries (the row markers have keep 0)
            m.d.sync += r["kent"].eq(r["kent"] + res.payload.keep)

    def _connect_front(self, m, ld):
        """Loader -> the front end: K rows as they arrive, Q rows from the loader's feeder."""
        if not self._leo:
            wiring.connect(m, ld.k_out, self._sc.k_in)
            wiring.connect(m, ld.q_out, self._sc.q_in)
            return
        eng = self._eng
        wiring.connect(m, ld.k_out, eng.k_in)
        m.d.comb += [eng.q_in.valid.eq(ld.q_out.valid), ld.q_out.ready.eq(eng.q_in.ready),
                     eng.q_in.payload.q.eq(ld.q_out.payload),
                     eng.q_in.payload.th.eq(self._r["th"])]

    def _build_stages(self, m):
        """Loader, S, M, P, the array and its arbiter, joined with ``wiring.connect``."""
        cfg, r, mem = self._cfg, self._r, self._mem
        d = Dims.of(cfg)
        m.submodules.loader = ld = Loader(cfg)
        m.submodules.s_stage = s = LeopardGather(cfg) if self._leo else ScoreStage(cfg)
        m.submodules.m_stage = ms = SoftmaxStage(cfg)
        m.submodules.p_stage = p = PVStage(cfg)
        m.submodules.softmax = sm = SoftmaxUnit(cfg)
        m.submodules.array = arr = SystolicArray(cfg, tag_width=d.tagw)
        m.submodules.arbiter = arb = ArrayArbiter(cfg)
        m.submodules.s_to_m = s2m = SyncFIFO(width=Shape.cast(group_layout(cfg)).width, depth=2)
        self._ld, self._s, self._p, self._arr = ld, s, p, arr
        wiring.connect(m, wiring.flipped(self.s_axis), ld.s_axis)
        for name, port in (("k_wr", mem["k"].write_port()), ("q_wr", mem["q"].write_port()),
                           ("v_wr", mem["v"].write_port()), ("q_rd", mem["q"].read_port()),
                           ("c_wr", mem["comp"].write_port())):
            wiring.connect(m, getattr(ld, name), port)
        self._connect_front(m, ld)
        if self._leo:
            wiring.connect(m, self._eng.res_out, s.res_in)
            s_ports = ((s, "fine_wr", mem["fine"].write_port()),)
        else:
            s_ports = ((s, "q_rd", mem["q"].read_port()), (s, "k_rd", mem["k"].read_port()),
                       (s, "mask_rd", mem["mask"].read_port()),
                       (s, "fine_wr", mem["fine"].write_port(granularity=d.C)))
        for stage, name, port in s_ports + (
                (s, "key_wr", mem["key"].write_port()),
                (ms, "key_rd", mem["key"].read_port()), (ms, "fine_rd", mem["fine"].read_port()),
                (p, "key_rd", mem["key"].read_port()), (p, "v_rd", mem["v"].read_port())):
            wiring.connect(m, getattr(stage, name), port)
        for i in range(d.R):
            wiring.connect(m, getattr(ms, f"prob_wr_{i}"), mem[f"prob{i}"].write_port())
            wiring.connect(m, getattr(p, f"prob_rd_{i}"), mem[f"prob{i}"].read_port())
        if not self._leo:       # the LeOPArd front end uses the array for P x V only
            wiring.connect(m, s.op, arb.s_op)
            wiring.connect(m, arb.res_s, s.res)
        wiring.connect(m, p.op, arb.p_op)
        wiring.connect(m, arb.op, arr.op_in)
        wiring.connect(m, arr.res_out, arb.res)
        wiring.connect(m, arb.res_p, p.res)
        wiring.connect(m, s.group, s2m.w_stream)
        wiring.connect(m, s2m.r_stream, ms.group_in)
        wiring.connect(m, ms.group_out, p.group_in)
        wiring.connect(m, ms.sm_in, sm.s_in)
        wiring.connect(m, sm.p_out, ms.sm_out)
        if not self._leo:
            m.d.comb += [s.dense.eq(r["dense"]), s.drop_ff.eq(r["drop_ff"]),
                         s.mask_rows.eq(r["mask_rows"])]
        m.d.comb += [
            ld.valid_len.eq(r["L"]), ld.dense.eq(r["dense"]),
            s.valid_len.eq(r["L"]), s.causal.eq(r["causal"]),
            s.m_done.eq(ms.done), s.p_done.eq(p.done),
            ms.causal.eq(r["causal"]), ms.p_done.eq(p.done), p.valid_len.eq(r["L"]),
            ms.comp.eq(r["comp"]),
        ]
        comp_rd = mem["comp"].read_port(domain="comb")
        m.d.comb += [comp_rd.addr.eq(ms.comp_addr), ms.comp_data.eq(comp_rd.data)]
        with m.If(s.done):
            m.d.sync += r["kept_keys"].eq(r["kept_keys"] + s.nkept)
        with m.If(r["busy"] & arr.op_in.valid & arr.op_in.ready):
            m.d.sync += r["arr_cyc"].eq(r["arr_cyc"] + 1)
        # a dense head writes no masks: its keep mask is the block validity.  Registered (a
        # block RAM's output only feeds a register); the register interface reads a word
        # the cycle after the read's accept, so mask_data still reads, as before, the block-row
        # mask_sel named two cycles before the accept
        if not self._leo:
            m.d.sync += self._regs_mod.mask_data.eq(
                Mux(r["dense"], s.valid_cols(self._regs_mod.mask_sel), self._mask_rd_reg.data))
        self._ms = ms

    def _sample_registers(self, m):
        """The front end's run-time registers, sampled when a head's first beat arrives."""
        r, regs = self._r, self._regs_mod
        if self._leo:
            m.d.sync += [r["th"].eq(regs.leopard_th), r["no_et"].eq(regs.no_et),
                         r["kent"].eq(0)]
            return
        mode = regs.mode
        if not self._cfg.mass_pruner:
            # a top built without the mass pruner runs the mass code as off
            mode = Mux(mode == PRUNE_MODES.index("mass"), PRUNE_MODES.index("off"), mode)
        m.d.sync += [r["mode"].eq(mode), r["approx"].eq(regs.approx),
                     r["hprune"].eq(regs.head_prune), r["kq"].eq(regs.k_frac_q),
                     r["rho"].eq(regs.rho_q), r["tau"].eq(regs.tau_head), r["eps"].eq(regs.eps_q)]
        with m.If((mode == PRUNE_MODES.index("off")) & ~regs.head_prune):
            m.d.sync += r["head_imp"].eq(0)      # dense: no integer pass, no H

    def _build_sequencer(self, m):
        """The head sequencer: load, wait for the integer pass (head pruning), run or send
        zero rows, finish."""
        r, regs, ld, s, ms, p = self._r, self._regs_mod, self._ld, self._s, self._ms, self._p
        L = r["L"]
        z_cnt = Signal.like(L)
        zeroing = Signal()
        tout = data.View(out_row_layout(self._cfg), self.m_axis.tdata)
        pout = data.View(out_row_layout(self._cfg), p.m_axis.tdata)
        for e in range(self._cfg.head_dim):
            m.d.comb += tout[e].eq(Mux(zeroing, 0, pout[e]))
        out_fire = Signal()
        m.d.comb += [
            self.m_axis.tvalid.eq(p.m_axis.tvalid | zeroing),
            self.m_axis.tlast.eq(Mux(zeroing, z_cnt + 1 == L, p.m_axis.tlast)),
            p.m_axis.tready.eq(self.m_axis.tready),
            out_fire.eq(self.m_axis.tvalid & self.m_axis.tready),
        ]
        with m.FSM(name="top_fsm") as fsm:
            with m.State("IDLE"):
                with m.If(self.s_axis.tvalid):
                    self._sample_registers(m)
                    m.d.sync += [
                        r["causal"].eq(regs.causal), L.eq(regs.valid_len),
                        r["busy"].eq(1), r["done"].eq(0), r["cyc"].eq(0), r["arr_cyc"].eq(0),
                        r["kept_keys"].eq(0), r["head_kept"].eq(1), r["masks_done"].eq(0),
                        r["keep_done"].eq(0), r["mask_rows"].eq(0),
                    ]
                    m.next = "LOAD"
            with m.State("LOAD"):
                with m.If(ld.last):
                    m.next = "INT_WAIT"
            with m.State("INT_WAIT"):
                # without head pruning the head is kept: start at once, S follows the masks
                # as the pruner delivers them (the integer pass overlaps the array work)
                with m.If(~r["hprune"]):
                    m.next = "RUN"
                with m.Elif(r["masks_done"] & r["keep_done"]):
                    with m.If(r["head_kept"]):
                        m.next = "RUN"
                    with m.Else():
                        m.d.sync += z_cnt.eq(0)
                        m.next = "ZERO"
            with m.State("ZERO"):
                with m.If(out_fire):
                    m.d.sync += z_cnt.eq(z_cnt + 1)
                    with m.If(z_cnt + 1 == L):
                        m.next = "DONE"
            with m.State("RUN"):
                with m.If(p.done & p.last):
                    m.next = "FINISH"
            with m.State("FINISH"):
                # the score unit and head detector have finished this head too (a dense head
                # never used them)
                with m.If(r["dense"] | (r["masks_done"] & r["keep_done"]) | self._leo):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.sync += [r["busy"].eq(0), r["done"].eq(1), r["st_cycles"].eq(r["cyc"]),
                             r["st_arr"].eq(r["arr_cyc"]), r["st_kept"].eq(r["kept_keys"]),
                             r["heads_done"].eq(r["heads_done"] + 1)]
                if self._leo:
                    m.d.sync += [r["st_kent"].eq(r["kent"]), r["st_fe"].eq(self._eng.cycles),
                                 r["st_bits"].eq(self._eng.bits_read)]
                m.next = "IDLE"
        # Plain assignments (continuous `assign`s in Verilog), not statements inside states:
        # Icarus never evaluates a combinational `always @*` whose inputs keep their time-0
        # values, and these drive the ports and the stages while the sequencer sits in IDLE.
        run = fsm.ongoing("RUN")
        m.d.comb += [ld.start.eq(fsm.ongoing("IDLE") & self.s_axis.tvalid),
                     ld.active.eq(fsm.ongoing("LOAD")), zeroing.eq(fsm.ongoing("ZERO")),
                     ms.clear.eq(fsm.ongoing("INT_WAIT")), ms.run.eq(run), p.run.eq(run)]
        if self._leo:
            # the engine's records arrive while the head loads: the gather stage is cleared
            # before the head and fills (and scans) from its first beat on
            m.d.comb += [s.clear.eq(fsm.ongoing("IDLE")), s.run.eq(~fsm.ongoing("IDLE"))]
        else:
            m.d.comb += [s.clear.eq(fsm.ongoing("INT_WAIT")), s.run.eq(run)]


def register_values(cfg: HDPConfig, valid_len: int | None = None) -> dict[str, int]:
    """The writable register values that make the top run ``cfg``'s run-time settings (what a
    driver writes before a head)."""
    n = cfg.seq_len if valid_len is None else int(valid_len)
    if cfg.front_end == "leopard":
        return {"causal": int(cfg.causal), "leopard_th": leopard_th_code(cfg), "no_et": 0,
                "valid_len": n}
    return {
        "mode": PRUNE_MODES.index(cfg.prune_mode),
        "approx": APPROX_MODES.index(cfg.approx),
        "causal": int(cfg.causal),
        "head_prune": int(cfg.head_prune),
        "k_frac_q": cfg.k_frac_q,
        "rho_q": cfg.rho_q,
        "eps_q": cfg.eps_q,
        "tau_head": cfg.tau_head,
        "valid_len": n,
    }


def pack_input_rows(cfg: HDPConfig, k_q, q_q, v_q, valid_len: int) -> list[int]:
    """The ``s_axis`` beats of one head (K rows, Q rows, V rows, ``valid_len`` each) as
    packed ``tdata`` integers."""
    lay = in_row_layout(cfg)
    rows = []
    for mat in (k_q, q_q, v_q):
        for i in range(valid_len):
            rows.append(lay.const([int(x) for x in mat[i]]).as_bits())
    return rows


def unpack_output_row(cfg: HDPConfig, tdata: int) -> list[int]:
    """One ``m_axis`` beat as ``head_dim`` signed integers."""
    v = out_row_layout(cfg).from_bits(tdata)
    return [int(v[e]) for e in range(cfg.head_dim)]
