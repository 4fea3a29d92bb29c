"""Bound-and-prune unit of one query head: RTL twin of the per-head loop of
:func:`golden.token_picker.decode_step` (bounds, ``m``, ``sigma``, :func:`prune_test`)."""

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .exp_hw import exp_lower_hw, exp_upper_hw
from .params import DecodeParams

__all__ = ["PruneCore", "k_beat_layout", "mask_layout", "score_layout"]


def k_beat_layout(p: DecodeParams) -> data.StructLayout:
    """One token's chunk: ``tok``, ``last`` (final beat of the chunk) and ``d`` digits of
    ``chunk_bits`` bits (chunk 1 signed, later chunks unsigned with the bits above ``w_c``
    zero), as :func:`golden.token_picker.chunk_digits` gives them."""
    return data.StructLayout({
        "tok": unsigned(p.tok_width), "last": 1,
        "digits": data.ArrayLayout(unsigned(p.cfg.chunk_bits), p.d)})


def mask_layout(p: DecodeParams) -> data.StructLayout:
    return data.StructLayout({
        "chunk": range(p.n_chunks), "alive": unsigned(p.n_cache),
        "m": signed(p.score_width), "sigma": unsigned(p.cfg.exp_bits + 1 + p.cap + 1)})


def score_layout(p: DecodeParams) -> data.StructLayout:
    return data.StructLayout({"tok": unsigned(p.tok_width), "s": signed(p.score_width), "last": 1})


class PruneCore(wiring.Component):
    """Token-Picker bounds and pruning decisions of one query head, bit for bit the golden's.

    Ports
    -----
    q : In(ArrayLayout(signed(q_bits), d)); sf : In(range(sf_max + 1)) (``q_frac + k_frac``);
    eps_q, eps_v_q : In(eps_frac); n : In(range(N + 1)) (valid positions).  Held for a whole
    step.
    start : In(1)
        One-cycle pulse in the idle state: every valid token becomes alive, chunk 1 follows.
    k_in : In(stream of :func:`k_beat_layout`)
        Chunk ``c`` of tokens in any order, the chunk's final beat with ``last``.  Beats for
        tokens this head has dropped are accepted and ignored (GQA union reads).  Ready while
        the unit is receiving a chunk (one beat per cycle).
    mask_out : Out(stream of :func:`mask_layout`)
        After each chunk's pruning: the chunk index (0-based), the alive mask after it, ``m``
        and ``sigma`` (``sigma`` is 0 and nothing is dropped when ``eps_q = 0``).
    s_out : Out(stream of :func:`score_layout`)
        After the last chunk: the exact score of every kept token, ascending, ``last`` on the
        final one.
    alive : Out(N)
        The current alive mask (what the fetch side reads the next chunk for).
    v_lo : Out(N)
        After the last chunk: the kept tokens that the pruning test at ``eps_v_q`` (same
        bounds, ``m`` and ``sigma``) does not rule out, whose V low plane this head needs (every
        kept token when ``eps_q`` or ``eps_v_q`` is 0).
    busy : Out(1)

    Per chunk: receive (1 cycle per beat, +1 pipeline), a ``sigma`` pass over the ``n`` valid
    tokens (``n + 1`` cycles), a drop pass (``n + 1`` cycles), one cycle for ``mask_out``;
    after the last chunk 2 cycles per kept token for ``s_out``.

    Storage: ``q . khigh`` and the latest lower bound ``L`` per token (two ``N``-entry
    memories); ``U = L + (2**r_c - 1) * (sum q>0 - sum q<0)`` is recomputed, not stored.
    """

    def __init__(self, p: DecodeParams):
        if not isinstance(p, DecodeParams):
            raise ValueError(f"p must be a DecodeParams, not {p!r}")
        self.p = p
        # Rules a test may switch off to build a deliberately broken variant (always on in a
        # real build): ignore beats of tokens this head dropped; keep the token holding m.
        self._union_guard = True
        self._keep_max = True
        self._safe_round = True            # exp_upper rounds up (off: down, non-conservative)
        super().__init__({
            "q": In(data.ArrayLayout(signed(p.cfg.q_bits), p.d)),
            "sf": In(range(p.sf_max + 1)),
            "eps_q": In(unsigned(p.cfg.eps_frac)),
            "eps_v_q": In(unsigned(p.cfg.eps_frac)),
            "n": In(range(p.n_cache + 1)),
            "start": In(1),
            "k_in": In(stream.Signature(k_beat_layout(p))),
            "mask_out": Out(stream.Signature(mask_layout(p))),
            "s_out": Out(stream.Signature(score_layout(p))),
            "alive": Out(p.n_cache),
            "v_lo": Out(p.n_cache),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        p = self.p
        m = Module()
        sw = p.score_width
        m.submodules.dotmem = dotmem = Memory(shape=signed(sw), depth=p.n_cache, init=[])
        m.submodules.lmem = lmem = Memory(shape=signed(sw), depth=p.n_cache, init=[])
        self._dot_rd, self._dot_wr = dotmem.read_port(), dotmem.write_port()
        self._l_rd, self._l_wr = lmem.read_port(), lmem.write_port()
        self._chunk = Signal(range(p.n_chunks))
        self._mx = Signal(signed(sw))            # m: largest L of the alive tokens this chunk
        self._m_ok = Signal()                    # m holds a value
        self._sigma = Signal(unsigned(len(self.mask_out.payload.sigma)))
        self._j = Signal(range(p.n_cache + 1))   # pass counter (memory address)
        self._pv = Signal()                      # a memory read was issued last cycle
        self._pj = Signal(range(p.n_cache))      # ... at this address
        self._got_last = Signal()                # the chunk's last beat was accepted
        self._qneg = Signal(signed(sw))
        self._qpos = Signal(signed(sw))
        m.d.comb += [self._qneg.eq(sum(Mux(q < 0, q, 0) for q in self.q)),
                     self._qpos.eq(sum(Mux(q > 0, q, 0) for q in self.q))]
        self._in_recv = Signal()
        self._recv_done = self._recv(m)
        self._fsm(m)
        return m

    def _fsm(self, m: Module) -> None:
        p, j = self.p, self._j
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    valid = Cat(j < self.n for j in range(p.n_cache))
                    m.d.sync += [self.alive.eq(valid), self.v_lo.eq(valid),
                                 self._chunk.eq(0), self._got_last.eq(0), self._m_ok.eq(0)]
                    m.next = "RECV"
            with m.State("RECV"):
                m.d.comb += [self.busy.eq(1), self._in_recv.eq(1)]
                with m.If(self._recv_done):
                    m.d.sync += [j.eq(0), self._pv.eq(0), self._sigma.eq(0)]
                    with m.If(self.eps_q == 0):       # eps = 0 drops nothing
                        m.next = "EMIT"
                    with m.Else():
                        m.next = "SIGMA"
            with m.State("SIGMA"):
                m.d.comb += self.busy.eq(1)
                self._sigma_pass(m)
                with m.If((j == self.n) & ~self._pv):
                    m.d.sync += j.eq(0)
                    m.next = "DROP"
            with m.State("DROP"):
                m.d.comb += self.busy.eq(1)
                self._drop_pass(m)
                with m.If((j == self.n) & ~self._pv):
                    m.next = "EMIT"
            with m.State("EMIT"):
                mo = self.mask_out
                m.d.comb += [self.busy.eq(1), mo.valid.eq(1), mo.payload.chunk.eq(self._chunk),
                             mo.payload.alive.eq(self.alive), mo.payload.m.eq(self._mx),
                             mo.payload.sigma.eq(self._sigma)]
                with m.If(mo.ready):
                    m.d.sync += [self._got_last.eq(0), self._m_ok.eq(0), j.eq(0)]
                    with m.If(self._chunk == p.n_chunks - 1):
                        m.next = "FIN_ADDR"
                    with m.Else():
                        m.d.sync += self._chunk.eq(self._chunk + 1)
                        m.next = "RECV"
            self._final(m)

    def _recv(self, m: Module):
        """Receive a chunk (built outside the state machine: ``k_in.ready`` is only up in
        ``RECV``, so the pipeline registers clear themselves): stage 0 takes a beat
        (``q . digits``; reads ``q . khigh`` of the previous chunk), stage 1 writes the new
        ``q . khigh`` and ``L`` and updates ``m``.  Returns the strobe of the chunk's last
        beat leaving stage 1."""
        p, cfg = self.p, self.p.cfg
        sw = p.score_width
        k = self.k_in
        m.d.comb += k.ready.eq(self._in_recv & ~self._got_last)
        fire = k.valid & k.ready
        qd = Signal(signed(sw))
        first = self._chunk == 0
        m.d.comb += qd.eq(sum(q * Mux(first, dg.as_signed(), dg.as_unsigned())
                              for q, dg in zip(self.q, k.payload.digits)))
        s1_ok, s1_last, s1_qd = Signal(), Signal(), Signal(signed(sw))
        s1_tok = Signal(unsigned(p.tok_width))
        m.d.comb += self._dot_rd.addr.eq(k.payload.tok)
        mine = self.alive.bit_select(k.payload.tok, 1) if self._union_guard else 1
        m.d.sync += [s1_ok.eq(fire & mine),
                     s1_last.eq(fire & k.payload.last), s1_qd.eq(qd), s1_tok.eq(k.payload.tok)]
        with m.If(fire & k.payload.last):
            m.d.sync += self._got_last.eq(1)
        dot_new = Signal(signed(sw))
        lo = Signal(signed(sw))
        m.d.comb += [
            dot_new.eq(Mux(first, s1_qd, Array((self._dot_rd.data << w) + s1_qd
                                               for w in cfg.chunk_widths)[self._chunk])),
            lo.eq(Array((dot_new << r) + ((1 << r) - 1) * self._qneg
                        for r in cfg.rest_bits)[self._chunk]),
            self._dot_wr.addr.eq(s1_tok), self._dot_wr.data.eq(dot_new),
            self._dot_wr.en.eq(s1_ok),
            self._l_wr.addr.eq(s1_tok), self._l_wr.data.eq(lo), self._l_wr.en.eq(s1_ok),
        ]
        with m.If(s1_ok & (~self._m_ok | (lo > self._mx))):
            m.d.sync += [self._mx.eq(lo), self._m_ok.eq(1)]
        return s1_last

    def _scan(self, m: Module) -> None:
        """Issue one ``L`` read per cycle for ``j = 0 .. n-1``; ``_pv``/``_pj`` mark the data."""
        j = self._j
        m.d.comb += self._l_rd.addr.eq(j)
        m.d.sync += [self._pv.eq(j < self.n), self._pj.eq(j)]
        with m.If(j < self.n):
            m.d.sync += j.eq(j + 1)

    def _sigma_pass(self, m: Module) -> None:
        """``sigma = sum over valid j of exp_lower(L_j - m)``."""
        self._scan(m)
        y = Signal(signed(self.p.score_width + 1))
        m.d.comb += y.eq(self._l_rd.data - self._mx)
        e_lo = exp_lower_hw(m, y, self.sf, self.p, "elo")
        with m.If(self._pv):
            m.d.sync += self._sigma.eq(self._sigma + e_lo)

    def _drop_pass(self, m: Module) -> None:
        """Drop alive ``i`` with ``L_i < m`` and ``e_up(U_i - m) * 2**eps_frac < eps_q * sigma``;
        ``v_lo`` keeps the alive tokens that neither this test nor the one at ``eps_v_q`` rules
        out (what it holds after the last chunk's pass is the step's)."""
        p, cfg = self.p, self.p.cfg
        self._scan(m)
        lo = self._l_rd.data
        x = Signal(signed(p.score_width + 2))
        delta = Array(((1 << r) - 1) * (self._qpos - self._qneg) for r in cfg.rest_bits)
        m.d.comb += x.eq(lo + delta[self._chunk] - self._mx)
        e_up = exp_upper_hw(m, x, self.sf, p, "eup", safe=self._safe_round)
        drop, low_v = Signal(), Signal()
        below = (lo < self._mx) if self._keep_max else 1
        alive = self.alive.bit_select(self._pj, 1)
        m.d.comb += [drop.eq(self._pv & alive & below &
                             ((e_up << cfg.eps_frac) < self.eps_q * self._sigma)),
                     low_v.eq(below & ((e_up << cfg.eps_frac) < self.eps_v_q * self._sigma))]
        with m.If(drop):
            m.d.sync += self.alive.bit_select(self._pj, 1).eq(0)
        with m.If(self._pv):
            m.d.sync += self.v_lo.bit_select(self._pj, 1).eq(alive & ~drop & ~low_v)

    def _final(self, m: Module) -> None:
        """After the last chunk: stream ``(tok, S = L, last)`` of every kept token."""
        p, j, so = self.p, self._j, self.s_out
        rest = Signal(p.n_cache)
        m.d.comb += rest.eq(self.alive >> (j + 1))
        with m.State("FIN_ADDR"):
            m.d.comb += [self.busy.eq(1), self._l_rd.addr.eq(j)]
            with m.If(j >= self.n):
                m.next = "IDLE"
            with m.Elif(self.alive.bit_select(j, 1)):
                m.next = "FIN_DATA"
            with m.Else():
                m.d.sync += j.eq(j + 1)
        with m.State("FIN_DATA"):
            m.d.comb += [self.busy.eq(1), self._l_rd.addr.eq(j), so.valid.eq(1),
                         so.payload.tok.eq(j), so.payload.s.eq(self._l_rd.data),
                         so.payload.last.eq(rest == 0)]
            with m.If(so.ready):
                m.d.sync += j.eq(j + 1)
                m.next = "FIN_ADDR"
