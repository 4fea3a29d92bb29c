"""Integer score unit: ``A = Q_I K_I^T`` block by block, block importances and head importance.

Golden twins: :func:`golden.score.integer_scores`, :func:`golden.pruner.block_importance`,
:func:`golden.pruner.head_importance` (entry masking: :func:`golden.pruner.entry_mask`).
"""

from amaranth.hdl import Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import HDPConfig, unsigned_width

__all__ = ["ScoreUnit", "qk_row_layout", "qk_int_row_layout", "block_layout", "h_shape",
           "block_row_shape", "block_col_shape", "PIPELINE_DEPTH", "TREE_STAGES"]

#: Adder-tree levels of the ``head_dim``-long dot products are split over this many register
#: stages (the first ones take the extra level when the levels do not divide evenly).
TREE_STAGES = 2

#: Register stages from a block's issue (K memory read) to its entry into the output queue:
#: memory read, K read data (the block RAM's output is registered in logic), products,
#: ``TREE_STAGES`` adder-tree stages (the last one is A), masking + importance (2 stages).
PIPELINE_DEPTH = 5 + TREE_STAGES


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
        ``b_r * b_c`` dot products of length ``d`` in parallel, each with ``d`` signed
        ``(qk_bits - qk_frac)``-bit multipliers and a balanced adder tree: one whole block per
        cycle.  Pipeline (``PIPELINE_DEPTH`` = 7 register stages): issue (K memory read) ->
        K read data registered -> products registered -> adder tree split over
        ``TREE_STAGES`` = 2 register stages (the last one holds A) -> masking and the first
        half of the importance reductions -> their second half -> output queue
        (``SyncFIFOBuffered``).  The memory access, the multipliers, each half of the adder
        tree and each half of the importance reductions are in separate cycles (the
        timing-critical path of the 3-stage version had the first three in one).  Issue is
        credit based: a block is issued only when the queue is sure to have room for it, so
        backpressure on ``blk_out`` stalls issue without loss and never reaches the datapath
        registers.

    Latency and throughput (measured in ``tests/test_score_unit.py::test_throughput_and_latency``)
        * Throughput: one block per cycle with ``blk_out`` always ready.  A head with
          ``valid_len = L`` occupies the unit for exactly ``L + ceil(L/b_r) * ceil(L/b_c) + 8``
          cycles, first ``k_in`` beat to ``h_out`` handshake inclusive, when Q rows stream at
          one per cycle alongside K (its first ``b_r`` rows in by the last K row) and
          ``ceil(L/b_c) > b_r`` (measured: tiny L = 8: 32 cycles for the
          ideal 16 blocks + 8 K rows; odd L = 13: 56 for 35 + 13; default L = 64: 1096 for
          1024 + 64, 99.3 %; default L = 128: 4232 for 4096 + 128).  When a block-row has at
          most ``b_r`` block columns, Q loading (one row per cycle) bounds the rate instead.
          If Q starts only after the last K row, add ``b_r + 1`` cycles per head (by design,
          not measured).
        * Latency: the first block of a head is issued 1 cycle after the last K row is accepted
          (its Q rows load meanwhile); every block is on ``blk_out`` 9 cycles after its issue
          (``PIPELINE_DEPTH + 2``); ``h_out`` is valid 8 cycles after the last block's issue
          (``PIPELINE_DEPTH + 1``).
        * Between heads: the next ``k_in`` beat is accepted the cycle after the ``h_out``
          handshake.

    Parameters
    ----------
    cfg : HDPConfig
        The whole configuration; uses ``seq_len``, ``head_dim``, ``qk_bits``, ``qk_frac``,
        ``block_rows``, ``block_cols``, ``criterion`` and the derived widths.

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
        cfg = self._cfg
        m = Module()
        br, bc, d = cfg.block_rows, cfg.block_cols, cfg.head_dim
        nb = br * bc
        frac = cfg.qk_frac
        length = self.valid_len
        int_row = qk_int_row_layout(cfg)
        blk = block_layout(cfg)
        depth = self.queue_depth

        def int_part(x):
            return x[frac:].as_signed()

        # ---------------------------------------------------------------- K memory
        k_word = data.ArrayLayout(int_row, bc)
        m.submodules.k_mem = k_mem = Memory(shape=k_word, depth=cfg.n_block_cols, init=[])
        k_wr = k_mem.write_port(granularity=1)
        k_rd = k_mem.read_port()

        pos_w = unsigned_width(cfg.seq_len + max(br, bc))
        k_done = Signal()
        k_cnt = Signal(pos_w)
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
                m.d.comb += k_wr.data[lane][e].eq(int_part(self.k_in.payload[e]))
            m.d.comb += k_wr.en[lane].eq(k_fire & (k_lane == lane))
        with m.If(k_fire):
            m.d.sync += k_cnt.eq(k_cnt + 1)
            with m.If(k_lane == bc - 1):
                m.d.sync += [k_lane.eq(0), k_addr.eq(k_addr + 1)]
            with m.Else():
                m.d.sync += k_lane.eq(k_lane + 1)
            with m.If(k_cnt + 1 >= length):
                m.d.sync += k_done.eq(1)

        # ---------------------------------------------------------------- Q double buffer
        q_rows = data.ArrayLayout(int_row, br)
        q_load = Signal(q_rows)
        q_cur = Signal(q_rows)
        q_full = Signal()
        q_done = Signal()
        q_cnt = Signal(pos_w)
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
                        m.d.sync += q_load[ii][e].eq(int_part(self.q_in.payload[e]))
            m.d.sync += q_cnt.eq(q_cnt + 1)
            with m.If(q_cnt + 1 >= length):
                m.d.sync += q_done.eq(1)
            with m.If((q_sub == br - 1) | (q_cnt + 1 >= length)):
                m.d.sync += [q_sub.eq(0), q_full.eq(1)]
            with m.Else():
                m.d.sync += q_sub.eq(q_sub + 1)

        # ---------------------------------------------------------------- issue
        have_row = Signal()
        row = Signal(block_row_shape(cfg))
        row_base = Signal(pos_w)
        next_row = Signal(block_row_shape(cfg))
        next_row_base = Signal(pos_w)
        col = Signal(block_col_shape(cfg))
        col_base = Signal(pos_w)
        outstanding = Signal(range(depth + 1))
        issue = Signal()
        load = Signal()
        last_col = Signal()
        last_col_r = Signal()
        last_row = Signal()
        blk_pop = Signal()
        m.d.comb += [
            issue.eq(k_done & have_row & (outstanding < depth)),
            last_col.eq(last_col_r),
            last_row.eq(row_base + br >= length),
            load.eq(q_full & (~have_row | (issue & last_col))),
            k_rd.addr.eq(col),
            blk_pop.eq(self.blk_out.valid & self.blk_out.ready),
        ]
        m.d.sync += outstanding.eq(outstanding + issue - blk_pop)
        # ``col_base + bc >= length`` one cycle ahead, off the issue -> load -> Q-buffer path:
        # from the next col_base when a block issues, else from the current one (so a new
        # head's valid_len, stable from its first k_in beat, is seen before its first issue)
        with m.If(issue):
            m.d.sync += last_col_r.eq(Mux(last_col, bc >= length, col_base + 2 * bc >= length))
        with m.Else():
            m.d.sync += last_col_r.eq(col_base + bc >= length)

        meta = data.StructLayout({
            "row": block_row_shape(cfg),
            "col": block_col_shape(cfg),
            "last_col": unsigned(1),
            "last": unsigned(1),
            "pos": unsigned(nb),  # entry inside the valid_len x valid_len square
            "ent": unsigned(nb),  # valid entry (pos and causal rule)
        })
        s1_valid = Signal()
        s1_meta = Signal(meta)
        s1_q = Signal(q_rows)
        m.d.sync += s1_valid.eq(issue)
        with m.If(issue):
            m.d.sync += [
                s1_q.eq(q_cur),
                s1_meta.row.eq(row),
                s1_meta.col.eq(col),
                s1_meta.last_col.eq(last_col),
                s1_meta.last.eq(last_col & last_row),
            ]
            for ii in range(br):
                i = row_base + ii
                for jj in range(bc):
                    j = col_base + jj
                    k = ii * bc + jj
                    pos = (i < length) & (j < length)
                    m.d.sync += [
                        s1_meta.pos[k].eq(pos),
                        s1_meta.ent[k].eq(pos & (~self.causal | (j <= i))),
                    ]
            with m.If(last_col):
                m.d.sync += [col.eq(0), col_base.eq(0), have_row.eq(0)]
            with m.Else():
                m.d.sync += [col.eq(col + 1), col_base.eq(col_base + bc)]
        with m.If(load):
            m.d.sync += [
                q_cur.eq(q_load),
                q_full.eq(0),
                have_row.eq(1),
                row.eq(next_row),
                row_base.eq(next_row_base),
                next_row.eq(next_row + 1),
                next_row_base.eq(next_row_base + br),
            ]

        # ---------------------------------------------------------------- stage 1: K register
        # the block RAM's read data goes straight into registers (Yosys does not use the
        # DP16KD output register), so the memory access time is not added to the multipliers
        sk_valid = Signal()
        sk_meta = Signal(meta)
        sk_q = Signal(q_rows)
        sk_k = Signal(k_word)
        m.d.sync += [sk_valid.eq(s1_valid), sk_meta.eq(s1_meta), sk_q.eq(s1_q),
                     sk_k.eq(k_rd.data)]

        # ---------------------------------------------------------------- stage 2: products
        sp_valid = Signal()
        sp_meta = Signal(meta)
        m.d.sync += [sp_valid.eq(sk_valid), sp_meta.eq(sk_meta)]
        parts = {}
        for ii in range(br):
            for jj in range(bc):
                prods = []
                for e in range(d):
                    expr = sk_q[ii][e] * sk_k[jj][e]
                    p = Signal(expr.shape(), name=f"prod_{ii}_{jj}_{e}")
                    m.d.sync += p.eq(expr)
                    prods.append(p)
                parts[ii, jj] = prods

        # ---------------------------------------------------------------- adder-tree stages (A)
        acc = signed(self.acc_width)
        levels = _n_levels(d)
        split = [levels // TREE_STAGES + (s < levels % TREE_STAGES) for s in range(TREE_STAGES)]
        st_valid, st_meta = sp_valid, sp_meta
        for stage, n_lv in enumerate(split[:-1]):
            nv, nm = Signal(name=f"st{stage}_valid"), Signal(meta, name=f"st{stage}_meta")
            m.d.sync += [nv.eq(st_valid), nm.eq(st_meta)]
            for key, vals in parts.items():
                nxt = []
                for k, expr in enumerate(_tree_levels(vals, lambda x, y: x + y, n_lv)):
                    expr = Value.cast(expr)
                    r = Signal(expr.shape(), name=f"sum{stage}_{key[0]}_{key[1]}_{k}")
                    m.d.sync += r.eq(expr)
                    nxt.append(r)
                parts[key] = nxt
            st_valid, st_meta = nv, nm
        s2_valid = Signal()
        s2_meta = Signal(meta)
        s2_a = Signal(data.ArrayLayout(acc, nb))
        m.d.sync += [s2_valid.eq(st_valid), s2_meta.eq(st_meta)]
        for (ii, jj), vals in parts.items():
            m.d.sync += s2_a[ii * bc + jj].eq(_tree(vals, lambda x, y: x + y))

        # ---------------------------------------------------------------- importance, 2 stages
        # the reductions over the block's entries (|A| sum, signed sum or maximum) are split:
        # the first half of their levels here, the rest in the last stage
        def reg(expr, name):
            expr = Value.cast(expr)
            r = Signal(expr.shape(), name=name)
            m.d.sync += r.eq(expr)
            return r

        add = lambda x, y: x + y  # noqa: E731
        first = -(-_n_levels(nb) // 2)
        a_vals = [s2_a[k] for k in range(nb)]
        ent = [s2_meta.ent[k] for k in range(nb)]
        si_valid = Signal()
        si_meta = Signal(meta)
        si_a = Signal(data.ArrayLayout(acc, nb))   # A masked to the valid_len square
        si_blk_valid = Signal()
        m.d.sync += [si_valid.eq(s2_valid), si_meta.eq(s2_meta),
                     si_blk_valid.eq(s2_meta.ent.any())]
        for k in range(nb):
            m.d.sync += si_a[k].eq(Mux(s2_meta.pos[k], a_vals[k], 0))
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
        blk_valid = si_blk_valid
        if cfg.criterion == "abs_sum":
            imp = h_part
        elif cfg.criterion == "sum":
            imp = _tree(imp_half, add)
        else:
            _, mx = _tree(imp_half, _max_op)
            imp = Mux(blk_valid, mx, 0)

        s3_valid = Signal()
        s3 = Signal(blk)
        s3_h = Signal(unsigned_width(nb * cfg.a_abs_max))
        m.d.sync += [
            s3_valid.eq(si_valid),
            s3.imp.eq(imp),
            s3.valid.eq(blk_valid),
            s3.row.eq(si_meta.row),
            s3.col.eq(si_meta.col),
            s3.last_col.eq(si_meta.last_col),
            s3.last.eq(si_meta.last),
            s3_h.eq(h_part),
        ]
        for k in range(nb):  # element by element: a test subclass narrows the accumulators
            m.d.sync += s3.a[k].eq(si_a[k])

        # ---------------------------------------------------------------- output queue
        m.submodules.out_queue = queue = SyncFIFOBuffered(width=blk.size, depth=depth)
        m.d.comb += [
            queue.w_data.eq(s3.as_value()),
            queue.w_en.eq(s3_valid),
            self.blk_out.payload.eq(queue.r_data),
            self.blk_out.valid.eq(queue.r_rdy),
            queue.r_en.eq(self.blk_out.ready),
        ]

        # ---------------------------------------------------------------- head importance
        h_acc = Signal(cfg.h_width)
        h_valid = Signal()
        m.d.comb += [self.h_out.valid.eq(h_valid), self.h_out.payload.eq(h_acc)]
        with m.If(s3_valid):
            m.d.sync += h_acc.eq(h_acc + s3_h)
            with m.If(s3.last):
                m.d.sync += h_valid.eq(1)
        with m.If(self.h_out.valid & self.h_out.ready):
            # end of head: the pipeline is empty (the last block has passed stage 3)
            m.d.sync += [
                h_valid.eq(0), h_acc.eq(0),
                k_done.eq(0), k_cnt.eq(0), k_addr.eq(0), k_lane.eq(0),
                q_done.eq(0), q_cnt.eq(0), q_sub.eq(0), q_full.eq(0),
                have_row.eq(0), next_row.eq(0), next_row_base.eq(0),
                col.eq(0), col_base.eq(0),
            ]
        return m
