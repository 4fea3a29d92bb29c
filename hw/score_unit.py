"""Integer score unit: ``A = Q_I K_I^T`` block by block, block importances and head importance.

Golden twins: :func:`golden.score.integer_scores`, :func:`golden.pruner.block_importance`,
:func:`golden.pruner.head_importance` (entry masking: :func:`golden.pruner.entry_mask`).
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import DSP_OPERAND_BITS, HDPConfig, unsigned_width
from .dsp import registered_product

__all__ = ["ScoreUnit", "qk_row_layout", "qk_int_row_layout", "block_layout", "h_shape",
           "block_row_shape", "block_col_shape", "block_cycles", "pipeline_depth", "PIPELINE_DEPTH",
           "TREE_STAGES", "pack_shift"]

#: Adder-tree levels of the ``head_dim``-long dot products are split over this many register
#: stages (the first ones take the extra level when the levels do not divide evenly).
TREE_STAGES = 2

#: Register stages from a block's issue to its entry into the output queue with one pass per
#: block (``int_lanes >= head_dim``): memory read, K read data (the block RAM's output is
#: registered in logic), products (the DSP's own output register), products again (beside
#: the adder tree), ``TREE_STAGES`` adder-tree stages (the last one is A),
#: masking + importance (2 stages).  With several passes: :func:`pipeline_depth`.
PIPELINE_DEPTH = 6 + TREE_STAGES


def block_cycles(cfg: HDPConfig) -> int:
    """Cycles the ScoreUnit spends on one block (its passes): ``ceil(head_dim / int_lanes)``,
    1 when ``int_lanes >= head_dim``.  The cycle model (``sim/top_cycles.py``) reads it."""
    return cfg.int_passes


def pipeline_depth(cfg: HDPConfig) -> int:
    """Register stages from a block's *last* pass to its entry into the output queue:
    ``PIPELINE_DEPTH`` with one pass per block, one more (the pass's K selection) with
    several.  A block is on ``blk_out`` ``pipeline_depth(cfg) + 2`` cycles after its last
    pass; ``h_out`` is valid ``pipeline_depth(cfg) + 1`` cycles after the last block's."""
    return PIPELINE_DEPTH + (block_cycles(cfg) > 1)


def block_row_shape(cfg: HDPConfig) -> unsigned:
    """Shape of a block-row index ``r`` in ``[0, n_block_rows)`` (at least 1 bit)."""
    return unsigned(unsigned_width(cfg.n_block_rows - 1))


def block_col_shape(cfg: HDPConfig) -> unsigned:
    """Shape of a block-column index ``c`` in ``[0, n_block_cols)`` (at least 1 bit)."""
    return unsigned(unsigned_width(cfg.n_block_cols - 1))


def qk_row_layout(cfg: HDPConfig) -> data.ArrayLayout:
    """Payload of ``k_in`` / ``q_in``: one quantized row, ``head_dim`` signed ``qk_bits`` words."""
    return data.ArrayLayout(signed(cfg.qk_bits), cfg.head_dim)


def qk_int_row_layout(cfg: HDPConfig) -> data.ArrayLayout:
    """One row of integer parts ``x_I = x_q >> qk_frac`` (signed ``qk_bits - qk_frac`` bits)."""
    return data.ArrayLayout(signed(cfg.qk_int_bits), cfg.head_dim)


def block_layout(cfg: HDPConfig) -> data.StructLayout:
    """Payload of ``blk_out``: one ``b_r x b_c`` block of A and its importance.

    ``a[ii * b_c + jj]`` is ``A[r*b_r + ii, c*b_c + jj]`` (0 at padding positions, i.e. row or
    column >= valid_len; causally masked entries hold their real A); ``imp`` the block importance
    under ``cfg.criterion`` (0 for an invalid block); ``valid`` whether the block holds a valid
    entry; ``last_col`` marks the last block of a block-row, ``last`` the last block of the head.
    """
    return data.StructLayout({
        "a": data.ArrayLayout(signed(cfg.a_width), cfg.block_size),
        "imp": signed(cfg.importance_width),
        "valid": unsigned(1),
        "row": block_row_shape(cfg),
        "col": block_col_shape(cfg),
        "last_col": unsigned(1),
        "last": unsigned(1),
    })


def h_shape(cfg: HDPConfig) -> unsigned:
    """Payload of ``h_out``: the head importance ``H`` (unsigned ``h_width``)."""
    return unsigned(cfg.h_width)


def _tree(values, op):
    """Balanced reduction (keeps the logic depth logarithmic)."""
    values = list(values)
    while len(values) > 1:
        nxt = [op(values[k], values[k + 1]) for k in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
    return values[0]


def _tree_levels(values, op, levels):
    """``levels`` levels of :func:`_tree`'s balanced reduction (the partial results)."""
    values = list(values)
    for _ in range(levels):
        if len(values) == 1:
            break
        nxt = [op(values[k], values[k + 1]) for k in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
    return values


def _n_levels(n):
    """Levels of a balanced reduction of ``n`` values."""
    levels = 0
    while n > 1:
        n, levels = -(-n // 2), levels + 1
    return levels


def pack_shift(cfg: HDPConfig, acc_width: int | None = None) -> int | None:
    """Bit offset of the second key column in a packed integer-pass operand, or ``None``
    when the score unit does not pack (one key column per block, or a packed operand wider
    than :data:`hw.config.DSP_OPERAND_BITS`, one MULT18X18D).

    Packed, ``q * (k_0 + k_1 2^S)`` gives both products of a Q element with two key columns
    in one multiplier, a DSP instead of two LUT multipliers; their sums over the lanes and
    passes stay exact in the two fields of one sum, ``A_0 + 2^(S-1) + A_1 2^S`` (the bias
    ``2^(S-1)`` keeps the low field non-negative, so the fields part without a borrow).
    ``S`` is the width of A (``acc_width``, default ``cfg.a_width``); the packed operand is
    ``qk_int_bits + S + 1`` bits wide (18 on the default preset; the large preset's d = 64
    makes A 14 bits wide, too wide to pack)."""
    S = cfg.a_width if acc_width is None else acc_width
    if cfg.block_cols < 2 or cfg.qk_int_bits + S + 1 > DSP_OPERAND_BITS:
        return None
    return S


def _max_op(x, y):
    # (valid, value) pairs: the maximum over the valid ones; ties are equal values
    (vx, ax), (vy, ay) = x, y
    return (vx | vy, Mux(vx & (~vy | (ax >= ay)), ax, ay))


class ScoreUnit(wiring.Component):
    """Integer pass of one head: every ``b_r x b_c`` block of ``A``, its importance, and ``H``.

    Golden twins: :func:`golden.score.integer_scores` (``A = sum_d q_I k_I`` with
    ``x_I = x_q >> qk_frac``, a two's complement floor), :func:`golden.pruner.block_importance`
    (``abs_sum`` / ``sum`` / ``max`` over the block's valid entries, 0 for an invalid block) and
    :func:`golden.pruner.head_importance` (``H = sum |A|`` over all valid entries, whatever the
    criterion).  Entry ``(i, j)`` is valid when ``i < valid_len``, ``j < valid_len`` and, when
    ``causal``, ``j <= i``.  Everything is exact integer arithmetic: no rounding, no saturation,
    widths from :class:`~hw.config.HDPConfig` (``a_width``, ``importance_width``, ``h_width``)
    so nothing can overflow; ``max`` ties are equal values, so no tie rule is needed.

    Protocol (per head)
        1. ``k_in``: K rows ``j = 0 .. valid_len-1``.  Only their integer parts are kept, in a
           ``lib.memory.Memory`` of ``ceil(seq_len / b_c)`` words, each word holding the ``b_c``
           K rows of one block column (written with one write enable per row), so one read gives a
           whole block column.
        2. ``q_in``: Q rows ``i = 0 .. valid_len-1`` (may start while K is still loading).  A
           double buffer of ``b_r`` integer rows: block-row ``r + 1`` loads while row ``r``
           is computed.
        3. ``blk_out``: one beat per block, row-major block order, ``ceil(L/b_r) * ceil(L/b_c)``
           beats (``L = valid_len``); ``h_out``: one beat with ``H`` once the last block has
           left the pipeline (possibly before ``blk_out`` has drained from the output queue).
        4. After the ``h_out`` handshake the unit accepts the next head's ``k_in``.

    ``valid_len`` (``1 .. seq_len``) and ``causal`` must be stable from the first ``k_in`` beat
    of a head to its ``h_out`` handshake.

    Datapath
        ``b_r * b_c`` dot products of length ``d`` in parallel, each with
        ``cfg.int_lanes_used`` signed ``(qk_bits - qk_frac)``-bit multipliers and a balanced
        adder tree.  A block takes ``P = block_cycles(cfg) = ceil(d / int_lanes)`` consecutive
        cycles (passes): pass ``p`` multiplies the elements ``p * lanes .. p * lanes + lanes
        - 1`` of the Q and K rows (``lanes = ceil(d / P)``, so ``int_lanes = 12`` at ``d = 32``
        builds 11; the last pass's elements past ``d`` multiply 0) and the last adder-tree
        stage accumulates the passes.  ``int_lanes >= d``: one whole block per cycle.
        Where :func:`pack_shift` allows (the default preset), the two key columns of a pair
        share one multiplier per lane, ``q * (k_0 + k_1 2^S)`` with ``S = a_width``: 18-bit
        operands, so ECP5 maps each to a MULT18X18D instead of two 4 x 4-bit LUT multipliers,
        and one adder tree sums both dot products in the two fields of a ``2 S``-bit word,
        which the A register splits into its two entries by wiring alone.
        Measured alone (``hdpgen synth --unit score_unit``, ECP5, default preset, LUT4 /
        CCU2C / FF / DSP / EBR / Fmax), unpacked: ``int_lanes`` 32: 6114 / 802 / 3325 / 0 /
        8 / 114.7 MHz; 16 (2 passes): 3554 / 503 / 2759 / 0 / 8 / 111.7 MHz; 11 (3 passes):
        2353 / 435 / 2476 / 0 / 8 / 118.5 MHz; 8 (4 passes): 1946 / 367 / 2244 / 0 / 8 /
        117.4 MHz.  Packed: 16 (the default): 2259 / 345 / 2979 / 32 / 8; 11: 1523 / 360 /
        2643 / 22 / 8.  The default is 16 lanes, not 11: three passes per block keep the
        integer pass behind the array at N = 128 under top-k down to keep 1/4 (91.0 % of the
        ideal speedup, 90.9 % measured with the whole top), but not under the default mass
        rule, whose rows keep very different numbers of blocks (the 128-token paragraph:
        2.02x against 2.06x with 16 lanes, ``python bench/mass_cycles.py``).
        Pipeline (``pipeline_depth(cfg)`` register stages from a block's last pass:
        ``PIPELINE_DEPTH`` = 8 with one pass, 9 with several): issue (K memory read; the
        pass's Q elements) -> K read data registered as it is (Yosys does not use the DP16KD
        output register, so no logic may follow the block RAM's access time) -> with several
        passes, the pass's K elements selected (and packed) into the DSPs' own operand
        registers (a stage of its own: in front of the multipliers the synthesizer copies
        the selection into every product) -> products in the DSPs' output registers, then
        once more beside the adder tree (:class:`hw.dsp.RegisteredMul`: the DSPs sit in fixed
        rows, often far from the adder tree; with fabric registers, operand -> DSP -> tree
        was the whole top's critical path, 7.1 of 11.6 ns routing) -> adder tree split over
        ``TREE_STAGES`` = 2 register stages
        (the last one holds A, accumulated over the passes) -> masking and the first half of
        the importance reductions -> their second half -> output queue
        (``SyncFIFOBuffered``).  The memory access, the multipliers, each half of the adder
        tree and each half of the importance reductions are in separate cycles (the
        timing-critical path of the 3-stage version had the first three in one).  Issue is
        credit based: a block is issued (its first pass) only when the queue is sure to have
        room for it, so backpressure on ``blk_out`` stalls issue without loss and never
        reaches the datapath registers; its other passes follow unconditionally.

    Latency and throughput (measured in ``tests/test_score_unit.py::test_throughput_and_latency``)
        * Throughput: one block every ``P`` cycles with ``blk_out`` always ready.  A head with
          ``valid_len = L`` occupies the unit for exactly ``L + P * ceil(L/b_r) * ceil(L/b_c)
          + pipeline_depth(cfg) + 1`` cycles (``+ 8`` with one pass, ``+ 9`` with several),
          first ``k_in`` beat to ``h_out`` handshake inclusive, when Q rows stream at one per
          cycle alongside K (its first ``b_r`` rows in by the last K row) and ``P *
          ceil(L/b_c) > b_r`` (measured: tiny L = 8: 32 cycles for the ideal 16 blocks + 8 K
          rows; odd L = 13: 56 for 35 + 13; default ``int_lanes = 32``, L = 64: 1096 for
          1024 + 64; ``int_lanes = 16`` (P = 2), L = 64: 2121 for 2 * 1024 + 64, L =
          128: 8329 for 2 * 4096 + 128).  When a block-row takes at most ``b_r`` cycles, Q
          loading (one row per cycle) bounds the rate instead.  If Q starts only after the
          last K row, add ``b_r + 1`` cycles per head (by design, not measured).
        * Latency: the first block of a head is issued 1 cycle after the last K row is accepted
          (its Q rows load meanwhile); its last pass is ``P - 1`` cycles after its issue; every
          block is on ``blk_out`` ``pipeline_depth(cfg) + 2`` cycles after its last pass (9
          with one pass, 10 with several); ``h_out`` is valid ``pipeline_depth(cfg) + 1``
          cycles after the last block's last pass.
        * Between heads: the next ``k_in`` beat is accepted the cycle after the ``h_out``
          handshake.

    Parameters
    ----------
    cfg : HDPConfig
        The whole configuration; uses ``seq_len``, ``head_dim``, ``qk_bits``, ``qk_frac``,
        ``block_rows``, ``block_cols``, ``criterion``, ``int_lanes`` and the derived widths.

    Attributes
    ----------
    k_in, q_in : In(stream.Signature(qk_row_layout(cfg)))
    valid_len : In(cfg.valid_len_width)
    causal : In(1)
    blk_out : Out(stream.Signature(block_layout(cfg)))
    h_out : Out(stream.Signature(h_shape(cfg)))
    """

    def __init__(self, cfg: HDPConfig):
        if not isinstance(cfg, HDPConfig):
            raise TypeError(f"cfg must be an HDPConfig, not {cfg!r}")
        self._cfg = cfg
        super().__init__({
            "k_in": In(stream.Signature(qk_row_layout(cfg))),
            "q_in": In(stream.Signature(qk_row_layout(cfg))),
            "valid_len": In(cfg.valid_len_width),
            "causal": In(1),
            "blk_out": Out(stream.Signature(block_layout(cfg))),
            "h_out": Out(stream.Signature(h_shape(cfg))),
        })

    @property
    def cfg(self) -> HDPConfig:
        return self._cfg

    @property
    def acc_width(self) -> int:
        """Width of the A accumulators (``cfg.a_width``; a test subclass narrows it)."""
        return self._cfg.a_width

    @property
    def queue_depth(self) -> int:
        """Entries of the output queue: enough credits to cover the issue -> pop round trip."""
        return PIPELINE_DEPTH + 5

    def elaborate(self, platform):
        m = Module()
        resets: list = []   # (signal, value) cleared at the end of a head (h_out handshake)
        k = self._k_store(m, resets)
        q = self._q_buffer(m, resets)
        s1 = self._issue(m, k, q, resets)
        sk = self._operands(m, k, s1)
        s2 = self._dot_products(m, sk)
        s3 = self._importance(m, s2)
        self._output(m, s3, resets)
        return m

    # ------------------------------------------------------------------------ helpers
    def _int_part(self, x):
        return x[self._cfg.qk_frac:].as_signed()

    def _meta_layout(self) -> data.StructLayout:
        """What travels with a block down the pipeline (set at its issue)."""
        cfg = self._cfg
        nb = cfg.block_size
        return data.StructLayout({
            "row": block_row_shape(cfg),
            "col": block_col_shape(cfg),
            "last_col": unsigned(1),
            "last": unsigned(1),
            "pos": unsigned(nb),  # entry inside the valid_len x valid_len square
            "ent": unsigned(nb),  # valid entry (pos and causal rule)
        })

    @staticmethod
    def _reg(m, expr, name):
        """A register holding ``expr`` one cycle later (a view keeps its layout)."""
        if not isinstance(expr, data.View):
            expr = Value.cast(expr)
        r = Signal(expr.shape(), name=name)
        m.d.sync += r.eq(expr)
        return r

    def _beat_layout(self):
        """Per pass of a block: ``valid``, and with several passes its first and last pass."""
        if self._cfg.int_passes == 1:
            return data.StructLayout({"valid": 1})
        return data.StructLayout({"valid": 1, "first": 1, "last": 1})

    # ------------------------------------------------------------------------ K memory
    def _k_store(self, m, resets) -> SimpleNamespace:
        """K integer parts, one memory word per block column (``b_c`` rows)."""
        cfg = self._cfg
        bc, d = cfg.block_cols, cfg.head_dim
        k_word = data.ArrayLayout(qk_int_row_layout(cfg), bc)
        m.submodules.k_mem = k_mem = Memory(shape=k_word, depth=cfg.n_block_cols, init=[])
        k_wr = k_mem.write_port(granularity=1)
        k_rd = k_mem.read_port()

        k_done = Signal()
        k_cnt = Signal(self._pos_shape())
        k_addr = Signal(block_col_shape(cfg))
        k_lane = Signal(range(bc))
        k_fire = Signal()
        m.d.comb += [
            self.k_in.ready.eq(~k_done),
            k_fire.eq(self.k_in.valid & self.k_in.ready),
            k_wr.addr.eq(k_addr),
        ]
        for lane in range(bc):
            for e in range(d):
                m.d.comb += k_wr.data[lane][e].eq(self._int_part(self.k_in.payload[e]))
            m.d.comb += k_wr.en[lane].eq(k_fire & (k_lane == lane))
        with m.If(k_fire):
            m.d.sync += k_cnt.eq(k_cnt + 1)
            with m.If(k_lane == bc - 1):
                m.d.sync += [k_lane.eq(0), k_addr.eq(k_addr + 1)]
            with m.Else():
                m.d.sync += k_lane.eq(k_lane + 1)
            with m.If(k_cnt + 1 >= self.valid_len):
                m.d.sync += k_done.eq(1)
        resets += [(k_done, 0), (k_cnt, 0), (k_addr, 0), (k_lane, 0)]
        return SimpleNamespace(rd=k_rd, done=k_done, word=k_word)

    def _pos_shape(self) -> unsigned:
        cfg = self._cfg
        return unsigned(unsigned_width(cfg.seq_len + max(cfg.block_rows, cfg.block_cols)))

    # ------------------------------------------------------------------------ Q double buffer
    def _q_buffer(self, m, resets) -> SimpleNamespace:
        """``b_r`` Q rows loading (``q_load``) while the previous block-row is computed."""
        cfg = self._cfg
        br, d = cfg.block_rows, cfg.head_dim
        q_rows = data.ArrayLayout(qk_int_row_layout(cfg), br)
        q_load = Signal(q_rows)
        q_full = Signal()
        q_done = Signal()
        q_cnt = Signal(self._pos_shape())
        q_sub = Signal(range(br))
        q_fire = Signal()
        m.d.comb += [
            self.q_in.ready.eq(~q_full & ~q_done),
            q_fire.eq(self.q_in.valid & self.q_in.ready),
        ]
        with m.If(q_fire):
            for ii in range(br):
                with m.If(q_sub == ii):
                    for e in range(d):
                        m.d.sync += q_load[ii][e].eq(self._int_part(self.q_in.payload[e]))
            m.d.sync += q_cnt.eq(q_cnt + 1)
            with m.If(q_cnt + 1 >= self.valid_len):
                m.d.sync += q_done.eq(1)
            with m.If((q_sub == br - 1) | (q_cnt + 1 >= self.valid_len)):
                m.d.sync += [q_sub.eq(0), q_full.eq(1)]
            with m.Else():
                m.d.sync += q_sub.eq(q_sub + 1)
        resets += [(q_done, 0), (q_cnt, 0), (q_sub, 0), (q_full, 0)]
        return SimpleNamespace(rows=q_rows, load=q_load, full=q_full)

    # ------------------------------------------------------------------------ issue
    def _issue(self, m, k, q, resets) -> SimpleNamespace:
        """Block issue (credit based), one pass per cycle; returns stage 1: the beat, the
        block's metadata (set at its first pass) and the pass's ``int_lanes`` Q elements."""
        cfg = self._cfg
        br, bc, d = cfg.block_rows, cfg.block_cols, cfg.head_dim
        n_pass, lanes = cfg.int_passes, cfg.int_lanes_used
        length, depth = self.valid_len, self.queue_depth
        pos_shape = self._pos_shape()

        q_cur = Signal(q.rows)
        have_row = Signal()
        row = Signal(block_row_shape(cfg))
        row_base = Signal(pos_shape)
        next_row = Signal(block_row_shape(cfg))
        next_row_base = Signal(pos_shape)
        col = Signal(block_col_shape(cfg))
        col_base = Signal(pos_shape)
        outstanding = Signal(range(depth + 1))
        beat = Signal()      # a pass of a block this cycle
        issue = Signal()     # ... its first pass (takes a queue credit)
        blk_end = Signal()   # ... its last pass (the block-row / column advance)
        load = Signal()
        last_col = Signal()
        last_col_r = Signal()
        last_row = Signal()
        blk_pop = Signal()
        credit = outstanding < depth
        if n_pass == 1:
            m.d.comb += [beat.eq(k.done & have_row & credit), issue.eq(beat), blk_end.eq(beat)]
            pss = None
        else:
            pss = Signal(range(n_pass))
            first, last = pss == 0, pss == n_pass - 1
            m.d.comb += [
                beat.eq(k.done & have_row & (~first | credit)),
                issue.eq(beat & first),
                blk_end.eq(beat & last),
            ]
            with m.If(beat):
                m.d.sync += pss.eq(Mux(last, 0, pss + 1))
        m.d.comb += [
            last_col.eq(last_col_r),
            last_row.eq(row_base + br >= length),
            load.eq(q.full & (~have_row | (blk_end & last_col))),
            k.rd.addr.eq(col),
            blk_pop.eq(self.blk_out.valid & self.blk_out.ready),
        ]
        m.d.sync += outstanding.eq(outstanding + issue - blk_pop)
        # ``col_base + bc >= length`` one cycle ahead, off the issue -> load -> Q-buffer path:
        # from the next col_base when a block ends, else from the current one (so a new
        # head's valid_len, stable from its first k_in beat, is seen before its first issue)
        with m.If(blk_end):
            m.d.sync += last_col_r.eq(Mux(last_col, bc >= length, col_base + 2 * bc >= length))
        with m.Else():
            m.d.sync += last_col_r.eq(col_base + bc >= length)

        s1 = SimpleNamespace(beat=Signal(self._beat_layout(), name="s1_beat"),
                             meta=Signal(self._meta_layout(), name="s1_meta"),
                             q=Signal(data.ArrayLayout(data.ArrayLayout(
                                 signed(cfg.qk_int_bits), lanes), br), name="s1_q"),
                             pss=None)
        m.d.sync += s1.beat.valid.eq(beat)
        if n_pass > 1:
            m.d.sync += [s1.beat.first.eq(first), s1.beat.last.eq(last)]
        with m.If(issue):
            m.d.sync += [
                s1.meta.row.eq(row),
                s1.meta.col.eq(col),
                s1.meta.last_col.eq(last_col),
                s1.meta.last.eq(last_col & last_row),
            ]
            for ii in range(br):
                i = row_base + ii
                for jj in range(bc):
                    j = col_base + jj
                    kk = ii * bc + jj
                    pos = (i < length) & (j < length)
                    m.d.sync += [
                        s1.meta.pos[kk].eq(pos),
                        s1.meta.ent[kk].eq(pos & (~self.causal | (j <= i))),
                    ]
        if n_pass == 1:
            with m.If(issue):
                m.d.sync += s1.q.eq(q_cur)
        else:
            # the pass's Q elements d = p * lanes + l (0 past head_dim), from the stable q_cur
            s1.pss = Signal(range(n_pass), name="s1_pass")
            m.d.sync += s1.pss.eq(pss)
            with m.If(beat):
                with m.Switch(pss):
                    for p in range(n_pass):
                        with m.Case(p):
                            for ii in range(br):
                                for lane in range(lanes):
                                    e = p * lanes + lane
                                    m.d.sync += s1.q[ii][lane].eq(q_cur[ii][e] if e < d else 0)
        with m.If(blk_end):
            with m.If(last_col):
                m.d.sync += [col.eq(0), col_base.eq(0), have_row.eq(0)]
            with m.Else():
                m.d.sync += [col.eq(col + 1), col_base.eq(col_base + bc)]
        with m.If(load):
            m.d.sync += [
                q_cur.eq(q.load),
                q.full.eq(0),
                have_row.eq(1),
                row.eq(next_row),
                row_base.eq(next_row_base),
                next_row.eq(next_row + 1),
                next_row_base.eq(next_row_base + br),
            ]
        resets += [(have_row, 0), (next_row, 0), (next_row_base, 0), (col, 0), (col_base, 0)]
        return s1

    # ------------------------------------------------------------------------ K operands
    def _operands(self, m, k, s1) -> SimpleNamespace:
        """Stage 2: the memory's read data registered as it is (Yosys does not use the DP16KD
        output register, so logic after the block RAM's access time would be the critical
        path).  With several passes, one more stage selects the pass's K elements from it
        (the word does not change during a block's passes): the DSP blocks' own operand
        registers (``in_regs``), not in front of the multipliers, where the synthesizer
        would duplicate the selection into every product (``int_lanes`` 8: +400 LUT4
        measured)."""
        cfg = self._cfg
        d = cfg.head_dim
        n_pass, lanes = cfg.int_passes, cfg.int_lanes_used
        sk = SimpleNamespace(beat=self._reg(m, s1.beat, "sk_beat"),
                             meta=self._reg(m, s1.meta, "sk_meta"),
                             q=self._reg(m, s1.q, "sk_q"),
                             k=self._reg(m, k.rd.data, "sk_k"), in_regs=False)
        if n_pass == 1:
            sk.kp = self._packed(sk.k, 0, lanes)   # in front of the products
            return sk
        pss = self._reg(m, s1.pss, "sk_pass")
        sel = SimpleNamespace(beat=self._reg(m, sk.beat, "sel_beat"),
                              meta=self._reg(m, sk.meta, "sel_meta"),
                              q=sk.q, in_regs=True)
        groups = self._col_groups()
        sel.kp = [[Signal(self._operand_shape(g), name=f"sel_kp_{gi}_{lane}")
                   for lane in range(lanes)] for gi, g in enumerate(groups)]
        pass0 = self._packed(sk.k, 0, lanes)
        for gi in range(len(groups)):  # pass 0's elements (a don't care where a pass has none)
            for lane in range(lanes):
                m.d.comb += sel.kp[gi][lane].eq(pass0[gi][lane])
        with m.Switch(pss):
            for p in range(1, n_pass):
                with m.Case(p):
                    n_el = min(lanes, d - p * lanes)
                    packed = self._packed(sk.k, p * lanes, n_el)
                    for gi in range(len(groups)):
                        for lane in range(n_el):
                            m.d.comb += sel.kp[gi][lane].eq(packed[gi][lane])
        return sel

    def _col_groups(self) -> list[tuple[int, ...]]:
        """The key columns each multiplier serves: pairs when :func:`pack_shift` packs (an
        odd last column alone), else one column each."""
        bc = self._cfg.block_cols
        if pack_shift(self._cfg, self.acc_width) is None:
            return [(jj,) for jj in range(bc)]
        return [tuple(range(jj, min(jj + 2, bc))) for jj in range(0, bc, 2)]

    def _operand_shape(self, group) -> signed:
        qi = self._cfg.qk_int_bits
        return signed(qi if len(group) == 1 else qi + pack_shift(self._cfg, self.acc_width) + 1)

    def _packed(self, k_words, base, n_el):
        """Per column group and lane, the K operand of elements ``base .. base + n_el - 1``:
        ``k_0 + k_1 2^S`` for a pair, else ``k``."""
        S = pack_shift(self._cfg, self.acc_width)
        return [[k_words[g[0]][base + lane] if len(g) == 1
                 else k_words[g[0]][base + lane] + (k_words[g[1]][base + lane] << S)
                 for lane in range(n_el)] for g in self._col_groups()]

    # ------------------------------------------------------------------------ products and A
    def _dot_products(self, m, sk) -> SimpleNamespace:
        """Stage 3: ``int_lanes`` products registered per Q row and column group (a packed
        pair of key columns, or one column); then the adder trees over ``TREE_STAGES``
        register stages, the last one accumulating the passes into A (split per column)."""
        cfg = self._cfg
        br, bc = cfg.block_rows, cfg.block_cols
        n_pass, lanes = cfg.int_passes, cfg.int_lanes_used
        sp_beat = self._reg(m, self._reg(m, sk.beat, "sp0_beat"), "sp_beat")
        sp_meta = self._reg(m, self._reg(m, sk.meta, "sp0_meta"), "sp_meta")
        S = pack_shift(cfg, self.acc_width)
        groups = self._col_groups()
        parts = {}
        for ii in range(br):
            for gi in range(len(groups)):
                parts[ii, gi] = []
                for e in range(lanes):
                    # the product in the DSP block's own output register (and, with several
                    # passes, the operands in its input registers), then once more in fabric
                    # beside the adder tree: the DSPs sit in fixed rows, up to 40 columns away
                    p = registered_product(m, f"mul_{ii}_{gi}_{e}", sk.q[ii][e], sk.kp[gi][e],
                                           input_regs=sk.in_regs)
                    parts[ii, gi].append(self._reg(m, p, f"prodr_{ii}_{gi}_{e}"))

        add = lambda x, y: x + y  # noqa: E731
        levels = _n_levels(lanes + (n_pass > 1))   # the running sum is one more term
        split = [levels // TREE_STAGES + (s < levels % TREE_STAGES) for s in range(TREE_STAGES)]
        st_beat, st_meta = sp_beat, sp_meta
        for stage, n_lv in enumerate(split[:-1]):
            st_beat = self._reg(m, st_beat, f"st{stage}_beat")
            st_meta = self._reg(m, st_meta, f"st{stage}_meta")
            for key, vals in parts.items():
                parts[key] = [self._reg(m, v, f"sum{stage}_{key[0]}_{key[1]}_{n}")
                              for n, v in enumerate(_tree_levels(vals, add, n_lv))]
        s2 = SimpleNamespace(valid=Signal(name="s2_valid"),
                             meta=self._reg(m, st_meta, "s2_meta"),
                             a=Signal(data.ArrayLayout(signed(self.acc_width), cfg.block_size),
                                      name="s2_a"))
        m.d.sync += s2.valid.eq(st_beat.valid if n_pass == 1 else st_beat.valid & st_beat.last)
        for (ii, gi), vals in parts.items():
            g = groups[gi]
            # a pair's sum holds A_0 + 2^(S-1) in its low S bits and A_1 above them
            bias = 0 if len(g) == 1 else 1 << (S - 1)
            acc = Signal(signed(self.acc_width * len(g)), name=f"acc_{ii}_{gi}")
            if n_pass == 1:
                m.d.sync += acc.eq(_tree(vals + ([bias] if bias else []), add))
            else:
                with m.If(st_beat.valid):
                    m.d.sync += acc.eq(_tree(vals + [Mux(st_beat.first, bias, acc)], add))
            if len(g) == 1:
                m.d.comb += s2.a[ii * bc + g[0]].eq(acc)
            else:
                m.d.comb += [s2.a[ii * bc + g[0]].eq(Cat(acc[:S - 1], ~acc[S - 1])),
                             s2.a[ii * bc + g[1]].eq(acc[S:])]
        return s2

    # ------------------------------------------------------------------------ importance
    def _importance(self, m, s2) -> SimpleNamespace:
        """Masking and the block's reductions over 2 stages (|A| sum, signed sum or maximum:
        the first half of their levels, then the rest); returns the block and its |A| sum."""
        cfg = self._cfg
        nb = cfg.block_size
        reg = lambda expr, name: self._reg(m, expr, name)  # noqa: E731
        add = lambda x, y: x + y  # noqa: E731
        first = -(-_n_levels(nb) // 2)
        a_vals = [s2.a[k] for k in range(nb)]
        ent = [s2.meta.ent[k] for k in range(nb)]
        si_valid = reg(s2.valid, "si_valid")
        si_meta = reg(s2.meta, "si_meta")
        si_a = Signal(s2.a.shape())   # A masked to the valid_len square
        si_blk_valid = reg(s2.meta.ent.any(), "si_blk_valid")
        for k in range(nb):
            m.d.sync += si_a[k].eq(Mux(s2.meta.pos[k], a_vals[k], 0))
        abs_vals = [Mux(ent[k], abs(a_vals[k]), 0) for k in range(nb)]
        h_half = [reg(v, f"h_half_{k}") for k, v in enumerate(_tree_levels(abs_vals, add, first))]
        if cfg.criterion == "sum":
            sums = _tree_levels([Mux(ent[k], a_vals[k], 0) for k in range(nb)], add, first)
            imp_half = [reg(v, f"imp_half_{k}") for k, v in enumerate(sums)]
        elif cfg.criterion == "max":
            pairs = _tree_levels(list(zip(ent, a_vals)), _max_op, first)
            imp_half = [(reg(v, f"imp_half_v{k}"), reg(x, f"imp_half_{k}"))
                        for k, (v, x) in enumerate(pairs)]

        h_part = _tree(h_half, add)
        if cfg.criterion == "abs_sum":
            imp = h_part
        elif cfg.criterion == "sum":
            imp = _tree(imp_half, add)
        else:
            _, mx = _tree(imp_half, _max_op)
            imp = Mux(si_blk_valid, mx, 0)

        s3 = SimpleNamespace(valid=Signal(name="s3_valid"), blk=Signal(block_layout(cfg)),
                             h=Signal(unsigned_width(nb * cfg.a_abs_max)))
        m.d.sync += [
            s3.valid.eq(si_valid),
            s3.blk.imp.eq(imp),
            s3.blk.valid.eq(si_blk_valid),
            s3.blk.row.eq(si_meta.row),
            s3.blk.col.eq(si_meta.col),
            s3.blk.last_col.eq(si_meta.last_col),
            s3.blk.last.eq(si_meta.last),
            s3.h.eq(h_part),
        ]
        for k in range(nb):  # element by element: a test subclass narrows the accumulators
            m.d.sync += s3.blk.a[k].eq(si_a[k])
        return s3

    # ------------------------------------------------------------------------ outputs
    def _output(self, m, s3, resets) -> None:
        """The output queue (``blk_out``), the head importance ``H`` (``h_out``) and the end
        of a head."""
        cfg = self._cfg
        blk = block_layout(cfg)
        m.submodules.out_queue = queue = SyncFIFOBuffered(width=blk.size, depth=self.queue_depth)
        m.d.comb += [
            queue.w_data.eq(s3.blk.as_value()),
            queue.w_en.eq(s3.valid),
            self.blk_out.payload.eq(queue.r_data),
            self.blk_out.valid.eq(queue.r_rdy),
            queue.r_en.eq(self.blk_out.ready),
        ]

        h_acc = Signal(cfg.h_width)
        h_valid = Signal()
        m.d.comb += [self.h_out.valid.eq(h_valid), self.h_out.payload.eq(h_acc)]
        with m.If(s3.valid):
            m.d.sync += h_acc.eq(h_acc + s3.h)
            with m.If(s3.blk.last):
                m.d.sync += h_valid.eq(1)
        with m.If(self.h_out.valid & self.h_out.ready):
            # end of head: the pipeline is empty (the last block has passed stage 3)
            m.d.sync += [h_valid.eq(0), h_acc.eq(0)]
            m.d.sync += [sig.eq(value) for sig, value in resets]
