"""Score stage (S): a row group's kept keys gathered into score tiles on the array."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from hw.config import HDPConfig
from hw.systolic import op_layout, res_layout

from .common import Dims, addr_width, fine_layout, group_layout, key_layout, qk_mem_row

__all__ = ["ScoreStage"]


class ScoreStage(wiring.Component):
    """S: for each row group of ``R`` query rows, in order.

    1. *PREP*: reads the group's Q rows (``q_rd``) into registers and each row's block-row
       keep mask (``mask_rd``; in a dense head the block validity instead), one row per
       cycle, through a register after each memory; a row waits until its block-row's mask
       has arrived (``mask_rows``), so S overlaps the integer pass.
    2. *UNION*, *IT_INIT*: the union of the group's masks starts a key iterator over the kept
       block columns' keys ``j < L``.
    3. *TILES*: a loader gathers ``C`` keys at a time (``k_rd``, one per cycle, registered
       after the memory) into a double buffer while the previous tile runs on the array
       (``op``: ``head_dim`` depth steps, Q rows rotated, K rows shifted, through a
       three-entry operand skid so that the registers advance on this stage's own registers,
       not on the arbiter's grant), and records each gathered key in the key memory
       (``key_wr``).  Score results (``res``) go into the fine-score memory (``fine_wr``).
    4. *DRAIN*: once every result is back, the group's descriptor leaves on ``group`` and
       ``done`` pulses with ``nkept``.

    Banks: the key memory has three (M reads group ``g - 1`` and P ``g - 2`` while S writes
    ``g``), the fine-score memory two.  S starts a group only with a credit of each: a fine
    bank comes back when M finishes a group (``m_done``), a key bank when P does
    (``p_done``).  ``clear`` (high between the load and the run of a head) resets the
    group counters and credits.
    """

    def __init__(self, cfg: HDPConfig):
        self._cfg = cfg
        self._dims = d = Dims.of(cfg)
        super().__init__({
            "clear": In(1), "run": In(1), "valid_len": In(d.iw), "causal": In(1),
            "dense": In(1), "drop_ff": In(1), "mask_rows": In(d.rbw + 2),
            "m_done": In(1), "p_done": In(1),
            "q_rd": In(ReadPort.Signature(addr_width=addr_width(d.N), shape=qk_mem_row(cfg))),
            "k_rd": In(ReadPort.Signature(addr_width=addr_width(d.N), shape=qk_mem_row(cfg))),
            "mask_rd": In(ReadPort.Signature(addr_width=addr_width(d.nbr), shape=unsigned(d.nbc))),
            "key_wr": In(WritePort.Signature(addr_width=addr_width(3 * d.N),
                                             shape=key_layout(cfg))),
            "fine_wr": In(WritePort.Signature(addr_width=addr_width(2 * d.n_words),
                                              shape=fine_layout(cfg), granularity=d.C)),
            "op": Out(stream.Signature(op_layout(cfg, d.tagw))),
            "res": In(stream.Signature(res_layout(cfg, d.tagw))),
            "group": Out(stream.Signature(group_layout(cfg))),
            "done": Out(1), "nkept": Out(d.iw),
        })

    def valid_cols(self, rb):
        """Block columns of block-row ``rb`` holding a valid entry (golden's block validity):
        ``c b_c < L`` and, causal, ``c b_c <= rb b_r + b_r - 1``."""
        d, L = self._dims, self.valid_len
        row_hi = rb * d.br + (d.br - 1)
        # column 0: no comparison with 0 (Verilator lints a constant unsigned compare)
        return Cat(L != 0, *[(c * d.bc < L) & (~self.causal | (c * d.bc <= row_hi))
                             for c in range(1, d.nbc)])

    def elaborate(self, platform):
        m = Module()
        self._s = s = self._registers()
        self._prep(m, s)
        self._iterator(m, s)
        self._operands(m, s)
        self._results(m, s)
        self._runner(m, s)
        self._fsm(m, s)
        return m

    # ------------------------------------------------------------------------ state
    def _registers(self):
        cfg, d = self._cfg, self._dims
        row_qk = qk_mem_row(cfg)
        one = {"vld", "vin", "vld2", "vin2", "b2", "it_valid", "it_step", "kl_vld", "kl_zero",
               "kd_vld", "kd_zero", "kl_full", "keys_done", "running", "step_last", "fire",
               "tile_end", "load", "ken", "running_n", "kl_full_n", "step_last_n"}
        shapes = {
            "i0": d.iw + 1, "rb": d.rbw + 1, "off": range(d.br), "i": range(d.N + d.R + 1),
            "r": d.rw + 1, "vr": d.rw, "vrb": d.rbw + 1, "vr2": d.rw, "qd": row_qk, "md": d.nbc,
            "desc": group_layout(cfg), "b3": 2, "it_rem": d.nbc, "it_j": d.iw, "it_c": d.cw,
            "it_off": range(d.bc), "slot": range(d.C + 1), "kl_slot": range(d.C),
            "kd_slot": range(d.C), "kd": row_qk,
            "tile": range(d.n_words + 1), "step": range(d.D + 1),
            "out": range(d.n_words + 2),      # score tiles issued, results not all back
        }
        # every register named after its key, so that synthesis and timing reports read;
        # fire, tile_end, load, ken: the runner's decisions, registered (see _runner), and
        # *_n the next values of the registers they are computed from
        s = {name: Signal(shape, name=name) for name, shape in shapes.items()}
        s.update({name: Signal(name=name) for name in one})
        s.update({
            "fine_cr": Signal(range(3), init=2, name="fine_cr"),
            "key_cr": Signal(range(4), init=3, name="key_cr"),
            "qreg": [Signal(row_qk, name=f"qreg_{r}") for r in range(d.R)],
            "kreg": [Signal(row_qk, name=f"kreg_{c}") for c in range(d.C)],
            "kload": [Signal(row_qk, name=f"kload_{c}") for c in range(d.C)],
            "sk_v": [Signal(name=f"sk_v{k}") for k in range(3)],
        })
        return s

    # ------------------------------------------------------------------------ Q rows, masks
    def _prep(self, m, s):
        """A row's Q and mask are at the memories' outputs the cycle after its read (``vld``),
        registered (``qd``, ``md``: a block RAM's output only feeds a register), and written
        into the row's registers the cycle after (``vld2``)."""
        d = self._dims
        m.d.comb += [self.q_rd.addr.eq(s["i"]), self.mask_rd.addr.eq(s["rb"])]
        m.d.sync += [s["vld2"].eq(s["vld"]), s["vr2"].eq(s["vr"]), s["vin2"].eq(s["vin"]),
                     s["qd"].eq(self.q_rd.data),
                     s["md"].eq(Mux(self.dense, self.valid_cols(s["vrb"]), self.mask_rd.data))]
        with m.If(s["vld2"]):
            for r in range(d.R):
                with m.If(s["vr2"] == r):
                    m.d.sync += [s["qreg"][r].eq(Mux(s["vin2"], s["qd"], 0)),
                                 s["desc"].rowmask[r].eq(Mux(s["vin2"], s["md"], 0))]
        m.d.sync += [s["vld"].eq(0), s["kl_vld"].eq(0)]

    # ------------------------------------------------------------------------ key iterator
    def _iterator(self, m, s):
        d, L = self._dims, self.valid_len
        # the lowest kept block column left: its one-hot (rem & -rem) and its index (an OR
        # tree per index bit), cleared with rem & (rem - 1) -- carry chains and log-depth
        # ORs, not a 64-deep priority chain
        rem = s["it_rem"]
        low = Signal(d.nbc)
        lsb_idx = Signal(d.cw)
        m.d.comb += low.eq(rem & (~rem + 1))
        for b in range(d.cw):
            bits = [low[c] for c in range(d.nbc) if (c >> b) & 1]
            m.d.comb += lsb_idx[b].eq(Cat(*bits).any() if bits else 0)
        # ``j + 1 < L`` as one comparison with a registered ``L - 1`` (L is static while a
        # head runs), not an adder into a comparator: it gates every iterator register
        lm1 = Signal(signed(len(L) + 1), name="it_lm1")
        m.d.sync += lm1.eq(L - 1)
        with m.If(s["it_step"]):
            with m.If(s["it_valid"] & (s["it_off"] != d.bc - 1) & (s["it_j"] < lm1)):
                m.d.sync += [s["it_j"].eq(s["it_j"] + 1), s["it_off"].eq(s["it_off"] + 1)]
            with m.Elif(s["it_rem"] != 0):
                m.d.sync += [s["it_valid"].eq(1), s["it_c"].eq(lsb_idx),
                             s["it_j"].eq(lsb_idx * d.bc), s["it_off"].eq(0),
                             s["it_rem"].eq(rem & (rem - 1))]
            with m.Else():
                m.d.sync += s["it_valid"].eq(0)
        m.d.comb += [self.k_rd.addr.eq(s["it_j"]),
                     self.key_wr.data.j.eq(s["it_j"]), self.key_wr.data.c.eq(s["it_c"]),
                     self.key_wr.addr.eq(s["desc"].nkept + s["b3"] * d.N)]
        # the key is at the K memory's output the cycle after its read (kl_vld), registered
        # (kd), and written into its slot the cycle after (kd_vld)
        m.d.sync += [s["kd_vld"].eq(s["kl_vld"]), s["kd_slot"].eq(s["kl_slot"]),
                     s["kd_zero"].eq(s["kl_zero"]), s["kd"].eq(self.k_rd.data)]
        with m.If(s["kd_vld"]):
            for c in range(d.C):
                with m.If(s["kd_slot"] == c):
                    m.d.sync += s["kload"][c].eq(Mux(s["kd_zero"], 0, s["kd"]))

    # ------------------------------------------------------------------------ array operands
    def _operands(self, m, s):
        """Operand beats from the registers' element 0 into a three-entry skid (``sk_v``)
        whose head is ``op``; one cycle of latency, full rate.  The tile runner advances on
        ``fire``, a register (see :meth:`_runner`) that never waits on the arbiter's grant."""
        cfg, d = self._cfg, self._dims
        F = cfg.qk_frac
        op = Signal.like(self.op.payload)
        self._skid(m, s, op)
        for r in range(d.R):
            qv = s["qreg"][r][0].as_unsigned()
            m.d.comb += [op.a0[r].eq(qv[F:].as_signed()), op.a1[r].eq(qv[:F] if F else 0)]
        for c in range(d.C):
            kv = s["kreg"][c][0].as_unsigned()
            # b0 = k_q, so (q_I k_q << F) + q_F b1 is the whole score: q_q . k_q, or
            # (A << 2F) + 2^F X with b1 = k_I << F (drop_ff)
            m.d.comb += [op.b0[c].eq(kv.as_signed()),
                         op.b1[c].eq(Mux(self.drop_ff, kv[F:].as_signed() << F, kv.as_signed()))]
        m.d.comb += [op.last.eq(s["step_last"]),
                     op.tag.eq(Cat(s["tile"].as_unsigned() | Const(0, d.idxw), s["b2"],
                                   Const(0, 1)))]

    def _skid(self, m, s, beat):
        """A three-entry FIFO, head ``op``; its fill is the thermometer ``sk_v``.  The entries
        never move: ``beat``, pushed on ``fire``, goes into entry ``sk_w`` and ``op`` reads
        entry ``sk_r``, so the arbiter's grant (``op.ready``) only steps ``sk_r`` and the fill,
        never the clock enables of the entries' hundreds of flip-flops (at nextpnr seed 3 the
        grant -> shift enables was the whole top's critical path).  ``fire`` is only set when
        the skid will have room for it (see :meth:`_runner`), so a push never finds it full:
        ``sk_w`` (= ``sk_r`` + fill) never names an entry still to be read."""
        v = s["sk_v"]
        dq = [Signal.like(beat, name=f"sk_d{k}") for k in range(3)]
        rd, wr = Signal(range(3), name="sk_r"), Signal(range(3), name="sk_w")
        push, pop = s["fire"], Signal()
        with m.Switch(rd):
            for k in range(3):
                with m.Case(k):
                    m.d.comb += self.op.payload.eq(dq[k])
        m.d.comb += [self.op.valid.eq(v[0]), pop.eq(v[0] & self.op.ready)]
        with m.If(pop):
            m.d.sync += [rd.eq(Mux(rd == 2, 0, rd + 1)), v[0].eq(v[1]), v[1].eq(v[2]), v[2].eq(0)]
        with m.If(push):
            m.d.sync += wr.eq(Mux(wr == 2, 0, wr + 1))
            for k in range(3):
                with m.If(wr == k):
                    m.d.sync += dq[k].eq(beat)
        for k in range(3):
            # fill bit k after this cycle's pop: set, and the one before it
            here = Mux(pop, v[k + 1], v[k]) if k < 2 else ~pop & v[2]
            before = Mux(pop, v[k], v[k - 1]) if k else Const(1)
            with m.If(push & ~here & before):
                m.d.sync += v[k].eq(1)

    # ------------------------------------------------------------------------ results
    def _results(self, m, s):
        d = self._dims
        res = self.res.payload
        m.d.comb += [self.res.ready.eq(1),
                     self.fine_wr.addr.eq(res.tag[:d.idxw] + Mux(res.tag[d.idxw], d.n_words, 0))]
        for r in range(d.R):
            for c in range(d.C):
                m.d.comb += self.fine_wr.data[r * d.C + c].eq(res.acc[c])
            m.d.comb += self.fine_wr.en[r].eq(self.res.valid & (res.row == r))
        m.d.sync += s["out"].eq(s["out"] + s["tile_end"] - (self.res.valid & res.last))

    # ------------------------------------------------------------------------ control
    def _fsm(self, m, s):
        d, L = self._dims, self.valid_len
        desc = s["desc"]
        with m.If(self.clear):
            m.d.sync += [s["i0"].eq(0), s["rb"].eq(0), s["off"].eq(0), s["i"].eq(0),
                         s["b2"].eq(0), s["b3"].eq(0), s["fine_cr"].eq(2), s["key_cr"].eq(3)]
        with m.Else():
            ended = Signal()
            m.d.comb += ended.eq(self.group.valid & self.group.ready)
            m.d.sync += [s["fine_cr"].eq(s["fine_cr"] + self.m_done - ended),
                         s["key_cr"].eq(s["key_cr"] + self.p_done - ended)]
        m.d.comb += [self.group.payload.eq(desc), self.group.payload.b2.eq(s["b2"]),
                     self.group.payload.b3.eq(s["b3"]),
                     self.done.eq(self.group.valid & self.group.ready),
                     self.nkept.eq(desc.nkept)]
        with m.FSM(name="s_fsm") as fsm:
            with m.State("IDLE"):
                with m.If(self.run & (s["i0"] < L) & (s["fine_cr"] != 0) & (s["key_cr"] != 0)):
                    m.d.sync += [s["r"].eq(0), desc.i0.eq(s["i0"]),
                                 desc.nrows.eq(Mux(L - s["i0"] < d.R, L - s["i0"], d.R))]
                    m.next = "PREP"
            with m.State("PREP"):
                self._prep_state(m, s)
            with m.State("UNION"):
                u_acc = Const(0, d.nbc)
                for r in range(d.R):
                    u_acc = u_acc | desc.rowmask[r]
                m.d.sync += [s["it_rem"].eq(u_acc), s["it_valid"].eq(0), desc.nkept.eq(0),
                             s["tile"].eq(0)]
                m.next = "IT_INIT"
            with m.State("IT_INIT"):
                m.d.comb += [s["it_step"].eq(1), s["kl_full_n"].eq(0), s["running_n"].eq(0)]
                m.d.sync += [s["slot"].eq(0), s["keys_done"].eq(0)]
                m.next = "TILES"
            with m.State("TILES"):
                self._tiles_state(m, s)
            with m.State("DRAIN"):
                # every score of the group is in the fine-score bank: hand the group to M
                with m.If(self.group.ready & self.group.valid):
                    m.d.sync += [s["b2"].eq(~s["b2"]), s["b3"].eq(Mux(s["b3"] == 2, 0, s["b3"] + 1)),
                                 s["i0"].eq(s["i0"] + d.R)]
                    m.next = "IDLE"

        # a plain assignment, not under a state: Icarus never evaluates a combinational block
        # whose inputs keep their time-0 values, and an X valid would poison the FIFO
        m.d.comb += self.group.valid.eq(fsm.ongoing("DRAIN") & (s["out"] == 0)
                                        & ~s["tile_end"])

    def _prep_state(self, m, s):
        d, L = self._dims, self.valid_len
        # one row per cycle; a row waits for its block-row's mask, except in a dense head
        with m.If((s["r"] < d.R) & ((s["i"] >= L) | self.dense | (s["rb"] < self.mask_rows))):
            m.d.sync += [s["vld"].eq(1), s["vr"].eq(s["r"]), s["vin"].eq(s["i"] < L),
                         s["vrb"].eq(s["rb"]), s["r"].eq(s["r"] + 1), s["i"].eq(s["i"] + 1)]
            with m.If(s["off"] == d.br - 1):
                m.d.sync += [s["off"].eq(0), s["rb"].eq(s["rb"] + 1)]
            with m.Else():
                m.d.sync += s["off"].eq(s["off"] + 1)
        with m.Elif((s["r"] == d.R) & ~s["vld"]):
            m.next = "UNION"       # the last row's registers are written this cycle

    def _runner(self, m, s):
        """One tile of ``D`` depth steps on the array from ``kreg`` while the loader fills
        ``kload``.

        The operand registers (thousands of flip-flops across the chip) advance on ``fire``
        (a beat into the skid: Q rows rotate, K rows shift) and the K bank takes ``kload``
        on ``load`` (``~running | tile_end``, with ``kl_full``); ``tile_end`` is ``fire`` of
        a tile's last step.  All three are registers, set the cycle before from the next
        values (``*_n``) of ``running``, ``kl_full``, ``step_last`` and the skid's fill, so
        the operands' clock enables (``ken = fire | load``, a register too) and the K bank's
        select come straight from flip-flops and no control register waits on a chain of
        them.  ``fire`` is set when the skid holds at most two entries after this cycle's
        push, not counting this cycle's pop (the arbiter's grant): the next push then fits
        in three, and a skid that is taken every cycle still advances every cycle.

        Defaults here, before :meth:`_fsm`: IT_INIT clears ``running`` and ``kl_full``, the
        loader sets ``kl_full`` (never on a ``load`` or ``tile_end``: those need
        ``kl_full``, resp. ``running``)."""
        cfg, d = self._cfg, self._dims
        fire, tile_end, load = s["fire"], s["tile_end"], s["load"]
        run_n, klf_n, sl_n = s["running_n"], s["kl_full_n"], s["step_last_n"]
        v = s["sk_v"]
        with m.If(fire):
            # rotate Q rows, shift K rows: element 0 is the current depth step
            for r in range(d.R):
                qv = s["qreg"][r].as_value()
                m.d.sync += s["qreg"][r].eq(Cat(qv[cfg.qk_bits:], qv[:cfg.qk_bits]))
            m.d.sync += s["step"].eq(s["step"] + 1)
        with m.If(s["ken"]):
            for c in range(d.C):
                with m.If(load):
                    m.d.sync += s["kreg"][c].eq(s["kload"][c])
                with m.Else():
                    m.d.sync += s["kreg"][c].eq(s["kreg"][c].as_value() >> cfg.qk_bits)
        with m.If(tile_end):
            m.d.sync += s["tile"].eq(s["tile"] + 1)
        with m.If(load):
            m.d.sync += s["step"].eq(0)
        # near: step + 2 == D, kept beside step (a constant comparison of its next value), so
        # that step_last's next value is a select of registers, not an adder and a comparator
        near = Signal(init=int(d.D == 2), name="step_near")
        after = (s["step"] == d.D - 3) if d.D >= 3 else Const(0)
        m.d.sync += near.eq(Mux(load, d.D == 2, Mux(fire, after, near)))
        # next values: running, kl_full, step_last
        m.d.comb += [run_n.eq(Mux(load, 1, s["running"] & ~tile_end)),
                     klf_n.eq(s["kl_full"] & ~load),
                     sl_n.eq(Mux(load, d.D == 1, Mux(fire, near, s["step_last"])))]
        fire_n, tile_end_n, load_n = Signal(), Signal(), Signal()
        m.d.comb += [fire_n.eq(run_n & Mux(fire, ~v[1], ~v[2])),
                     tile_end_n.eq(fire_n & sl_n),
                     load_n.eq((~run_n | tile_end_n) & klf_n)]
        m.d.sync += [s["running"].eq(run_n), s["kl_full"].eq(klf_n), s["step_last"].eq(sl_n),
                     fire.eq(fire_n), tile_end.eq(tile_end_n), load.eq(load_n),
                     s["ken"].eq(fire_n | load_n)]

    def _tiles_state(self, m, s):
        d = self._dims
        desc = s["desc"]
        # loader: gathers the next tile's C keys into kload (one per cycle) while the
        # current tile runs from kreg, so tiles follow each other without a bubble
        with m.If(~s["kl_full"] & ~s["keys_done"]):
            with m.If((s["slot"] == 0) & ~s["it_valid"]):
                m.d.sync += s["keys_done"].eq(1)
            with m.Elif(s["slot"] < d.C):
                m.d.comb += [self.key_wr.en.eq(s["it_valid"]), s["it_step"].eq(s["it_valid"])]
                m.d.sync += [s["kl_vld"].eq(1), s["kl_slot"].eq(s["slot"]),
                             s["kl_zero"].eq(~s["it_valid"]), s["slot"].eq(s["slot"] + 1)]
                with m.If(s["it_valid"]):
                    m.d.sync += desc.nkept.eq(desc.nkept + 1)
            with m.Elif(~s["kl_vld"] & ~s["kd_vld"]):
                m.d.comb += s["kl_full_n"].eq(1)
                m.d.sync += s["slot"].eq(0)
        with m.If(~s["running"] & ~s["kl_full"] & s["keys_done"]):
            m.next = "DRAIN"
