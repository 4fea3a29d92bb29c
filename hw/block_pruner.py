"""Block pruner: the per-block-row keep mask in the ``off``, ``topk`` and ``threshold`` modes.

Golden twin: :func:`golden.pruner.diagonal_blocks`, :func:`golden.pruner.topk_keep`,
:func:`golden.pruner.threshold_keep` and :func:`golden.pruner.block_keep`.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import K_FRAC_BITS, PRUNE_MODES, HDPConfig, signed_width, unsigned_width

__all__ = ["BlockPruner", "imp_layout", "mask_layout", "index_width", "mask_latency", "MODE_WIDTH",
           "MODE_OFF", "MODE_TOPK", "MODE_THRESHOLD"]

MODE_OFF = PRUNE_MODES.index("off")
MODE_TOPK = PRUNE_MODES.index("topk")
MODE_THRESHOLD = PRUNE_MODES.index("threshold")
#: Width of the run-time ``mode`` port (code = index in :data:`hw.config.PRUNE_MODES`).
MODE_WIDTH = unsigned_width(len(PRUNE_MODES) - 1)


def index_width(n: int) -> int:
    """Unsigned width of an index in ``[0, n)`` (at least 1 bit)."""
    return max(1, (n - 1).bit_length())


def mask_latency(mode: str, n_cols: int) -> int:
    """Cycles from the handshake of a block-row's last beat to its mask on ``mask_out`` (always
    ready), for a block-row of ``n_cols`` blocks in pruning ``mode``: 6 in ``off``,
    ``n_cols + 5`` in ``topk`` and ``threshold`` (input registers R, stage A, J for ``n_cols``
    items, P1, P2, P3, output register O).  The cycle models read it from here (measured in
    ``tests/test_block_pruner.py``)."""
    return 6 if mode == "off" else n_cols + 5


def imp_layout(cfg: HDPConfig) -> data.StructLayout:
    """Payload of :attr:`BlockPruner.imp_in`: one block of the score matrix.

    ``imp`` (signed ``importance_width``) is the block importance (0 for invalid blocks, as
    golden computes it), ``valid`` says whether the block holds a valid entry, ``row``/``col``
    are the block coordinates, ``last_col`` marks the last block of a block-row and ``last`` the
    last block of the head."""
    return data.StructLayout({
        "imp": signed(cfg.importance_width),
        "valid": unsigned(1),
        "row": unsigned(index_width(cfg.n_block_rows)),
        "col": unsigned(index_width(cfg.n_block_cols)),
        "last_col": unsigned(1),
        "last": unsigned(1),
    })


def mask_layout(cfg: HDPConfig) -> data.StructLayout:
    """Payload of :attr:`BlockPruner.mask_out`: one block-row's keep mask (bit ``c`` keeps
    block column ``c``; columns beyond the row's blocks are 0), its ``row`` and ``last`` (last
    block-row of the head)."""
    return data.StructLayout({
        "mask": unsigned(cfg.n_block_cols),
        "row": unsigned(index_width(cfg.n_block_rows)),
        "last": unsigned(1),
    })


class BlockPruner(wiring.Component):
    """Row-balanced block pruning: one keep mask per block-row.

    Golden twin: :func:`golden.pruner.block_keep` (with :func:`~golden.pruner.diagonal_blocks`,
    :func:`~golden.pruner.topk_keep`, :func:`~golden.pruner.threshold_keep`), bit-exact.

    Parameters
    ----------
    cfg : HDPConfig
        Elaboration limits: ``seq_len``, block shape, ``importance_width``, ``rho_frac``,
        ``threshold_width``.  The run-time settings come from the ports below.

    Ports
    -----
    imp_in : In(stream.Signature(imp_layout(cfg)))
        One beat per block in row-major block order, block-rows ``r < ceil(L / b_r)`` and block
        columns ``c < ceil(L / b_c)`` with ``L = valid_len``; ``last_col`` (or ``last``) ends a
        block-row.  Columns of a block-row arrive in increasing order.
    mask_out : Out(stream.Signature(mask_layout(cfg)))
        One beat per block-row, in order.
    mode : In(MODE_WIDTH)
        Index in :data:`hw.config.PRUNE_MODES`: 0 ``off`` (every valid block), 1 ``topk``,
        2 ``threshold``; code 3 behaves as ``off``.
    k_frac_q : In(cfg.k_frac_width)
        ``topk`` budget: the fraction ``k_frac_q / 2**8`` of each block-row's valid blocks is
        kept, diagonal blocks included (``k_row = ceil(k_frac_q * n_valid / 2**8)``, golden
        :func:`~golden.pruner.row_budget`); 0 keeps only the diagonal blocks, codes above
        ``2**8`` keep every valid block.
    rho_q : In(cfg.rho_frac + 1)
        ``rho`` with ``P = rho_frac`` fraction bits, in ``[0, 2**P]``; larger codes (``rho > 1``,
        outside :class:`~hw.config.HDPConfig`'s range) are treated as ``2**P``.
    valid_len : In(cfg.valid_len_width)
        Run-time sequence length ``L`` in ``[1, seq_len]``; decides the diagonal blocks.

    ``valid_len`` and ``k_frac_q`` are sampled with every accepted beat; ``mode`` and ``rho_q``
    with the last beat of every block-row.  Keep them stable from a head's first beat to its last beat
    (they may change as soon as the last beat of a head is accepted).

    Rules
    -----
    * Diagonal blocks of block-row ``r``: columns ``c`` whose keys ``[c*b_c, (c+1)*b_c)`` meet
      the row's valid queries ``[r*b_r, min((r+1)*b_r, L))`` (golden ``i // b_c`` for every
      valid query ``i``; with ``b_r != b_c`` a block-row can have several).  Computed inside
      from ``row``, ``col`` and ``valid_len`` with constant multiplications only.  Kept in every
      mode when valid; invalid blocks are never kept.
    * ``topk``: the diagonal blocks plus the ``k_row - n_diag`` other valid blocks of largest
      importance, ``k_row = ceil(k_frac_q * n_valid / 2**8)`` for the row's ``n_valid`` valid
      blocks.  **Ties keep the lower column index**: a sorted insertion register of
      ``n_block_cols`` slots (importance, column) holds the non-diagonal valid blocks in
      decreasing importance; a new block goes behind every slot whose importance is ``>=``
      its own, and columns arrive in increasing order, so equal importances stay in column
      order (the stable sort of the golden model).  Slot ``s`` is kept when
      ``s + n_diag < k_row``, i.e. ``(s + n_diag) * 2**8 < sum of k_frac_q`` over the row's
      valid blocks (``n_diag`` and the sum accumulated as the row streams in; no multiplier,
      no division).
    * ``threshold``: block ``c`` is kept when
      ``I * n * 2**P >= rho_q * max * n + (2**P - rho_q) * sum`` over the ``n`` valid blocks of
      the row, in exact integers (no division, no rounding), or when it is diagonal.  Both sides
      are ``threshold_width`` (= :attr:`HDPConfig.threshold_width`) bits: with
      ``M = max|I| * n_block_cols * 2**P``, ``|I * n * 2**P| <= M``,
      ``|rho_q * max * n| <= M``, ``|(2**P - rho_q) * sum| <= M`` and the right side is a convex
      mix of ``n * max`` and ``sum`` scaled by ``2**P``, so ``|rhs| <= M``
      (``tests/test_block_pruner.py`` checks the extremes).
    * ``off``: every valid block.

    Architecture, latency and throughput
    ------------------------------------
    The input stage is a two-entry skid buffer: an accepted beat goes into register R (stage
    A's operand) or, while R is held, into the skid register K; the diagonal test and the
    settings (``rho_q`` clamped, and ``2**P - rho_q``) are computed at the handshake and travel
    with the beat.  Stage A takes R's beat: it inserts the block into the sorter, writes
    ``(imp, valid)`` into one bank of a two-bank row buffer (``lib.memory.Memory``, depth
    ``2 * 2**index_width(n_block_cols)``) and accumulates ``n``, ``sum``, ``max``, the valid
    and diagonal masks.  The last beat of a block-row hands everything (the sorter's columns
    and occupancy included) to the job register J and clears stage A, which takes the next
    row's first beat in the very next cycle (double buffering).  J issues one item per cycle
    into a three-stage pipeline (P1: row-buffer read, ``rho_q * max`` and
    ``(2**P - rho_q) * sum``; P2: ``rho_q * max * n``; P3: ``I * n`` and the sum of the right
    side, then the comparison), which ORs the item's keep bit into the row's mask:

    * ``off``: one item carrying the valid mask;
    * ``topk``: one item per block column ``j``: sorter slot ``j`` (the snapshot shifts by one
      slot per item, so no wide decoder or multiplexer) is kept when ``j + n_diag < k_row``;
    * ``threshold``: one item per block column: row-buffer read, one ``I * n`` multiplier,
      one comparator.

    So a block-row of ``m = ceil(valid_len / b_c) <= n_block_cols`` blocks occupies J for
    exactly ``m`` cycles (1 in ``off``).  The mask leaves through the output register O, with a
    skid register S behind it that catches a finished mask while O waits.

    * Throughput: **one block per cycle, continuously across the block-rows of a head, in
      every mode** (a block-row of ``m`` blocks every ``m`` cycles) while ``mask_out`` is
      ready; also across heads unless a head's rows are shorter than the previous head's:
      then (``topk``, ``threshold``) the new head's first row end waits ``m_prev - m_new``
      cycles once.  Measured in ``tests/test_block_pruner.py`` and the cocotb bench.
    * Latency from the handshake of a block-row's last beat (cycle ``t``) to ``mask_out.valid``:
      6 cycles in ``off`` (valid in cycle ``t + 6``), ``m + 5`` cycles in ``topk`` and
      ``threshold`` (:func:`mask_latency`; one more than without the input registers).
    * Backpressure: a ``mask_out`` stall fills O, then S; J, P1, P2 and P3 hold only while S
      is full and P3 holds a finished row.  ``imp_in.ready`` is low while K is full (R holds
      a row's last beat waiting for J and one more beat came in) or while S is full.
    * Timing: ``imp_in.ready``, ``mask_out.valid`` and ``mask_out.payload`` come from
      flip-flops (``ready = ~K.valid & ~S.valid``) and no clock enable depends on a port
      combinationally (``mask_out.ready`` only steers O and S).  At most one multiplier
      between two registers, none after the row buffer's output.
    * Cost: ``n_block_cols`` sorter slots (importance, column, one ``>=`` comparator each),
      a ``2 x n_block_cols`` word row buffer, four multipliers (``rho*max*n`` (two),
      ``(2**P - rho)*sum``, ``I*n``), the R, K and S registers.
    """

    def __init__(self, cfg: HDPConfig):
        if not isinstance(cfg, HDPConfig):
            raise TypeError(f"cfg must be an HDPConfig, not {cfg!r}")
        self._cfg = cfg
        super().__init__({
            "imp_in": In(stream.Signature(imp_layout(cfg))),
            "mask_out": Out(stream.Signature(mask_layout(cfg))),
            "mode": In(MODE_WIDTH),
            "k_frac_q": In(cfg.k_frac_width),
            "rho_q": In(cfg.rho_frac + 1),
            "valid_len": In(cfg.valid_len_width),
        })

    @property
    def cfg(self) -> HDPConfig:
        return self._cfg

    @property
    def threshold_width(self) -> int:
        """Signed width of both sides of the threshold comparison."""
        return self._cfg.threshold_width

    # Hooks named so that tests can build deliberately broken variants by overriding them.
    def _sorts_before(self, slot_imp, new_imp):
        """True when a stored block stays ahead of a newly arriving (higher-column) one."""
        return slot_imp >= new_imp

    def _threshold_keeps(self, lhs, rhs):
        return lhs >= rhs

    def _within_budget(self, rank, kacc):
        """``rank < ceil(kacc / 2**8)`` (``kacc = k_frac_q * n_valid``), division free."""
        return Cat(Const(0, K_FRAC_BITS), rank) < kacc

    def elaborate(self, platform):
        m = Module()
        s = self._widths()
        self._input(m, s)
        self._stage_a(m, s)
        self._accumulators(m, s)
        self._job(m, s)
        self._pipeline(m, s)
        self._output(m, s)
        return m

    # The stages share their signals through the dict ``s`` (filled in stage order; the
    # signals are created as named locals so that they keep their names in the netlist).

    # ------------------------------------------------------------------------ widths
    def _widths(self):
        cfg = self._cfg
        nbc = cfg.n_block_cols
        p = cfg.rho_frac
        return {
            "nbc": nbc,
            "slots": nbc,
            "iw": cfg.importance_width,
            "cw": index_width(nbc),
            "nw": unsigned_width(nbc),
            "kw": unsigned_width(((1 << cfg.k_frac_width) - 1) * nbc),
            "sw": signed_width(*cfg.importance_row_sum_range),
            "tw": self.threshold_width,
            "p": p,
            "one": 1 << p,
        }

    # ------------------------------------------------------------------------ input stage
    def _input(self, m, s):
        cfg = self._cfg
        nbc, iw, cw, p, one = s["nbc"], s["iw"], s["cw"], s["p"], s["one"]
        br, bc = cfg.block_rows, cfg.block_cols
        # a two-entry skid buffer: the accepted beat goes into register R (stage A's operand)
        # or, while R is held, into the skid register K; imp_in.ready = ~K.valid comes straight
        # from a flip-flop.  The diagonal test and the settings are computed and sampled at the
        # handshake, so they travel with the beat.
        src = self.imp_in.payload
        elay = data.StructLayout({
            "imp": signed(iw), "valid": unsigned(1), "row": unsigned(len(src.row)),
            "col": unsigned(cw), "row_end": unsigned(1), "last": unsigned(1),
            "diag": unsigned(1), "mode": unsigned(MODE_WIDTH), "kq": unsigned(cfg.k_frac_width),
            "rho": unsigned(p + 1), "rho_inv": unsigned(p + 1),
        })
        # diagonal: key range [c*b_c, c*b_c + b_c) meets query range [r*b_r, min(r*b_r+b_r, L))
        row_lo = Signal(range(cfg.n_block_rows * br + 1))
        row_hi = Signal(range(cfg.n_block_rows * br + br + 1))
        col_lo = Signal(range(nbc * bc + 1))
        inc = Signal(elay)
        m.d.comb += [
            row_lo.eq(src.row * br),
            row_hi.eq(Mux(row_lo + br < self.valid_len, row_lo + br, self.valid_len)),
            col_lo.eq(src.col * bc),
            inc.imp.eq(src.imp), inc.valid.eq(src.valid), inc.row.eq(src.row),
            inc.col.eq(src.col), inc.row_end.eq(src.last_col | src.last), inc.last.eq(src.last),
            inc.diag.eq((col_lo < row_hi) & (col_lo + bc > row_lo)),
            inc.mode.eq(self.mode), inc.kq.eq(self.k_frac_q),
            inc.rho.eq(Mux(self.rho_q > one, one, self.rho_q)),
            inc.rho_inv.eq(Mux(self.rho_q > one, 0, one - self.rho_q)),
        ]
        r_valid = Signal()
        beat = Signal(elay)      # register R
        k_valid = Signal()
        k_beat = Signal(elay)    # register K
        in_acc = Signal()
        accept = Signal()        # stage A takes R this cycle
        j_free = Signal()        # driven by the job register J (see _job)
        s_valid = Signal()       # output skid register full (see the output register)
        in_ready = Signal()
        m.d.comb += [
            in_ready.eq(~k_valid & ~s_valid),
            self.imp_in.ready.eq(in_ready),
            in_acc.eq(self.imp_in.valid & in_ready),
            accept.eq(r_valid & (~beat.row_end | j_free)),
        ]
        with m.If(accept | ~r_valid):
            m.d.sync += [r_valid.eq(k_valid | in_acc), beat.eq(Mux(k_valid, k_beat, inc)),
                         k_valid.eq(0)]
        with m.Elif(in_acc):
            m.d.sync += [k_valid.eq(1), k_beat.eq(inc)]
        s.update(beat=beat, accept=accept, j_free=j_free, s_valid=s_valid)

    # ------------------------------------------------------------------------ stage A: sorter
    def _stage_a(self, m, s):
        nbc, slots, iw, cw = s["nbc"], s["slots"], s["iw"], s["cw"]
        beat = s["beat"]
        blk_diag = Signal()
        cand = Signal()
        onehot = Signal(nbc)
        m.d.comb += [blk_diag.eq(beat.valid & beat.diag),
                     cand.eq(beat.valid & ~beat.diag),
                     onehot.eq(Const(1, nbc) << beat.col)]

        # sorted insertion register (top-k candidates, decreasing importance)
        s_occ = Signal(slots)
        s_imp = [Signal(signed(iw), name=f"sort_imp_{i}") for i in range(slots)]
        s_col = [Signal(cw, name=f"sort_col_{i}") for i in range(slots)]
        a_occ = Signal(slots)  # after inserting this beat (when it is a candidate)
        a_imp = [Signal(signed(iw), name=f"sort_ins_imp_{i}") for i in range(slots)]
        a_col = [Signal(cw, name=f"sort_ins_col_{i}") for i in range(slots)]
        ge = Signal(slots)
        for i in range(slots):
            m.d.comb += ge[i].eq(s_occ[i] & self._sorts_before(s_imp[i], beat.imp))
        for i in range(slots):
            with m.If(~cand | ge[i]):
                m.d.comb += [a_occ[i].eq(s_occ[i]), a_imp[i].eq(s_imp[i]), a_col[i].eq(s_col[i])]
            if i == 0:
                with m.Else():
                    m.d.comb += [a_occ[i].eq(1), a_imp[i].eq(beat.imp), a_col[i].eq(beat.col)]
            else:
                with m.Elif(ge[i - 1]):
                    m.d.comb += [a_occ[i].eq(1), a_imp[i].eq(beat.imp), a_col[i].eq(beat.col)]
                with m.Else():
                    m.d.comb += [a_occ[i].eq(s_occ[i - 1]), a_imp[i].eq(s_imp[i - 1]),
                                 a_col[i].eq(s_col[i - 1])]
        s.update(blk_diag=blk_diag, onehot=onehot, s_occ=s_occ, s_imp=s_imp, s_col=s_col,
                 a_occ=a_occ, a_imp=a_imp, a_col=a_col)

    # ------------------------------------------------------------------------ stage A: row
    def _accumulators(self, m, s):
        nbc, iw, cw, nw, sw, kw = s["nbc"], s["iw"], s["cw"], s["nw"], s["sw"], s["kw"]
        beat, accept, blk_diag, onehot = s["beat"], s["accept"], s["blk_diag"], s["onehot"]
        # row accumulators (kacc: k_frac_q summed over the valid blocks = k_frac_q * n_valid)
        kacc = Signal(kw)
        a_kacc = Signal(kw)
        vmask = Signal(nbc)
        dmask = Signal(nbc)
        ndiag = Signal(nw)
        cnt = Signal(nw)
        tot = Signal(signed(sw))
        mx = Signal(signed(iw))
        a_vmask = Signal(nbc)
        a_dmask = Signal(nbc)
        a_ndiag = Signal(nw)
        a_cnt = Signal(nw)
        a_tot = Signal(signed(sw))
        a_mx = Signal(signed(iw))
        m.d.comb += [
            a_vmask.eq(vmask | Mux(beat.valid, onehot, 0)),
            a_dmask.eq(dmask | Mux(blk_diag, onehot, 0)),
            a_ndiag.eq(ndiag + blk_diag),
            a_cnt.eq(cnt + beat.valid),
            a_kacc.eq(kacc + Mux(beat.valid, beat.kq, 0)),
            a_tot.eq(tot + Mux(beat.valid, beat.imp, 0)),
            a_mx.eq(Mux(beat.valid & ((cnt == 0) | (beat.imp > mx)), beat.imp, mx)),
        ]

        # two-bank row buffer for the threshold pass
        blay = data.StructLayout({"imp": signed(iw), "valid": unsigned(1)})
        m.submodules.row_buf = buf = Memory(shape=blay, depth=2 << cw, init=[])
        wp = buf.write_port()
        rp = buf.read_port(domain="sync")
        wbank = Signal()
        m.d.comb += [wp.addr.eq(Cat(beat.col, wbank)), wp.data.imp.eq(beat.imp),
                     wp.data.valid.eq(beat.valid), wp.en.eq(accept)]
        s.update(vmask=vmask, dmask=dmask, ndiag=ndiag, cnt=cnt, tot=tot, mx=mx, kacc=kacc,
                 a_kacc=a_kacc, a_vmask=a_vmask, a_dmask=a_dmask, a_ndiag=a_ndiag, a_cnt=a_cnt, a_tot=a_tot,
                 a_mx=a_mx, rp=rp, wbank=wbank)

    # ------------------------------------------------------------------------ job register J
    def _job(self, m, s):
        nbc, slots, iw, cw, nw, sw = s["nbc"], s["slots"], s["iw"], s["cw"], s["nw"], s["sw"]
        tw, p = s["tw"], s["p"]
        beat, accept, j_free = s["beat"], s["accept"], s["j_free"]
        row_end = beat.row_end
        s_occ, s_imp, s_col = s["s_occ"], s["s_imp"], s["s_col"]
        a_occ, a_imp, a_col = s["a_occ"], s["a_imp"], s["a_col"]
        vmask, dmask, ndiag, cnt, tot, mx = (s[k] for k in ("vmask", "dmask", "ndiag", "cnt",
                                                             "tot", "mx"))
        a_vmask, a_dmask, a_ndiag, a_cnt, a_tot, a_mx = (
            s[k] for k in ("a_vmask", "a_dmask", "a_ndiag", "a_cnt", "a_tot", "a_mx"))
        wbank = s["wbank"]

        j_valid = Signal()
        j_mode = Signal(MODE_WIDTH)
        j_kacc = Signal(s["kw"])   # k_frac_q * n_valid: the budget is ceil(j_kacc / 2**8)
        j_rho = Signal(p + 1)
        j_rho_inv = Signal(p + 1)
        j_ndiag = Signal(nw)
        j_occ = Signal(slots)
        j_col = [Signal(cw, name=f"job_col_{i}") for i in range(slots)]
        j_vmask = Signal(nbc)
        j_dmask = Signal(nbc)
        j_cnt = Signal(nw)
        j_tot = Signal(signed(sw))
        j_mx = Signal(signed(iw))
        j_lastc = Signal(cw)
        j_ic = Signal(cw)
        j_bank = Signal()
        j_row = Signal(len(beat.row))
        j_last = Signal()

        j_thr = Signal()
        j_last_item = Signal()   # registered: the item J offers now is its row's last
        adv = Signal()           # driven by the output register (see _output)
        m.d.comb += [
            j_thr.eq(j_mode == MODE_THRESHOLD),
            j_free.eq(~j_valid | (adv & j_last_item)),
        ]

        with m.If(accept):
            with m.If(row_end):
                m.d.sync += [
                    s_occ.eq(0), vmask.eq(0), dmask.eq(0), ndiag.eq(0), cnt.eq(0), tot.eq(0),
                    mx.eq(0), s["kacc"].eq(0), wbank.eq(~wbank),
                    j_valid.eq(1), j_mode.eq(beat.mode), j_kacc.eq(s["a_kacc"]),
                    j_rho.eq(beat.rho), j_rho_inv.eq(beat.rho_inv), j_ndiag.eq(a_ndiag), j_occ.eq(a_occ),
                    j_last_item.eq(((beat.mode != MODE_TOPK) & (beat.mode != MODE_THRESHOLD))
                                   | (beat.col == 0)),
                    j_vmask.eq(a_vmask), j_dmask.eq(a_dmask), j_cnt.eq(a_cnt), j_tot.eq(a_tot),
                    j_mx.eq(a_mx), j_lastc.eq(beat.col), j_ic.eq(0), j_bank.eq(wbank),
                    j_row.eq(beat.row), j_last.eq(beat.last),
                ]
                m.d.sync += [j_col[i].eq(a_col[i]) for i in range(slots)]
            with m.Else():
                m.d.sync += [s_occ.eq(a_occ), vmask.eq(a_vmask), dmask.eq(a_dmask),
                             ndiag.eq(a_ndiag), cnt.eq(a_cnt), tot.eq(a_tot), mx.eq(a_mx),
                             s["kacc"].eq(s["a_kacc"])]
            m.d.sync += [s_imp[i].eq(a_imp[i]) for i in range(slots)]
            m.d.sync += [s_col[i].eq(a_col[i]) for i in range(slots)]
        with m.If(~(accept & row_end) & adv & j_valid):
            with m.If(j_last_item):
                m.d.sync += j_valid.eq(0)
            with m.Else():
                m.d.sync += [j_ic.eq(j_ic + 1), j_last_item.eq(j_ic + 1 == j_lastc)]
            # the sorter snapshot shifts by one slot per item: slot j_ic is always at index 0
            m.d.sync += j_occ.eq(j_occ >> 1)
            m.d.sync += [j_col[i].eq(j_col[i + 1]) for i in range(slots - 1)]

        # top-k item: sorter slot j_ic is kept when j_ic + n_diag < k_row = ceil(kacc / 2**8),
        # i.e. when (j_ic + n_diag) * 2**8 < kacc
        j_topk = Signal()
        j_topk_keep = Signal()
        j_rank = Signal(nw + 1)
        m.d.comb += [j_topk.eq(j_mode == MODE_TOPK), j_rank.eq(j_ic + j_ndiag),
                     j_topk_keep.eq(j_topk & j_occ[0] & self._within_budget(j_rank, j_kacc))]

        base = Signal(nbc)  # diagonal blocks (topk, threshold) or every valid block (off)
        m.d.comb += base.eq(Mux(j_topk | j_thr, j_dmask, j_vmask))

        # right side of the threshold rule, in threshold_width bits (see the class docstring),
        # one multiplier per stage: P1 holds rho_q * max and (2**P - rho_q) * sum, P2 the sum
        # (rho_q clamped to 2**P and 2**P - rho_q are computed at the input)
        rho_max = Signal(signed(p + 1 + iw))
        t_sum = Signal(signed(tw))
        m.d.comb += [rho_max.eq(j_rho * j_mx), t_sum.eq(j_rho_inv * j_tot)]
        s.update(j_valid=j_valid, j_col=j_col, j_cnt=j_cnt, j_ic=j_ic, j_bank=j_bank,
                 j_row=j_row, j_last=j_last, j_thr=j_thr, j_last_item=j_last_item, adv=adv,
                 j_topk=j_topk, j_topk_keep=j_topk_keep, base=base, rho_max=rho_max,
                 t_sum=t_sum)

    # ------------------------------------------------------------------------ P1, P2, P3
    def _pipeline(self, m, s):
        nbc, iw, cw, nw, tw, p = s["nbc"], s["iw"], s["cw"], s["nw"], s["tw"], s["p"]
        beat, rp, adv = s["beat"], s["rp"], s["adv"]
        j_valid, j_col, j_cnt, j_ic, j_bank, j_row, j_last = (
            s[k] for k in ("j_valid", "j_col", "j_cnt", "j_ic", "j_bank", "j_row", "j_last"))
        j_thr, j_last_item, j_topk, j_topk_keep = (
            s[k] for k in ("j_thr", "j_last_item", "j_topk", "j_topk_keep"))
        base, rho_max, t_sum = s["base"], s["rho_max"], s["t_sum"]

        # ---------------------------------------------------------------- P1: row-buffer read
        # (at most one multiplier between two registers, none after the row buffer's output:
        # the read plus a multiplier plus a wide comparator in one cycle, or two chained
        # multipliers, limited Fmax to 49-71 MHz on ECP5)
        p1_valid = Signal()
        p1_col = Signal(cw)
        p1_last_item = Signal()
        p1_thr = Signal()
        p1_topk_keep = Signal()
        p1_cnt = Signal(nw)
        p1_rho_max = Signal(signed(p + 1 + iw))
        p1_t_sum = Signal(signed(tw))
        p1_base = Signal(nbc)
        p1_row = Signal(len(beat.row))
        p1_last = Signal()
        m.d.comb += [rp.addr.eq(Cat(j_ic, j_bank)), rp.en.eq(adv)]
        with m.If(adv):
            m.d.sync += [p1_valid.eq(j_valid), p1_col.eq(Mux(j_topk, j_col[0], j_ic)),
                         p1_last_item.eq(j_last_item), p1_thr.eq(j_thr),
                         p1_topk_keep.eq(j_topk_keep), p1_cnt.eq(j_cnt),
                         p1_rho_max.eq(rho_max), p1_t_sum.eq(t_sum),
                         p1_base.eq(base), p1_row.eq(j_row), p1_last.eq(j_last)]

        # ---------------------------------------------------------------- P2: register the read
        p2_valid = Signal()
        p2_col = Signal(cw)
        p2_last_item = Signal()
        p2_topk_keep = Signal()
        p2_thr_valid = Signal()  # threshold item of a valid block
        p2_imp = Signal(signed(iw))
        p2_cnt = Signal(nw)
        p2_t_max = Signal(signed(tw))
        p2_t_sum = Signal(signed(tw))
        p2_base = Signal(nbc)
        p2_row = Signal(len(beat.row))
        p2_last = Signal()
        with m.If(adv):
            m.d.sync += [p2_valid.eq(p1_valid), p2_col.eq(p1_col), p2_last_item.eq(p1_last_item),
                         p2_topk_keep.eq(p1_topk_keep), p2_thr_valid.eq(p1_thr & rp.data.valid),
                         p2_imp.eq(rp.data.imp), p2_cnt.eq(p1_cnt),
                         p2_t_max.eq(p1_rho_max * p1_cnt), p2_t_sum.eq(p1_t_sum),
                         p2_base.eq(p1_base), p2_row.eq(p1_row), p2_last.eq(p1_last)]

        # ---------------------------------------------------------------- P3: compare, OR
        p3_valid = Signal()
        p3_onehot = Signal(nbc)
        p3_last_item = Signal()
        p3_topk_keep = Signal()
        p3_thr_valid = Signal()
        p3_lhs = Signal(signed(tw))
        p3_rhs = Signal(signed(tw))
        p3_base = Signal(nbc)
        p3_row = Signal(len(beat.row))
        p3_last = Signal()
        with m.If(adv):
            m.d.sync += [p3_valid.eq(p2_valid), p3_onehot.eq(Const(1, nbc) << p2_col),
                         p3_last_item.eq(p2_last_item),
                         p3_topk_keep.eq(p2_topk_keep), p3_thr_valid.eq(p2_thr_valid),
                         p3_lhs.eq((p2_imp * p2_cnt) << p), p3_rhs.eq(p2_t_max + p2_t_sum),
                         p3_base.eq(p2_base), p3_row.eq(p2_row), p3_last.eq(p2_last)]

        keep_bit = Signal()
        bitvec = Signal(nbc)
        m.d.comb += [
            keep_bit.eq(p3_topk_keep | (p3_thr_valid & self._threshold_keeps(p3_lhs, p3_rhs))),
            bitvec.eq(Mux(keep_bit, p3_onehot, 0)),
        ]
        s.update(p3_valid=p3_valid, p3_onehot=p3_onehot, p3_last_item=p3_last_item,
                 p3_base=p3_base, p3_row=p3_row, p3_last=p3_last, keep_bit=keep_bit,
                 bitvec=bitvec)

    # ------------------------------------------------------------------------ output register
    def _output(self, m, s):
        nbc = s["nbc"]
        olay = mask_layout(self._cfg)
        s_valid, adv, keep_bit, bitvec = s["s_valid"], s["adv"], s["keep_bit"], s["bitvec"]
        p3_valid, p3_onehot, p3_last_item, p3_base, p3_row, p3_last = (
            s[k] for k in ("p3_valid", "p3_onehot", "p3_last_item", "p3_base", "p3_row",
                           "p3_last"))
        # O drives mask_out; the skid register S catches a finished mask while O waits, so the
        # pipeline's advance depends on flip-flops only (never on mask_out.ready)
        macc = Signal(nbc)
        o_valid = Signal()
        o_pay = Signal(olay)
        s_pay = Signal(olay)
        done = Signal()
        # O's next mask, written so that the comparison is one LUT away from O: the part known
        # from registers (S, or the row's bits so far) OR this item's bit when O takes it
        o_hold = Signal(nbc)
        o_hit = Signal(nbc)
        m.d.comb += [
            adv.eq(~(p3_valid & p3_last_item & s_valid)),
            done.eq(adv & p3_valid & p3_last_item),
            o_hold.eq(Mux(s_valid, s_pay.mask, macc | p3_base)),
            o_hit.eq(Mux(keep_bit & ~s_valid, p3_onehot, 0)),
            self.mask_out.valid.eq(o_valid),
            self.mask_out.payload.eq(o_pay),
        ]
        with m.If(adv & p3_valid):
            with m.If(p3_last_item):
                m.d.sync += macc.eq(0)
            with m.Else():
                m.d.sync += macc.eq(macc | bitvec)
        with m.If(~o_valid | self.mask_out.ready):
            # (done implies ~s_valid: the pipeline holds while S is full)
            m.d.sync += [o_valid.eq(s_valid | done), o_pay.mask.eq(o_hold | o_hit),
                         o_pay.row.eq(Mux(s_valid, s_pay.row, p3_row)),
                         o_pay.last.eq(Mux(s_valid, s_pay.last, p3_last)), s_valid.eq(0)]
        with m.Elif(done):
            m.d.sync += [s_valid.eq(1), s_pay.mask.eq(macc | p3_base | bitvec),
                         s_pay.row.eq(p3_row), s_pay.last.eq(p3_last)]
