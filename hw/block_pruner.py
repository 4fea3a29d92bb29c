"""Block pruner: the per-block-row keep mask in the ``off``, ``topk`` and ``threshold`` modes.

Golden twin: :func:`golden.pruner.diagonal_blocks`, :func:`golden.pruner.topk_keep`,
:func:`golden.pruner.threshold_keep` and :func:`golden.pruner.block_keep`.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import DSP_OPERAND_BITS, K_FRAC_BITS, PRUNE_MODES, HDPConfig, signed_width, unsigned_width
from .dsp import registered_product

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
    ready), for a block-row of ``n_cols`` blocks in pruning ``mode``: 8 in ``off``,
    ``n_cols + 7`` in ``topk`` and ``threshold`` (input registers I and R, stage A, J for
    ``n_cols`` items, P1, P2, P3, P4, output register O).  The cycle models read it from here
    (measured in ``tests/test_block_pruner.py``)."""
    return 8 if mode == "off" else n_cols + 7


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
      blocks.  **Ties keep the lower column index.**  No sorting: a candidate (valid,
      non-diagonal) block ``j`` is kept exactly when its *rank* (the number of candidates
      ``c`` ranked ahead of it: ``I_c > I_j``, or ``I_c == I_j`` and ``c < j``) is below
      ``need = k_row - n_diag``.  The ranks are distinct (0, 1, ... in the golden model's
      stable order), so this keeps the ``need`` first candidates of that order: the golden
      rule, bit for bit.  ``need`` is accumulated as the row streams in:
      ``(2**8 - 1 + sum of k_frac_q over the valid blocks - 2**8 * n_diag) >> 8`` (no
      multiplier, no division).
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
    The input stage is the input register I (the accepted beat as it came, with the settings
    sampled at the handshake) in front of a two-entry skid buffer: I's beat goes on into
    register R (stage A's operand) or, while R is held, into the skid register K; the diagonal
    test and the settings (``rho_q`` clamped, and ``2**P - rho_q``) are computed from I as the
    beat leaves it and travel with the beat (nothing follows the port's payload
    combinationally).  As a beat enters R it is written into bank A (one register per block
    column: the importance as an unsigned key, sign bit flipped) and into its row's bank of a
    two-bank row buffer (``lib.memory.Memory`` of ``(imp, valid, diag)``, depth
    ``2 * 2**index_width(n_block_cols)``).  Stage A takes R's beat and accumulates ``n``,
    ``sum``, ``max``, ``need``, the valid and diagonal masks.  The last beat of a block-row
    hands everything (bank A copied into bank J) to the job register J and clears stage A,
    which takes the next row's first beat in the very next cycle (double buffering).  J
    issues one item per cycle, block column ``j = 0, 1, ...``: the item's ``(imp, valid,
    diag)`` is a register loaded, for column 0, from a register that stage A fills as the
    row's first beat enters R, and for the other columns from the row buffer, which is read
    one item ahead (its output is J's next column, or column 1 of stage A's row, read again
    every cycle while that row is still arriving; the read port is transparent for the write
    port, so a column written in the same cycle is seen).  The item goes through a
    four-stage pipeline (P1: the item's ranks registered, ``rho_q * max`` and
    ``(2**P - rho_q) * sum``, the top-k rank count started; P2: ``rho_q * max * n`` and
    ``I * n``, the rank count finished and compared with ``need``; P3: the sum of the right
    side, ``I * n`` again (a register between the DSP and the comparator); P4: the keep bit,
    after the comparison), which ORs the item's keep bit into the row's mask:

    * ``off``: one item carrying the valid mask;
    * ``topk``: one item per block column ``j``: ``n_block_cols`` comparators in J compare the
      item's key with every block of bank J (``Cat(c < j, key_c) > Cat(0, key_j)``, the
      carry of one adder each: the tie-break is the comparison's low bit; the ``c < j`` bits
      are a thermometer register that shifts with the items), the candidates ahead of it are
      counted in P1 and P2 (a popcount: 4-bit groups in logic, then an adder tree) and
      ``rank < need`` keeps it;
    * ``threshold``: one item per block column: one ``I * n`` multiplier, one comparator.

    So a block-row of ``m = ceil(valid_len / b_c) <= n_block_cols`` blocks occupies J for
    exactly ``m`` cycles (1 in ``off``).  The mask leaves through the output register O, with a
    skid register S behind it that catches a finished mask while O waits.

    * Throughput: **one block per cycle, continuously across the block-rows of a head, in
      every mode** (a block-row of ``m`` blocks every ``m`` cycles) while ``mask_out`` is
      ready; also across heads unless a head's rows are shorter than the previous head's:
      then (``topk``, ``threshold``) the new head's first row end waits ``m_prev - m_new``
      cycles once.  Measured in ``tests/test_block_pruner.py`` and the cocotb bench.
    * Latency from the handshake of a block-row's last beat (cycle ``t``) to ``mask_out.valid``:
      8 cycles in ``off`` (valid in cycle ``t + 8``), ``m + 7`` cycles in ``topk`` and
      ``threshold`` (:func:`mask_latency`).
    * Backpressure: a ``mask_out`` stall fills O, then S; J and P1 to P4 hold only while S
      is full and P4 holds a finished row.  ``imp_in.ready`` is low while I is full and cannot
      move on: while K is full (R holds a row's last beat waiting for J and one more beat came
      in) or while S is full.
    * Timing: ``imp_in.ready``, ``mask_out.valid`` and ``mask_out.payload`` come from
      flip-flops (``ready = ~I.valid | (~K.valid & ~S.valid)``) and no clock enable depends
      on a port combinationally (``mask_out.ready`` only steers O and S).  At most one
      multiplier between two registers; the row buffer's output goes straight into J's item
      register; the threshold comparison only into P4's keep bit.
    * Cost: two banks of ``n_block_cols`` importance registers (A and J; written with clock
      enables only, no multiplexers), ``n_block_cols`` comparators of ``importance_width + 1``
      bits, one ``n_block_cols``-bit popcount, a ``2 x n_block_cols`` word row buffer, four
      multipliers (``rho*max*n`` (two), ``(2**P - rho)*sum``, ``I*n``), the I, R, K and S
      registers.
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
    def _ranks_ahead(self, u_other, u_item, lower):
        """True when a block (unsigned key ``u_other``) ranks ahead of the item (``u_item``):
        a larger importance, or an equal one in a lower column (``lower``), i.e.
        ``Cat(lower, u_other) > Cat(0, u_item)``, written as the carry of
        ``Cat(lower, u_other) + ~Cat(0, u_item)`` so that the inverted operand is the item's,
        shared by every comparator (a ``>`` maps to a subtraction that inverts each block's
        key in its own LUTs on ECP5)."""
        w = len(u_other) + 1
        return (Cat(lower, u_other) + ~Cat(Const(0, 1), u_item))[w]

    def _threshold_keeps(self, lhs, rhs):
        return lhs >= rhs

    #: ``need`` starts each row at this value: ``2**8 - 1`` rounds the budget up (ceil).
    BUDGET_BIAS = (1 << K_FRAC_BITS) - 1
    #: Adder levels of the rank count in P1 (the rest, and the budget comparison, in P2).
    RANK_LEVELS_P1 = 2

    def elaborate(self, platform):
        m = Module()
        s = self._widths()
        self._input(m, s)
        self._stage_a(m, s)
        self._accumulators(m, s)
        self._job(m, s)
        self._ranks(m, s)
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
        kmax = ((1 << cfg.k_frac_width) - 1) * nbc + self.BUDGET_BIAS
        return {
            "nbc": nbc,
            "iw": cfg.importance_width,
            "cw": index_width(nbc),
            "nw": unsigned_width(nbc),
            # need = bias + k_frac_q * n_valid - 2**8 * n_diag, and need >> 8 = k_row - n_diag
            "kw": signed_width(-(nbc << K_FRAC_BITS), kmax),
            "qw": signed_width(-nbc, kmax >> K_FRAC_BITS),
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
        # input register I: the accepted beat as it came, with the settings sampled at the
        # handshake; I moves on into a two-entry skid buffer: register R (stage A's operand)
        # or, while R is held, the skid register K.  imp_in.ready = ~I.valid | (~K.valid &
        # ~S.valid) is a function of flip-flops only, and nothing but I follows the port: the
        # diagonal test and the settings are computed from I as the beat moves on, so they
        # travel with the beat (the test straight from the port, through the row buffer's
        # write port, was the whole top's critical path).
        src = self.imp_in.payload
        ilay = data.StructLayout({
            "imp": signed(iw), "valid": unsigned(1), "row": unsigned(len(src.row)),
            "col": unsigned(cw), "row_end": unsigned(1), "last": unsigned(1),
            "mode": unsigned(MODE_WIDTH), "kq": unsigned(cfg.k_frac_width),
            "rho_q": unsigned(p + 1), "diag": unsigned(1),
        })
        elay = data.StructLayout({
            "imp": signed(iw), "valid": unsigned(1), "row": unsigned(len(src.row)),
            "col": unsigned(cw), "row_end": unsigned(1), "last": unsigned(1),
            "diag": unsigned(1), "mode": unsigned(MODE_WIDTH), "kq": unsigned(cfg.k_frac_width),
            "rho": unsigned(p + 1), "rho_inv": unsigned(p + 1),
        })
        i_valid = Signal()
        i_beat = Signal(ilay)    # register I
        i_take = Signal()        # I takes the port's beat (empty, or moving on)
        # diagonal: key range [c*b_c, c*b_c + b_c) meets query range [r*b_r, min(r*b_r+b_r, L)),
        # i.e. c*b_c < r*b_r + b_r, c*b_c < L and c*b_c + b_c > r*b_r: three comparisons side
        # by side (no minimum ahead of a comparison), computed from the port's beat into
        # register I (from I, the comparisons' carry chains and the route to the row
        # buffer's write data were the top's critical path, 8 ns of it routing)
        row_lo = Signal(range(cfg.n_block_rows * br + 1))
        col_lo = Signal(range(nbc * bc + 1))
        inc = Signal(elay)
        m.d.comb += [
            row_lo.eq(src.row * br),
            col_lo.eq(src.col * bc),
            inc.imp.eq(i_beat.imp), inc.valid.eq(i_beat.valid), inc.row.eq(i_beat.row),
            inc.col.eq(i_beat.col), inc.row_end.eq(i_beat.row_end), inc.last.eq(i_beat.last),
            inc.diag.eq(i_beat.diag),
            inc.mode.eq(i_beat.mode), inc.kq.eq(i_beat.kq),
            inc.rho.eq(Mux(i_beat.rho_q > one, one, i_beat.rho_q)),
            inc.rho_inv.eq(Mux(i_beat.rho_q > one, 0, one - i_beat.rho_q)),
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
        enter = Signal()         # a beat enters R this cycle ...
        ent = Signal(elay)       # ... this one
        m.d.comb += [
            in_ready.eq(~k_valid & ~s_valid),
            i_take.eq(~i_valid | in_ready),
            self.imp_in.ready.eq(i_take),
            in_acc.eq(i_valid & in_ready),
            accept.eq(r_valid & (~beat.row_end | j_free)),
            enter.eq((accept | ~r_valid) & (k_valid | in_acc)),
            ent.eq(Mux(k_valid, k_beat, inc)),
        ]
        with m.If(i_take):
            m.d.sync += [i_valid.eq(self.imp_in.valid), i_beat.imp.eq(src.imp),
                         i_beat.valid.eq(src.valid), i_beat.row.eq(src.row),
                         i_beat.col.eq(src.col), i_beat.row_end.eq(src.last_col | src.last),
                         i_beat.last.eq(src.last), i_beat.mode.eq(self.mode),
                         i_beat.kq.eq(self.k_frac_q), i_beat.rho_q.eq(self.rho_q),
                         i_beat.diag.eq((col_lo < row_lo + br) & (col_lo < self.valid_len)
                                        & (col_lo + bc > row_lo))]
        with m.If(accept | ~r_valid):
            m.d.sync += [r_valid.eq(k_valid | in_acc), beat.eq(ent), k_valid.eq(0)]
        with m.Elif(in_acc):
            m.d.sync += [k_valid.eq(1), k_beat.eq(inc)]
        s.update(beat=beat, accept=accept, j_free=j_free, s_valid=s_valid, enter=enter, ent=ent)

    # ------------------------------------------------------------------------ stage A: banks
    def _stage_a(self, m, s):
        nbc, iw = s["nbc"], s["iw"]
        beat, enter, ent = s["beat"], s["enter"], s["ent"]
        blk_diag = Signal()
        onehot = Signal(nbc)
        m.d.comb += [blk_diag.eq(beat.valid & beat.diag),
                     onehot.eq(Const(1, nbc) << beat.col)]
        # bank A: every block's importance as an unsigned key (sign bit flipped, so that the
        # unsigned order is the signed one), written as the beat enters R, so that the row's
        # last beat is in bank A by the time stage A hands the row to J
        ent_hot = Signal(nbc)
        m.d.comb += ent_hot.eq(Mux(enter, Const(1, nbc) << ent.col, 0))
        a_key = [Signal(iw, name=f"bank_a_{c}") for c in range(nbc)]
        ent_key = Signal(iw)
        m.d.comb += ent_key.eq(ent.imp.as_unsigned() ^ (1 << (iw - 1)))
        for c in range(nbc):
            with m.If(ent_hot[c]):
                m.d.sync += a_key[c].eq(ent_key)
        s.update(blk_diag=blk_diag, onehot=onehot, a_key=a_key)

    # ------------------------------------------------------------------------ stage A: row
    def _accumulators(self, m, s):
        nbc, iw, cw, nw, sw, kw = s["nbc"], s["iw"], s["cw"], s["nw"], s["sw"], s["kw"]
        beat, accept, blk_diag, onehot = s["beat"], s["accept"], s["blk_diag"], s["onehot"]
        enter, ent = s["enter"], s["ent"]
        # row accumulators; need = BUDGET_BIAS + k_frac_q * n_valid - 2**8 * n_diag, so that
        # need >> 8 = ceil(k_frac_q * n_valid / 2**8) - n_diag: the non-diagonal blocks to keep
        need = Signal(signed(kw), init=self.BUDGET_BIAS)
        a_need = Signal(signed(kw))
        vmask = Signal(nbc)
        dmask = Signal(nbc)
        cnt = Signal(nw)
        tot = Signal(signed(sw))
        mx = Signal(signed(iw))
        a_vmask = Signal(nbc)
        a_dmask = Signal(nbc)
        a_cnt = Signal(nw)
        a_tot = Signal(signed(sw))
        a_mx = Signal(signed(iw))
        step = Signal(signed(len(beat.kq) + 1))
        m.d.comb += [
            a_vmask.eq(vmask | Mux(beat.valid, onehot, 0)),
            a_dmask.eq(dmask | Mux(blk_diag, onehot, 0)),
            a_cnt.eq(cnt + beat.valid),
            step.eq(Mux(beat.valid, beat.kq - Mux(beat.diag, 1 << K_FRAC_BITS, 0), 0)),
            a_need.eq(need + step),
            a_tot.eq(tot + Mux(beat.valid, beat.imp, 0)),
            a_mx.eq(Mux(beat.valid & ((cnt == 0) | (beat.imp > mx)), beat.imp, mx)),
        ]

        # two-bank row buffer: J's items read it in column order, one item ahead (a beat is
        # written as it enters R, into the bank of its row)
        blay = data.StructLayout({"imp": signed(iw), "valid": unsigned(1), "diag": unsigned(1)})
        m.submodules.row_buf = buf = Memory(shape=blay, depth=2 << cw, init=[])
        wp = buf.write_port()
        rp = buf.read_port(domain="sync", transparent_for=[wp])
        wbank = Signal()
        ebank = Signal()
        m.d.comb += [ebank.eq(wbank ^ (accept & beat.row_end)),
                     wp.addr.eq(Cat(ent.col, ebank)), wp.data.imp.eq(ent.imp),
                     wp.data.valid.eq(ent.valid), wp.data.diag.eq(ent.diag), wp.en.eq(enter)]
        s.update(vmask=vmask, dmask=dmask, cnt=cnt, tot=tot, mx=mx, need=need, a_need=a_need,
                 a_vmask=a_vmask, a_dmask=a_dmask, a_cnt=a_cnt, a_tot=a_tot, a_mx=a_mx, rp=rp,
                 wbank=wbank, blay=blay)

    # ------------------------------------------------------------------------ job register J
    def _job(self, m, s):
        nbc, iw, cw, nw, sw = s["nbc"], s["iw"], s["cw"], s["nw"], s["sw"]
        p, qw = s["p"], s["qw"]
        beat, accept, j_free, rp = s["beat"], s["accept"], s["j_free"], s["rp"]
        row_end = beat.row_end
        vmask, dmask, cnt, tot, mx, need = (s[k] for k in ("vmask", "dmask", "cnt", "tot", "mx",
                                                           "need"))
        a_vmask, a_dmask, a_cnt, a_tot, a_mx, a_need = (
            s[k] for k in ("a_vmask", "a_dmask", "a_cnt", "a_tot", "a_mx", "a_need"))
        wbank, a_key = s["wbank"], s["a_key"]

        j_valid = Signal()
        j_mode = Signal(MODE_WIDTH)
        j_need = Signal(signed(qw))   # non-diagonal blocks to keep: k_row - n_diag
        j_rho = Signal(p + 1)
        j_key = [Signal(iw, name=f"bank_j_{c}") for c in range(nbc)]
        j_cand = Signal(nbc)          # valid non-diagonal blocks: the top-k candidates
        j_lt = Signal(nbc)            # bit c: column c < the item's column (the tie-break)
        j_vmask = Signal(nbc)
        j_dmask = Signal(nbc)
        j_cnt = Signal(nw)
        j_tot = Signal(signed(sw))
        j_mx = Signal(signed(iw))
        j_lastc = Signal(cw)
        j_ic = Signal(cw)
        # registered one item ahead, so that the row buffer's read address is a 2:1 choice of
        # registers (the compare j_ic + 1 == j_lastc on that address, through the read port's
        # transparency logic, was the whole top's critical path): j_pen = (j_ic + 1 ==
        # j_lastc), j_ic2 = j_ic + 2
        j_pen = Signal()
        j_ic2 = Signal(cw + 1)
        j_bank = Signal()
        j_row = Signal(len(beat.row))
        j_last = Signal()

        j_thr = Signal()
        j_last_item = Signal()   # registered: the item J offers now is its row's last
        adv = Signal()           # driven by the output register (see _output)
        load = Signal()
        step = Signal()          # J moves to the next item of its row
        # j_free = ~j_valid | (adv & j_last_item) is a register (jf), loaded with that function
        # of the registers' next states (see _output), so that accept, which enables about a
        # thousand flip-flops across the pruner, is one LUT from flip-flops: from j_valid
        # through adv, j_free and accept into J's next state was the whole top's critical
        # path at nextpnr seeds 1 and 2 (85.0 and 88.5 MHz, 9.3 to 9.8 ns of it routing)
        jf = Signal(init=1)
        j_valid_n = Signal()
        j_last_item_n = Signal()
        m.d.comb += [
            j_thr.eq(j_mode == MODE_THRESHOLD),
            j_free.eq(jf),
            load.eq(accept & row_end),
            # J on an item that is not its row's last is not free, so no row loads then:
            # step needs no ~load term (which put the whole accept chain in front of J's
            # next state: the whole top's critical path at nextpnr seed 1)
            step.eq(adv & j_valid & ~j_last_item),
            j_valid_n.eq(load | (j_valid & ~(adv & j_last_item))),
            j_last_item_n.eq(Mux(load, ((beat.mode != MODE_TOPK) & (beat.mode != MODE_THRESHOLD))
                                 | (beat.col == 0), Mux(step, j_pen, j_last_item))),
        ]
        m.d.sync += [j_valid.eq(j_valid_n), j_last_item.eq(j_last_item_n)]

        with m.If(accept):
            with m.If(row_end):
                m.d.sync += [
                    vmask.eq(0), dmask.eq(0), cnt.eq(0), tot.eq(0), mx.eq(0),
                    need.eq(self.BUDGET_BIAS), wbank.eq(~wbank),
                    j_mode.eq(beat.mode), j_need.eq(a_need >> K_FRAC_BITS),
                    j_rho.eq(beat.rho),
                    j_cand.eq(a_vmask & ~a_dmask), j_lt.eq(0),
                    j_vmask.eq(a_vmask), j_dmask.eq(a_dmask), j_cnt.eq(a_cnt), j_tot.eq(a_tot),
                    j_mx.eq(a_mx), j_lastc.eq(beat.col), j_ic.eq(0), j_bank.eq(wbank),
                    j_pen.eq(beat.col == 1), j_ic2.eq(2),
                    j_row.eq(beat.row), j_last.eq(beat.last),
                ]
                m.d.sync += [j_key[c].eq(a_key[c]) for c in range(nbc)]
            with m.Else():
                m.d.sync += [vmask.eq(a_vmask), dmask.eq(a_dmask), cnt.eq(a_cnt),
                             tot.eq(a_tot), mx.eq(a_mx), need.eq(a_need)]
        with m.If(step):
            m.d.sync += [j_ic.eq(j_ic + 1), j_pen.eq(j_ic2 == j_lastc), j_ic2.eq(j_ic2 + 1),
                         j_lt.eq(Cat(Const(1, 1), j_lt[:-1]))]

        # J's item (imp, valid, diag) is a register loaded at every item change: at a load from
        # a_first (column 0 of stage A's row, kept as it entered R), at a step from the row
        # buffer's output, which is read one item ahead of J: J's next column while J is on
        # an item before its row's penultimate one, else column 1 of stage A's row (read again
        # every cycle: that column may still be arriving; the read port is transparent for
        # the write port), held while J holds.  The read address is a 2:1 choice of registers
        # steered by ``step`` alone: it used to depend on ``load``, and R -> accept -> load
        # -> address was the whole top's critical path at nextpnr seed 2, 10 of 12 ns routing.
        j_item = Signal(s["blay"])
        a_first = Signal(s["blay"])
        nxt = Signal(cw + 1)
        m.d.comb += [nxt.eq(Mux(step & ~j_pen, Cat(j_ic2[:cw], j_bank), Cat(Const(1, cw), wbank))),
                     rp.addr.eq(nxt), rp.en.eq(step | ~j_valid | j_last_item)]
        ent = s["ent"]
        with m.If(s["enter"] & (ent.col == 0)):
            m.d.sync += [a_first.imp.eq(ent.imp), a_first.valid.eq(ent.valid),
                         a_first.diag.eq(ent.diag)]
        with m.If(load):
            m.d.sync += j_item.eq(a_first)
        with m.Elif(step):
            m.d.sync += j_item.eq(rp.data)

        base = Signal(nbc)  # diagonal blocks (topk, threshold) or every valid block (off)
        j_topk = Signal()
        m.d.comb += [j_topk.eq(j_mode == MODE_TOPK),
                     base.eq(Mux(j_topk | j_thr, j_dmask, j_vmask))]

        # right side of the threshold rule, in threshold_width bits (see the class docstring),
        # one multiplier per stage: P1 holds rho_q * max and (2**P - rho_q) * sum, P2 the sum
        # (rho_q clamped to 2**P and 2**P - rho_q are computed at the input)
        rho_max = Signal(signed(p + 1 + iw))
        m.d.comb += rho_max.eq(j_rho * j_mx)
        # (2**P - rho_q) * sum from copies of its operands loaded with J on threshold rows only
        # (kept apart from J's own registers, so they sit beside their DSPs), split by hand
        # into two products of at most 18 bits whose outputs are registered in P1 and added in
        # P2: Yosys's own split puts the partial-product adder right behind the DSPs, and
        # J -> DSP -> that adder was the whole top's critical path
        ts_split = min(DSP_OPERAND_BITS - 1, len(j_tot) - 1)
        m_tot = Signal.like(j_tot, name="thr_tot_m")
        m_rinv = Signal(p + 1, name="thr_rho_inv_m")
        with m.If(load & (beat.mode == MODE_THRESHOLD)):
            m.d.sync += [m_tot.eq(a_tot), m_rinv.eq(beat.rho_inv)]
        t_lo = Signal(len(m_rinv) + ts_split)
        t_hi = Signal(signed(len(m_rinv) + len(j_tot) - ts_split + 1))
        m.d.comb += [t_lo.eq(m_rinv * m_tot[:ts_split]),
                     t_hi.eq(m_rinv * m_tot[ts_split:].as_signed())]
        s.update(j_valid=j_valid, j_cnt=j_cnt, j_ic=j_ic, j_row=j_row, j_last=j_last,
                 j_thr=j_thr, j_last_item=j_last_item, adv=adv, j_topk=j_topk, base=base,
                 rho_max=rho_max, t_lo=t_lo, t_hi=t_hi, ts_split=ts_split, j_key=j_key,
                 j_cand=j_cand, j_lt=j_lt,
                 j_need=j_need, j_item=j_item, jf=jf, j_valid_n=j_valid_n,
                 j_last_item_n=j_last_item_n)

    # ------------------------------------------------------------------------ J: ranks
    def _ranks(self, m, s):
        """Top-k without sorting: J's item against every block of its row at once; the blocks
        ranked ahead of it are counted in P1 and P2 (see _pipeline)."""
        nbc, iw, j_item = s["nbc"], s["iw"], s["j_item"]
        j_key, j_cand, j_lt = s["j_key"], s["j_cand"], s["j_lt"]
        item_key = Signal(iw)
        ahead = Signal(nbc)
        m.d.comb += item_key.eq(j_item.imp.as_unsigned() ^ (1 << (iw - 1)))
        for c in range(nbc):
            m.d.comb += ahead[c].eq(j_cand[c] & self._ranks_ahead(j_key[c], item_key, j_lt[c]))
        s.update(ahead=ahead)

    # ------------------------------------------------------------------------ P1 to P4
    def _pipeline(self, m, s):
        nbc, iw, cw, nw, tw, p, qw = (s[k] for k in ("nbc", "iw", "cw", "nw", "tw", "p", "qw"))
        j_item, adv = s["j_item"], s["adv"]
        j_valid, j_cnt, j_ic, j_row, j_last, j_need = (
            s[k] for k in ("j_valid", "j_cnt", "j_ic", "j_row", "j_last", "j_need"))
        j_thr, j_last_item, j_topk, ahead = (s[k] for k in ("j_thr", "j_last_item", "j_topk",
                                                            "ahead"))
        base, rho_max = s["base"], s["rho_max"]
        t_lo, t_hi, ts_split = s["t_lo"], s["t_hi"], s["ts_split"]

        # ---------------------------------------------------------------- P1: J's item
        # (at most one multiplier between two registers, none after the row buffer's output:
        # the read plus a multiplier plus a wide comparator in one cycle, or two chained
        # multipliers, limited Fmax to 49-71 MHz on ECP5)
        p1_valid = Signal()
        p1_col = Signal(cw)
        p1_last_item = Signal()
        p1_thr = Signal()
        p1_topk = Signal()        # a top-k item that is a candidate (valid, not diagonal)
        p1_ahead = Signal(nbc)    # the candidates ranked ahead of it
        p1_need = Signal(signed(qw))
        p1_vbit = Signal()
        p1_t_lo = Signal.like(t_lo)      # (2**P - rho_q) * sum = (t_hi << ts_split) + t_lo
        p1_t_hi = Signal.like(t_hi)
        p1_base = Signal(nbc)
        p1_row = Signal(len(j_row))
        p1_last = Signal()
        with m.If(adv):
            m.d.sync += [p1_valid.eq(j_valid), p1_col.eq(j_ic), p1_last_item.eq(j_last_item),
                         p1_thr.eq(j_thr), p1_topk.eq(j_topk & j_item.valid & ~j_item.diag),
                         p1_ahead.eq(ahead), p1_need.eq(j_need),
                         p1_vbit.eq(j_item.valid),
                         p1_t_lo.eq(t_lo), p1_t_hi.eq(t_hi),
                         p1_base.eq(base), p1_row.eq(j_row), p1_last.eq(j_last)]
        # the threshold's multiplier operands: copies that feed only the MULT18X18Ds, so the
        # placer puts them beside them (in the top, p1_cnt -> DSP -> partial-product adder
        # was the critical path, 5.9 ns of it routing), loaded on threshold items only (the
        # products are used for nothing else), which also keeps Yosys from merging them with
        # J's registers.  Fabric registers, not the DSPs' input registers: rho_max is itself
        # a DSP's product, and DSP -> routing -> DSP (two fixed sites, often far apart) was
        # the whole top's critical path at nextpnr seed 1 that way (69.0 MHz, 10 ns of
        # routing).  The products land in the DSPs' output registers (hw/dsp.py), on adv.
        # rho_max * cnt is split by hand into two products of at most 18 bits, each one DSP,
        # added in P3 instead of behind the DSPs.
        split = min(DSP_OPERAND_BITS - 1, len(rho_max) - 1)
        m_cnt = Signal(nw, name="thr_cnt_m")
        m_lo = Signal(split, name="thr_rho_lo_m")
        m_hi = Signal(signed(len(rho_max) - split), name="thr_rho_hi_m")
        m_imp = Signal(signed(iw), name="thr_imp_m")
        with m.If(adv & j_thr):
            m.d.sync += [m_cnt.eq(j_cnt), m_lo.eq(rho_max[:split]),
                         m_hi.eq(rho_max[split:].as_signed()), m_imp.eq(j_item.imp)]
        prods = {name: registered_product(m, f"thr_mul_{name}", op, m_cnt, input_regs=False,
                                          ce_out=adv)
                 for name, op in (("lo", m_lo), ("hi", m_hi), ("imp", m_imp))}

        # ---------------------------------------------------------------- P2: partial counts
        # popcount of p1_ahead: 4-bit groups in LUTs, then adder levels split between P1 and P2
        parts = _tree_sum(m, [_popcount4(p1_ahead[i:i + 4]) for i in range(0, nbc, 4)],
                          self.RANK_LEVELS_P1, "rank_p1")
        p2_parts = [Signal(len(v), name=f"p2_rank_part_{i}") for i, v in enumerate(parts)]
        p2_valid = Signal()
        p2_col = Signal(cw)
        p2_last_item = Signal()
        p2_topk = Signal()
        p2_need = Signal(signed(qw))
        p2_thr_valid = Signal()  # threshold item of a valid block
        p2_tm_lo = Signal(split + nw)            # rho_max * cnt = (hi * cnt << split) + lo * cnt
        p2_tm_hi = Signal(signed(len(m_hi) + nw + 1))
        # I * n, registered as it leaves its DSP and again in P3: the product went straight
        # into P3's operand, which sits by the comparator, and operand copy -> DSP 28 columns
        # away -> P3 was the whole top's critical path at nextpnr seed 1
        p2_lhs = Signal(signed(iw + nw + 1))
        p2_t_sum = Signal(signed(tw))
        p2_base = Signal(nbc)
        p2_row = Signal(len(j_row))
        p2_last = Signal()
        with m.If(adv):
            m.d.sync += [p2_valid.eq(p1_valid), p2_col.eq(p1_col), p2_last_item.eq(p1_last_item),
                         p2_topk.eq(p1_topk), p2_need.eq(p1_need),
                         p2_thr_valid.eq(p1_thr & p1_vbit),
                         p2_t_sum.eq((p1_t_hi << ts_split) + p1_t_lo),
                         p2_base.eq(p1_base), p2_row.eq(p1_row), p2_last.eq(p1_last)]
            m.d.sync += [d.eq(v) for d, v in zip(p2_parts, parts)]
        m.d.comb += [p2_tm_lo.eq(prods["lo"]), p2_tm_hi.eq(prods["hi"]), p2_lhs.eq(prods["imp"])]

        # ---------------------------------------------------------------- P3: the operands
        rank = _tree_sum(m, p2_parts, None, "rank_p2")[0]
        p3_valid = Signal()
        p3_onehot = Signal(nbc)
        p3_last_item = Signal()
        p3_topk_keep = Signal()
        p3_thr_valid = Signal()
        p3_lhs = Signal(signed(tw))
        p3_rhs = Signal(signed(tw))
        p3_base = Signal(nbc)
        p3_row = Signal(len(j_row))
        p3_last = Signal()
        with m.If(adv):
            m.d.sync += [p3_valid.eq(p2_valid), p3_onehot.eq(Const(1, nbc) << p2_col),
                         p3_last_item.eq(p2_last_item),
                         p3_topk_keep.eq(p2_topk & (rank < p2_need)),
                         p3_thr_valid.eq(p2_thr_valid),
                         p3_lhs.eq(p2_lhs << p),
                         p3_rhs.eq((p2_tm_hi << split) + p2_tm_lo + p2_t_sum),
                         p3_base.eq(p2_base), p3_row.eq(p2_row), p3_last.eq(p2_last)]

        # ---------------------------------------------------------------- P4: the keep bit
        # (registered: the threshold comparison's carry chain and the keep bit's fan-out into
        # every bit of the output register and the mask accumulator took 10 ns on ECP5)
        p4_valid = Signal()
        p4_onehot = Signal(nbc)
        p4_last_item = Signal()
        p4_keep = Signal()
        p4_base = Signal(nbc)
        p4_row = Signal(len(j_row))
        p4_last = Signal()
        with m.If(adv):
            m.d.sync += [p4_valid.eq(p3_valid), p4_onehot.eq(p3_onehot),
                         p4_last_item.eq(p3_last_item),
                         p4_keep.eq(p3_topk_keep
                                    | (p3_thr_valid & self._threshold_keeps(p3_lhs, p3_rhs))),
                         p4_base.eq(p3_base), p4_row.eq(p3_row), p4_last.eq(p3_last)]
        bitvec = Signal(nbc)
        m.d.comb += bitvec.eq(Mux(p4_keep, p4_onehot, 0))
        s.update(p3_valid=p3_valid, p3_last_item=p3_last_item,
                 p4_valid=p4_valid, p4_onehot=p4_onehot, p4_last_item=p4_last_item,
                 p4_base=p4_base, p4_row=p4_row, p4_last=p4_last, keep_bit=p4_keep,
                 bitvec=bitvec)

    # ------------------------------------------------------------------------ output register
    def _output(self, m, s):
        nbc = s["nbc"]
        olay = mask_layout(self._cfg)
        s_valid, adv, keep_bit, bitvec = s["s_valid"], s["adv"], s["keep_bit"], s["bitvec"]
        p4_valid, p4_onehot, p4_last_item, p4_base, p4_row, p4_last = (
            s[k] for k in ("p4_valid", "p4_onehot", "p4_last_item", "p4_base", "p4_row",
                           "p4_last"))
        # O drives mask_out; the skid register S catches a finished mask while O waits, so the
        # pipeline's advance depends on flip-flops only (never on mask_out.ready)
        macc = Signal(nbc)
        o_valid = Signal()
        o_pay = Signal(olay)
        s_pay = Signal(olay)
        done = Signal()
        # O's next mask, written so that the keep bit is one LUT away from O: the part known
        # from registers (S, or the row's bits so far) OR this item's bit when O takes it
        o_hold = Signal(nbc)
        o_hit = Signal(nbc)
        s_valid_n, adv_n = Signal(), Signal()
        p3_valid, p3_last_item = s["p3_valid"], s["p3_last_item"]
        m.d.sync += s["jf"].eq(~s["j_valid_n"] | (adv_n & s["j_last_item_n"]))

        def advances(last_item_valid, skid_full):
            # the pipeline moves unless P4 holds a finished row and S is full
            return ~(last_item_valid & skid_full)

        m.d.comb += [
            adv.eq(advances(p4_valid & p4_last_item, s_valid)),
            # the next states of s_valid, P4 and adv, for J's registered j_free (see _job)
            s_valid_n.eq(Mux(~o_valid | self.mask_out.ready, 0, Mux(done, 1, s_valid))),
            adv_n.eq(advances(Mux(adv, p3_valid & p3_last_item, p4_valid & p4_last_item),
                              s_valid_n)),
            done.eq(adv & p4_valid & p4_last_item),
            o_hold.eq(Mux(s_valid, s_pay.mask, macc | p4_base)),
            o_hit.eq(Mux(keep_bit & ~s_valid, p4_onehot, 0)),
            self.mask_out.valid.eq(o_valid),
            self.mask_out.payload.eq(o_pay),
        ]
        with m.If(adv & p4_valid):
            with m.If(p4_last_item):
                m.d.sync += macc.eq(0)
            with m.Else():
                m.d.sync += macc.eq(macc | bitvec)
        m.d.sync += s_valid.eq(s_valid_n)
        with m.If(~o_valid | self.mask_out.ready):
            # (done implies ~s_valid: the pipeline holds while S is full)
            m.d.sync += [o_valid.eq(s_valid | done), o_pay.mask.eq(o_hold | o_hit),
                         o_pay.row.eq(Mux(s_valid, s_pay.row, p4_row)),
                         o_pay.last.eq(Mux(s_valid, s_pay.last, p4_last))]
        with m.Elif(done):
            m.d.sync += [s_pay.mask.eq(macc | p4_base | bitvec),
                         s_pay.row.eq(p4_row), s_pay.last.eq(p4_last)]


def _popcount4(bits):
    """Number of ones of up to 4 bits as plain logic (one LUT4 per output bit, no adder)."""
    b = [bits[i] for i in range(len(bits))] + [Const(0, 1)] * (4 - len(bits))
    pairs = [b[0] & b[1], b[0] & b[2], b[0] & b[3], b[1] & b[2], b[1] & b[3], b[2] & b[3]]
    four = b[0] & b[1] & b[2] & b[3]
    two_or_three = (pairs[0] | pairs[1] | pairs[2] | pairs[3] | pairs[4] | pairs[5]) & ~four
    return Cat(b[0] ^ b[1] ^ b[2] ^ b[3], two_or_three, four)


def _tree_sum(m, values, levels, name):
    """Pairwise adder tree over ``values`` (unsigned); ``levels`` adder levels (all when None).
    Returns the partial sums left after those levels, as named signals."""
    level = 0
    values = list(values)
    while len(values) > 1 and (levels is None or level < levels):
        nxt = []
        for i in range(0, len(values), 2):
            if i + 1 == len(values):
                nxt.append(values[i])
                continue
            a, b = values[i], values[i + 1]
            sig = Signal(max(len(a), len(b)) + 1, name=f"{name}_l{level}_{i // 2}")
            m.d.comb += sig.eq(a + b)
            nxt.append(sig)
        values = nxt
        level += 1
    return values
