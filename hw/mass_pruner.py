"""Mass pruner: the ``mass`` pruning mode, keep the fewest blocks of a block-row whose estimated
softmax mass reaches ``1 - eps``.

Golden twin: :func:`golden.mass_pruner.block_mass` and :func:`golden.mass_pruner.mass_keep`
(with :func:`golden.mass_pruner.estimated_scores`), bit-exact.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.mass_pruner import N_BUCKETS, RECIP_BITS
from golden.tables import softmax_constants

from .block_pruner import mask_layout
from .config import EPS_BITS, HDPConfig, unsigned_width
from .dsp import registered_product
from .fifo import LutSyncFIFOBuffered
from .score_unit import block_layout, qk_row_layout

__all__ = ["MassPruner", "mass_mask_latency", "OUT_DEPTH"]

#: Rows the output queue holds; a block-row is accepted only while fewer are in flight, so
#: the queue never overflows.  Deeper than the rows in flight at one block per cycle, so a
#: pruner whose ``mask_out`` is always ready never holds ``blk_in``.
OUT_DEPTH = 40



def mass_mask_latency(cfg: HDPConfig, n_cols: int) -> int:
    """Cycles from the handshake of a block-row's last block to its mask on ``mask_out``
    (always ready) for a block-row of ``n_cols`` blocks: three scans of the row (exponents,
    masses, decisions, ``n_cols`` cycles each) and 25 fixed pipeline registers (input 4,
    queues and their output registers 3 x 3, exponents 4, reciprocal 2, masses 4, threshold
    product 2).  Measured in ``tests/test_mass_pruner.py`` and the cocotb bench; the cycle
    models read it from here."""
    return 3 * n_cols + 25


def _msb(m, v, width, name):
    """``msb(v)`` (0 for ``v = 0``) as a priority encoder."""
    out = Signal(range(max(2, width)), name=name)
    for b in range(width):
        with m.If(v[b]):
            m.d.comb += out.eq(b)
    return out


def _lanes(layout, n):
    return data.ArrayLayout(layout, n)


class MassPruner(wiring.Component):
    """Probability-mass block pruning: one keep mask per block-row.

    Golden twin: :func:`golden.mass_pruner.mass_keep` of
    :func:`golden.mass_pruner.block_mass`, bit-exact.

    Parameters
    ----------
    cfg : HDPConfig
        Elaboration limits: ``seq_len``, ``head_dim``, block shape, number formats, the
        softmax constants (``exp_bits`` W, ``exp_frac``, ``prob_frac`` P).  Needs
        ``W >= 6`` and ``W + 6 >= P`` (the reciprocal table's 6 index bits).

    Ports
    -----
    k_in : In(stream.Signature(qk_row_layout(cfg)))
        The head's quantized K rows in order (always ready): each row's integer-part sum
        ``K_j`` is stored (two cycles later; ``blk_in`` is not ready meanwhile).  Every K row
        of a head arrives before its first block.
    blk_in : In(stream.Signature(block_layout(cfg)))
        The score unit's blocks (``a``: ``A`` of the block's entries; ``valid``, ``row``,
        ``col``, ``last_col``, ``last``) in row-major block order, block columns ``c <
        ceil(L / b_c)``; ``imp`` is not used.
    mask_out : Out(stream.Signature(mask_layout(cfg)))
        One beat per block-row, in order.
    valid_len, causal : In
        The head's length ``L`` and causal masking, sampled with every accepted block.
    eps_q : In(EPS_BITS)
        ``eps * 2**8``, sampled with each block-row's last block.

    Rule and arithmetic
    -------------------
    Per entry ``S^ = (2 A + K_j) << (2F - 1)``; the final softmax's exponents
    ``e = exp_lut[t mod 2^E] >> (t >> E)``, ``t = (min(max - S^, delta_max) * scale) >> 16``
    over the row's valid entries; per row and block ``E`` = the block's exponents summed;
    the row's reciprocal ``R`` from a 64-entry table on the 7 leading bits of the row's
    exponent sum; the block's mass ``M`` = the sum over its rows of ``E * R`` shifted to
    ``P`` fraction bits, rounded half up.  Keep a valid block when it is diagonal, or when
    ``M > 0`` and the mass in strictly larger half-octave buckets ``before`` satisfies
    ``before * 2^8 < (2^8 - eps_q) * T`` (``T`` the row's total mass).

    Architecture
    ------------
    Five parts in a chain, each a scan of one block per cycle or a fixed pipeline, joined
    by FIFOs of block items (so a part starts a block-row while the previous part is on the
    next one):

    * **IN**: a block's ``K_j`` are read from ``b_c`` small memories, its ``S^`` (as
      ``2 A + K_j``), entry validity and diagonal flag are registered and queued; the rows'
      maxima are kept.  The row's last block starts the next part.
    * **EXP**: ``b_r * b_c`` exponent lanes (one multiplier each) turn the queued items into
      per-row block sums ``E``, queued again; the row's exponent sums are kept.
    * **NORM**: the rows' reciprocals (priority encoder, 64-entry table).
    * **MASS**: ``b_r`` multipliers give each block's ``M`` and half-octave key; per row the
      mass above each key (a block adds its mass to the sum of every smaller key), the total
      and the largest key are kept.
    * **THRESHOLD / DECIDE**: ``(2^8 - eps_q) T``; a scan of the row's masses sets the keep
      bits (each registered before it is ORed into the row's mask); the mask goes into the
      output queue.

    Throughput: one block per cycle, continuously within a head (each scan takes exactly the
    row's blocks in cycles, so the rows of a head follow each other through every scan).
    Latency: :func:`mass_mask_latency`.  Backpressure: a block is accepted only while fewer
    than :data:`OUT_DEPTH` block-rows are in flight or queued, and a head's first block only
    once the previous head's last mask has left the scans (a shorter row would catch up with
    a longer one; the top runs one head at a time, so it never waits there).
    """

    # rules a broken variant in the tests turns off (each must be caught)
    _round_shares = True
    _keep_diagonal = True

    def __init__(self, cfg: HDPConfig):
        try:
            self._check(cfg)
        except (TypeError, ValueError):
            self._MustUse__silence = True  # a rejected build is not an unused elaboratable
            raise
        self._cfg = cfg
        self._w = _widths(cfg)
        super().__init__({
            "k_in": In(stream.Signature(qk_row_layout(cfg))),
            "blk_in": In(stream.Signature(block_layout(cfg))),
            "mask_out": Out(stream.Signature(mask_layout(cfg))),
            "valid_len": In(cfg.valid_len_width),
            "causal": In(1),
            "eps_q": In(EPS_BITS),
        })

    @staticmethod
    def _check(cfg) -> None:
        if not isinstance(cfg, HDPConfig):
            raise TypeError(f"cfg must be an HDPConfig, not {cfg!r}")
        if cfg.exp_bits < RECIP_BITS:
            raise ValueError(f"exp_bits must be >= {RECIP_BITS} for the mass pruner's "
                             f"reciprocal table, not {cfg.exp_bits}")
        if cfg.exp_bits + RECIP_BITS < cfg.prob_frac:
            raise ValueError(f"prob_frac must be <= exp_bits + {RECIP_BITS} = "
                             f"{cfg.exp_bits + RECIP_BITS} for the mass pruner, not "
                             f"{cfg.prob_frac}")

    def elaborate(self, platform):
        m = Module()
        self._head_out = Signal()      # the head's last mask enters the output queue
        ks = self._ksums(m)
        go_exp, s_fifo = self._in_stage(m, ks)
        go_norm, e_fifo = self._exp_stage(m, go_exp, s_fifo)
        go_mass = self._norm_stage(m, go_norm)
        go_thr, m_fifo = self._mass_stage(m, go_mass, e_fifo)
        go_dec = self._thr_stage(m, go_thr)
        self._decide_stage(m, go_dec, m_fifo)
        return m

    # ------------------------------------------------------------------------------ K sums
    def _ksums(self, m):
        """``K_j`` of each K row into memory ``j mod b_c`` at ``j // b_c`` (two registered
        steps: group sums, then the total)."""
        cfg, w = self._cfg, self._w
        bc, F = cfg.block_cols, cfg.qk_frac
        m.d.comb += self.k_in.ready.eq(1)
        groups = [list(range(g, min(g + 8, cfg.head_dim))) for g in range(0, cfg.head_dim, 8)]
        part = [Signal(signed(w.ks + 1), name=f"kpart_{n}") for n in range(len(groups))]
        v1, v2 = Signal(), Signal()
        for p_sig, g in zip(part, groups):
            m.d.sync += p_sig.eq(sum(self.k_in.payload[e] >> F for e in g))
        total = Signal(signed(w.ks))
        lane = Signal(range(max(2, bc)))
        col = Signal(range(max(2, cfg.n_block_cols)))
        m.d.sync += [v1.eq(self.k_in.valid), v2.eq(v1), total.eq(sum(part))]
        self._k_busy = self.k_in.valid | v1     # blocks wait until the sums are written
        mems = []
        for jj in range(bc):
            mem = Memory(shape=signed(w.ks), depth=cfg.n_block_cols, init=[])
            m.submodules[f"ksum_{jj}"] = mem
            wr = mem.write_port()
            m.d.comb += [wr.addr.eq(col), wr.data.eq(total), wr.en.eq(v2 & (lane == jj))]
            mems.append(mem)
        reset = self.blk_in.valid & self.blk_in.ready & self.blk_in.payload.last
        with m.If(reset):
            m.d.sync += [lane.eq(0), col.eq(0)]
        with m.Elif(v2):
            m.d.sync += [lane.eq(Mux(lane == bc - 1, 0, lane + 1)),
                         col.eq(Mux(lane == bc - 1, col + 1, col))]
        return [mem.read_port() for mem in mems]

    # ------------------------------------------------------------------------------ IN
    def _in_stage(self, m, ks_rd):
        """Accept blocks, form ``2 A + K_j`` and the flags, keep the rows' maxima."""
        cfg, w = self._cfg, self._w
        br, bc, _bs = cfg.block_rows, cfg.block_cols, cfg.block_size
        blk = self.blk_in
        # credits: block-rows accepted (whole or in part) and not yet delivered
        inflight = Signal(range(OUT_DEPTH + 2))
        ready = Signal()
        row_in = blk.valid & blk.ready & blk.payload.last_col
        row_out = self.mask_out.valid & self.mask_out.ready
        # row_out (the consumer's ready, late in the cycle) only selects between results
        # formed without it: inflight + row_in - row_out -> comparison was the whole top's
        # critical path at nextpnr seed 2 (92.1 MHz)
        base = inflight + row_in
        nxt = Mux(row_out, base - 1, base)
        room = Mux(row_out, base <= OUT_DEPTH, base < OUT_DEPTH)   # nxt < OUT_DEPTH
        # a head's blocks wait until the previous head's last mask is out of the scans (its
        # rows may be longer: a shorter row would catch up with them)
        drain = Signal()
        drain_nxt = Mux(blk.valid & blk.ready & blk.payload.last, 1,
                        Mux(self._head_out, 0, drain))
        m.d.sync += [inflight.eq(nxt), drain.eq(drain_nxt),
                     ready.eq(room & ~self._k_busy & ~drain_nxt)]
        m.d.comb += blk.ready.eq(ready)
        fire = blk.valid & blk.ready
        for rd in ks_rd:
            m.d.comb += [rd.addr.eq(blk.payload.col), rd.en.eq(fire)]
        b0 = Signal(block_layout(cfg))
        v0 = Signal()
        eps0 = Signal(EPS_BITS)
        L, causal = Signal.like(self.valid_len), Signal()
        m.d.sync += [v0.eq(fire), b0.eq(blk.payload), eps0.eq(self.eps_q),
                     L.eq(self.valid_len), causal.eq(self.causal)]
        # X1: S^ (as u = 2A + K_j, halved when F = 0), entry validity, diagonal
        item = Signal(w.s_item)
        v1 = Signal()
        meta1 = Signal(w.meta)
        i0 = Signal(range(cfg.seq_len + br + 1))
        j0 = Signal(range(cfg.seq_len + bc + 1))
        m.d.comb += [i0.eq(b0.row * br), j0.eq(b0.col * bc)]
        diag = []
        for ii in range(br):
            i = i0 + ii
            diag.append((i < L) & (j0 <= i) & (i < j0 + bc))
        m.d.sync += [v1.eq(v0), item.bvalid.eq(b0.valid), item.diag.eq(Cat(*diag).any()),
                     meta1.row.eq(b0.row), meta1.last.eq(b0.last), meta1.eps_q.eq(eps0),
                     meta1.lst.eq(b0.last_col)]
        for ii in range(br):
            for jj in range(bc):
                e = ii * bc + jj
                i, j = i0 + ii, j0 + jj
                s = 2 * b0.a[e] + ks_rd[jj].data
                valid = (i < L) & (j < L) & (~causal | (j <= i))
                m.d.sync += [item.u[e].eq(s >> 1 if cfg.qk_frac == 0 else s),
                             item.em[e].eq(valid)]
        # X2: queue the item, the rows' maxima; a row's last block starts EXP
        fifo = SyncFIFOBuffered(width=w.s_item.size, depth=cfg.n_block_cols + 8)
        m.submodules.s_fifo = fifo
        m.d.comb += [fifo.w_data.eq(item), fifo.w_en.eq(v1)]
        # X2: each block row's largest valid u (registered), X3: the rows' running maxima
        bmax = Signal(_lanes(signed(w.u), br))
        v2, meta2 = Signal(), Signal(w.meta)
        m.d.sync += [v2.eq(v1), meta2.eq(meta1)]
        lo = Const(w.u_lo, signed(w.u))
        for ii in range(br):
            # invalid entries as the lowest value, then a balanced tree of comparisons
            vals = [Mux(item.em[ii * bc + jj], item.u[ii * bc + jj], lo) for jj in range(bc)]
            while len(vals) > 1:
                nxt = [Mux(x > y, x, y) for x, y in zip(vals[::2], vals[1::2])]
                vals = nxt + ([vals[-1]] if len(vals) % 2 else [])
            m.d.sync += bmax[ii].eq(vals[0])
        mx = Signal(_lanes(signed(w.u), br))
        cnt = Signal(range(cfg.n_block_cols + 1))
        go = Signal(w.go_exp)
        m.d.sync += go.valid.eq(0)
        with m.If(v2):
            for ii in range(br):
                new = Mux(bmax[ii] > mx[ii], bmax[ii], mx[ii])
                with m.If(meta2.lst):
                    m.d.sync += [go.mx[ii].eq(new), mx[ii].eq(w.u_lo)]
                with m.Else():
                    m.d.sync += mx[ii].eq(new)
            with m.If(meta2.lst):
                m.d.sync += [go.valid.eq(1), go.meta.eq(meta2), go.meta.n.eq(cnt + 1), cnt.eq(0)]
            with m.Else():
                m.d.sync += cnt.eq(cnt + 1)
        with m.If(~v2 & (cnt == 0)):
            # reset value of the running maxima (before a head's first row)
            m.d.sync += [mx[ii].eq(w.u_lo) for ii in range(br)]
        return go, fifo

    # ------------------------------------------------------------------------------ EXP
    def _scan(self, m, go, fifo, layout, name):
        """A scan: on ``go`` latch the row's values, then pop ``go.n`` items, one per cycle.
        Returns ``(valid, first, lst, cur, item)``, all registered one cycle after the pop (the
        queue's block-RAM output goes only into a register): the item, whether it is the row's
        first and last, and the row's values (``go`` as latched, delayed with the item, so the
        next row's ``go`` may come with this row's last pop)."""
        cur = Signal.like(go, name=f"{name}_cur")
        left = Signal(range(self._cfg.n_block_cols + 1), name=f"{name}_left")
        first = Signal(name=f"{name}_first")
        pop = Signal(name=f"{name}_pop")
        m.d.comb += [pop.eq((left != 0) & fifo.r_rdy), fifo.r_en.eq(pop)]
        with m.If(go.valid):
            m.d.sync += [cur.eq(go), left.eq(go.meta.n), first.eq(1)]
        with m.Elif(pop):
            m.d.sync += [left.eq(left - 1), first.eq(0)]
        item = Signal(layout, name=f"{name}_item")
        cur_r = Signal.like(go, name=f"{name}_cur_r")
        v_r, first_r, lst_r = (Signal(name=f"{name}_{x}_r") for x in ("v", "first", "lst"))
        m.d.sync += [item.eq(fifo.r_data), cur_r.eq(cur), v_r.eq(pop), first_r.eq(first),
                     lst_r.eq(pop & (left == 1))]
        return v_r, first_r, lst_r, cur_r, item

    def _exp_stage(self, m, go, s_fifo):
        """Exponents of each queued item; per row and block the sums ``E``."""
        cfg, w, k = self._cfg, self._w, self._k
        br, bc, bs, E, W = cfg.block_rows, cfg.block_cols, cfg.block_size, cfg.exp_frac, cfg.exp_bits
        pop, first, lst, cur, it = self._scan(m, go, s_fifo, w.s_item, "exp")
        sh = max(2 * cfg.qk_frac - 1, 0)
        lim = k.delta_max >> sh
        # each row's mx - lim, latched and delayed like the scan's row values (cur), so that
        # E1's clamp (mx - u > lim, i.e. u < mx - lim) runs beside mx - u, not after it: the
        # subtraction -> comparison -> delta's clamp was the whole top's critical path at
        # nextpnr seed 1 (97.1 MHz)
        mxl_shape = (go.mx[0] - lim).shape()
        mxl_go = [Signal(mxl_shape, name=f"exp_mxl_go_{ii}") for ii in range(br)]
        mxl = [Signal(mxl_shape, name=f"exp_mxl_{ii}") for ii in range(br)]
        with m.If(go.valid):
            m.d.sync += [mxl_go[ii].eq(go.mx[ii] - lim) for ii in range(br)]
        m.d.sync += [mxl[ii].eq(mxl_go[ii]) for ii in range(br)]
        # E1: delta, into the DSP blocks' operand registers (hw/dsp.py)
        em1, p1 = Signal(bs), Signal(w.pipe)
        m.d.sync += [p1.v.eq(pop), p1.first.eq(first), p1.lst.eq(lst), p1.meta.eq(cur.meta),
                     p1.bvalid.eq(it.bvalid), p1.diag.eq(it.diag), em1.eq(it.em)]
        # E2: products delta * scale, in the DSP blocks' output registers
        prod = []
        for e in range(bs):
            diff = Signal(signed(w.u + 2), name=f"diff_{e}")
            m.d.comb += diff.eq(cur.mx[e // bc] - it.u[e])
            prod.append(registered_product(
                m, f"exp_mul_{e}", Mux(it.u[e] < mxl[e // bc], k.delta_max, (diff << sh)[:w.dm]),
                k.scale, a_shape=unsigned(w.dm),
                into=Signal(unsigned(w.dm + k.scale.bit_length()), name=f"exp_prod_{e}")))
        em2, p2 = Signal(bs), Signal(w.pipe)
        m.d.sync += [p2.eq(p1), em2.eq(em1)]
        # E3: table and shift amount
        lutv = Signal(_lanes(unsigned(W + 1), bs))
        ti = Signal(_lanes(unsigned(unsigned_width(W + 1)), bs))
        em3, p3 = Signal(bs), Signal(w.pipe)
        m.d.sync += [p3.eq(p2), em3.eq(em2)]
        for e in range(bs):
            lut = Memory(shape=unsigned(W + 1), depth=1 << E, init=k.exp_lut)
            m.submodules[f"exp_lut_{e}"] = lut
            rd = lut.read_port(domain="comb")
            t = Signal(prod[e].shape().width - k.scale_shift, name=f"t_{e}")
            m.d.comb += [t.eq(prod[e] >> k.scale_shift), rd.addr.eq(t[:E])]
            m.d.sync += [lutv[e].eq(rd.data),
                         ti[e].eq(Mux((t >> E) > W + 1, W + 1, t >> E))]
        # E4: exponents summed per row of the block
        item = Signal(w.e_item)
        p4 = Signal(w.pipe)
        m.d.sync += [p4.eq(p3), item.bvalid.eq(p3.bvalid), item.diag.eq(p3.diag)]
        for ii in range(br):
            m.d.sync += item.e[ii].eq(sum(Mux(em3[ii * bc + jj], lutv[ii * bc + jj]
                                              >> ti[ii * bc + jj], 0) for jj in range(bc)))
        # E5: queue; the rows' exponent sums
        fifo = SyncFIFOBuffered(width=w.e_item.size, depth=cfg.n_block_cols + 8)
        m.submodules.e_fifo = fifo
        m.d.comb += [fifo.w_data.eq(item), fifo.w_en.eq(p4.v)]
        acc = Signal(_lanes(unsigned(w.esum), br))
        go_n = Signal(w.go_norm)
        m.d.sync += go_n.valid.eq(0)
        with m.If(p4.v):
            for ii in range(br):
                tot = Mux(p4.first, 0, acc[ii]) + item.e[ii]
                m.d.sync += [acc[ii].eq(tot), go_n.sums[ii].eq(tot)]
            m.d.sync += [go_n.valid.eq(p4.lst), go_n.meta.eq(p4.meta)]
        return go_n, fifo

    def _norm_stage(self, m, go):
        """Per row: ``R`` from the table on the sum's 7 leading bits, ``sh = msb + 7 - P``."""
        cfg, w = self._cfg, self._w
        br, RB, P = cfg.block_rows, RECIP_BITS, cfg.prob_frac
        n1 = Signal(w.go_norm)
        msb = Signal(_lanes(unsigned(unsigned_width(w.esum)), br))
        m.d.sync += n1.eq(go)
        for ii in range(br):
            m.d.sync += msb[ii].eq(_msb(m, go.sums[ii], w.esum, f"msb_{ii}"))
        out = Signal(w.go_mass)
        m.d.sync += [out.valid.eq(n1.valid), out.meta.eq(n1.meta)]
        table = [(1 << (2 * RB + 1)) // u for u in range(1 << RB, 1 << (RB + 1))]
        for ii in range(br):
            rt = Memory(shape=unsigned(RB + 2), depth=1 << RB, init=table)
            m.submodules[f"recip_{ii}"] = rt
            rd = rt.read_port(domain="comb")
            u = Signal(RB + 1, name=f"u_{ii}")
            m.d.comb += [u.eq(n1.sums[ii] >> (msb[ii] - RB)[:msb[ii].shape().width]),
                         rd.addr.eq(u[:RB])]
            m.d.sync += [out.r[ii].eq(Mux(n1.sums[ii] == 0, 0, rd.data)),
                         out.sh[ii].eq(msb[ii] + (RB + 1 - P))]
        return out

    # ------------------------------------------------------------------------------ MASS
    def _mass_stage(self, m, go, e_fifo):
        """Each block's mass, its key; per row the mass above each key, the total, the top key."""
        cfg, w = self._cfg, self._w
        br = cfg.block_rows
        pop, first, lst, cur, it = self._scan(m, go, e_fifo, w.e_item, "mass")
        p1 = Signal(w.pipe)
        m.d.sync += [p1.v.eq(pop), p1.first.eq(first), p1.lst.eq(lst), p1.meta.eq(cur.meta),
                     p1.bvalid.eq(it.bvalid), p1.diag.eq(it.diag)]
        prod = []   # E * r, in the DSP blocks' output registers (hw/dsp.py)
        for ii in range(br):
            prod.append(registered_product(
                m, f"mass_mul_{ii}", it.e[ii], cur.r[ii], input_regs=False,
                into=Signal(unsigned(w.esum_blk + RECIP_BITS + 2), name=f"mass_prod_{ii}")))
        sh1 = Signal.like(cur.sh)
        m.d.sync += sh1.eq(cur.sh)
        # M2: each row's product shifted to one bit below P's units (registered), M2b: the
        # shares rounded half up, summed
        p1b = Signal(w.pipe)
        m.d.sync += p1b.eq(p1)
        shares = []
        for ii in range(br):
            half = Signal(prod[ii].shape(), name=f"half_{ii}")
            m.d.sync += half.eq(prod[ii] >> (sh1[ii] - 1)[:sh1[ii].shape().width])
            shares.append((half + self._round_shares) >> 1)
        p2 = Signal(w.pipe)
        mass = Signal(w.mass)
        m.d.sync += [p2.eq(p1b), mass.eq(Mux(p1b.bvalid, sum(shares), 0))]
        # M3: key = 2 msb + the bit below (M > 0)
        p3 = Signal(w.pipe)
        item = Signal(w.m_item)
        msb = _msb(m, mass, w.mass, "mass_msb")
        below = Signal()
        for b in range(1, w.mass):
            with m.If(msb == b):
                m.d.comb += below.eq(mass[b - 1])
        # gt[j] = (key > j), decoded here from the mass bits so that the accumulate step waits
        # on one registered bit: key 2c + 1 and above means msb > c; key 2c + 1 exactly means
        # msb = c and the bit below it set (mass 1 has key 0, so key 1 does not occur)
        gt = Signal(max(1, w.nk - 1))
        for j in range(w.nk - 1):
            c = j // 2
            higher = mass[c + 1:].any()
            if j % 2 == 0 and c >= 1:
                higher = higher | (mass[c] & mass[c - 1])
            m.d.sync += gt[j].eq(higher)
        m.d.sync += [p3.eq(p2), item.m.eq(mass), item.key.eq(Cat(below, msb)),
                     item.bvalid.eq(p2.bvalid), item.diag.eq(p2.diag)]
        # M4: queue; mass above each key, total, top key
        fifo = SyncFIFOBuffered(width=w.m_item.size, depth=cfg.n_block_cols + 16)
        m.submodules.m_fifo = fifo
        m.d.comb += [fifo.w_data.eq(item), fifo.w_en.eq(p3.v)]
        # the mass above each key, accumulated directly: a block adds its mass to every key
        # below its own (no key is above the largest, so its sum is the constant 0)
        above = Signal(_lanes(unsigned(w.total), w.nk))
        tot = Signal(unsigned(w.total))
        top = Signal(unsigned(w.key))
        out = Signal(w.go_thr)
        m.d.sync += out.valid.eq(0)
        live = item.m != 0
        with m.If(p3.v):
            for kk in range(w.nk - 1):
                nv = Mux(p3.first, 0, above[kk]) + Mux(gt[kk], item.m, 0)
                m.d.sync += [above[kk].eq(nv), out.above[kk].eq(nv)]
            t_new = Mux(p3.first, 0, tot) + item.m
            k_old = Mux(p3.first, 0, top)
            k_new = Mux(live & (item.key > k_old), item.key, k_old)
            m.d.sync += [tot.eq(t_new), top.eq(k_new), out.total.eq(t_new), out.top.eq(k_new),
                         out.valid.eq(p3.lst), out.meta.eq(p3.meta)]
        return out, fifo

    # ------------------------------------------------------------------------------ DECIDE
    def _thr_stage(self, m, go):
        """``(2^8 - eps_q) * T``: ``2^8 - eps_q`` and ``T`` registered, their product the cycle
        after (the subtraction, the multiplier, a MULT18X18D, and the routes between them in
        one cycle were once the whole top's critical path); the masses above ride along."""
        w = self._w
        neg, tot_r = Signal(EPS_BITS + 1), Signal.like(go.total)
        hold = Signal(w.go_thr)
        m.d.sync += [neg.eq((1 << EPS_BITS) - go.meta.eps_q), tot_r.eq(go.total), hold.eq(go)]
        out = Signal(w.go_dec)
        m.d.sync += [out.valid.eq(hold.valid), out.meta.eq(hold.meta), out.top.eq(hold.top),
                     out.above.eq(hold.above), out.thr.eq(neg * tot_r)]
        return out

    def _decide_stage(self, m, go, m_fifo):
        """Scan the row's masses: keep bits into the mask; the mask into the output queue."""
        cfg, w = self._cfg, self._w
        pop, first, lst, cur, it = self._scan(m, go, m_fifo, w.m_item, "dec")
        col = Signal(range(max(2, cfg.n_block_cols)))
        with m.If(pop):
            m.d.sync += col.eq(Mux(first, 1, col + 1))
        c_now = Mux(first, 0, col)
        # D1: the bucket's mass above (keys clamped at top - (N_BUCKETS - 1))
        floor_key = Signal(signed(w.key + 1))
        m.d.comb += floor_key.eq(cur.top - (N_BUCKETS - 1))
        idx = Mux(it.key < floor_key, floor_key[:w.key], it.key)
        before = Signal(unsigned(w.total))
        with m.Switch(idx):
            for kk in range(w.nk):
                with m.Case(kk):
                    m.d.sync += before.eq(cur.above[kk])
        p1 = Signal(w.pipe)
        live1, c1 = Signal(), Signal.like(col)
        thr1 = Signal.like(cur.thr)
        m.d.sync += [p1.v.eq(pop), p1.first.eq(first), p1.lst.eq(lst), p1.meta.eq(cur.meta),
                     p1.bvalid.eq(it.bvalid), p1.diag.eq(it.diag), live1.eq(it.m != 0),
                     c1.eq(c_now), thr1.eq(cur.thr)]
        # D2: the keep bit, registered (the wide comparison is the only logic ahead of it)
        diag = p1.diag if self._keep_diagonal else 0
        p2 = Signal(w.pipe)
        keep2, c2 = Signal(), Signal.like(col)
        m.d.sync += [p2.eq(p1), c2.eq(c1),
                     keep2.eq(p1.bvalid & (diag | (live1 & ((before << EPS_BITS) < thr1))))]
        # D3: the keep bit into the row's mask; the mask into the output queue
        mask = Signal(cfg.n_block_cols)
        bit = Mux(keep2, Const(1, cfg.n_block_cols) << c2, 0)
        new = Mux(p2.first, 0, mask) | bit
        # LUT RAM: the queue's read data goes straight into the consumer's logic, and from a
        # block RAM's output (5.8 ns) that was the whole top's critical path at nextpnr seed 2
        # (97.9 MHz)
        q = LutSyncFIFOBuffered(width=mask_layout(cfg).size, depth=OUT_DEPTH)
        m.submodules.out_fifo = q
        qd = data.View(mask_layout(cfg), q.w_data)
        m.d.comb += [qd.mask.eq(new), qd.row.eq(p2.meta.row), qd.last.eq(p2.meta.last),
                     q.w_en.eq(p2.v & p2.lst), self._head_out.eq(p2.v & p2.lst & p2.meta.last)]
        with m.If(p2.v):
            m.d.sync += mask.eq(new)
        m.d.comb += [self.mask_out.valid.eq(q.r_rdy), self.mask_out.payload.eq(q.r_data),
                     q.r_en.eq(self.mask_out.ready)]

    @property
    def _k(self):
        return softmax_constants(self._cfg)


class _W:
    pass


def _widths(cfg: HDPConfig):
    """Widths and layouts of the items and row values."""
    from .block_pruner import index_width
    w = _W()
    br, bc, bs, d = cfg.block_rows, cfg.block_cols, cfg.block_size, cfg.head_dim
    qi = cfg.qk_int_bits
    lo, hi = -(1 << (qi - 1)), (1 << (qi - 1)) - 1
    ks_lo, ks_hi = d * lo, d * hi
    a_lo, a_hi = d * lo * hi, d * lo * lo
    u_lo, u_hi = 2 * a_lo + ks_lo, 2 * a_hi + ks_hi
    if cfg.qk_frac == 0:
        u_lo, u_hi = u_lo >> 1, u_hi >> 1
    w.ks = max(ks_lo.bit_length(), ks_hi.bit_length()) + 1
    w.u = max(u_lo.bit_length(), u_hi.bit_length()) + 1
    w.u_lo = u_lo
    k = softmax_constants(cfg)
    w.dm = k.delta_max.bit_length()
    W = cfg.exp_bits
    w.esum_blk = (bc << W).bit_length()
    w.esum = ((cfg.n_block_cols * bc) << W).bit_length()
    P = cfg.prob_frac
    share_max = (1 << (P + 1))
    w.mass = (br * share_max).bit_length()
    w.key = (2 * w.mass).bit_length()
    w.nk = 2 * w.mass
    row_max = br * ((1 << P) + (1 << max(P - RECIP_BITS, 0)) + cfg.n_block_cols)
    w.total = row_max.bit_length()
    w.meta = data.StructLayout({"row": index_width(cfg.n_block_rows), "last": 1, "lst": 1,
                                "eps_q": EPS_BITS, "n": range(cfg.n_block_cols + 1)})
    w.s_item = data.StructLayout({"u": _lanes(signed(w.u), bs), "em": bs, "bvalid": 1,
                                  "diag": 1})
    w.e_item = data.StructLayout({"e": _lanes(unsigned(w.esum_blk), br), "bvalid": 1,
                                  "diag": 1})
    w.m_item = data.StructLayout({"m": unsigned(w.mass), "key": unsigned(w.key), "bvalid": 1,
                                  "diag": 1})
    w.pipe = data.StructLayout({"v": 1, "first": 1, "lst": 1, "meta": w.meta, "bvalid": 1,
                                "diag": 1})
    w.go_exp = data.StructLayout({"valid": 1, "meta": w.meta,
                                  "mx": _lanes(signed(w.u), br)})
    w.go_norm = data.StructLayout({"valid": 1, "meta": w.meta,
                                   "sums": _lanes(unsigned(w.esum), br)})
    w.go_mass = data.StructLayout({"valid": 1, "meta": w.meta,
                                   "r": _lanes(unsigned(RECIP_BITS + 2), br),
                                   "sh": _lanes(unsigned(unsigned_width(w.esum + RECIP_BITS)),
                                                br)})
    w.go_thr = data.StructLayout({"valid": 1, "meta": w.meta,
                                  "above": _lanes(unsigned(w.total), w.nk),
                                  "total": unsigned(w.total), "top": unsigned(w.key)})
    w.go_dec = data.StructLayout({"valid": 1, "meta": w.meta,
                                  "above": _lanes(unsigned(w.total), w.nk),
                                  "thr": unsigned(w.total + EPS_BITS + 1),
                                  "top": unsigned(w.key)})
    return w

