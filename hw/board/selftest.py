"""Self-test harness around the co-processor top: one head's Q, K, V in a ROM, run through
:class:`hw.top.Top`, the output checksum compared with the golden one, a report on a UART.

Golden twin: :func:`hw.board.vectors.checksum` and :func:`hw.board.vectors.report_line`.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.config import HDPConfig
from hw.top import Top, in_lane_width, out_lane_width

from .uart import UartTx
from .vectors import SelftestVectors, corrupt_bit, report_line

__all__ = ["SelfTest", "LINE_LEN"]

#: characters of the report line (``PASS cycles=XXXXXXXX sum=XXXXXXXX\r\n``)
LINE_LEN = len(report_line(True, 0, 0))
_STATUS, _CYCLES = 0x24, 0x28


class SelfTest(wiring.Component):
    """Runs the stored head through the top and reports the result.

    Sequence of one run: write the run-time registers over ``s_axil`` (a small AXI4-Lite
    master), stream the ``3L`` ROM rows into ``s_axis`` at one row per cycle, store the ``L``
    ``m_axis`` rows (``tready`` always high while the head runs, so the top's ``cycles`` is the
    cycle model's), checksum them element by element (:func:`hw.board.vectors.checksum`),
    poll ``status`` until *done*, read ``cycles``, then send
    ``PASS cycles=XXXXXXXX sum=XXXXXXXX\\r\\n`` (``FAIL`` when the checksum differs from the
    golden one; ``sum`` is the computed checksum) on ``uart_tx``.

    A run starts after reset, on a rising edge of ``button`` once the previous report is
    sent, and, when ``period`` > 0, ``period`` cycles after the previous report.

    Parameters
    ----------
    cfg : HDPConfig
    vectors : SelftestVectors
        The head (:func:`hw.board.vectors.make_vectors` and friends).
    baud_div : int
        Clock cycles per UART bit (>= 2).
    period : int
        Cycles between the end of a report and the next run; 0 = only on ``button``.
    corrupt : int or None
        Index of a ROM row (0 ... ``3L - 1``) stored with its lane 0 changed
        (:func:`hw.board.vectors.corrupt_bit` flipped): a broken build that must report FAIL.
    heartbeat_bit : int
        ``led_heartbeat`` is bit ``heartbeat_bit`` of a free-running counter.

    Ports: ``uart_tx``, ``button`` (active high, synchronised inside), ``led_pass``,
    ``led_fail`` (the last run's result), ``led_busy`` (a run is in progress),
    ``led_heartbeat``.
    """

    uart_tx: Out(1, init=1)
    button: In(1)
    led_pass: Out(1)
    led_fail: Out(1)
    led_busy: Out(1)
    led_heartbeat: Out(1)

    def __init__(self, cfg: HDPConfig, vectors: SelftestVectors, *, baud_div: int = 217,
                 period: int = 0, corrupt: int | None = None, heartbeat_bit: int = 24):
        if not isinstance(cfg, HDPConfig):
            raise TypeError(f"cfg must be an HDPConfig, not {cfg!r}")
        if not isinstance(vectors, SelftestVectors):
            raise TypeError(f"vectors must be SelftestVectors, not {vectors!r}")
        if not isinstance(period, int) or isinstance(period, bool) or period < 0:
            raise ValueError(f"period must be an integer >= 0 (cycles), not {period!r}")
        n_rows = len(vectors.rows)
        if corrupt is not None and (not isinstance(corrupt, int) or isinstance(corrupt, bool)
                                    or not 0 <= corrupt < n_rows):
            raise ValueError(f"corrupt must be None or a ROM row index in 0 ... {n_rows - 1}, "
                             f"not {corrupt!r}")
        if not isinstance(heartbeat_bit, int) or not 1 <= heartbeat_bit <= 31:
            raise ValueError(f"heartbeat_bit must be an integer in 1 ... 31, not {heartbeat_bit!r}")
        self._cfg, self._vec = cfg, vectors
        self._uart = UartTx(baud_div)  # validates baud_div
        self._period, self._corrupt, self._hb = period, corrupt, heartbeat_bit
        super().__init__()

    def rom_rows(self) -> list[int]:
        """The ROM contents (with the corruption, if any)."""
        rows = list(self._vec.rows)
        if self._corrupt is not None:
            rows[self._corrupt] ^= 1 << corrupt_bit(self._cfg)
        return rows

    def elaborate(self, platform):
        m = Module()
        cfg, vec = self._cfg, self._vec
        m.submodules.top = top = Top(cfg)
        m.submodules.uart = uart = self._uart
        m.d.comb += self.uart_tx.eq(uart.tx)
        n = vec.valid_len
        m.submodules.rom = rom = Memory(shape=in_lane_width(cfg) * cfg.head_dim,
                                        depth=3 * n, init=self.rom_rows())
        m.submodules.outmem = outmem = Memory(shape=out_lane_width(cfg) * cfg.head_dim,
                                              depth=n, init=[])
        self._s = {
            "streaming": Signal(), "out_cnt": Signal(range(n + 1)),
            "row": Signal(range(n)), "lane": Signal(range(cfg.head_dim)),
            "sum": Signal(32), "cycles": Signal(32), "passed": Signal(), "char": Signal(8),
        }
        self._build_source(m, top, rom)
        self._build_sink(m, top, outmem)
        self._build_chars(m)
        self._build_control(m, top, uart, outmem)
        cnt = Signal(self._hb + 1)
        m.d.sync += cnt.eq(cnt + 1)
        m.d.comb += self.led_heartbeat.eq(cnt[self._hb])
        return m

    def _build_source(self, m, top, rom):
        """ROM rows -> ``s_axis`` at one row per cycle (sync read, held while not ready)."""
        s, n3 = self._s, 3 * self._vec.valid_len
        rd = rom.read_port()
        ptr = Signal(range(n3 + 1))
        valid = Signal()
        adv = ~valid | top.s_axis.tready
        m.d.comb += [top.s_axis.tdata.eq(rd.data), top.s_axis.tvalid.eq(valid),
                     top.s_axis.tlast.eq(ptr == n3), rd.addr.eq(ptr), rd.en.eq(0)]
        with m.If(~s["streaming"]):
            m.d.sync += [ptr.eq(0), valid.eq(0)]
        with m.Elif(adv):
            m.d.comb += rd.en.eq(ptr < n3)
            m.d.sync += valid.eq(ptr < n3)
            with m.If(ptr < n3):
                m.d.sync += ptr.eq(ptr + 1)

    def _build_sink(self, m, top, outmem):
        """``m_axis`` rows -> output memory, always ready while the head runs."""
        s = self._s
        wr = outmem.write_port()
        take = top.m_axis.tvalid & top.m_axis.tready
        m.d.comb += [top.m_axis.tready.eq(s["streaming"]), wr.addr.eq(s["out_cnt"]),
                     wr.data.eq(top.m_axis.tdata), wr.en.eq(take)]
        with m.If(take):
            m.d.sync += s["out_cnt"].eq(s["out_cnt"] + 1)

    def _build_chars(self, m):
        """Character ``idx`` of the report line (:func:`hw.board.vectors.report_line`)."""
        s = self._s
        self._idx = idx = Signal(range(LINE_LEN))
        fixed = {i: ord(c) for i, c in enumerate(report_line(True, 0, 0))}
        hexpos = {**{12 + i: ("cycles", 7 - i) for i in range(8)},
                  **{25 + i: ("sum", 7 - i) for i in range(8)}}
        nib = Signal(4)
        with m.Switch(idx):
            for i in range(LINE_LEN):
                with m.Case(i):
                    if i in hexpos:
                        name, k = hexpos[i]
                        m.d.comb += nib.eq(s[name][4 * k:4 * k + 4])
                        m.d.comb += s["char"].eq(
                            Mux(nib < 10, nib + ord("0"), nib + (ord("A") - 10)))
                    elif i < 4:
                        pas, fai = ord("PASS"[i]), ord("FAIL"[i])
                        m.d.comb += s["char"].eq(Mux(s["passed"], pas, fai))
                    else:
                        m.d.comb += s["char"].eq(fixed[i])

    def _build_control(self, m, top, uart, outmem):
        """The run: register writes, the head, the checksum, status and cycles, the report."""
        cfg, vec, s = self._cfg, self._vec, self._s
        n, d, lw = vec.valid_len, cfg.head_dim, out_lane_width(cfg)
        axil = top.s_axil
        writes = vec.writes
        widx = Signal(range(len(writes)))
        with m.Switch(widx):
            for i, (addr, word) in enumerate(writes):
                with m.Case(i):
                    m.d.comb += [axil.awaddr.eq(addr), axil.wdata.eq(word)]
        m.d.comb += axil.wstrb.eq(0b1111)
        rd = outmem.read_port()
        m.d.comb += [rd.addr.eq(s["row"]), rd.en.eq(1)]
        lane = rd.data.word_select(s["lane"], lw)
        btn = Signal(3)   # two synchroniser stages and the previous value
        m.d.sync += btn.eq(Cat(self.button, btn[:2]))
        press = btn[1] & ~btn[2]
        wait = Signal(range(max(self._period, 1) + 1))
        with m.FSM(init="START"):
            with m.State("START"):
                m.d.sync += [widx.eq(0), s["out_cnt"].eq(0), s["row"].eq(0), s["lane"].eq(0),
                             s["sum"].eq(0)]
                m.next = "WR_ADDR"
            with m.State("WR_ADDR"):
                m.d.comb += [axil.awvalid.eq(1), axil.wvalid.eq(1), self.led_busy.eq(1)]
                with m.If(axil.awready & axil.wready):
                    m.next = "WR_RESP"
            with m.State("WR_RESP"):
                m.d.comb += [axil.bready.eq(1), self.led_busy.eq(1)]
                with m.If(axil.bvalid):
                    m.d.sync += widx.eq(widx + 1)
                    with m.If(widx == len(writes) - 1):
                        m.d.sync += s["streaming"].eq(1)
                        m.next = "HEAD"
                    with m.Else():
                        m.next = "WR_ADDR"
            with m.State("HEAD"):
                m.d.comb += self.led_busy.eq(1)
                with m.If(s["out_cnt"] == n):
                    m.d.sync += s["streaming"].eq(0)
                    m.next = "SUM_READ"
            with m.State("SUM_READ"):     # the row's word arrives from the memory
                m.d.comb += self.led_busy.eq(1)
                m.next = "SUM_LANE"
            with m.State("SUM_LANE"):
                m.d.comb += self.led_busy.eq(1)
                m.d.sync += [s["sum"].eq(Cat(s["sum"][31], s["sum"][:31]) + lane),
                             s["lane"].eq(s["lane"] + 1)]
                with m.If(s["lane"] == d - 1):
                    m.d.sync += [s["lane"].eq(0), s["row"].eq(s["row"] + 1)]
                    with m.If(s["row"] == n - 1):
                        m.d.sync += s["row"].eq(0)
                        m.next = "POLL_ADDR"
                    with m.Else():
                        m.next = "SUM_READ"
            self._read_states(m, axil)
            with m.State("REPORT"):
                m.d.comb += [uart.data.eq(s["char"]), uart.valid.eq(1), self.led_busy.eq(1)]
                with m.If(uart.ready):
                    m.d.sync += self._idx.eq(self._idx + 1)
                    with m.If(self._idx == LINE_LEN - 1):
                        m.d.sync += [self._idx.eq(0), wait.eq(0)]
                        m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [self.led_pass.eq(s["passed"]), self.led_fail.eq(~s["passed"])]
                restart = press
                if self._period:
                    m.d.sync += wait.eq(wait + 1)
                    restart = press | (wait == self._period - 1)
                with m.If(restart):
                    m.next = "START"

    def _read_states(self, m, axil):
        """Poll ``status`` until *done*, then read ``cycles`` and decide PASS/FAIL."""
        s, vec = self._s, self._vec
        m.d.comb += axil.araddr.eq(_STATUS)
        with m.State("POLL_ADDR"):
            m.d.comb += [axil.arvalid.eq(1), self.led_busy.eq(1)]
            with m.If(axil.arready):
                m.next = "POLL_DATA"
        with m.State("POLL_DATA"):
            m.d.comb += [axil.rready.eq(1), self.led_busy.eq(1)]
            with m.If(axil.rvalid & axil.rdata[1]):
                m.next = "CYC_ADDR"
            with m.Elif(axil.rvalid):
                m.next = "POLL_ADDR"
        with m.State("CYC_ADDR"):
            m.d.comb += [axil.araddr.eq(_CYCLES), axil.arvalid.eq(1), self.led_busy.eq(1)]
            with m.If(axil.arready):
                m.next = "CYC_DATA"
        with m.State("CYC_DATA"):
            m.d.comb += [axil.araddr.eq(_CYCLES), axil.rready.eq(1), self.led_busy.eq(1)]
            with m.If(axil.rvalid):
                m.d.sync += [s["cycles"].eq(axil.rdata),
                             s["passed"].eq(s["sum"] == vec.checksum)]
                m.next = "REPORT"
