"""cocotb 2.x drivers and monitors for Amaranth ``lib.stream`` ports.

An Amaranth stream port ``name`` flattens to ``name__valid``, ``name__ready`` and
``name__payload`` (the last is absent for payload-less streams).  Payloads are plain
integers: the packed bits of the port's layout (pack with ``layout.const(...).as_bits()``,
unpack with ``layout.from_bits(...)`` in the bench).

Timing (the same on Icarus and Verilator): every driver writes its signals just after the
falling edge of the clock, then waits for ``ReadOnly()`` and samples the handshake that the
next rising edge commits.  The DUT changes its outputs only at rising edges, so what is
seen in that read-only phase is exactly what the rising edge sees.

Every :class:`StreamSource` and :class:`StreamSink` starts (or reuses) a
:class:`StreamMonitor` on its stream, which fails the test if the payload changes or
``valid`` falls while ``valid & ~ready``, and counts transfers (``monitor.count``).
"""

import collections
import random
from collections.abc import Iterable

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, FallingEdge, First, ReadOnly, RisingEdge

__all__ = ["start_clock", "reset", "StreamSource", "StreamSink", "StreamMonitor",
           "StreamProtocolError", "StreamTimeout", "stream_signals", "wait_cycles", "clock_signal",
           "DEFAULT_TIMEOUT_CYCLES", "write_reg", "read_reg"]

# A bench waiting on a stream that makes no progress for this many cycles fails instead of
# hanging the simulator (and pytest) forever.  Pass timeout_cycles=None to wait forever.
DEFAULT_TIMEOUT_CYCLES = 200_000


class StreamProtocolError(AssertionError):
    """A stream broke the valid/ready rules (raised inside the monitor's task, which fails
    the running cocotb test)."""


class StreamTimeout(AssertionError):
    """A stream made no progress for ``timeout_cycles`` cycles while a bench waited on it."""


async def _wait_progress(event: Event, clk, progress, limit: int | None, what) -> None:
    """Wait until ``event`` is set, failing when ``progress()`` stays the same for ``limit``
    cycles in a row."""
    while not event.is_set():
        if limit is None:
            await event.wait()
            return
        before = progress()
        await First(event.wait(), ClockCycles(clk, limit))
        if not event.is_set() and progress() == before:
            raise StreamTimeout(what())


def clock_signal(dut_or_clock):
    """The clock signal handle from a :class:`~cocotb.clock.Clock`, a DUT or a signal."""
    if isinstance(dut_or_clock, Clock):
        return dut_or_clock.signal
    if hasattr(dut_or_clock, "clk"):
        return dut_or_clock.clk
    return dut_or_clock


def start_clock(dut, period_ns: float = 10.0, *, signal: str = "clk") -> Clock:
    """Start a clock on ``dut.clk`` (``period_ns`` nanoseconds) and return it."""
    clock = Clock(getattr(dut, signal), period_ns, unit="ns")
    clock.start()
    return clock


async def wait_cycles(clock, n: int) -> None:
    """Wait for ``n`` rising edges of ``clock``."""
    clk = clock_signal(clock)
    for _ in range(n):
        await RisingEdge(clk)


async def reset(dut, clock, cycles: int = 2, *, signal: str = "rst") -> None:
    """Synchronous active-high reset: ``rst`` high for ``cycles`` rising edges (driven on
    falling edges); returns just after the falling edge where ``rst`` went low again."""
    clk = clock_signal(clock)
    rst = getattr(dut, signal)
    await FallingEdge(clk)
    rst.value = 1
    for _ in range(cycles):
        await RisingEdge(clk)
    await FallingEdge(clk)
    rst.value = 0


def stream_signals(dut, name: str):
    """``(valid, ready, payload_or_None)`` handles of stream ``name`` on ``dut``."""
    try:
        valid = getattr(dut, f"{name}__valid")
        ready = getattr(dut, f"{name}__ready")
    except AttributeError:
        raise AttributeError(f"DUT {dut._name} has no stream {name!r} "
                             f"(looked for {name}__valid and {name}__ready)") from None
    payload = getattr(dut, f"{name}__payload", None)
    return valid, ready, payload


def _is_one(handle) -> bool:
    v = handle.value
    return v.is_resolvable and int(v) == 1


def _read_int(handle, what: str) -> int:
    v = handle.value
    if not v.is_resolvable:
        raise StreamProtocolError(f"{what} is not resolvable ({v}) during a transfer")
    return int(v)


def _in_reset(dut, rst_name: str = "rst") -> bool:
    rst = getattr(dut, rst_name, None)
    if rst is None:
        return False
    v = rst.value
    return not v.is_resolvable or int(v) == 1


# one live monitor per (DUT, stream); re-created when the previous test's task has ended
_MONITORS: dict[tuple[int, str], "StreamMonitor"] = {}


class StreamMonitor:
    """Passive checker and counter of one stream.

    Rules checked every cycle outside reset: once ``valid`` is high and ``ready`` low,
    the next cycle must still have ``valid`` high and the same payload.  A violation raises
    :class:`StreamProtocolError` in the monitor's task, which fails the running test.

    Attributes
    ----------
    count : int
        Transfers (``valid & ready`` at a rising edge) seen so far.
    transactions : list[int] or None
        Every transferred payload when ``record=True``.
    """

    def __init__(self, dut, name: str, clock, *, record: bool = False):
        self.dut = dut
        self.name = name
        self.clk = clock_signal(clock)
        self.valid, self.ready, self.payload = stream_signals(dut, name)
        self.count = 0
        self.cycles = 0
        self.transactions: list[int] | None = [] if record else None
        self._task = cocotb.start_soon(self._run())

    @classmethod
    def attach(cls, dut, name: str, clock) -> "StreamMonitor":
        """The running monitor of ``dut.name``, started if there is none."""
        key = (id(dut), name)
        mon = _MONITORS.get(key)
        if mon is None or mon._task.done():
            mon = cls(dut, name, clock)
            _MONITORS[key] = mon
        return mon

    @property
    def running(self) -> bool:
        return not self._task.done()

    def stop(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        pending = False
        prev_payload = None
        while True:
            await FallingEdge(self.clk)
            await ReadOnly()
            self.cycles += 1
            if _in_reset(self.dut):
                pending = False
                continue
            valid = _is_one(self.valid)
            ready = _is_one(self.ready)
            payload = None
            if valid and self.payload is not None:
                payload = _read_int(self.payload, f"{self.name}__payload")
            if pending:
                if not valid:
                    raise StreamProtocolError(
                        f"stream {self.name}: valid fell before ready (payload {prev_payload:#x} "
                        f"withdrawn) after {self.count} transfers")
                if payload != prev_payload:
                    raise StreamProtocolError(
                        f"stream {self.name}: payload changed while valid & !ready: "
                        f"{prev_payload:#x} -> {payload:#x} after {self.count} transfers")
            if valid and ready:
                self.count += 1
                if self.transactions is not None:
                    self.transactions.append(payload if payload is not None else 0)
            pending = valid and not ready
            prev_payload = payload


class _StreamEnd:
    """What a source and a sink share: the stream's signals, the seeded stall generator, the
    timeout and the transfer count."""

    def __init__(self, dut, name: str, clock, stall: float, seed: int, timeout_cycles: int | None):
        if not 0.0 <= stall < 1.0:
            raise ValueError(f"stall must be in [0, 1), not {stall!r}")
        self.dut = dut
        self.name = name
        self.clk = clock_signal(clock)
        self.valid, self.ready, self.payload = stream_signals(dut, name)
        self.stall = stall
        self.rng = random.Random(seed)
        self.timeout_cycles = timeout_cycles
        self.count = 0


class StreamSource(_StreamEnd):
    """Drives stream ``name`` of ``dut`` (an ``In`` stream of the DUT).

    ``await send(p)`` queues payload ``p`` and returns once the transfer is committed;
    ``send_many`` queues a whole list and returns after the last one.  Back-to-back beats
    go out at one per cycle; with ``stall > 0`` each beat is preceded by idle cycles, one
    more while ``rng.random() < stall`` (``rng = random.Random(seed)``).  ``send`` raises
    :class:`StreamTimeout` when no beat is accepted for ``timeout_cycles`` cycles.
    """

    def __init__(self, dut, name: str, clock, stall: float = 0.0, seed: int = 0, *,
                 timeout_cycles: int | None = DEFAULT_TIMEOUT_CYCLES):
        super().__init__(dut, name, clock, stall, seed, timeout_cycles)
        self._queue: collections.deque[tuple[int, Event]] = collections.deque()
        self.valid.value = 0
        self.monitor = StreamMonitor.attach(dut, name, clock)
        self._task = cocotb.start_soon(self._run())

    async def send(self, payload: int = 0) -> None:
        await self._wait(self._put(payload))

    async def send_many(self, payloads: Iterable[int]) -> None:
        done = None
        for p in payloads:
            done = self._put(p)
        if done is not None:
            await self._wait(done)

    async def _wait(self, done: Event) -> None:
        await _wait_progress(
            done, self.clk, lambda: self.count, self.timeout_cycles,
            lambda: (f"stream {self.name}: no beat accepted for {self.timeout_cycles} cycles "
                     f"({self.count} sent, {len(self._queue)} waiting; is ready stuck low?)"))

    def send_nowait(self, payload: int = 0) -> Event:
        """Queue ``payload``; the returned event is set when it has been transferred."""
        return self._put(payload)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing on the wires."""
        return not self._queue and not self._busy

    async def wait_idle(self) -> None:
        while not self.idle:
            await RisingEdge(self.clk)

    def _put(self, payload: int) -> Event:
        if hasattr(payload, "as_bits"):  # a data.Const from layout.const(...)
            payload = payload.as_bits()
        if self.payload is None:
            if payload not in (0, None):
                raise ValueError(f"stream {self.name} has no payload, cannot send {payload!r}")
        elif not isinstance(payload, int) or payload < 0 or payload >> len(self.payload):
            raise ValueError(f"payload of {self.name} must be an int in [0, 2**{len(self.payload)}), "
                             f"not {payload!r}")
        ev = Event()
        self._queue.append((payload, ev))
        return ev

    _busy = False

    async def _run(self) -> None:
        while True:
            await FallingEdge(self.clk)
            if not self._queue:
                self.valid.value = 0
                continue
            if self.stall and self.rng.random() < self.stall:
                self.valid.value = 0
                continue
            payload, ev = self._queue[0]
            self._busy = True
            if self.payload is not None:
                self.payload.value = payload
            self.valid.value = 1
            while True:
                await ReadOnly()
                if _is_one(self.ready) and not _in_reset(self.dut):
                    break
                await FallingEdge(self.clk)
            await RisingEdge(self.clk)
            self._queue.popleft()
            self._busy = False
            self.count += 1
            ev.set()


class StreamSink(_StreamEnd):
    """Receives stream ``name`` of ``dut`` (an ``Out`` stream of the DUT).

    ``ready`` is driven high every cycle except that with ``stall > 0`` it is dropped with
    probability ``stall`` (``random.Random(seed)``).  Received payloads wait in a queue:
    ``await recv()`` returns the next one, ``await recv_many(n)`` the next ``n``.
    ``recv`` raises :class:`StreamTimeout` after ``timeout_cycles`` cycles without a beat.
    """

    def __init__(self, dut, name: str, clock, stall: float = 0.0, seed: int = 0, *,
                 timeout_cycles: int | None = DEFAULT_TIMEOUT_CYCLES):
        super().__init__(dut, name, clock, stall, seed, timeout_cycles)
        self._queue: collections.deque[int] = collections.deque()
        self._arrived = Event()
        self.ready.value = 0
        self.monitor = StreamMonitor.attach(dut, name, clock)
        self._task = cocotb.start_soon(self._run())

    def __len__(self) -> int:
        """Payloads received and not yet taken by :meth:`recv`."""
        return len(self._queue)

    def empty(self) -> bool:
        return not self._queue

    async def recv(self) -> int:
        if not self._queue:
            self._arrived.clear()
            await _wait_progress(
                self._arrived, self.clk, lambda: self.count, self.timeout_cycles,
                lambda: (f"stream {self.name}: nothing received for {self.timeout_cycles} cycles "
                         f"({self.count} received so far)"))
        return self._queue.popleft()

    async def recv_many(self, n: int) -> list[int]:
        return [await self.recv() for _ in range(n)]

    def recv_nowait(self) -> int | None:
        return self._queue.popleft() if self._queue else None

    async def _run(self) -> None:
        while True:
            await FallingEdge(self.clk)
            ready = not (self.stall and self.rng.random() < self.stall)
            self.ready.value = int(ready)
            await ReadOnly()
            if ready and _is_one(self.valid) and not _in_reset(self.dut):
                payload = 0 if self.payload is None else _read_int(self.payload, f"{self.name}__payload")
                # hand it over after the committing edge, outside the read-only phase, so
                # that the receiver may write signals as soon as recv() returns
                await RisingEdge(self.clk)
                self._queue.append(payload)
                self.count += 1
                self._arrived.set()


async def write_reg(axil, reg, value: int) -> None:
    """Write ``value`` to register ``reg`` (a :class:`hw.axil.Reg`) through cocotbext-axi's
    ``AxiLiteMaster`` ``axil``: one 32-bit word per started 32 bits, lowest first."""
    for w in range(-(-reg.width // 32)):
        await axil.write_dword(reg.addr + 4 * w, (value >> (32 * w)) & 0xFFFFFFFF)


async def read_reg(axil, reg) -> int:
    """Read register ``reg`` through ``axil``, as many 32-bit words as its width needs."""
    val = 0
    for w in range(-(-reg.width // 32)):
        val |= await axil.read_dword(reg.addr + 4 * w) << (32 * w)
    return val
