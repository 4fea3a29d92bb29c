"""Stream helpers for Amaranth's simulator (async testbenches).

``port`` is a component's stream interface, e.g. ``dut.k_in`` (with ``.valid``, ``.ready``
and ``.payload``).  ``stream_put`` drives an ``In`` stream of the DUT, ``stream_get`` takes
from an ``Out`` stream.  Each returns after the clock edge that transfers the beat, so calls
can follow each other back to back at one beat per cycle.  With ``stall > 0`` and a
``random.Random`` in ``stall_rng``, idle (put) or not-ready (get) cycles are inserted before
the beat, one more while ``stall_rng.random() < stall``.

Payloads: ``stream_put`` accepts whatever ``ctx.set`` accepts for the payload shape (an int
for plain shapes; a ``data.Const`` from ``layout.const(...)``, a dict/list, or an int of packed
bits for layouts).  ``stream_get`` returns what ``ctx.get`` returns (an int, or a
``data.Const`` for layouts: use ``.as_bits()`` to compare packed values).
"""

import contextlib
import random
from collections.abc import Callable, Iterable

from amaranth.lib import data
from amaranth.sim import Simulator

__all__ = ["stream_put", "stream_get", "stream_put_many", "stream_get_many", "run_amaranth",
           "as_payload", "StreamChecker", "timed_source", "timed_sink", "axil_write",
           "axil_read", "axil_write_regs", "axil_read_reg", "handshake_trace"]


def as_payload(port, payload):
    """``payload`` converted for ``ctx.set(port.payload, ...)``: packed ints become a layout's
    ``Const`` so that callers may pass the same integers cocotb benches use."""
    shape = port.payload.shape() if hasattr(port.payload, "shape") else None
    if isinstance(payload, int) and isinstance(shape, data.Layout):
        return shape.from_bits(payload)
    return payload


async def _stall(ctx, stall_rng: random.Random | None, stall: float) -> None:
    if stall_rng is None or stall <= 0:
        return
    while stall_rng.random() < stall:
        await ctx.tick()


async def stream_put(ctx, port, payload=None, stall_rng: random.Random | None = None,
                     stall: float = 0.0) -> None:
    """Send one beat on ``port``; returns after the edge that transfers it."""
    await _stall(ctx, stall_rng, stall)
    if hasattr(port, "payload") and payload is not None:
        ctx.set(port.payload, as_payload(port, payload))
    ctx.set(port.valid, 1)
    # an explicit loop rather than ``ctx.tick().until()``: when another testbench fails,
    # a coroutine left suspended in until() makes Python report a spurious error at exit
    while True:
        _clk, _rst, ready = await ctx.tick().sample(port.ready)
        if ready:
            break
    ctx.set(port.valid, 0)


async def stream_get(ctx, port, stall_rng: random.Random | None = None, stall: float = 0.0):
    """Receive one beat from ``port``; returns its payload (``None`` for payload-less streams)
    after the edge that transfers it."""
    await _stall(ctx, stall_rng, stall)
    ctx.set(port.ready, 1)
    sampled = [port.valid] + ([port.payload] if hasattr(port, "payload") else [])
    while True:
        _clk, _rst, valid, *payload = await ctx.tick().sample(*sampled)
        if valid:
            break
    ctx.set(port.ready, 0)
    return payload[0] if payload else None


async def stream_put_many(ctx, port, payloads: Iterable, stall_rng: random.Random | None = None,
                          stall: float = 0.0) -> None:
    for p in payloads:
        await stream_put(ctx, port, p, stall_rng, stall)


async def stream_get_many(ctx, port, n: int, stall_rng: random.Random | None = None,
                          stall: float = 0.0) -> list:
    return [await stream_get(ctx, port, stall_rng, stall) for _ in range(n)]


def run_amaranth(dut, testbenches: "Callable | Iterable[Callable]", vcd: "str | None" = None, *,
                 background: Iterable[Callable] = (), clock: float | None = 1e-8,
                 deadline: float | None = None) -> None:
    """Simulate ``dut`` with async ``testbenches`` (``async def bench(ctx)``) until they return.

    ``background`` testbenches run alongside and are not waited for (e.g. monitors).
    ``clock`` is the ``sync`` period in seconds (``None`` for a purely combinational DUT).
    ``vcd`` writes a waveform file (and ``<vcd>.gtkw``).  ``deadline`` (seconds of simulated
    time) fails with ``AssertionError`` if the testbenches have not finished by then.
    """
    testbenches = [testbenches] if callable(testbenches) else list(testbenches)
    sim = Simulator(dut)
    if clock is not None:
        sim.add_clock(clock)
    finished = []
    for tb in testbenches:
        def make(tb=tb):
            async def wrapped(ctx):
                await tb(ctx)
                finished.append(tb)
            return wrapped
        sim.add_testbench(make())
    for tb in background:
        sim.add_testbench(tb, background=True)
    n = len(testbenches)
    if deadline is not None:
        # a background watchdog, not ``run_until``: that one always simulates up to the
        # deadline, even when every testbench finished long before
        async def watchdog(ctx):
            await ctx.delay(deadline)
            raise AssertionError(f"only {len(finished)} of {n} testbenches finished by the "
                                 f"deadline {deadline} s (deadlock or too little time?)")
        sim.add_testbench(watchdog, background=True)

    waves = contextlib.nullcontext() if vcd is None else sim.write_vcd(
        str(vcd), gtkw_file=str(vcd) + ".gtkw")
    with waves:
        sim.run()



class StreamChecker:
    """Protocol checker and counter for one stream in Amaranth's simulator.

    Add ``checker.testbench`` as a background testbench (``run_amaranth(..., background=
    [checker.testbench])``).  At every clock edge outside reset it checks that a beat offered
    without ``ready`` is offered again at the next edge with the same payload, and counts
    transfers in ``checker.count`` (payloads in ``checker.transactions`` as packed ints).
    A violation raises ``AssertionError`` out of the simulation.
    """

    def __init__(self, port, name: str = "stream"):
        self.port = port
        self.name = name
        self.count = 0
        self.transactions: list[int] = []

    async def testbench(self, ctx) -> None:
        has_payload = hasattr(self.port, "payload")
        signals = [self.port.valid, self.port.ready] + ([self.port.payload] if has_payload else [])
        pending, prev = False, None
        async for _clk, rst, valid, ready, *rest in ctx.tick().sample(*signals):
            payload = rest[0] if rest else 0
            if isinstance(payload, data.Const):
                payload = payload.as_bits()
            payload = int(payload)
            if rst:
                pending = False
                continue
            if pending:
                if not valid:
                    raise AssertionError(f"stream {self.name}: valid fell before ready "
                                         f"(payload {prev:#x} withdrawn) after {self.count} transfers")
                if payload != prev:
                    raise AssertionError(f"stream {self.name}: payload changed while valid & !ready: "
                                         f"{prev:#x} -> {payload:#x} after {self.count} transfers")
            if valid and ready:
                self.count += 1
                self.transactions.append(payload)
            pending, prev = bool(valid and not ready), payload


def handshake_trace(trace: dict, **ports):
    """A background testbench that appends to ``trace[name]`` the cycle (0 = the first clock
    edge) of every handshake on each named stream port (``handshake_trace(t, in_=dut.a,
    out=dut.b)``; a trailing ``_`` of a name is dropped)."""
    names = [n.rstrip("_") for n in ports]
    sigs = [s for p in ports.values() for s in (p.valid, p.ready)]

    async def bench(ctx):
        cyc = 0
        async for _, _, *vals in ctx.tick().sample(*sigs):
            for k, name in enumerate(names):
                if vals[2 * k] and vals[2 * k + 1]:
                    trace.setdefault(name, []).append(cyc)
            cyc += 1
    return bench


async def timed_source(ctx, port, beats: list[int], *, rng: random.Random, stall: float,
                       times: list[int]) -> None:
    """Offer ``beats`` (packed ints) on ``port`` in order, idle with probability ``stall`` each
    cycle, and append to ``times`` the cycle (0 = the first clock edge) each beat was taken:
    for latency and throughput measurements."""
    i = cycle = 0
    while i < len(beats):
        valid = rng.random() >= stall
        ctx.set(port.valid, valid)
        if valid:
            ctx.set(port.payload.as_value(), beats[i])
        _, _, ready = await ctx.tick().sample(port.ready)
        if valid and ready:
            times.append(cycle)
            i += 1
        cycle += 1
    ctx.set(port.valid, 0)


async def timed_sink(ctx, port, n: int, *, rng: random.Random, stall: float, limit: int,
                     out: list[int], times: list[int], violations: list[str]) -> int:
    """Take ``n`` beats from ``port`` (or give up after ``limit`` cycles), deasserting ready
    with probability ``stall``; append each payload to ``out`` and its cycle to ``times``, and
    every stream-rule violation (valid withdrawn, or payload changed, before ready) to
    ``violations``.  Returns the cycles spent."""
    cycle, held = 0, None
    while len(out) < n and cycle < limit:
        ready = rng.random() >= stall
        ctx.set(port.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload.as_value())
        if held is not None:
            if not valid:
                violations.append(f"cycle {cycle}: valid withdrawn before ready")
            elif payload != held:
                violations.append(f"cycle {cycle}: payload changed while not ready")
        held = None
        if valid and ready:
            out.append(payload)
            times.append(cycle)
        elif valid:
            held = payload
        cycle += 1
    return cycle


async def axil_write(ctx, bus, addr: int, value: int) -> None:
    """One AXI4-Lite write (all byte lanes) on a ``hw.axil.AxiLiteSignature`` port, returning
    after the write response."""
    ctx.set(bus.awaddr, addr)
    ctx.set(bus.wdata, value & 0xFFFFFFFF)
    ctx.set(bus.wstrb, 0xF)
    ctx.set(bus.awvalid, 1)
    ctx.set(bus.wvalid, 1)
    ctx.set(bus.bready, 1)
    await ctx.tick().until(bus.awready)
    ctx.set(bus.awvalid, 0)
    ctx.set(bus.wvalid, 0)
    await ctx.tick().until(bus.bvalid)
    ctx.set(bus.bready, 0)


async def axil_read(ctx, bus, addr: int) -> int:
    """One AXI4-Lite read; returns the data word."""
    ctx.set(bus.araddr, addr)
    ctx.set(bus.arvalid, 1)
    ctx.set(bus.rready, 1)
    await ctx.tick().until(bus.arready)
    ctx.set(bus.arvalid, 0)
    data, = await ctx.tick().sample(bus.rdata).until(bus.rvalid)
    ctx.set(bus.rready, 0)
    return data


async def axil_write_regs(ctx, bus, regmap, values: dict) -> None:
    """Write named registers of a register map (objects with ``name``, ``addr``, ``width``);
    a register wider than 32 bits takes consecutive words, low word first."""
    regs = {r.name: r for r in regmap}
    for name, val in values.items():
        r = regs[name]
        for w in range(-(-r.width // 32)):
            await axil_write(ctx, bus, r.addr + 4 * w, val >> (32 * w))


async def axil_read_reg(ctx, bus, regmap, name: str) -> int:
    """Read one named register of a register map (all its 32-bit words)."""
    r = {r.name: r for r in regmap}[name]
    val = 0
    for w in range(-(-r.width // 32)):
        val |= await axil_read(ctx, bus, r.addr + 4 * w) << (32 * w)
    return val
