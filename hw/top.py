"""The hdpgen co-processor: one attention head at a time, AXI4-Stream in and out, AXI4-Lite
registers.  Golden twin: :func:`golden.model.attention_head_int`.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axil import AxiLiteRegs, AxiLiteSignature, AxiStreamSignature, Reg
from .config import APPROX_MODES, PRUNE_MODES, HDPConfig, unsigned_width

__all__ = ["Top", "REG_ADDR_WIDTH", "in_lane_width", "out_lane_width",
           "in_row_layout", "out_row_layout", "register_map", "register_values",
           "pack_input_rows", "unpack_output_row"]

#: AXI4-Lite address bits of the register map.
REG_ADDR_WIDTH = 12


def in_lane_width(cfg: HDPConfig) -> int:
    """Bits per element lane of ``s_axis.tdata``: ``max(qk_bits, v_bits)`` rounded up to bytes."""
    return 8 * -(-max(cfg.qk_bits, cfg.v_bits) // 8)


def out_lane_width(cfg: HDPConfig) -> int:
    """Bits per element lane of ``m_axis.tdata``: ``out_bits`` rounded up to bytes."""
    return 8 * -(-cfg.out_bits // 8)


def in_row_layout(cfg: HDPConfig) -> data.ArrayLayout:
    """One ``s_axis`` beat: a K, Q or V row, ``head_dim`` sign-extended lanes (element 0 in the
    low lane).  The top reads the low ``qk_bits`` (K, Q) or ``v_bits`` (V) of each lane."""
    return data.ArrayLayout(signed(in_lane_width(cfg)), cfg.head_dim)


def out_row_layout(cfg: HDPConfig) -> data.ArrayLayout:
    """One ``m_axis`` beat: an output row, ``head_dim`` sign-extended ``out_bits`` values
    (``out_frac`` fraction bits)."""
    return data.ArrayLayout(signed(out_lane_width(cfg)), cfg.head_dim)


def register_map(cfg: HDPConfig) -> list[Reg]:
    """The AXI4-Lite register map (byte addresses; reset values from the configuration)."""
    return [
        Reg("mode", 0x00, 2, True, PRUNE_MODES.index(cfg.prune_mode)),
        Reg("approx", 0x04, 1, True, APPROX_MODES.index(cfg.approx)),
        Reg("causal", 0x08, 1, True, int(cfg.causal)),
        Reg("head_prune", 0x0C, 1, True, int(cfg.head_prune)),
        Reg("k_b", 0x10, cfg.k_b_width, True, cfg.k_b),
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
        # keep mask of block-row mask_sel of the last head (bit c = block column c kept),
        # ceil(n_block_cols / 32) words from 0x100
        Reg("mask_data", 0x100, cfg.n_block_cols, False),
    ]


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
        (index in ``APPROX_MODES``), ``causal``, ``head_prune``, ``k_b``, ``rho_q``,
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

    1. *load*: the ``3L`` input rows go into the K, Q, V memories at full rate (one row per
       cycle).  In a pruned head K rows also go into the :class:`~hw.score_unit.ScoreUnit`,
       which reads the Q rows from the Q memory through a feeder at its own pace (one block
       per cycle: one block-row per ``ceil(L / b_c)`` cycles), so the integer pass runs
       during and after the Q and V loads without ever holding the input stream.  Its blocks go to the
       :class:`~hw.block_pruner.BlockPruner` (keep masks into a memory, one word per
       block-row); ``H`` goes to the :class:`~hw.head_detector.HeadDetector`.  The integer
       pass's ``A`` is not stored (that would take ``N^2`` words): the array forms the whole
       score of every kept entry in the same ``head_dim`` steps, ``S = acc``.
       A dense head runs no integer pass: the score unit, pruner and head detector stay
       idle, the ``3L`` rows load at full rate (one per cycle), every valid block is kept
       (golden's block validity: ``c b_c < L``, and ``c b_c <= `` the block-row's last query
       when causal).
    2. A pruned head outputs ``L`` zero rows; it costs no array cycle.
    3. Otherwise the ``L`` query rows are cut into *row groups* of ``R = array_rows`` rows,
       and three stages run concurrently on successive groups:

       * **S** (score): the group's Q rows (registers) and its block-rows' masks (dense: the
         block validity, no waiting); the key
         columns kept by ANY of the group's block-rows (the union of their masks; exactly one
         block-row when ``array_rows == block_rows``, the co-design rule; with more rows per
         tile than per block a tile carries the union, which is correct but skips less) are
         gathered ``C`` at a time into score tiles of ``R x C`` scores, depth ``head_dim``.  A
         pruned block column is never issued, so pruned blocks cost no array cycle.
       * **M** (softmax): each row of the group through the
         :class:`~hw.softmax_unit.SoftmaxUnit`, feeding only the gathered entries with
         ``S = acc`` and keep = the row's own block-row mask
         & causal ``j <= i``
         (entries of the union that the row's own mask prunes cost one softmax cycle and
         give p = 0).  The softmax streams one entry per cycle.
       * **P** (P x V): tiles of ``R`` rows x ``C`` output dimensions, depth = the gathered
         keys only; requantized (:func:`golden.pv.requantize`: round half up, saturate) into
         an output buffer and sent.

       S and P share the array tile by tile (P first).  Keys are banked three ways, fine
       scores, probabilities and the S -> M hand-off two ways; S starts group ``g`` when M has
       finished ``g - 2`` and P ``g - 3``, M starts ``g`` when S has finished it and P has
       finished ``g - 2``, P starts ``g`` when M has finished it.

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
        from .block_pruner import BlockPruner
        from .head_detector import HeadDetector
        from .score_unit import ScoreUnit
        from .softmax_unit import SoftmaxUnit
        from .systolic import SystolicArray, array_widths

        cfg = self._cfg
        m = Module()
        N, D = cfg.seq_len, cfg.head_dim
        R, C = cfg.array_rows, cfg.array_cols
        br, bc = cfg.block_rows, cfg.block_cols
        nbr, nbc = cfg.n_block_rows, cfg.n_block_cols
        F = cfg.qk_frac
        iw = unsigned_width(N)                     # 0 .. N
        cw = unsigned_width(max(nbc - 1, 1))
        rbw = unsigned_width(max(nbr - 1, 1))
        rw = unsigned_width(R)
        nu = -(-D // C)                            # P x V tiles (output dims) per row group
        n_words = -(-N // C)                       # score tiles per row group, at most
        idxw = max(unsigned_width(n_words), unsigned_width(nu))
        tagw = idxw + 2                            # tile index, bank, kind (0 score, 1 P x V)

        # ---------------------------------------------------------------- registers
        m.submodules.regs = regs = AxiLiteRegs(self._regs, addr_width=REG_ADDR_WIDTH)
        wiring.connect(m, wiring.flipped(self.s_axil), regs.s_axil)

        # run-time values, sampled at the start of a head
        r_mode = Signal(2)
        r_approx = Signal()
        r_causal = Signal()
        r_hprune = Signal()
        r_kb = Signal(cfg.k_b_width)
        r_rho = Signal(cfg.rho_frac + 1)
        r_tau = Signal(cfg.h_width)
        L = Signal(iw)
        drop_ff = Signal()
        m.d.comb += drop_ff.eq(r_approx == APPROX_MODES.index("drop_ff"))
        # dense head (the baseline): no pruning, no head pruning.  No integer pass: the array
        # forms the whole score, every valid block is kept.
        dense = Signal()
        m.d.comb += dense.eq((r_mode == PRUNE_MODES.index("off")) & ~r_hprune)

        def valid_cols(rb):
            """Block columns of block-row ``rb`` holding a valid entry (golden's block
            validity): ``c b_c < L`` and, causal, ``c b_c <= rb b_r + b_r - 1``."""
            row_hi = rb * br + (br - 1)
            # column 0: no comparison with 0 (Verilator lints a constant unsigned compare)
            return Cat(L != 0, *[(c * bc < L) & (~r_causal | (c * bc <= row_hi))
                                 for c in range(1, nbc)])

        busy = Signal()
        done = Signal()
        head_kept = Signal()
        cyc = Signal(32)
        arr_cyc = Signal(32)
        st_cycles = Signal(32)
        st_arr = Signal(32)
        head_imp = Signal(cfg.h_width)
        kept_keys = Signal(32)
        st_kept = Signal(32)
        heads_done = Signal(32)
        m.d.comb += [
            regs.status.eq(Cat(busy, done, head_kept)),
            regs.cycles.eq(st_cycles),
            regs.array_cycles.eq(st_arr),
            regs.head_imp.eq(head_imp),
            regs.kept_keys.eq(st_kept),
            regs.heads_done.eq(heads_done),
        ]

        # ---------------------------------------------------------------- memories
        row_qk = data.ArrayLayout(signed(cfg.qk_bits), D)
        row_v = data.ArrayLayout(signed(cfg.v_bits), D)
        m.submodules.kmem = kmem = Memory(shape=row_qk, depth=N, init=[])
        m.submodules.qmem = qmem = Memory(shape=row_qk, depth=N, init=[])
        m.submodules.vmem = vmem = Memory(shape=row_v, depth=N, init=[])
        k_wr, q_wr, v_wr = kmem.write_port(), qmem.write_port(), vmem.write_port()
        k_rd, q_rd, v_rd = kmem.read_port(), qmem.read_port(), vmem.read_port()
        m.submodules.maskmem = maskmem = Memory(shape=unsigned(nbc), depth=nbr, init=[])
        mask_wr, mask_rd = maskmem.write_port(), maskmem.read_port()
        mask_rd_reg = maskmem.read_port()
        # a dense head writes no masks: its keep mask is the block validity
        m.d.comb += [mask_rd_reg.addr.eq(regs.mask_sel),
                     regs.mask_data.eq(Mux(dense, valid_cols(regs.mask_sel), mask_rd_reg.data))]
        key_layout = data.StructLayout({"j": unsigned(iw), "c": unsigned(cw)})
        # gathered keys: three banks (the score stage writes group g while the softmax stage
        # reads g - 1 and the P x V stage g - 2)
        m.submodules.keymem = keymem = Memory(shape=key_layout, depth=3 * N, init=[])
        key_wr = keymem.write_port()
        key_rd_sm = keymem.read_port()
        key_rd_pv = keymem.read_port()
        m.submodules.finemem = finemem = Memory(
            shape=data.ArrayLayout(signed(array_widths(cfg).acc), R * C), depth=2 * n_words,
            init=[])
        fine_wr = finemem.write_port(granularity=C)
        fine_rd = finemem.read_port()
        prob_wr, prob_rd = [], []
        for r in range(R):
            pm = Memory(shape=unsigned(cfg.prob_width), depth=2 * N, init=[])
            m.submodules[f"probmem_{r}"] = pm
            prob_wr.append(pm.write_port())
            prob_rd.append(pm.read_port())

        # ---------------------------------------------------------------- units
        m.submodules.score = sc = ScoreUnit(cfg)
        m.submodules.pruner = pr = BlockPruner(cfg)
        m.submodules.headdet = hd = HeadDetector(cfg)
        m.submodules.softmax = sm = SoftmaxUnit(cfg)
        m.submodules.array = arr = SystolicArray(cfg, tag_width=tagw)
        m.d.comb += [
            sc.valid_len.eq(L), sc.causal.eq(r_causal),
            pr.mode.eq(r_mode), pr.k_b.eq(r_kb), pr.rho_q.eq(r_rho), pr.valid_len.eq(L),
            hd.head_prune.eq(r_hprune), hd.tau_head.eq(r_tau),
        ]
        # blocks -> pruner (their A is not kept: the array forms the whole score)
        blk, imp = sc.blk_out.payload, pr.imp_in.payload
        m.d.comb += [
            pr.imp_in.valid.eq(sc.blk_out.valid),
            sc.blk_out.ready.eq(pr.imp_in.ready),
            imp.imp.eq(blk.imp), imp.valid.eq(blk.valid), imp.row.eq(blk.row),
            imp.col.eq(blk.col), imp.last_col.eq(blk.last_col), imp.last.eq(blk.last),
        ]
        wiring.connect(m, sc.h_out, hd.h_in)
        masks_done = Signal()
        keep_done = Signal()
        m.d.comb += [
            pr.mask_out.ready.eq(1),
            mask_wr.addr.eq(pr.mask_out.payload.row),
            mask_wr.data.eq(pr.mask_out.payload.mask),
            mask_wr.en.eq(pr.mask_out.valid),
            hd.keep_out.ready.eq(1),
        ]
        mask_rows = Signal(rbw + 2)      # block-row masks received for this head
        with m.If(pr.mask_out.valid):
            m.d.sync += mask_rows.eq(mask_rows + 1)
        with m.If(pr.mask_out.valid & pr.mask_out.payload.last):
            m.d.sync += masks_done.eq(1)
        with m.If(hd.keep_out.valid):
            m.d.sync += [keep_done.eq(1), head_kept.eq(hd.keep_out.payload)]
        with m.If(sc.h_out.valid & sc.h_out.ready):
            m.d.sync += head_imp.eq(sc.h_out.payload)

        # ================================================================ pipeline overview
        # Row groups flow through three stages that run concurrently on different groups:
        #   S (score): Q rows and masks of group g, gathered keys, score tiles on the array;
        #   M (softmax): the group's rows through the SoftmaxUnit, probabilities to a bank;
        #   P (P x V): P x V tiles on the array, requantize, send the rows.
        # S and P share the array, tile by tile (P first).  Buffers between the stages are
        # banked by group: keys 3 banks (S writes g, M reads g-1, P reads g-2), fine scores,
        # probabilities and the S->M group information 2 banks.  Start rules (group counters
        # s_g, m_g, p_g = groups each stage has finished):
        #   S starts s_g when s_g <= m_g + 1 and s_g <= p_g + 2;
        #   M starts m_g when m_g < s_g and m_g <= p_g + 1;  P starts p_g when p_g < m_g.
        gw = unsigned_width(-(-N // R) + 3)
        s_g, m_g, p_g = Signal(gw), Signal(gw), Signal(gw)
        s_b2, m_b2, p_b2 = Signal(), Signal(), Signal()
        s_b3, m_b3, p_b3 = Signal(2), Signal(2), Signal(2)

        def bump3(b):
            return Mux(b == 2, 0, b + 1)

        # ---------------------------------------------------------------- control state
        ld_row = Signal(iw)
        ld_sec = Signal(2)
        run = Signal()                   # the stages may work (head kept, integer pass done)

        # S stage
        s_i0 = Signal(iw + 1)            # first query row of S's group
        p_rb = Signal(rbw + 1)           # block-row and offset of row p_i
        p_off = Signal(range(br))
        p_i = Signal(range(N + R + 1))   # query row whose Q row and mask are being read
        p_r = Signal(rw + 1)
        p_vld = Signal()                 # a read was issued last cycle ...
        p_vr = Signal(rw)                # ... for group row p_vr
        p_vin = Signal()                 # ... which is < L
        p_vrb = Signal(rbw + 1)
        qreg = [Signal(row_qk, name=f"qreg_{r}") for r in range(R)]
        kreg = [Signal(row_qk, name=f"kreg_{c}") for c in range(C)]
        kload = [Signal(row_qk, name=f"kload_{c}") for c in range(C)]   # next tile's K rows

        def group_info(prefix):
            return {"rowmask": [Signal(nbc, name=f"{prefix}_rowmask_{r}") for r in range(R)],
                    "nkept": Signal(iw, name=f"{prefix}_nkept"),
                    "i0": Signal(iw + 1, name=f"{prefix}_i0"),
                    "nrows": Signal(rw, name=f"{prefix}_nrows")}

        def copy_info(dst, src, keys=("rowmask", "nkept", "i0", "nrows")):
            stmts = []
            for key in keys:
                if isinstance(dst[key], list):
                    stmts += [a.eq(b) for a, b in zip(dst[key], src[key])]
                else:
                    stmts.append(dst[key].eq(src[key]))
            return stmts

        si = group_info("s")                               # S's group
        banks = [group_info(f"bank{b}") for b in range(2)]  # S -> M hand-off
        mi = group_info("m")                               # M's group
        hi_ = group_info("h")                              # M -> P hand-off (nkept, i0, nrows)
        pi_ = group_info("p")                              # P's group
        small = ("nkept", "i0", "nrows")

        # key iterator over the union of the group's masks
        it_rem = Signal(nbc)
        it_valid = Signal()
        it_j = Signal(iw)
        it_c = Signal(cw)
        it_off = Signal(range(bc))
        it_step = Signal()
        lsb_idx = Signal(cw)
        for c in reversed(range(nbc)):
            with m.If(it_rem[c]):
                m.d.comb += lsb_idx.eq(c)
        with m.If(it_step):
            with m.If(it_valid & (it_off + 1 < bc) & (it_j + 1 < L)):
                m.d.sync += [it_j.eq(it_j + 1), it_off.eq(it_off + 1)]
            with m.Elif(it_rem != 0):
                m.d.sync += [it_valid.eq(1), it_c.eq(lsb_idx), it_j.eq(lsb_idx * bc),
                             it_off.eq(0), it_rem.eq(it_rem & ~(Const(1, nbc) << lsb_idx))]
            with m.Else():
                m.d.sync += it_valid.eq(0)

        n_kept = si["nkept"]
        slot = Signal(range(C + 1))
        kl_vld = Signal()            # K read issued last cycle into slot kl_slot
        kl_slot = Signal(range(C))
        kl_zero = Signal()
        kl_full = Signal()           # kload holds a complete tile
        keys_done = Signal()         # every gathered key of the group has been loaded
        running = Signal()           # a score tile runs from kreg (S requests the array)
        tile = Signal(range(n_words + 1))
        step = Signal(range(D + 1))
        step_last = Signal()                 # step == D - 1, registered (off the array's ready)
        s_out = Signal(range(n_words + 2))   # score tiles issued, results not all back
        p_out = Signal(range(nu + 2))        # P x V tiles issued, results not all back

        # M stage: softmax feeder (stage 0 issue, 1 key read, 2 A/fine read) and collector
        f_active = Signal()
        f_r = Signal(rw)
        f_p = Signal(iw)
        f_word = Signal(range(n_words + 1))
        f_lane = Signal(range(C))
        s1_valid, s1_r, s1_p = Signal(), Signal(rw), Signal(iw)
        s1_word, s1_lane = Signal(range(n_words + 1)), Signal(range(C))
        s2_valid, s2_r, s2_p, s2_lane = Signal(), Signal(rw), Signal(iw), Signal(range(C))
        s2_key = Signal(key_layout)
        c_r = Signal(rw + 1)
        c_p = Signal(iw)

        # P stage: P x V feeder (stage 0 issue, 1 key read, 2 V/prob read)
        pv_active = Signal()
        u = Signal(range(nu + 1))
        t = Signal(iw)
        q1_valid, q1_t, q1_u = Signal(), Signal(iw), Signal(range(nu + 1))
        q2_valid, q2_last, q2_u = Signal(), Signal(), Signal(range(nu + 1))
        out_buf = [[Signal(signed(cfg.out_bits), name=f"out_{r}_{e}") for e in range(D)]
                   for r in range(R)]
        o_r = Signal(rw)
        z_cnt = Signal(iw)

        # ---------------------------------------------------------------- input stream
        tin = data.View(in_row_layout(cfg), self.s_axis.tdata)
        for e in range(D):
            m.d.comb += [k_wr.data[e].eq(tin[e]), q_wr.data[e].eq(tin[e]),
                         v_wr.data[e].eq(tin[e]),
                         sc.k_in.payload[e].eq(tin[e])]
        m.d.comb += [k_wr.addr.eq(ld_row), q_wr.addr.eq(ld_row), v_wr.addr.eq(ld_row)]
        loading = Signal()
        in_fire = Signal()
        m.d.comb += [
            # a dense head does not feed the score unit: K and Q load at full rate
            sc.k_in.valid.eq(loading & ~dense & (ld_sec == 0) & self.s_axis.tvalid),
            # Q and V rows load at full rate; the integer pass reads Q from the Q memory
            self.s_axis.tready.eq(loading & ((ld_sec != 0) | dense | sc.k_in.ready)),
            in_fire.eq(self.s_axis.tvalid & self.s_axis.tready),
            k_wr.en.eq(in_fire & (ld_sec == 0)),
            q_wr.en.eq(in_fire & (ld_sec == 1)),
            v_wr.en.eq(in_fire & (ld_sec == 2)),
        ]

        # ---------------------------------------------------------------- Q feeder
        # the integer pass takes Q rows from the Q memory at its own pace (a second read
        # port), so the input stream never waits for it: row i is readable once written
        q_rd_sc = qmem.read_port()
        qf_i = Signal(iw)                # next Q row to read for the score unit
        qf_v = Signal()                  # q_rd_sc.data holds row qf_i - 1 for the score unit
        q_avail = Signal(iw)             # Q rows written so far
        qf_adv = Signal()
        m.d.comb += [
            q_avail.eq(Mux(ld_sec == 1, ld_row, Mux(ld_sec == 0, 0, L))),
            qf_adv.eq(~qf_v | sc.q_in.ready),
            q_rd_sc.addr.eq(qf_i), q_rd_sc.en.eq(qf_adv),
            sc.q_in.valid.eq(qf_v),
        ]
        for e in range(D):
            m.d.comb += sc.q_in.payload[e].eq(q_rd_sc.data[e])
        with m.If(qf_adv):
            m.d.sync += qf_v.eq(~dense & (qf_i < q_avail))
            with m.If(~dense & (qf_i < q_avail)):
                m.d.sync += qf_i.eq(qf_i + 1)

        # ---------------------------------------------------------------- output stream
        tout = data.View(out_row_layout(cfg), self.m_axis.tdata)
        sending = Signal()
        zeroing = Signal()
        # out_buf shifts up one row per sent beat, so the port reads row 0 through a plain
        # assignment (no multiplexer process that Icarus might never evaluate, see below)
        for e in range(D):
            m.d.comb += tout[e].eq(Mux(zeroing, 0, out_buf[0][e]))
        m.d.comb += [
            self.m_axis.tvalid.eq(sending | zeroing),
            self.m_axis.tlast.eq(Mux(zeroing, z_cnt + 1 == L, pi_["i0"] + o_r + 1 == L)),
        ]
        out_fire = Signal()
        m.d.comb += out_fire.eq(self.m_axis.tvalid & self.m_axis.tready)

        # ---------------------------------------------------------------- array arbitration
        op = arr.op_in.payload
        s_req = Signal()                 # S has a score beat ready (S in TILE_RUN)
        owner = Signal(2)                # 0 free, 1 S, 2 P: a tile owns the array to its end
        grant_s, grant_p = Signal(), Signal()
        m.d.comb += [
            grant_p.eq((owner == 2) | ((owner == 0) & q2_valid)),
            grant_s.eq((owner == 1) | ((owner == 0) & ~q2_valid & s_req)),
            # plain assignments, not under an If: see the note at the end of elaborate
            arr.op_in.valid.eq((grant_s & s_req) | (grant_p & q2_valid)),
        ]
        op_fire = Signal()
        s_fire, p_fire = Signal(), Signal()
        m.d.comb += [op_fire.eq(arr.op_in.valid & arr.op_in.ready),
                     s_fire.eq(op_fire & grant_s), p_fire.eq(op_fire & grant_p)]
        with m.If(op_fire):
            m.d.sync += owner.eq(Mux(op.last, 0, Mux(grant_s, 1, 2)))
        with m.If(grant_s):
            for r in range(R):
                qv = qreg[r][0].as_unsigned()
                m.d.comb += [op.a0[r].eq(qv[F:].as_signed()),
                             op.a1[r].eq(qv[:F] if F else 0)]
            for c in range(C):
                kv = kreg[c][0].as_unsigned()
                k_i = kv[F:].as_signed()
                # b0 = k_q, so (q_I k_q << F) + q_F b1 is the whole score: q_q . k_q, or
                # (A << 2F) + 2^F X with b1 = k_I << F (drop_ff)
                m.d.comb += [op.b0[c].eq(kv.as_signed()),
                             op.b1[c].eq(Mux(drop_ff, k_i << F, kv.as_signed()))]
            m.d.comb += [op.last.eq(step_last),
                         op.tag.eq(Cat(tile.as_unsigned() | Const(0, idxw), s_b2, Const(0, 1)))]
        with m.Else():
            for r in range(R):
                m.d.comb += [op.a0[r].eq(0), op.a1[r].eq(prob_rd[r].data)]
            for c in range(C):
                vsel = Array(v_rd.data[k * C + c] if k * C + c < D else Const(0, cfg.v_bits)
                             for k in range(nu))
                m.d.comb += [op.b0[c].eq(0), op.b1[c].eq(vsel[q2_u])]
            m.d.comb += [op.last.eq(q2_last),
                         op.tag.eq(Cat(q2_u.as_unsigned() | Const(0, idxw), Const(0, 1),
                                       Const(1, 1)))]
        with m.If(busy & op_fire):
            m.d.sync += arr_cyc.eq(arr_cyc + 1)

        # ---------------------------------------------------------------- array output
        res = arr.res_out.payload
        res_idx = res.tag[:idxw]
        res_bank = res.tag[idxw]
        res_kind = res.tag[idxw + 1]
        m.d.comb += [arr.res_out.ready.eq(1),
                     fine_wr.addr.eq(res_idx + Mux(res_bank, n_words, 0))]
        for r in range(R):
            for c in range(C):
                m.d.comb += fine_wr.data[r * C + c].eq(res.acc[c])
            m.d.comb += fine_wr.en[r].eq(arr.res_out.valid & ~res_kind & (res.row == r))
        sh = cfg.out_shift
        lo, hi = cfg.out_range

        def requant(x):
            """golden.pv.requantize: round half up, saturate."""
            y = (x + (1 << (sh - 1))) >> sh if sh > 0 else x << (-sh)
            return Mux(y > hi, hi, Mux(y < lo, lo, y))

        with m.If(arr.res_out.valid & res_kind):
            for k in range(nu):
                with m.If(res_idx == k):
                    for r in range(R):
                        with m.If(res.row == r):
                            for c in range(C):
                                if k * C + c < D:
                                    m.d.sync += out_buf[r][k * C + c].eq(requant(res.acc[c]))
        res_last = Signal()
        m.d.comb += res_last.eq(arr.res_out.valid & res.last)
        m.d.sync += [
            s_out.eq(s_out + (s_fire & op.last) - (res_last & ~res_kind)),
            p_out.eq(p_out + (p_fire & op.last) - (res_last & res_kind)),
        ]

        # ---------------------------------------------------------------- M: softmax feeding
        advance = Signal()
        m.d.comb += advance.eq(~s2_valid | sm.s_in.ready)
        m.d.comb += [key_rd_sm.addr.eq(f_p + m_b3 * N), key_rd_sm.en.eq(advance)]
        key1 = key_rd_sm.data
        m.d.comb += [
            fine_rd.addr.eq(s1_word + Mux(m_b2, n_words, 0)), fine_rd.en.eq(advance),
        ]
        with m.If(advance):
            m.d.sync += [s1_valid.eq(f_active), s1_r.eq(f_r), s1_p.eq(f_p), s1_word.eq(f_word),
                         s1_lane.eq(f_lane),
                         s2_valid.eq(s1_valid), s2_r.eq(s1_r), s2_p.eq(s1_p), s2_lane.eq(s1_lane),
                         s2_key.eq(key1)]
            with m.If(f_active):
                with m.If(f_p + 1 == mi["nkept"]):
                    m.d.sync += [f_p.eq(0), f_word.eq(0), f_lane.eq(0), f_r.eq(f_r + 1)]
                    with m.If(f_r + 1 == mi["nrows"]):
                        m.d.sync += f_active.eq(0)
                with m.Else():
                    m.d.sync += f_p.eq(f_p + 1)
                    with m.If(f_lane == C - 1):
                        m.d.sync += [f_lane.eq(0), f_word.eq(f_word + 1)]
                    with m.Else():
                        m.d.sync += f_lane.eq(f_lane + 1)
        s2_i = Signal(iw + 1)
        m.d.comb += s2_i.eq(mi["i0"] + s2_r)
        fine_val = fine_rd.data[s2_r * C + s2_lane]
        own = Array(mi["rowmask"])[s2_r]
        m.d.comb += [
            sm.s_in.valid.eq(s2_valid),
            sm.s_in.payload.s.eq(fine_val),
            sm.s_in.payload.keep.eq(own.bit_select(s2_key.c, 1)
                                    & (~r_causal | (s2_key.j <= s2_i))),
            sm.s_in.payload.last.eq(s2_p + 1 == mi["nkept"]),
            sm.p_out.ready.eq(1),
        ]
        for r in range(R):
            m.d.comb += [prob_wr[r].addr.eq(c_p + Mux(m_b2, N, 0)),
                         prob_wr[r].data.eq(sm.p_out.payload.p),
                         prob_wr[r].en.eq(sm.p_out.valid & (c_r == r))]
        with m.If(sm.p_out.valid):
            with m.If(sm.p_out.payload.last):
                m.d.sync += [c_p.eq(0), c_r.eq(c_r + 1)]
            with m.Else():
                m.d.sync += c_p.eq(c_p + 1)

        # ---------------------------------------------------------------- P: P x V feeding
        pv_adv = Signal()
        m.d.comb += pv_adv.eq(~q2_valid | p_fire)
        m.d.comb += [key_rd_pv.addr.eq(t + p_b3 * N), key_rd_pv.en.eq(pv_adv),
                     v_rd.addr.eq(key_rd_pv.data.j), v_rd.en.eq(pv_adv)]
        for r in range(R):
            m.d.comb += [prob_rd[r].addr.eq(q1_t + Mux(p_b2, N, 0)), prob_rd[r].en.eq(pv_adv)]
        with m.If(pv_adv):
            m.d.sync += [q1_valid.eq(pv_active), q1_t.eq(t), q1_u.eq(u),
                         q2_valid.eq(q1_valid), q2_last.eq(q1_t + 1 == pi_["nkept"]),
                         q2_u.eq(q1_u)]
            with m.If(pv_active):
                with m.If(t + 1 == pi_["nkept"]):
                    m.d.sync += [t.eq(0), u.eq(u + 1)]
                    with m.If(u + 1 == nu):
                        m.d.sync += pv_active.eq(0)
                with m.Else():
                    m.d.sync += t.eq(t + 1)

        # ---------------------------------------------------------------- S: loading registers
        m.d.comb += [q_rd.addr.eq(p_i), mask_rd.addr.eq(p_rb), k_rd.addr.eq(it_j)]
        m.d.comb += [key_wr.data.j.eq(it_j), key_wr.data.c.eq(it_c), key_wr.addr.eq(n_kept + s_b3 * N)]
        with m.If(kl_vld):
            for c in range(C):
                with m.If(kl_slot == c):
                    m.d.sync += kload[c].eq(Mux(kl_zero, 0, k_rd.data))
        with m.If(p_vld):
            for r in range(R):
                with m.If(p_vr == r):
                    m.d.sync += [
                        qreg[r].eq(Mux(p_vin, q_rd.data, 0)),
                        si["rowmask"][r].eq(Mux(p_vin, Mux(dense, valid_cols(p_vrb),
                                                           mask_rd.data), 0)),
                    ]
        m.d.sync += [p_vld.eq(0), kl_vld.eq(0)]

        with m.If(busy):
            m.d.sync += cyc.eq(cyc + 1)

        # ---------------------------------------------------------------- S stage
        with m.FSM(name="s_fsm"):
            with m.State("IDLE"):
                with m.If(run & (s_i0 < L) & (s_g <= m_g + 1) & (s_g <= p_g + 2)):
                    m.d.sync += [p_r.eq(0), si["i0"].eq(s_i0),
                                 si["nrows"].eq(Mux(L - s_i0 < R, L - s_i0, R))]
                    m.next = "PREP"
            with m.State("PREP"):
                # read the group's Q rows and their block-rows' masks, one row per cycle; a
                # row waits for its block-row's mask (S overlaps the integer pass), except in
                # a dense head (no masks: every valid block is kept)
                with m.If((p_r < R) & ((p_i >= L) | dense | (p_rb < mask_rows))):
                    m.d.sync += [p_vld.eq(1), p_vr.eq(p_r), p_vin.eq(p_i < L),
                                 p_vrb.eq(p_rb),
                                 p_r.eq(p_r + 1), p_i.eq(p_i + 1)]
                    with m.If(p_off == br - 1):
                        m.d.sync += [p_off.eq(0), p_rb.eq(p_rb + 1)]
                    with m.Else():
                        m.d.sync += p_off.eq(p_off + 1)
                with m.Elif(p_r == R):
                    m.next = "UNION"
            with m.State("UNION"):
                u_acc = Const(0, nbc)
                for r in range(R):
                    u_acc = u_acc | si["rowmask"][r]
                m.d.sync += [it_rem.eq(u_acc), it_valid.eq(0), n_kept.eq(0), tile.eq(0)]
                m.next = "IT_INIT"
            with m.State("IT_INIT"):
                m.d.comb += it_step.eq(1)
                m.d.sync += [slot.eq(0), kl_full.eq(0), keys_done.eq(0), running.eq(0)]
                m.next = "TILES"
            with m.State("TILES"):
                # loader: gathers the next tile's C keys into kload (one per cycle) while the
                # current tile runs from kreg, so tiles follow each other without a bubble
                with m.If(~kl_full & ~keys_done):
                    with m.If((slot == 0) & ~it_valid):
                        m.d.sync += keys_done.eq(1)
                    with m.Elif(slot < C):
                        m.d.comb += [key_wr.en.eq(it_valid), it_step.eq(it_valid)]
                        m.d.sync += [kl_vld.eq(1), kl_slot.eq(slot), kl_zero.eq(~it_valid),
                                     slot.eq(slot + 1)]
                        with m.If(it_valid):
                            m.d.sync += n_kept.eq(n_kept + 1)
                    with m.Elif(~kl_vld):
                        m.d.sync += [kl_full.eq(1), slot.eq(0)]
                # runner: one tile of D depth steps on the array
                tile_end = Signal()
                m.d.comb += tile_end.eq(s_fire & step_last)
                with m.If(running & s_fire):
                    # rotate Q rows, shift K rows: element 0 is the current depth step
                    for r in range(R):
                        qv = qreg[r].as_value()
                        m.d.sync += qreg[r].eq(Cat(qv[cfg.qk_bits:], qv[:cfg.qk_bits]))
                    for c in range(C):
                        m.d.sync += kreg[c].eq(kreg[c].as_value() >> cfg.qk_bits)
                    m.d.sync += [step.eq(step + 1), step_last.eq(step + 2 == D)]
                    with m.If(tile_end):
                        m.d.sync += [tile.eq(tile + 1), running.eq(0)]
                with m.If((~running | tile_end) & kl_full):
                    m.d.sync += [kreg[c].eq(kload[c]) for c in range(C)]
                    m.d.sync += [kl_full.eq(0), running.eq(1), step.eq(0), step_last.eq(D == 1)]
                with m.If(~running & ~kl_full & keys_done):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                # every score of the group is in the fine-score bank: hand the group to M
                with m.If((s_out == 0) & ~(s_fire & op.last)):
                    for b in range(2):
                        with m.If(s_b2 == b):
                            m.d.sync += copy_info(banks[b], si)
                    m.d.sync += [s_g.eq(s_g + 1), s_b2.eq(~s_b2), s_b3.eq(bump3(s_b3)),
                                 s_i0.eq(s_i0 + R), kept_keys.eq(kept_keys + n_kept)]
                    m.next = "IDLE"

        # ---------------------------------------------------------------- M stage
        with m.FSM(name="m_fsm"):
            with m.State("IDLE"):
                with m.If(run & (m_g < s_g) & (m_g <= p_g + 1)):
                    for b in range(2):
                        with m.If(m_b2 == b):
                            m.d.sync += copy_info(mi, banks[b])
                    m.d.sync += [f_active.eq(1), f_r.eq(0), f_p.eq(0), f_word.eq(0),
                                 f_lane.eq(0), c_r.eq(0), c_p.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(c_r == mi["nrows"]):
                    m.d.sync += copy_info(hi_, mi, small)
                    m.d.sync += [m_g.eq(m_g + 1), m_b2.eq(~m_b2), m_b3.eq(bump3(m_b3))]
                    m.next = "IDLE"

        # ---------------------------------------------------------------- P stage
        with m.FSM(name="p_fsm") as p_fsm:
            with m.State("IDLE"):
                with m.If(run & (p_g < m_g)):
                    m.d.sync += copy_info(pi_, hi_, small)
                    m.d.sync += [u.eq(0), t.eq(0), pv_active.eq(1)]
                    m.next = "PV"
            with m.State("PV"):
                with m.If(~pv_active & ~q1_valid & ~q2_valid & (p_out == 0)
                          & ~(p_fire & op.last)):
                    m.d.sync += o_r.eq(0)
                    m.next = "SEND"
            with m.State("SEND"):
                with m.If(out_fire):
                    m.d.sync += o_r.eq(o_r + 1)
                    for r in range(R - 1):
                        m.d.sync += [out_buf[r][e].eq(out_buf[r + 1][e]) for e in range(D)]
                    with m.If(o_r + 1 == pi_["nrows"]):
                        m.d.sync += [p_g.eq(p_g + 1), p_b2.eq(~p_b2), p_b3.eq(bump3(p_b3))]
                        m.next = "IDLE"

        # ---------------------------------------------------------------- head sequencer
        with m.FSM(name="top_fsm") as fsm:
            with m.State("IDLE"):
                with m.If(self.s_axis.tvalid):
                    m.d.sync += [
                        r_mode.eq(regs.mode), r_approx.eq(regs.approx), r_causal.eq(regs.causal),
                        r_hprune.eq(regs.head_prune), r_kb.eq(regs.k_b), r_rho.eq(regs.rho_q),
                        r_tau.eq(regs.tau_head), L.eq(regs.valid_len),
                        busy.eq(1), done.eq(0), cyc.eq(0), arr_cyc.eq(0), kept_keys.eq(0),
                        head_kept.eq(1), masks_done.eq(0), keep_done.eq(0), mask_rows.eq(0),
                        ld_row.eq(0), ld_sec.eq(0), qf_i.eq(0),
                    ]
                    with m.If((regs.mode == PRUNE_MODES.index("off")) & ~regs.head_prune):
                        m.d.sync += head_imp.eq(0)      # dense: no integer pass, no H
                    m.next = "LOAD"
            with m.State("LOAD"):
                with m.If(in_fire):
                    with m.If(ld_row + 1 == L):
                        m.d.sync += [ld_row.eq(0), ld_sec.eq(ld_sec + 1)]
                        with m.If(ld_sec == 2):
                            m.next = "INT_WAIT"
                    with m.Else():
                        m.d.sync += ld_row.eq(ld_row + 1)
            with m.State("INT_WAIT"):
                m.d.sync += [s_g.eq(0), m_g.eq(0), p_g.eq(0), s_b2.eq(0), m_b2.eq(0),
                             p_b2.eq(0), s_b3.eq(0), m_b3.eq(0), p_b3.eq(0), s_i0.eq(0),
                             p_rb.eq(0), p_off.eq(0), p_i.eq(0)]
                # without head pruning the head is kept: start at once, S follows the masks
                # as the pruner delivers them (the integer pass overlaps the array work)
                with m.If(~r_hprune):
                    m.next = "RUN"
                with m.Elif(masks_done & keep_done):
                    with m.If(head_kept):
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
                with m.If(p_fsm.ongoing("SEND") & out_fire & (o_r + 1 == pi_["nrows"])
                          & (pi_["i0"] + R >= L)):
                    m.next = "FINISH"
            with m.State("FINISH"):
                # the score unit and head detector have finished this head too (a dense head
                # never used them)
                with m.If(dense | (masks_done & keep_done)):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.sync += [busy.eq(0), done.eq(1), st_cycles.eq(cyc), st_arr.eq(arr_cyc),
                             st_kept.eq(kept_keys), heads_done.eq(heads_done + 1)]
                m.next = "IDLE"
        # Plain assignments (continuous `assign`s in Verilog), not statements inside states or
        # Ifs: Icarus never evaluates a combinational `always @*` whose inputs keep their
        # time-0 values, and these drive the ports and the array (whose credit counter an X
        # valid would poison) while the state machines still sit in IDLE after reset.
        m.d.comb += [loading.eq(fsm.ongoing("LOAD")), zeroing.eq(fsm.ongoing("ZERO")),
                     run.eq(fsm.ongoing("RUN")), s_req.eq(running),
                     sending.eq(p_fsm.ongoing("SEND"))]
        return m


def register_values(cfg: HDPConfig, valid_len: int | None = None) -> dict[str, int]:
    """The writable register values that make the top run ``cfg``'s run-time settings (what a
    driver writes before a head)."""
    return {
        "mode": PRUNE_MODES.index(cfg.prune_mode),
        "approx": APPROX_MODES.index(cfg.approx),
        "causal": int(cfg.causal),
        "head_prune": int(cfg.head_prune),
        "k_b": cfg.k_b,
        "rho_q": cfg.rho_q,
        "tau_head": cfg.tau_head,
        "valid_len": cfg.seq_len if valid_len is None else int(valid_len),
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
