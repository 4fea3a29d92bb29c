"""Gather stage of the LeOPArd front end: the bit-serial engine's records of a row group become
the group's gathered keys and score tiles, the same hand-over the score stage gives the
softmax stage in the HDP front end."""

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out

from hw.config import HDPConfig
from hw.leopard_engine import result_layout

from .common import Dims, addr_width, entry_layout, fine_layout, group_layout, key_layout

__all__ = ["LeopardGather"]


class LeopardGather(wiring.Component):
    """Takes the records of a :class:`~hw.leopard_engine.LeopardEngine` built ``kept_only``
    (``res_in``: each row's kept entries in any order, then the row's marker; rows in order)
    and, per row group of ``R`` query rows, hands the softmax stage what the score stage hands
    it in the HDP front end: the gathered keys (``key_wr``, in key order), the ``R x C`` score
    tiles (``fine_wr``; each entry carries its own keep bit, :func:`entry_layout`) and the
    group descriptor (``group``).

    *Fill*: a kept entry's score is written into its row's score memory at its key ``j`` and
    sets bit ``j`` of the row's keep bitmap; a marker ends the row.  Score memories and bitmaps
    have two banks, so the engine fills group ``g + 1`` while group ``g`` is scanned; a group
    is complete with the marker of its last row, and the engine waits (``res_in.ready`` low)
    only while both banks are full.

    *Scan*: for ``j = 0 .. L - 1`` (causal: up to the group's last row), one key per cycle, a
    key that any row of the group keeps (the union of the bitmaps) is appended to the key
    memory and its ``R`` entries (score, and the row's own bit as keep) to the current tile,
    which is written when it holds ``C`` keys or the scan ends.  Then the descriptor leaves
    (``nkept`` keys; ``rowmask`` is not used by this front end and is 0), ``done`` pulses with
    ``nkept``, and the bank's bitmaps are cleared.  An entry that the union holds but its own
    row pruned reaches the softmax with keep 0 (p = 0), as in the HDP front end (its score
    word is stale and unused).

    Banks downstream are those of the score stage: a scan starts with a fine-score credit
    (returned by ``m_done``) and a key credit (``p_done``); ``clear`` resets the counters and
    credits between heads.
    """

    def __init__(self, cfg: HDPConfig):
        if cfg.front_end != "leopard":
            raise ValueError(f"LeopardGather needs front_end = 'leopard', not {cfg.front_end!r}")
        self._cfg = cfg
        self._dims = d = Dims.of(cfg)
        super().__init__({
            "clear": In(1), "run": In(1), "valid_len": In(d.iw), "causal": In(1),
            "m_done": In(1), "p_done": In(1),
            "res_in": In(stream.Signature(result_layout(cfg))),
            "key_wr": In(WritePort.Signature(addr_width=addr_width(3 * d.N),
                                             shape=key_layout(cfg))),
            "fine_wr": In(WritePort.Signature(addr_width=addr_width(2 * d.n_words),
                                              shape=fine_layout(cfg))),
            "group": Out(stream.Signature(group_layout(cfg))),
            "done": Out(1), "nkept": Out(d.iw),
        })

    def elaborate(self, platform):
        m = Module()
        d = self._dims
        mems = []
        for r in range(d.R):
            m.submodules[f"rowmem_{r}"] = mem = Memory(
                shape=entry_layout(self._cfg).members["s"], depth=2 * d.N, init=[])
            mems.append(mem)
        # keep bitmaps: bank b, row r of the group
        keeps = [[Signal(d.N, name=f"keep_{b}_{r}") for r in range(d.R)] for b in range(2)]
        banks = [{"full": Signal(name=f"full_{b}"), "i0": Signal(d.iw + 1, name=f"i0_{b}"),
                  "nrows": Signal(d.rw, name=f"nrows_{b}")} for b in range(2)]
        freed = Signal()        # the scan frees its bank this cycle
        # the bank being scanned next; groups alternate, so it is also the group's fine-score
        # bank (b2 of its descriptor)
        sb = Signal()
        self._fill(m, mems, keeps, banks, freed, sb)
        self._scan(m, mems, keeps, banks, freed, sb)
        return m

    # ------------------------------------------------------------------------ fill
    def tile_keep(self, own, union):
        """The keep bit an entry takes into the tile: its row's own bit (a hook: a test
        breaks it)."""
        return own

    def _fill(self, m, mems, keeps, banks, freed, sb):
        d, L = self._dims, self.valid_len
        fb = Signal()                               # bank being filled
        cur_i = Signal(d.iw)                        # row of the next record
        grow = Signal(d.rw)                         # its row in the group
        gi0 = Signal(d.iw + 1)                      # the group's first row
        full = Array(b["full"] for b in banks)
        rec = self.res_in.payload
        fire = Signal()
        m.d.comb += [self.res_in.ready.eq(~full[fb]),
                     fire.eq(self.res_in.valid & self.res_in.ready)]
        for r, mem in enumerate(mems):
            wr = mem.write_port()
            m.d.comb += [wr.addr.eq(Mux(fb, d.N, 0) + rec.j), wr.data.eq(rec.score),
                         wr.en.eq(fire & rec.keep & (grow == r))]
        row_end = ~rec.keep                         # the row's marker
        group_end = row_end & ((grow == d.R - 1) | (cur_i + 1 == L))
        for b in range(2):
            with m.If(freed & (sb == b)):
                m.d.sync += [bm.eq(0) for bm in keeps[b]] + [banks[b]["full"].eq(0)]
            for r in range(d.R):
                with m.If(fire & rec.keep & (fb == b) & (grow == r)):
                    m.d.sync += keeps[b][r].bit_select(rec.j, 1).eq(1)
        with m.If(fire):
            with m.If(row_end):
                m.d.sync += [cur_i.eq(cur_i + 1), grow.eq(Mux(group_end, 0, grow + 1))]
            with m.If(group_end):
                for b, bank in enumerate(banks):
                    with m.If(fb == b):
                        m.d.sync += [bank["full"].eq(1), bank["i0"].eq(gi0),
                                     bank["nrows"].eq(grow + 1)]
                m.d.sync += [fb.eq(~fb), gi0.eq(cur_i + 1)]
        with m.If(self.clear):
            m.d.sync += [fb.eq(0), cur_i.eq(0), grow.eq(0), gi0.eq(0)]
            m.d.sync += [b["full"].eq(0) for b in banks]
            m.d.sync += [bm.eq(0) for bank in keeps for bm in bank]

    # ------------------------------------------------------------------------ scan
    def _scan(self, m, mems, keeps, banks, freed, sb):
        cfg, d, L = self._cfg, self._dims, self.valid_len
        full = Array(b["full"] for b in banks)
        i0 = Array(b["i0"] for b in banks)
        nrows = Array(b["nrows"] for b in banks)
        fine_cr = Signal(range(3), init=2)
        key_cr = Signal(range(4), init=3)
        b3 = Signal(2)
        scanning = Signal()
        j = Signal(d.iw)                 # next key to read
        jc, joff = Signal(d.cw), Signal(range(d.bc))
        stop = Signal(d.iw + 1)          # keys scanned: L, or the group's last row + 1 (causal)
        # stage 1: the key's union bit and entries are at the memories' outputs
        v1, u1, last1 = Signal(), Signal(), Signal()
        own1 = Signal(d.R)               # each row's own keep bit of the key
        j1, c1 = Signal(d.iw), Signal(d.cw)
        nk = Signal(d.iw)                # keys gathered so far
        lane = Signal(range(d.C))
        word = Signal(range(d.n_words + 1))
        tile = Signal(fine_layout(cfg))
        desc = Signal(group_layout(cfg))
        out_valid = Signal()
        rds = [mem.read_port(transparent_for=()) for mem in mems]
        start = Signal()
        m.d.comb += start.eq(self.run & ~scanning & ~out_valid & full[sb]
                             & (fine_cr != 0) & (key_cr != 0))
        with m.If(start):
            g_last = i0[sb] + nrows[sb]
            m.d.sync += [scanning.eq(1), j.eq(0), jc.eq(0), joff.eq(0), nk.eq(0), lane.eq(0),
                         word.eq(0), stop.eq(Mux(self.causal & (g_last < L), g_last, L)),
                         desc.i0.eq(i0[sb]), desc.nrows.eq(nrows[sb])]
        issue = scanning & (j < stop)
        for rd in rds:
            m.d.comb += [rd.addr.eq(Mux(sb, d.N, 0) + j), rd.en.eq(issue)]
        m.d.sync += v1.eq(issue)
        with m.If(issue):
            bits = [Mux(sb, keeps[1][r], keeps[0][r]).bit_select(j, 1) for r in range(d.R)]
            m.d.sync += [own1.eq(Cat(*bits)), u1.eq(Cat(*bits).any()), last1.eq(j + 1 == stop),
                         j1.eq(j), c1.eq(jc), j.eq(j + 1),
                         joff.eq(Mux(joff == d.bc - 1, 0, joff + 1)),
                         jc.eq(Mux(joff == d.bc - 1, jc + 1, jc))]
        # stage 2: a kept key goes into the key memory and its entries into the tile
        new_tile = Signal.like(tile)
        m.d.comb += new_tile.eq(tile)
        for r, rd in enumerate(rds):
            m.d.comb += [new_tile[r * d.C + lane].s.eq(rd.data),
                         new_tile[r * d.C + lane].keep.eq(self.tile_keep(own1[r], u1))]
        take = v1 & u1
        m.d.comb += [self.key_wr.addr.eq(nk + b3 * d.N), self.key_wr.data.j.eq(j1),
                     self.key_wr.data.c.eq(c1), self.key_wr.en.eq(take),
                     self.fine_wr.addr.eq(word + Mux(sb, d.n_words, 0))]
        with m.If(take):
            m.d.sync += [tile.eq(new_tile), nk.eq(nk + 1), lane.eq(Mux(lane == d.C - 1, 0,
                                                                          lane + 1))]
            with m.If(lane == d.C - 1):
                m.d.sync += word.eq(word + 1)
        # write a full tile at once; the last, partial one when the scan ends
        m.d.comb += self.fine_wr.data.eq(Mux(take, new_tile, tile))
        m.d.comb += self.fine_wr.en.eq((take & (lane == d.C - 1))
                                       | (v1 & last1 & (take | (lane != 0))))
        with m.If(v1 & last1):
            m.d.sync += [scanning.eq(0), out_valid.eq(1), desc.nkept.eq(nk + take)]
        # hand-over
        ended = Signal()
        m.d.comb += [ended.eq(self.group.valid & self.group.ready), freed.eq(ended),
                     self.group.valid.eq(out_valid), self.group.payload.eq(desc),
                     self.group.payload.b2.eq(sb), self.group.payload.b3.eq(b3),
                     self.done.eq(ended), self.nkept.eq(desc.nkept)]
        with m.If(ended):
            m.d.sync += [out_valid.eq(0), sb.eq(~sb), b3.eq(Mux(b3 == 2, 0, b3 + 1))]
        with m.If(self.clear):
            m.d.sync += [fine_cr.eq(2), key_cr.eq(3), b3.eq(0), sb.eq(0),
                         scanning.eq(0), out_valid.eq(0)]
        with m.Else():
            m.d.sync += [fine_cr.eq(fine_cr + self.m_done - ended),
                         key_cr.eq(key_cr + self.p_done - ended)]
