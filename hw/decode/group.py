"""Token-Picker decode step of one KV group in RTL: the query heads' :class:`PruneCore` units,
the union reads of K chunks and V rows over an AXI4 read master, and word counters."""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.axil import AxiStreamSignature

from .axi import AxiReadMaster, AxiReadSignature
from .params import DecodeParams
from .prune_core import PruneCore

__all__ = ["DecodeGroup", "q_beat_layout", "out_beat_layout", "KIND_SCORE", "KIND_V"]

KIND_SCORE, KIND_V = 0, 1


def _bytes(bits: int) -> int:
    return -(-bits // 8) * 8


def q_beat_layout(p: DecodeParams) -> data.StructLayout:
    """One query head on ``s_axis``: ``d`` signed ``q_bits`` values (element 0 in the low bits)
    and ``sf = q_frac + k_frac`` in the next byte; padded to whole bytes."""
    return data.StructLayout({"q": data.ArrayLayout(signed(p.cfg.q_bits), p.d), "sf": unsigned(8)})


def out_beat_layout(p: DecodeParams) -> data.StructLayout:
    """One ``m_axis`` beat: ``payload`` (a V word, or a kept token's exact score sign-extended),
    ``tok``, ``idx`` (the word index in the V row, or the query head), ``kind``."""
    return data.StructLayout({"payload": unsigned(max(32, p.cfg.word_bits)), "tok": unsigned(16),
                              "idx": unsigned(8), "kind": unsigned(8)})


class DecodeGroup(wiring.Component):
    """Memory side and pruning of one KV group (``p.group`` query heads) for one decode step.

    Memory layout (byte addresses, ``wb = word_bits / 8``; ``kw[c]`` words per token chunk,
    ``vh, vl`` words per V high and low plane row (``cfg.v_part_words``), ``N = n_cache``):
    chunk ``c`` of token ``j`` at ``k_base + (N * sum(kw[:c]) + j * kw[c]) * wb`` (one plane
    per chunk), V row ``j`` at ``v_base + j * vh * wb`` and its low plane (``v_lo_bits > 0``)
    at ``v_base + (N * vh + j * vl) * wb``.  Inside a chunk or row the ``d`` fields (``w_c``
    bits of each key, chunk 1 the signed top bits, later chunks unsigned; V's
    ``v_bits - v_lo_bits`` signed high bits, or its ``v_lo_bits`` unsigned low bits) are packed
    from bit 0 of word 0 upwards, zero-padded.  Bases must be 4 KB aligned and ``kw[c]``,
    ``vh``, ``vl`` powers of two (no burst crosses 4 KB).

    Ports
    -----
    s_axis : In(AxiStreamSignature)
        ``group`` beats of :func:`q_beat_layout`, head 0 first; the step starts after the last.
    m_axis : Out(AxiStreamSignature)
        :func:`out_beat_layout` beats: every V word read (rows ascending, a row's high plane
        words then its low plane words, ``idx`` counting on from ``vh``; ``kind = 1``), then
        each head's kept tokens ascending with their exact scores (``kind = 0``); ``tlast`` on
        the last beat of the step.
    m_axi : Out(AxiReadSignature(32, word_bits))
        One INCR burst per token chunk read (only tokens some head of the group keeps alive),
        per V row read (only tokens some head keeps at the end) and per V low plane row read
        (only tokens some head's ``v_lo`` holds), a row's low plane right after its high one.
    eps_q, eps_v_q, n, k_base, v_base : In
        Registers, held during a step.
    k_words, v_words, cycles : Out(32)
        Words of K and of V read, and clock cycles from the start to the last output beat,
        of the current or last step.
    rerr : Out(1)
        Some R beat of the current or last step came back with ``rresp != OKAY``: its data
        was used as it came, so the step's outputs cannot be trusted.
    busy : Out(1)
    """

    def __init__(self, p: DecodeParams, addr_width: int = 32):
        if not isinstance(p, DecodeParams):
            raise ValueError(f"p must be a DecodeParams, not {p!r}")
        self.p = p
        self._kw = p.k_chunk_words()
        self._vh, self._vl = p.cfg.v_part_words(p.d)
        self._vw = self._vh + self._vl
        problem = p.burst_problem()
        if problem:
            raise ValueError(problem)
        # A rule a test may switch off to build a broken variant (always on in a real build):
        # read V rows only of tokens some head keeps; read a low plane only where some head's
        # v_lo asks for it.
        self._v_union = True
        self._v_lo_rule = True
        super().__init__({
            "s_axis": In(AxiStreamSignature(_bytes(q_beat_layout(p).size))),
            "m_axis": Out(AxiStreamSignature(out_beat_layout(p).size)),
            "m_axi": Out(AxiReadSignature(addr_width, p.cfg.word_bits)),
            "eps_q": In(unsigned(p.cfg.eps_frac)),
            "eps_v_q": In(unsigned(p.cfg.eps_frac)),
            "n": In(range(p.n_cache + 1)),
            "k_base": In(addr_width), "v_base": In(addr_width),
            "k_words": Out(32), "v_words": Out(32), "cycles": Out(32),
            "rerr": Out(1), "busy": Out(1),
            **self._extra_ports(),
        })

    def _extra_ports(self) -> dict:
        """More ports a subclass adds."""
        return {}

    def elaborate(self, platform):
        p = self.p
        m = Module()
        self._cores = []
        self._qregs = []
        for h in range(p.group):
            core = PruneCore(p)
            m.submodules[f"core{h}"] = core
            qr = Signal(q_beat_layout(p), name=f"qreg{h}")
            m.d.comb += [core.q.eq(qr.q), core.sf.eq(qr.sf), core.eps_q.eq(self.eps_q),
                         core.eps_v_q.eq(self.eps_v_q), core.n.eq(self.n)]
            self._cores.append(core)
            self._qregs.append(qr)
        tag = data.StructLayout({"kind": 1, "last": 1, "part": 1, "tok": unsigned(p.tok_width)})
        self._tag = tag
        m.submodules.axi = axi = AxiReadMaster(len(self.m_axi.araddr), p.cfg.word_bits, tag.size)
        wiring.connect(m, wiring.flipped(self.m_axi), axi.bus)
        m.d.comb += self.rerr.eq(axi.rerr)
        self._axi = axi
        self._chunk = Signal(range(p.n_chunks))
        self._union = Signal(p.n_cache)
        self._union_lo = Signal(p.n_cache)      # the V low planes the group reads
        self._part = Signal()                   # SCAN_V: 1 while token j's low plane is next
        m.d.comb += [self._union.eq(_or(c.alive for c in self._cores)),
                     self._union_lo.eq(_or(c.v_lo for c in self._cores) if self._v_lo_rule
                                       else self._union)]
        self._rside(m)
        self._fsm(m)
        return m

    def _rside(self, m: Module) -> None:
        """R beats: K words gather into a chunk beat for the cores, V words go to ``m_axis``;
        both are counted."""
        p, cfg, rd = self.p, self.p.cfg, self._axi.rd
        wb = cfg.word_bits
        tag = self._tag(rd.payload.tag)
        kbuf = Signal(max(self._kw) * wb)
        wi = Signal(range(max(max(self._kw), self._vw) + 1))
        kb_valid, kb_tok, kb_last = Signal(), Signal(unsigned(p.tok_width)), Signal()
        all_ready = Signal()
        m.d.comb += all_ready.eq(Cat(c.k_in.ready for c in self._cores).all())
        digits = []
        for w in cfg.chunk_widths:
            digits.append(Cat(Cat(kbuf[i * w:(i + 1) * w], Const(0, cfg.chunk_bits - w))
                              for i in range(p.d)))
        for c in self._cores:
            m.d.comb += [c.k_in.valid.eq(kb_valid & all_ready), c.k_in.payload.tok.eq(kb_tok),
                         c.k_in.payload.last.eq(kb_last),
                         c.k_in.payload.digits.as_value().eq(Array(digits)[self._chunk])]
        with m.If(kb_valid & all_ready):
            m.d.sync += kb_valid.eq(0)
        with m.If(tag.kind):
            self._v_word(m, rd, tag, wi)
        with m.Else():
            m.d.comb += rd.ready.eq(~kb_valid)
        with m.If(rd.valid & rd.ready):
            m.d.sync += wi.eq(wi + 1)
            with m.If(tag.kind):
                m.d.sync += self.v_words.eq(self.v_words + 1)
            with m.Else():
                m.d.sync += [self.k_words.eq(self.k_words + 1),
                             kbuf.word_select(wi[:max(1, (max(self._kw) - 1).bit_length())],
                                              wb).eq(rd.payload.data)]
            with m.If(rd.payload.last):
                m.d.sync += wi.eq(0)
                with m.If(~tag.kind):
                    m.d.sync += [kb_valid.eq(1), kb_tok.eq(tag.tok), kb_last.eq(tag.last)]

    def _v_index(self, tag, wi):
        """The word's index in its V row: high plane words first, then the low plane's."""
        return wi + Mux(tag.part, self._vh, 0)

    def _v_word(self, m: Module, rd, tag, wi) -> None:
        """Where a V word goes (here: ``m_axis``); drives ``rd.ready``."""
        out = Signal(out_beat_layout(self.p))
        m.d.comb += [out.payload.eq(rd.payload.data), out.tok.eq(tag.tok),
                     out.idx.eq(self._v_index(tag, wi)),
                     out.kind.eq(1), self.m_axis.tvalid.eq(rd.valid), self.m_axis.tdata.eq(out),
                     rd.ready.eq(self.m_axis.tready)]

    def _issue(self, m: Module, j, kind: int) -> None:
        """One scan step: a burst request for token ``j`` if the group reads it, else skip."""
        p, cmd = self.p, self._axi.cmd
        wb_log = (self.p.cfg.word_bits // 8).bit_length() - 1
        lo_next = Const(0)
        if kind:
            part = self._part
            want = Mux(part, 1, self._union.bit_select(j, 1) if self._v_union else 1)
            hi_addr = self.v_base + ((j * self._vh) << wb_log)
            addr = hi_addr
            ln = self._vh - 1
            if self._vl:
                lo_next = ~part & self._union_lo.bit_select(j, 1)
                addr = Mux(part, self.v_base + ((p.n_cache * self._vh + j * self._vl) << wb_log),
                           hi_addr)
                ln = Mux(part, self._vl - 1, self._vh - 1)
        else:
            want = self._union.bit_select(j, 1)
            offs = [p.n_cache * sum(self._kw[:c]) for c in range(p.n_chunks)]
            addr = self.k_base + (Array(o + j * w for o, w in zip(offs, self._kw))[self._chunk]
                                  << wb_log)
            ln = Array(Const(w - 1, 8) for w in self._kw)[self._chunk]
        rest = Signal(p.n_cache, name=f"rest{kind}")
        m.d.comb += rest.eq(self._union >> (j + 1))
        tag = Signal(self._tag, name=f"tag{kind}")
        m.d.comb += [tag.kind.eq(kind), tag.tok.eq(j), tag.last.eq(rest == 0)]
        m.d.comb += tag.part.eq(self._part if kind else 0)
        with m.If(j < self.n):
            with m.If(want):
                m.d.comb += [cmd.valid.eq(1), cmd.payload.addr.eq(addr), cmd.payload.len.eq(ln),
                             cmd.payload.tag.eq(tag)]
                with m.If(cmd.ready):
                    with m.If(lo_next):
                        m.d.sync += self._part.eq(1)
                    with m.Else():
                        m.d.sync += j.eq(j + 1)
                        if kind:
                            m.d.sync += self._part.eq(0)
            with m.Else():
                m.d.sync += j.eq(j + 1)

    def _fsm(self, m: Module) -> None:
        p, cores = self.p, self._cores
        j = Signal(range(p.n_cache + 1))
        h = Signal(range(max(2, p.group)))
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.FSM():
            with m.State("LOADQ"):
                s = self.s_axis
                m.d.comb += s.tready.eq(1)
                with m.If(s.tvalid):
                    with m.Switch(h):
                        for i, qr in enumerate(self._qregs):
                            with m.Case(i):
                                m.d.sync += qr.eq(s.tdata[:len(qr.as_value())])
                    m.d.sync += h.eq(h + 1)
                    with m.If(h == p.group - 1):
                        m.d.comb += self._axi.clear.eq(1)
                        m.d.sync += [h.eq(0), self.k_words.eq(0), self.v_words.eq(0),
                                     self.cycles.eq(0)]
                        m.next = "START"
            with m.State("START"):
                m.d.comb += self.busy.eq(1)
                m.d.comb += [c.start.eq(1) for c in cores]
                m.d.sync += [j.eq(0), self._chunk.eq(0), self._part.eq(0)]
                m.next = "SCAN_K"
            with m.State("SCAN_K"):
                m.d.comb += self.busy.eq(1)
                self._issue(m, j, 0)
                with m.If(j >= self.n):
                    m.next = "WAIT_MASK"
            with m.State("WAIT_MASK"):
                m.d.comb += self.busy.eq(1)
                all_valid = Cat(c.mask_out.valid for c in cores).all()
                m.d.comb += [c.mask_out.ready.eq(all_valid) for c in cores]
                with m.If(all_valid):
                    m.d.sync += j.eq(0)
                    with m.If(self._chunk == p.n_chunks - 1):
                        m.next = "SCAN_V"
                    with m.Else():
                        m.d.sync += self._chunk.eq(self._chunk + 1)
                        m.next = "SCAN_K"
            with m.State("SCAN_V"):
                m.d.comb += self.busy.eq(1)
                self._issue(m, j, 1)
                with m.If((j >= self.n) & self._axi.idle):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                with m.If(self._drain(m, h)):
                    m.d.sync += h.eq(0)
                    m.next = "LOADQ"

    def _drain(self, m: Module, h):
        """Each head's kept tokens and exact scores, head 0 first; returns the strobe of the
        step's last output beat."""
        done = Signal()
        p = self.p
        out = Signal(out_beat_layout(p))
        with m.Switch(h):
            for i, c in enumerate(self._cores):
                with m.Case(i):
                    so = c.s_out
                    m.d.comb += [out.payload.eq(so.payload.s),          # sign-extends
                                 out.tok.eq(so.payload.tok), out.idx.eq(i), out.kind.eq(0),
                                 self.m_axis.tvalid.eq(so.valid), self.m_axis.tdata.eq(out),
                                 self.m_axis.tlast.eq(so.payload.last & (i == p.group - 1)),
                                 so.ready.eq(self.m_axis.tready)]
                    with m.If(so.valid & self.m_axis.tready & so.payload.last):
                        m.d.sync += h.eq(h + 1)
                        if i == p.group - 1:
                            m.d.comb += done.eq(1)
        return done


def _or(values):
    acc = None
    for v in values:
        acc = v if acc is None else acc | v
    return acc
