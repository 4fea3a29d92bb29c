"""Output-stationary systolic array for the fine score pass and P x V, with block skipping.

Golden twins: per tile, :func:`golden.score.cross_terms` / :func:`golden.score.ff_terms`
(fine score pass) and :func:`golden.pv.pv` (P x V).  The array's cycle model (tiles fed back
to back) is ``sim/cycle_model.py``; in the top the score and P x V stages issue the tiles and
``hw/stages/arbiter.py`` shares the array between them.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .config import HDPConfig, signed_width
from .dsp import registered_product

__all__ = ["SystolicArray", "ArrayWidths", "array_widths", "array_latency", "ARRAY_LATENCY_EXTRA",
           "op_layout", "res_layout",
           "pe_ctrl_layout", "min_tile_cycles", "result_fifo_depth", "tag_fifo_depth",
           "default_array_tag_width"]


class ArrayWidths:
    """Operand and accumulator widths of the array's PEs, derived from the configuration.

    ``a0`` signed(B-F): ``q_I``.  ``b0`` signed(B): ``k_F`` (unsigned, ``F < B`` bits, so it
    fits with its sign bit 0) or ``k_q`` (dense).
    ``a1`` unsigned(max(F, prob_width)): ``q_F`` or a probability ``p``.
    ``b1`` signed(max(B, v_bits)): ``k_q`` (exact), ``k_I << F`` (drop_ff) or ``v_q``.
    ``acc`` signed: ``max(width of 2^F X + C, width of cfg.score_range, cfg.pv_width)``: what
    the three kinds of tile can reach, partial sums included (every per-step term's range
    contains 0 and the d-step sum of the term's range bounds every prefix; p >= 0):

    * fine pass: ``2^F X (+ C)``, ``2^F x_range`` plus ``[0, c_max]``;
    * dense pass: ``S = q_q . k_q`` (exact) or ``q_q . k_q - C`` (drop_ff); per step
      ``q_q k_q (- q_F k_F)`` lies in ``[lo hi - f_max^2, lo^2]`` (``lo, hi`` the K/Q word
      range), so ``|S| <= d 2^(2(B-1))`` plus ``c_max`` below: exactly ``cfg.score_range``;
    * P x V: ``cfg.pv_range``.

    Equal to ``cfg.array_acc_width`` except when ``F`` is close to ``B``, where ``2^F X`` alone
    can exceed the score range.
    """

    def __init__(self, cfg: HDPConfig):
        f = cfg.qk_frac
        self.a0 = cfg.qk_int_bits
        self.b0 = cfg.qk_bits
        self.a1 = max(1, f, cfg.prob_width)
        self.b1 = max(cfg.qk_bits, cfg.v_bits)
        x_lo, x_hi = cfg.x_range
        fine = signed_width(x_lo << f, (x_hi << f) + cfg.c_range[1])
        self.fine = fine
        self.dense = signed_width(*cfg.score_range)
        self.acc = max(fine, self.dense, cfg.pv_width)

    def as_dict(self) -> dict:
        return {"a0": self.a0, "b0": self.b0, "a1": self.a1, "b1": self.b1, "acc": self.acc}


def array_widths(cfg: HDPConfig) -> ArrayWidths:
    return ArrayWidths(cfg)


def default_array_tag_width(cfg: HDPConfig) -> int:
    """Default tile tag: room for a tile-row and a tile-column (or output-column tile) index
    and one flag bit (e.g. score pass / P x V)."""
    nt = max(-(-cfg.seq_len // cfg.array_rows), -(-cfg.seq_len // cfg.array_cols))
    return 2 * max(1, (nt - 1).bit_length()) + 1


def min_tile_cycles(cfg: HDPConfig) -> int:
    """Fewest cycles between the last beats of two consecutive tiles: ``2R - 1`` (the upward
    drain moves a column's R results out every other cycle).  Shorter tiles are padded."""
    return 2 * cfg.array_rows - 1


def _in_flight(cfg: HDPConfig) -> int:
    """Cycles a tile's results take from its last beat until its last row has left the
    array, less one: ``2R + latency - 1``; the queues are sized on it."""
    return 2 * cfg.array_rows + array_latency(cfg) - 1


def tag_fifo_depth(cfg: HDPConfig) -> int:
    return _in_flight(cfg) // (2 * cfg.array_rows - 1) + 3


#: :func:`array_latency` beyond ``array_cols``: input register (1), the PE's operand register
#: (1) and product registers (2), deskew to column ``C - 1`` and the FIFO write and read (2)
ARRAY_LATENCY_EXTRA = 6


def array_latency(cfg: HDPConfig) -> int:
    """Cycles from the accept of a tile's last beat to its row 0 being valid at ``res_out``
    (row ``r`` follows ``2r`` cycles later): input register (1) + the PE's operand register (1)
    and product registers (2) + row/column skew and drain to the top (``C``) + deskew to column
    ``C - 1`` and the FIFO write and read (2), i.e. ``C +`` :data:`ARRAY_LATENCY_EXTRA`.  The
    cycle models read it from here."""
    return cfg.array_cols + ARRAY_LATENCY_EXTRA


def result_fifo_depth(cfg: HDPConfig) -> int:
    """Result rows buffered at the output: enough that back-to-back tiles of the shortest
    length never wait for credit while the output is ready."""
    r = cfg.array_rows
    return r * (2 + -(-_in_flight(cfg) // (2 * r - 1)))


def op_layout(cfg: HDPConfig, tag_width: int | None = None) -> data.StructLayout:
    """One depth step of a tile: the R left-edge operand pairs, the C top-edge pairs, ``last``
    (last depth step of the tile) and the tile ``tag`` (read on the last beat)."""
    w = ArrayWidths(cfg)
    tw = default_array_tag_width(cfg) if tag_width is None else tag_width
    r, c = cfg.array_rows, cfg.array_cols
    return data.StructLayout({
        "a0": data.ArrayLayout(signed(w.a0), r), "a1": data.ArrayLayout(unsigned(w.a1), r),
        "b0": data.ArrayLayout(signed(w.b0), c), "b1": data.ArrayLayout(signed(w.b1), c),
        "last": 1, "tag": unsigned(tw)})


def res_layout(cfg: HDPConfig, tag_width: int | None = None) -> data.StructLayout:
    """One result row of a tile: C accumulators, the row index in the tile, ``last`` (row R-1)
    and the tile's tag."""
    w = ArrayWidths(cfg)
    tw = default_array_tag_width(cfg) if tag_width is None else tag_width
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(w.acc), cfg.array_cols),
        "row": unsigned(max(1, (cfg.array_rows - 1).bit_length())),
        "last": 1, "tag": unsigned(tw)})


def pe_ctrl_layout() -> data.StructLayout:
    """Per-PE control, travelling along a row with the left-edge operands."""
    return data.StructLayout({"valid": 1, "first": 1, "last": 1})


class SystolicArray(wiring.Component):
    """R x C output-stationary array of two-product signed MAC PEs.

    Golden twins: :func:`golden.score.cross_terms` and :func:`golden.score.ff_terms` per score
    tile, :func:`golden.pv.pv` per P x V tile (``sim/vectors/array.py`` builds both).

    Dataflow (output stationary; ``R = cfg.array_rows``, ``C = cfg.array_cols``)::

                 b(t) col 0   col 1 (+1 cycle)   ...   col C-1 (+C-1)
                    |           |                        |
        a(t) row 0 -> [PE 0,0] -> [PE 0,1] -> ... -> [PE 0,C-1]     a, ctrl move right
                    |  ^        |  ^                     |  ^        b moves down
        row 1 (+1) -> [PE 1,0] -> [PE 1,1] -> ... -> [PE 1,C-1]     results drain UP
                    |  ^        |  ^                     |  ^        (one hop per cycle)
           ...          ...                                ...
        row R-1    -> [PE R-1,0] -> ...          -> [PE R-1,C-1]
                       |                               |
        results leave at the top edge, column c skewed by c, deskewed, one row per beat

    Every PE holds one output element and per depth step adds two narrow products::

        acc <- (first ? 0 : acc) + ((a0 * b0) << F) + a1 * b1

    in three pipeline stages, still one depth step per cycle: the PE registers the multipliers'
    operands (loaded on valid steps) and the products, both in the MULT18X18D's own registers
    (:class:`hw.dsp.RegisteredMul`), registers the products once more in fabric beside the
    accumulator, then adds them to the accumulator
    with the step's control (``valid``/``first``/``last``), which the PE registers once, passes
    on to its right neighbour and delays once more for the accumulate.

    * Fine score pass, score tile = R queries x C keys, depth = head_dim, operands
      ``a0 = q_I``, ``b0 = k_F``, ``a1 = q_F`` and ``b1 = k_q`` (``exact``: gives
      ``2^F X + C``) or ``b1 = k_I << F`` (``drop_ff``: gives ``2^F X``).  Since
      ``q_F k_q = 2^F q_F k_I + q_F k_F`` this is bit-exact with the golden X and C; the final
      score is ``S = (A << 2F) + acc`` (one adder in the integrator, A reused from the score
      unit).
    * Dense score pass (no pruning, no head pruning: no integer pass at all), same tiles,
      operands ``a0 = q_I``, ``b0 = k_q`` (signed, the whole word), ``a1 = q_F`` and ``b1 =
      k_q`` (``exact``) or ``b1 = k_I << F`` (``drop_ff``).  Since ``q_q = 2^F q_I + q_F``,
      ``(q_I k_q << F) + q_F k_q = q_q k_q``: the PE forms the full score ``S`` (exact), and
      ``(q_I k_q << F) + q_F (k_I << F) = 2^2F q_I k_I + 2^F (q_I k_F + q_F k_I)`` is the
      drop_ff score ``(A << 2F) + 2^F X``; ``S = acc``.
    * P x V, tile = R queries x C output columns, depth = the keys of the issued score tiles of
      that tile-row, operands ``a0 = b0 = 0``, ``a1 = p`` (unsigned), ``b1 = v_q``.  Keys
      of skipped tiles have ``p = 0`` for every row of the tile, so skipping them is exact.
    * The integer pass (A for every pair) runs on the score unit, not here: it must cover every
      pair (nothing can be skipped before the importances exist), its multipliers are only
      ``B - F`` bits wide, and it must finish before the pruner can choose the tiles.  The
      ``a0 b0`` multiplier is ``(B - F) x B`` bits wide so that the dense pass needs none.

    The array has no backpressure inside: a PE sees operands, ``valid``/``first``/``last``
    (:func:`pe_ctrl_layout`, a ``data.Struct`` moving right with ``a``) and updates.  An idle
    input cycle is a bubble (``valid = 0``) that PEs ignore.  A tile's results are copied into
    per-PE drain registers on its last step, so the next tile accumulates while the previous one
    drains (fill and drain overlap).  Output backpressure is handled by credits: a tile starts
    only when :func:`result_fifo_depth` has room for its R rows, so the array never stalls.

    Ports
    -----
    op_in : In(stream.Signature(op_layout(cfg)))
        One beat per depth step of a tile, in order; a tile is the beats up to one with
        ``last = 1``; its ``tag`` is taken from that beat.  Any depth >= 1.
    res_out : Out(stream.Signature(res_layout(cfg)))
        R beats per tile, rows 0..R-1 in order, ``last`` on row R-1; tiles in issue order.

    Timing
    ------
    Multipliers: the operand and product registers are the MULT18X18D's own
    (:class:`hw.dsp.RegisteredMul`), then the products are registered once more in fabric
    beside the accumulator.  With fabric operand and product registers, operand register ->
    MULT18X18D -> product register was the unit's critical path alone (130.7 MHz: 3.9 ns in
    the DSP, 3.2 ns routing) and, with the DSPs 30-40 rows from the PEs, the whole top's
    (6.1-6.3 of 10.5 ns routing at nextpnr seeds 1 and 2).  The accumulate stage (control and
    product registers -> 3-input adder -> accumulator, and the drain register's load-or-shift
    multiplexer after the adder) takes about 6.1 ns (measured with the multipliers taken
    out), so a register between the adder and the drain multiplexer would cost a cycle of
    latency and ``R C`` accumulator-wide registers for no Fmax.

    Throughput: one depth step per cycle; a tile of depth K occupies ``max(K, 2R - 1)`` input
    cycles (:func:`min_tile_cycles`), so dense work with K >= 2R - 1 keeps every PE busy every
    cycle.  Latency: the tile's row 0 is valid at ``res_out`` :attr:`latency` cycles after its
    last beat is accepted; row r follows 2r cycles later.  ``op_in.ready`` is low while there is
    no credit for a new tile or while a last beat would come too soon after the previous one.
    Arithmetic is exact (no rounding, no saturation); widths in :class:`ArrayWidths`.
    """

    def __init__(self, cfg: HDPConfig, *, tag_width: int | None = None):
        if not isinstance(cfg, HDPConfig):
            raise TypeError(f"cfg must be an HDPConfig, not {cfg!r}")
        if tag_width is None:
            tag_width = default_array_tag_width(cfg)
        if isinstance(tag_width, bool) or not isinstance(tag_width, int) or tag_width < 1:
            raise ValueError(f"tag_width must be a positive integer, not {tag_width!r}")
        self._cfg = cfg
        self._tag_width = tag_width
        self._widths = ArrayWidths(cfg)
        super().__init__({
            "op_in": In(stream.Signature(op_layout(cfg, tag_width))),
            "res_out": Out(stream.Signature(res_layout(cfg, tag_width))),
        })

    @property
    def cfg(self) -> HDPConfig:
        return self._cfg

    @property
    def widths(self) -> ArrayWidths:
        return self._widths

    @property
    def latency(self) -> int:
        """Cycles from the accept of a tile's last beat to its row 0 being valid at res_out
        (:func:`array_latency`)."""
        return array_latency(self._cfg)

    def elaborate(self, platform):
        cfg = self._cfg
        w = self._widths
        R, C, F = cfg.array_rows, cfg.array_cols, cfg.qk_frac
        tw = self._tag_width
        m = Module()
        olay = op_layout(cfg, tw)
        rlay = res_layout(cfg, tw)
        ctrl_lay = pe_ctrl_layout()

        # ---------------------------------------------------------------- output buffers
        depth = result_fifo_depth(cfg)
        m.submodules.res_fifo = res_fifo = SyncFIFOBuffered(width=rlay.size, depth=depth)
        m.submodules.tag_fifo = tag_fifo = SyncFIFOBuffered(width=tw, depth=tag_fifo_depth(cfg))
        m.d.comb += [
            self.res_out.payload.eq(res_fifo.r_stream.payload),
            self.res_out.valid.eq(res_fifo.r_stream.valid),
            res_fifo.r_stream.ready.eq(self.res_out.ready),
        ]

        # ---------------------------------------------------------------- input, credit, gap
        credit = Signal(range(depth + 1), init=depth)
        in_tile = Signal()          # a tile has started and its last beat is not yet accepted
        gap = Signal(range(2 * R), init=2 * R - 1)   # cycles since the last accepted last beat
        gap_ok = Signal()
        m.d.comb += gap_ok.eq(gap >= 2 * R - 1)
        start_ok = Signal()
        m.d.comb += start_ok.eq(in_tile | (credit >= R))
        accept = Signal()
        m.d.comb += [
            self.op_in.ready.eq(start_ok & (gap_ok | ~self.op_in.payload.last)),
            accept.eq(self.op_in.valid & self.op_in.ready),
        ]
        starting = Signal()
        m.d.comb += starting.eq(accept & ~in_tile)
        out_fire = Signal()
        m.d.comb += out_fire.eq(self.res_out.valid & self.res_out.ready)
        m.d.sync += credit.eq(credit + out_fire - Mux(starting, R, 0))
        with m.If(accept):
            m.d.sync += in_tile.eq(~self.op_in.payload.last)
        with m.If(accept & self.op_in.payload.last):
            m.d.sync += gap.eq(1)
        with m.Elif(~gap_ok):
            m.d.sync += gap.eq(gap + 1)

        # input register: the beat (or a bubble) entering the skew lines
        beat = Signal(olay, name="beat")
        ctrl0 = Signal(ctrl_lay, name="ctrl0")
        m.d.sync += [beat.eq(self.op_in.payload),
                     ctrl0.valid.eq(accept), ctrl0.first.eq(starting),
                     ctrl0.last.eq(accept & self.op_in.payload.last)]
        m.d.comb += [tag_fifo.w_stream.payload.eq(self.op_in.payload.tag),
                     tag_fifo.w_stream.valid.eq(accept & self.op_in.payload.last)]

        # ---------------------------------------------------------------- skew lines
        def delay(sig, n, name):
            cur = sig
            for s in range(n):
                nxt = Signal.like(cur, name=f"{name}_d{s + 1}")
                m.d.sync += nxt.eq(cur)
                cur = nxt
            return cur

        row_a0 = [delay(beat.a0[r], r, f"a0_skew{r}") for r in range(R)]
        row_a1 = [delay(beat.a1[r], r, f"a1_skew{r}") for r in range(R)]
        row_ctrl = [delay(ctrl0, r, f"ctrl_skew{r}") for r in range(R)]
        col_b0 = [delay(beat.b0[c], c, f"b0_skew{c}") for c in range(C)]
        col_b1 = [delay(beat.b1[c], c, f"b1_skew{c}") for c in range(C)]

        # ---------------------------------------------------------------- PE mesh
        acc_shape = signed(w.acc)
        drain = [[Signal(acc_shape, name=f"drain_{r}_{c}") for c in range(C)] for r in range(R)]
        drain_v = [[Signal(name=f"drain_v_{r}_{c}") for c in range(C)] for r in range(R)]
        b0_in, b1_in = col_b0, col_b1     # top-edge operands of the current row
        for r in range(R):
            a0, a1, ctrl = row_a0[r], row_a1[r], row_ctrl[r]
            b0_next, b1_next = [], []
            for c in range(C):
                b0, b1 = b0_in[c], b1_in[c]
                # stages 1 and 2: the multipliers' operands and products in the DSP block's own
                # registers (hw/dsp.py), then the products once more in fabric beside the
                # accumulator.  The DSPs sit in fixed rows, often far from the PE's logic:
                # with fabric operand and product registers, operand -> DSP 30-40 rows away ->
                # product register was the whole top's critical path (6.1-6.3 of 10.5 ns
                # routing at nextpnr seeds 1 and 2).  The operands load only on a valid step
                # (a bubble's products are never used); ctrl_q / ctrl_d follow the two stages.
                ctrl_q = Signal(ctrl_lay, name=f"ctrl_{r}_{c}")
                ctrl_d = Signal(ctrl_lay, name=f"ctrld_{r}_{c}")
                m.d.sync += [ctrl_q.eq(ctrl), ctrl_d.eq(ctrl_q)]
                prods = []
                for i, (a_op, b_op) in enumerate(((a0, b0), (a1, b1))):
                    p = registered_product(m, f"mul{i}_{r}_{c}", a_op, b_op, ce_in=ctrl.valid)
                    p_reg = Signal.like(p, name=f"p{i}_{r}_{c}")
                    m.d.sync += p_reg.eq(p)
                    prods.append(p_reg)
                p0, p1 = prods
                ctrl_p = Signal(ctrl_lay, name=f"ctrlp_{r}_{c}")
                m.d.sync += ctrl_p.eq(ctrl_d)
                # stage 3: accumulate
                acc = Signal(acc_shape, name=f"acc_{r}_{c}")
                total = Signal(acc_shape, name=f"sum_{r}_{c}")
                m.d.comb += total.eq(Mux(ctrl_p.first, 0, acc) + (p0 << F) + p1)
                with m.If(ctrl_p.valid):
                    m.d.sync += acc.eq(total)
                # upward drain: load on the tile's last step, otherwise take the value below
                below = drain[r + 1][c] if r + 1 < R else 0
                below_v = drain_v[r + 1][c] if r + 1 < R else 0
                with m.If(ctrl_p.valid & ctrl_p.last):
                    m.d.sync += [drain[r][c].eq(total), drain_v[r][c].eq(1)]
                with m.Else():
                    m.d.sync += [drain[r][c].eq(below), drain_v[r][c].eq(below_v)]
                # pass the operands on: a and ctrl to the right, b down
                if c + 1 < C:
                    a0_n = Signal.like(a0, name=f"a0_{r}_{c}")
                    a1_n = Signal.like(a1, name=f"a1_{r}_{c}")
                    m.d.sync += [a0_n.eq(a0), a1_n.eq(a1)]
                    a0, a1, ctrl = a0_n, a1_n, ctrl_q
                if r + 1 < R:
                    b0_n = Signal.like(b0, name=f"b0_{r}_{c}")
                    b1_n = Signal.like(b1, name=f"b1_{r}_{c}")
                    m.d.sync += [b0_n.eq(b0), b1_n.eq(b1)]
                    b0_next.append(b0_n)
                    b1_next.append(b1_n)
            b0_in, b1_in = b0_next, b1_next

        # ---------------------------------------------------------------- deskew and write
        top = [delay(drain[0][c], C - 1 - c, f"top_deskew{c}") for c in range(C)]
        top_v = delay(drain_v[0][C - 1], 0, "top_v")
        row_idx = Signal(range(R), name="res_row")
        res = Signal(rlay, name="res_row_payload")
        m.d.comb += [res.row.eq(row_idx), res.last.eq(row_idx == R - 1),
                     res.tag.eq(tag_fifo.r_stream.payload)]
        for c in range(C):
            m.d.comb += res.acc[c].eq(top[c])
        m.d.comb += [res_fifo.w_stream.payload.eq(res), res_fifo.w_stream.valid.eq(top_v),
                     tag_fifo.r_stream.ready.eq(top_v & (row_idx == R - 1))]
        with m.If(top_v):
            m.d.sync += row_idx.eq(Mux(row_idx == R - 1, 0, row_idx + 1))
        return m
