"""LeOPArd bit-serial score engine with exact early termination (RTL twin of
:func:`golden.leopard.front_end`).

Every valid entry ``(i, j)`` of a head is computed bit-serially over the bits of ``k_q[j]``,
most significant (sign) bit first, and stops as soon as the upper bound ``U_b`` of its score
falls below the threshold ``th`` (``docs/leopard.md`` gives the rule; this module computes the
same decisions, scores and bit counts, bit for bit).

Design
    ``lanes`` (elaboration parameter) identical lanes each walk one ``(i, j)`` pair, one bit
    of ``k`` per cycle.  The query row ``q_i`` is held in one register shared by all lanes, with
    its ``Qpos = sum_{q_d > 0} q_d`` and ``T = th + Qpos - 1`` computed when the row is
    accepted.  The key rows of a head are loaded first into a ``lib.memory.Memory`` (one word
    per key); a scheduler reads the next key of the current row and hands it to the lowest free
    lane, which copies it into its own shift register.  No multipliers: per cycle a lane adds,
    over ``d``, each ``q_d`` gated by the current bit of ``k_d`` (a balanced adder tree),
    negated for the sign bit.

    Horner form (all shifts by one, no barrel shifter).  With ``s = B - b`` bits left,
    ``R_b = q . (k >> s)`` (arithmetic shift) gives ``P_b = R_b * 2**s`` and
    ``R_b = 2 R_(b-1) + g_b`` with ``g_b = sum_d q_d bit_t(k_d) * (-1 if t = B-1 else 1)``,
    ``R_B = S``.  The test ``U_b < th`` is, for integers,
    ``(R_b + Qpos) * 2**s <= th + Qpos - 1``, i.e. ``R_b + Qpos <= T >> s``.  Each lane
    keeps ``E_b = R_b + Qpos - (T >> s) - 1`` and stops at ``E_b < 0`` (a sign bit); since
    ``T >> s = 2 (T >> (s+1)) + bit_s(T)``, ``E_b = 2 E_(b-1) + g_b - Qpos + 1 - bit_s(T)``
    with ``E_0 = Qpos - (T >> B) - 1``.  At ``b = B`` the test is ``S < th`` exactly, so a
    lane that runs all ``B`` bits keeps its entry iff ``E_B >= 0`` (or it is the diagonal).

    A lane that reads its last bit (early exit or bit ``B``) puts its result into its own
    result slot and takes the next key in the same cycle, so an entry costs exactly its
    ``bits`` cycles while the output keeps up (one record per cycle; a lane whose slot is
    still full when it finishes holds).  One query row at a time: the next ``q_in`` row is
    taken once every key of the current row has been issued and every lane and slot is empty,
    so each row ends with a drain of up to ``B`` cycles.  Masked keys (``j >= valid_len``,
    or ``j > i`` when ``causal``) are never issued (0 bits, no cycle, no record).  ``no_et``
    (run-time) disables early termination: every entry takes ``B`` bits, decisions unchanged
    (the cycle baseline).

Ports
    ``k_in`` (stream, :func:`hw.score_unit.qk_row_layout`): K rows ``j = 0 .. valid_len-1``
    of a head.  ``q_in`` (stream, :func:`q_beat_layout`): Q rows ``i = 0 .. valid_len-1``,
    each with its threshold ``th`` (per-query thresholds; repeat one value for one per layer),
    taken after the last K row.  ``th`` is clamped by the sender to :func:`th_range`
    (``[S_min, S_max + 1]``), which changes no decision and no bit count: below ``S_min`` no
    bound is ever below ``th``; above ``S_max`` every bound is, from the first bit.
    ``res_out`` (stream, :func:`result_layout`): one record per valid entry, exactly once:
    ``i``, ``j``, ``keep``, ``score`` (exact ``q_q . k_q`` when kept, 0 otherwise) and ``bits``
    (bits read: the termination step, or ``B``).  Rows come out in order (all of row ``i``
    before any of row ``i+1``); within a row, lanes finish out of order, so records of one row
    may come in any order.  A head yields ``valid_len**2`` records, or
    ``valid_len (valid_len + 1) / 2`` when causal.
    ``valid_len`` (``1 .. seq_len``), ``causal`` and ``no_et`` must be stable from the first
    ``k_in`` beat of a head to its last record.  ``cycles`` (32 bits, saturating): cycles from
    the first ``q_in`` handshake of the head to the end of its last row (every result handed
    to the output register), held until the next head's first ``q_in`` handshake; ``done`` is
    high from then until the next head's first ``k_in`` beat.

Widths (derived from the configuration; ``M = 2**(B-1)``): scores and every ``R_b`` lie in
:func:`score_range` ``= [-d M (M-1), d M**2]``, ``Qpos <= d (M-1)``, and ``E_b`` in
:func:`e_range`; ``tests/test_leopard_engine.py`` drives the extremes.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import HDPConfig, signed_width, unsigned_width
from .score_unit import qk_row_layout

__all__ = ["LeopardEngine", "score_range", "th_range", "e_range", "qpos_max", "q_beat_layout",
           "result_layout", "CYCLES_WIDTH", "MAX_LANES"]

CYCLES_WIDTH = 32
MAX_LANES = 64


def qpos_max(cfg: HDPConfig) -> int:
    """Largest ``Qpos = sum_{q_d > 0} q_d``: ``d (2**(B-1) - 1)``."""
    return cfg.head_dim * ((1 << (cfg.qk_bits - 1)) - 1)


def score_range(cfg: HDPConfig) -> tuple[int, int]:
    """Range of every ``R_b = q . (k >> s)``, of ``S`` and of every bound ``U_b``:
    products ``q_d x`` with ``q_d, x`` in ``[-M, M-1]`` lie in ``[-M (M-1), M**2]``; for ``U_b``
    the positive ``q_d`` multiply ``prefix + 2**s - 1 <= M - 1``, so the same range holds."""
    m = 1 << (cfg.qk_bits - 1)
    return (-cfg.head_dim * m * (m - 1), cfg.head_dim * m * m)


def th_range(cfg: HDPConfig) -> tuple[int, int]:
    """The thresholds the engine takes: ``[S_min, S_max + 1]`` (clamping to it is exact)."""
    lo, hi = score_range(cfg)
    return (lo, hi + 1)


def _t_range(cfg: HDPConfig) -> tuple[int, int]:
    lo, hi = th_range(cfg)
    return (lo - 1, hi + qpos_max(cfg) - 1)


def e_range(cfg: HDPConfig) -> tuple[int, int]:
    """Range of the margin ``E_b = R_b + Qpos - (T >> s) - 1`` a lane stores, ``s >= 1``
    (``E_B`` decides the last step without being stored).  From
    ``x/2**s - 1 < floor(x/2**s) <= x/2**s``: ``(U_b - th + 1) / 2**s - 1 <= E_b <=
    (U_b - th) / 2**s``, with ``U_b`` in :func:`score_range` and ``th`` in :func:`th_range`;
    the extremes are at ``s = 1``."""
    s_lo, s_hi = score_range(cfg)
    t_lo, t_hi = th_range(cfg)
    return ((s_lo - t_hi + 1) // 2 - 1, (s_hi - t_lo) // 2)


def _index_shape(cfg: HDPConfig) -> unsigned:
    return unsigned(unsigned_width(cfg.seq_len - 1))


def q_beat_layout(cfg: HDPConfig) -> data.StructLayout:
    """Payload of ``q_in``: one quantized Q row and its threshold (units of ``q_q . k_q``)."""
    return data.StructLayout({"q": qk_row_layout(cfg), "th": signed(signed_width(*th_range(cfg)))})


def result_layout(cfg: HDPConfig) -> data.StructLayout:
    """Payload of ``res_out``: one entry's decision."""
    return data.StructLayout({
        "i": _index_shape(cfg),
        "j": _index_shape(cfg),
        "keep": unsigned(1),
        "score": signed(signed_width(*score_range(cfg))),
        "bits": unsigned(unsigned_width(cfg.qk_bits)),
    })


def _tree(values):
    """Balanced sum (logarithmic depth)."""
    values = list(values)
    while len(values) > 1:
        nxt = [values[k] + values[k + 1] for k in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
    return values[0]


class _Lane:
    """The registers of one lane."""

    def __init__(self, cfg: HDPConfig, n: int, r_width: int, e_width: int, g_width: int,
                 h_width: int):
        b = cfg.qk_bits
        self.busy = Signal(name=f"l{n}_busy")
        self.step = Signal(range(b), name=f"l{n}_step")      # bits already read
        self.k = Signal(data.ArrayLayout(unsigned(b), cfg.head_dim), name=f"l{n}_k")
        self.r = Signal(signed(r_width), name=f"l{n}_r")
        self.e = Signal(signed(e_width), name=f"l{n}_e")
        self.g = Signal(signed(g_width), name=f"l{n}_g")     # this step's increment g_b
        self.h = Signal(signed(h_width), name=f"l{n}_h")     # g_b - Qpos + 1
        self.j = Signal(_index_shape(cfg), name=f"l{n}_j")
        self.diag = Signal(name=f"l{n}_diag")
        self.free = Signal(name=f"l{n}_free")   # may take a key this cycle
        # the result slot: the last finished entry, until the output register takes it
        self.done = Signal(name=f"l{n}_done")
        self.res_j = Signal(_index_shape(cfg), name=f"l{n}_res_j")
        self.keep = Signal(name=f"l{n}_keep")
        self.score = Signal(signed(r_width), name=f"l{n}_score")
        self.bits = Signal(unsigned_width(b), name=f"l{n}_bits")
        self.pop = Signal(name=f"l{n}_pop")     # the slot moves to the output this cycle
        self.stepping = Signal(name=f"l{n}_stepping")   # reads a bit this cycle
        self.index = n


class LeopardEngine(wiring.Component):
    """Bit-serial LeOPArd score engine (see the module docstring for the design and ports).

    Golden twin: :func:`golden.leopard.front_end` (``keep``, ``scores`` of kept entries and
    ``bits`` per entry).  ``lanes``: entries computed in parallel, an integer in
    ``[1, min(seq_len, 64)]`` (default ``cfg.leopard_lanes_used``).

    ``kept_only`` (what the top uses): only kept entries leave on ``res_out`` (``keep`` 1), and
    after the last entry of each row a *row marker* (``keep`` 0, ``i`` the row, ``j``,
    ``score`` and ``bits`` 0) -- a pruned entry needs no output cycle, so the output never
    limits the lanes.  ``bits_read`` counts the bits the lanes read since the head's first
    ``q_in`` handshake (the sum of the records' ``bits`` in the default mode)."""

    def __init__(self, cfg: HDPConfig, lanes: int | None = None, kept_only: bool = False):
        if not isinstance(cfg, HDPConfig):
            raise TypeError(f"cfg must be an HDPConfig, not {cfg!r}")
        lanes = cfg.leopard_lanes_used if lanes is None else lanes
        hi = min(cfg.seq_len, MAX_LANES)
        if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= hi:
            raise ValueError(f"lanes must be an integer in [1, min(seq_len, {MAX_LANES})] = "
                             f"[1, {hi}], not {lanes!r}")
        self._cfg = cfg
        self.lanes = lanes
        self.kept_only = bool(kept_only)
        super().__init__({
            "k_in": In(stream.Signature(qk_row_layout(cfg))),
            "q_in": In(stream.Signature(q_beat_layout(cfg))),
            "res_out": Out(stream.Signature(result_layout(cfg))),
            "valid_len": In(cfg.valid_len_width),
            "causal": In(1),
            "no_et": In(1),
            "cycles": Out(CYCLES_WIDTH),
            "bits_read": Out(CYCLES_WIDTH),
            "done": Out(1),
        })

    @property
    def cfg(self) -> HDPConfig:
        return self._cfg

    # ------------------------------------------------------------------ hooks (tests break them)
    @property
    def r_width(self) -> int:
        """Width of a lane's partial score ``R_b`` (and of ``S``)."""
        return signed_width(*score_range(self._cfg))

    @property
    def e_width(self) -> int:
        """Width of a lane's stored termination margin ``E_b`` (``b < B``)."""
        return signed_width(*e_range(self._cfg))

    def _h_width(self) -> int:
        """Width of ``g_b - Qpos + 1``: ``|g_b| <= d 2**(B-1)`` and ``0 <= Qpos <= qpos_max``."""
        g = self._cfg.head_dim << (self._cfg.qk_bits - 1)
        return signed_width(-g - qpos_max(self._cfg), g + 1)

    def row_bound_sum(self, q_row):
        """``Qpos``: the sum of the positive elements of the query row."""
        return _tree([Mux(q_row[e] > 0, q_row[e], 0) for e in range(self._cfg.head_dim)])

    def bit_increment(self, gated_sum, step):
        """``g_b``: the gated sum, negated for the sign bit (read at step 0)."""
        return Mux(step == 0, -gated_sum, gated_sum)

    # ------------------------------------------------------------------ elaboration
    def elaborate(self, platform):
        m = Module()
        lanes = [_Lane(self._cfg, n, self.r_width, self.e_width, self.r_width + 1,
                       self._h_width()) for n in range(self.lanes)]
        row = self._rows(m)
        feed = self._scheduler(m, row, lanes)
        for lane in lanes:
            self._lane(m, row, lane, feed)
        self._output(m, row, lanes)
        # bits read: one per stepping lane per cycle
        steps = _tree([ln.stepping.as_unsigned() for ln in lanes])
        with m.If(self.bits_read != (1 << CYCLES_WIDTH) - 1):
            m.d.sync += self.bits_read.eq(self.bits_read + steps)
        with m.If(row["head_start"]):
            m.d.sync += self.bits_read.eq(0)
        return m

    def _rows(self, m):
        """K loading into the key memory, the query row register and the head's row sequence.
        Returns the row state (a dict of signals)."""
        cfg = self._cfg
        m.submodules.kmem = kmem = Memory(shape=qk_row_layout(cfg), depth=cfg.seq_len, init=[])
        wr = kmem.write_port()
        rd = kmem.read_port(domain="sync", transparent_for=())
        k_cnt = Signal(range(cfg.seq_len + 1))
        k_loaded = Signal()
        q_loaded = Signal()
        q_prep = Signal()               # the row's Qpos and T are computed this cycle
        i = Signal(_index_shape(cfg))
        q = Signal(qk_row_layout(cfg))
        qpos = Signal(unsigned(unsigned_width(qpos_max(cfg))))
        t = Signal(signed(signed_width(*_t_range(cfg))))
        running = Signal()
        row_end = Signal()
        cycles = Signal(CYCLES_WIDTH)
        done = Signal()
        k_fire = self.k_in.valid & self.k_in.ready
        q_fire = self.q_in.valid & self.q_in.ready
        m.d.comb += [
            self.k_in.ready.eq(~k_loaded),
            wr.addr.eq(k_cnt),
            wr.data.eq(self.k_in.payload),
            wr.en.eq(k_fire),
            self.q_in.ready.eq(k_loaded & ~q_loaded & ~q_prep),
            self.cycles.eq(cycles),
            self.done.eq(done),
        ]
        with m.If(k_fire):
            m.d.sync += done.eq(0)
            with m.If(k_cnt + 1 >= self.valid_len):
                m.d.sync += [k_loaded.eq(1), k_cnt.eq(0)]
            with m.Else():
                m.d.sync += k_cnt.eq(k_cnt + 1)
        # the row is registered first, then its Qpos and T (the sum tree runs from a register,
        # not from the sender's output): the row's keys start one cycle later
        th = Signal.like(self.q_in.payload.th)
        m.d.sync += q_prep.eq(q_fire)
        with m.If(q_fire):
            m.d.sync += [q.eq(self.q_in.payload.q), th.eq(self.q_in.payload.th), running.eq(1)]
            with m.If(i == 0):
                m.d.sync += cycles.eq(0)
        with m.If(q_prep):
            qp = self.row_bound_sum(q)
            m.d.sync += [qpos.eq(qp), t.eq(th + qp - 1), q_loaded.eq(1)]
        with m.If(running & (cycles != (1 << CYCLES_WIDTH) - 1)):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(row_end):
            m.d.sync += q_loaded.eq(0)
            with m.If(i + 1 >= self.valid_len):
                m.d.sync += [i.eq(0), k_loaded.eq(0), running.eq(0), done.eq(1)]
            with m.Else():
                m.d.sync += i.eq(i + 1)
        return {"rd": rd, "i": i, "q": q, "qpos": qpos, "t": t, "q_loaded": q_loaded,
                "row_end": row_end, "head_start": q_fire & (i == 0), "marker": Signal(),
                "marker_i": Signal(_index_shape(cfg))}

    def _scheduler(self, m, row, lanes):
        """Key issue: read key ``j_next`` of the current row, register the word, register it
        again with its first-step increment ``g_1`` (the gated adder tree over the sign bits),
        then hand it to the lowest free lane.  A three-entry pipeline that advances wherever
        the next entry is empty or moving on, so a key can be handed over every cycle; the
        block RAM's output and the adder tree each end in a register.  Returns the per-lane
        load strobes and the key word, ``j`` and ``g_1`` being handed over."""
        cfg = self._cfg
        rd = row["rd"]
        idx = _index_shape(cfg)
        j_next = Signal(range(cfg.seq_len + 1))
        limit = Mux(self.causal, row["i"] + 1, self.valid_len)
        more = row["q_loaded"] & (j_next < limit)
        free = [ln.free for ln in lanes]
        any_free = Signal()
        m.d.comb += any_free.eq(_any(free))
        # stage 1: the read port's output; 2: the word registered; 3: word and g_1 registered
        v1, v2, v3 = Signal(name="f1_valid"), Signal(name="f2_valid"), Signal(name="f3_valid")
        j1, j2, j3 = (Signal(idx, name=f"f{n}_j") for n in (1, 2, 3))
        w2 = Signal(qk_row_layout(cfg), name="f2_word")
        w3 = Signal(qk_row_layout(cfg), name="f3_word")
        g3 = Signal(signed(self.r_width + 1), name="f3_g")
        take, adv1, adv2, adv3, issue = (Signal(name=n) for n in
                                         ("take", "adv1", "adv2", "adv3", "issue"))
        m.d.comb += [take.eq(v3 & any_free), adv3.eq(~v3 | take), adv2.eq(~v2 | adv3),
                     adv1.eq(~v1 | adv2), issue.eq(more & adv1),
                     rd.en.eq(issue), rd.addr.eq(j_next)]
        gated = _tree([Mux(w2[e][cfg.qk_bits - 1], row["q"][e], 0) for e in range(cfg.head_dim)])
        with m.If(adv3):
            m.d.sync += [v3.eq(v2), j3.eq(j2), w3.eq(w2),
                         g3.eq(self.bit_increment(gated, Const(0, 1)))]
        with m.If(adv2):
            m.d.sync += [v2.eq(v1), j2.eq(j1), w2.eq(rd.data)]
        with m.If(adv1):
            m.d.sync += [v1.eq(issue), j1.eq(j_next)]
        with m.If(issue):
            m.d.sync += j_next.eq(j_next + 1)
        with m.If(row["row_end"]):
            m.d.sync += j_next.eq(0)
        # lowest free lane takes the key at the end of the pipeline
        loads = [Signal(name=f"l{n}_load") for n in range(len(lanes))]
        for n in range(len(lanes)):
            earlier = free[:n]
            m.d.comb += loads[n].eq(take & free[n] & ~_any(earlier) if earlier else take & free[n])
        idle = ~_any([ln.busy | (ln.done & ~ln.pop) for ln in lanes])
        m.d.comb += row["row_end"].eq(row["q_loaded"] & ~more & ~v1 & ~v2 & ~v3 & idle
                                      & ~row["marker"])
        if self.kept_only:
            with m.If(row["row_end"]):
                m.d.sync += [row["marker"].eq(1), row["marker_i"].eq(row["i"])]
        return {"loads": loads, "word": w3, "j": j3, "g0": g3}

    def _lane(self, m, row, lane, feed):
        """One lane: load a key, then one bit per cycle until early exit or ``B`` bits."""
        cfg = self._cfg
        b, d = cfg.qk_bits, cfg.head_dim
        # the next step's increment, one cycle ahead: from the bit of k that the shift brings
        # to the top (a step's own g and h = g - Qpos + 1 are registers, so the adder tree is
        # not on the path from a lane's margin to its decision and the key hand-over)
        gated_next = _tree([Mux(lane.k[e][b - 2], row["q"][e], 0) for e in range(d)])
        g_next = self.bit_increment(gated_next, lane.step + 1)
        # bit B-1-step of T: bit `step` of T's low B bits reversed
        t_bit = Cat(*(row["t"][b - 1 - x] for x in range(b))).bit_select(lane.step, 1)
        r_new = (lane.r << 1) + lane.g
        e_new = (lane.e << 1) + lane.h - t_bit
        below = Signal(name=f"l{lane.index}_below")
        m.d.comb += below.eq(e_new < 0)
        stop = (lane.step == b - 1) | (below & ~lane.diag & ~self.no_et)
        keep = lane.diag | ~below
        # a lane that finishes while its slot is still full holds (no step) until it empties;
        # kept_only: a pruned entry needs no slot
        slot_ok = ~lane.done | lane.pop
        if self.kept_only:
            slot_ok = slot_ok | ~keep
        m.d.comb += [lane.free.eq(~lane.busy | (stop & slot_ok)),
                     lane.stepping.eq(lane.busy & (~stop | slot_ok))]
        with m.If(lane.pop):
            m.d.sync += lane.done.eq(0)
        with m.If(lane.stepping):
            m.d.sync += [lane.r.eq(r_new), lane.e.eq(e_new), lane.step.eq(lane.step + 1),
                         lane.g.eq(g_next), lane.h.eq(g_next - row["qpos"] + 1)]
            for e in range(d):
                m.d.sync += lane.k[e].eq(lane.k[e] << 1)
            with m.If(stop):
                m.d.sync += lane.busy.eq(0)
                # kept_only: a pruned entry leaves the slot alone (it may still hold the
                # lane's previous, kept result)
                with m.If(keep if self.kept_only else 1):
                    m.d.sync += [lane.done.eq(1), lane.res_j.eq(lane.j), lane.keep.eq(keep),
                                 lane.score.eq(Mux(keep, r_new, 0)),
                                 lane.bits.eq(lane.step + 1)]
        with m.If(feed["loads"][lane.index]):   # after the step: a key loads as one finishes
            m.d.sync += [
                lane.busy.eq(1),
                lane.step.eq(0),
                lane.k.eq(feed["word"].as_value()),
                lane.r.eq(0),
                lane.g.eq(feed["g0"]),
                lane.h.eq(feed["g0"] - row["qpos"] + 1),
                lane.e.eq(row["qpos"] - (row["t"] >> b) - 1),
                lane.j.eq(feed["j"]),
                lane.diag.eq(feed["j"] == row["i"]),
            ]

    def _output(self, m, row, lanes):
        """The result register: the lowest lane holding a result moves into it when it is
        empty or being taken."""
        out_valid = Signal()
        out = Signal(result_layout(self._cfg))
        m.d.comb += [self.res_out.valid.eq(out_valid), self.res_out.payload.eq(out)]
        can = ~out_valid | self.res_out.ready
        with m.If(self.res_out.ready):
            m.d.sync += out_valid.eq(0)
        earlier = Const(0, 1)
        if self.kept_only:
            # a row's marker leaves before any result of the next row (it is set when every
            # slot is empty, so every result still in a slot belongs to a later row)
            take_marker = can & row["marker"]
            earlier = take_marker
            with m.If(take_marker):
                m.d.sync += [row["marker"].eq(0), out_valid.eq(1), out.i.eq(row["marker_i"]),
                             out.j.eq(0), out.keep.eq(0), out.score.eq(0), out.bits.eq(0)]
        for lane in lanes:
            m.d.comb += lane.pop.eq(can & lane.done & ~earlier)
            earlier = earlier | lane.done
            with m.If(lane.pop):
                m.d.sync += [
                    out_valid.eq(1),
                    out.i.eq(row["i"]),
                    out.j.eq(lane.res_j),
                    out.keep.eq(lane.keep),
                    out.score.eq(lane.score),
                    out.bits.eq(lane.bits),
                ]


def _any(values):
    """OR of a list of 1-bit values (``0`` when empty)."""
    acc = Const(0, 1)
    for v in values:
        acc = acc | v
    return acc
