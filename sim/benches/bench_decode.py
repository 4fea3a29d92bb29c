"""cocotb bench of ``hw.decode.group.DecodeGroup`` and ``hw.decode.engine.DecodeEngine``: one
Token-Picker decode step of one KV group, K and V served by cocotbext-axi's ``AxiRamRead``
with random AR/R pauses, the query on ``s_axis`` and the result on ``m_axis`` with random
backpressure.

Checked bit for bit against :func:`golden.token_picker.decode_step` (one KV head):

* the AR requests (address and length, in order) are exactly the golden's read set: chunk ``c``
  of the tokens some head keeps alive before it, ascending, then the V rows of the tokens some
  head keeps; in particular no address falls in a later chunk or the V row of a token the whole
  group dropped (checked separately, with its own message);
* ``DecodeGroup``: the V words on ``m_axis`` equal memory, and each head's kept tokens and
  exact scores equal the golden's; ``DecodeEngine`` (``"engine": true``): each head's ``d``
  requantized outputs equal the golden's ``out``;
* the ``k_words`` / ``v_words`` counters equal the golden's ``k_words_read`` / ``v_words_read``.

Parameters come as JSON in ``HDPGEN_DECODE`` (see ``tests/test_decode_cocotb.py``); the figures
(words, cycles; for the engine also ``out``, the outputs the RTL sent) are written as JSON to
``HDPGEN_DECODE_OUT``.  ``"case": "file"`` takes one KV group's quantized step from the .npz
named by ``"data"`` (arrays ``qx``, ``qfrac``, ``kx``, ``kfrac``, ``vx``, ``vfrac``: see
:func:`write_case_file`; ``hdpgen decode --sim`` writes them from a real-model capture).
``"check": false`` records the figures without failing on a difference from the golden model
(the caller compares); the default checks everything.

``"axil": true`` runs ``hw.decode.accel.DecodeAccel`` (the engine behind AXI4-Lite registers):
the settings are written and ``k_words``, ``v_words``, ``cycles`` and ``status`` read through
cocotbext-axi's ``AxiLiteMaster`` on ``s_axil``, and ``status`` must read idle after the step.
``"write_while_busy": {"n": ..., "eps": ...}`` (with ``"axil"``) then writes the settings of a
second step (that ``n`` and ``eps``, ``v_frac`` one off, K and V at other bases) while the first
runs, checks they read back at once, and runs the second step without writing them again: the
first must equal the golden step with its own settings, the second with the new ones (its
figures are under ``"second"``).
"""

import json
import os
import random

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge, with_timeout
from cocotbext.axi import (
    AxiLiteBus,
    AxiLiteMaster,
    AxiRamRead,
    AxiReadBus,
    AxiStreamBus,
    AxiStreamFrame,
    AxiStreamSink,
    AxiStreamSource,
)

from golden import token_picker as tp
from hw.decode.accel import SETTINGS, register_map
from hw.decode.group import out_beat_layout
from hw.decode.params import DecodeParams
from sim.decode_vectors import extreme_step, random_step, synthetic_step
from sim.streams import read_reg, reset, start_clock, write_reg

K_BASE, V_BASE = 0x1000, 0x40000
K_BASE2, V_BASE2 = 0x80000, 0xC0000     # the second step of "write_while_busy"


def write_case_file(path, qq: tp.Quantized, kq: tp.Quantized, vq: tp.Quantized) -> None:
    """One KV group's quantized step for ``"case": "file"``: q (group, d), k and v (1, N, d)."""
    np.savez(path, qx=qq.x, qfrac=qq.frac, kx=kq.x, kfrac=kq.frac, vx=vq.x, vfrac=vq.frac)


def case_data(spec: dict, cfg: tp.TokenPickerConfig):
    g, n_cache, d = spec["group"], spec["n_cache"], spec["d"]
    if spec["case"] == "file":
        with np.load(spec["data"]) as z:
            return tuple(tp.Quantized(z[f"{x}x"].astype(np.int64), z[f"{x}frac"].astype(np.int64))
                         for x in "qkv")
    if spec["case"] == "synthetic":
        q, k, v = synthetic_step(spec["seed"], g, 1, n_cache, d, spec["n"])
        return tp.quantize_step(q, k, v, cfg)
    make = {"random": random_step, "extreme": extreme_step}[spec["case"]]
    return make(spec["seed"], g, 1, n_cache, d, cfg)


def pack(values, bits: int) -> int:
    return sum((int(x) & ((1 << bits) - 1)) << (i * bits) for i, x in enumerate(values))


def v_rows(p: DecodeParams, v_base: int):
    """``(address, words, part)`` of token ``j``'s V high plane row (part 0) and, with
    ``v_lo_bits``, its low plane row (part 1), as a function of ``j``."""
    vh, vl = p.cfg.v_part_words(p.d)
    wb = p.cfg.word_bits // 8
    return lambda j: [(v_base + j * vh * wb, vh, 0)] + \
        [(v_base + (p.n_cache * vh + j * vl) * wb, vl, 1)] * bool(vl)


def memory_image(p: DecodeParams, kq, vq, k_base: int = K_BASE, v_base: int = V_BASE):
    """``{address: bytes}`` of the layout documented in ``DecodeGroup`` (KV head 0), and
    ``{word address: (c, j)}`` naming what each word holds (``c = n_chunks`` for V rows,
    ``n_chunks + 1`` for V low plane rows)."""
    cfg, wb = p.cfg, p.cfg.word_bits // 8
    kw = p.k_chunk_words()
    digits = tp.chunk_digits(kq.x, cfg)
    image, owner = {}, {}
    for c, w in enumerate(cfg.chunk_widths):
        for j in range(p.n_cache):
            a = k_base + (p.n_cache * sum(kw[:c]) + j * kw[c]) * wb
            image[a] = pack(digits[c, 0, j], w).to_bytes(kw[c] * wb, "little")
            owner.update({a + i * wb: (c, j) for i in range(kw[c])})
    lo = cfg.v_lo_bits
    planes = (np.asarray(vq.x[0], np.int64) >> lo, np.asarray(vq.x[0], np.int64) & ((1 << lo) - 1))
    rows = v_rows(p, v_base)
    for j in range(p.n_cache):
        for a, w, part in rows(j):
            bits = cfg.v_bits - lo if part == 0 else lo
            image[a] = pack(planes[part][j], bits).to_bytes(w * wb, "little")
            owner.update({a + i * wb: (cfg.n_chunks + part, j) for i in range(w)})
    return image, owner


def expected_reads(p: DecodeParams, r: tp.StepResult, k_base: int = K_BASE, v_base: int = V_BASE):
    cfg, wb = p.cfg, p.cfg.word_bits // 8
    kw = p.k_chunk_words()
    out = []
    for c in range(cfg.n_chunks):
        out += [(k_base + (p.n_cache * sum(kw[:c]) + int(j) * kw[c]) * wb, kw[c] - 1)
                for j in np.flatnonzero(r.read[c, 0])]
    rows = v_rows(p, v_base)
    for j in np.flatnonzero(r.read[cfg.n_chunks, 0]):
        out += [(a, w - 1) for a, w, part in rows(int(j)) if part == 0 or r.read_v_lo[0, j]]
    return out


def pauses(rng: random.Random, prob: float):
    while True:
        yield rng.random() < prob


async def watch_ar(dut, log: list) -> None:
    while True:
        await RisingEdge(dut.clk)
        if dut.m_axi__arvalid.value == 1 and dut.m_axi__arready.value == 1:
            log.append((int(dut.m_axi__araddr.value), int(dut.m_axi__arlen.value)))


def check_pruned_reads(ar_log, owner, r, wb) -> None:
    """No read touches a chunk the group no longer reads, the V row of a pruned token, or a
    V low plane row the step does not read."""
    nc = r.read.shape[0] - 1
    for a, ln in ar_log:
        for b in range(a, a + (ln + 1) * wb, wb):
            if b not in owner:
                raise AssertionError(f"read outside the K and V data at {b:#x}")
            c, j = owner[b]
            if c > nc:
                if not r.read_v_lo[0, j]:
                    raise AssertionError(f"read of the V low plane of token {j}, which no head "
                                         f"needs (address {b:#x})")
            elif not r.read[c, 0, j]:
                what = f"K chunk {c + 1}" if c < nc else "the V row"
                raise AssertionError(f"read of {what} of token {j}, which the group had "
                                     f"dropped (address {b:#x})")


class Bench:
    """The DUT with its AXI RAM, stream source and sink, and (``"axil": true``, a
    ``DecodeAccel``) an ``AxiLiteMaster`` on ``s_axil`` through which settings are written and
    counters read; otherwise the settings and counters are the DUT's plain ports."""

    def __init__(self, dut, spec: dict):
        self.dut, self.spec = dut, spec
        self.cfg = cfg = tp.TokenPickerConfig(**spec["cfg"])
        self.p = DecodeParams(cfg, d=spec["d"], n_cache=spec["n_cache"], group=spec["group"])
        self.qq, self.kq, self.vq = case_data(spec, cfg)
        self.engine = bool(spec.get("engine") or spec.get("axil"))
        self.check = spec.get("check", True)
        rng = random.Random(spec["seed"])
        stall = spec["stall"]
        self.clock = start_clock(dut)
        self.ram = ram = AxiRamRead(AxiReadBus.from_prefix(dut, "m_axi_"), dut.clk, dut.rst,
                                    size=1 << 20)
        ram.ar_channel.set_pause_generator(pauses(random.Random(rng.random()), stall))
        ram.r_channel.set_pause_generator(pauses(random.Random(rng.random()), stall))
        self.src = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_"), dut.clk, dut.rst)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis_"), dut.clk, dut.rst)
        self.src.set_pause_generator(pauses(random.Random(rng.random()), stall))
        self.sink.set_pause_generator(pauses(random.Random(rng.random()), stall))
        logs = [ram.log, self.src.log, self.sink.log]
        for lg in logs:
            lg.setLevel("WARNING")
        self.axil = None
        if spec.get("axil"):
            for name in ("awvalid", "wvalid", "bready", "arvalid", "rready"):
                getattr(dut, f"s_axil__{name}").value = 0   # no X before the master drives
            self.regs = {r.name: r for r in register_map(self.p, len(dut.m_axi__araddr))}
        self.ar_log = []

    async def start(self) -> None:
        """Reset, then (with ``"axil"``) attach the AXI4-Lite master: cocotbext-axi samples
        ``awready`` from the first instant and cocotb 2 refuses to turn an X into a bool."""
        await reset(self.dut, self.clock)
        if self.spec.get("axil"):
            dut = self.dut
            self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)
            for lg in (self.axil.write_if.log, self.axil.read_if.log):
                lg.setLevel("WARNING")
        cocotb.start_soon(watch_ar(self.dut, self.ar_log))

    def settings(self, n: int, eps: float, k_base: int, v_base: int, v_frac: int) -> dict:
        eps_v = self.spec.get("eps_v", 0.0)
        s = {"eps_q": tp.eps_q_of(eps, self.cfg), "n": n, "k_base": k_base, "v_base": v_base,
             "eps": eps, "eps_v": eps_v, "eps_v_q": tp.eps_q_of(eps_v, self.cfg, "eps_v")}
        if self.engine:
            s["v_frac"] = v_frac
        return s

    async def program(self, s: dict) -> None:
        for name in SETTINGS:
            if name in s:
                if self.axil is None:
                    getattr(self.dut, name).value = s[name]
                else:
                    await self.write_reg(name, s[name])

    async def write_reg(self, name: str, value: int) -> None:
        await write_reg(self.axil, self.regs[name], value)

    async def read_reg(self, name: str) -> int:
        return await read_reg(self.axil, self.regs[name])

    async def counter(self, name: str) -> int:
        if self.axil is None:
            return int(getattr(self.dut, name).value)
        return await self.read_reg(name)

    async def write_while_busy(self, s: dict) -> None:
        """Wait until ``status`` shows the step running, write ``s``, check it reads back, and
        that the step was still running after that (else this would prove nothing)."""
        for _ in range(200):
            if await self.read_reg("status") & 1:
                break
        else:
            raise AssertionError("status never showed busy after the query was sent")
        await self.program(s)
        for name in SETTINGS:
            got = await self.read_reg(name)
            if got != s[name]:
                raise AssertionError(f"{name} reads back {got} after a write while busy, "
                                     f"not {s[name]}")
        if not await self.read_reg("status") & 1:
            raise AssertionError("the step ended before the writes while busy were done")

    async def step(self, s: dict, during=None) -> dict:
        """One decode step with the settings ``s`` (already programmed), K and V at its bases;
        checks it against the golden model and returns its figures.  ``during`` (a coroutine
        function) runs after the query was queued, while the step runs."""
        p, cfg, g, n = self.p, self.cfg, self.p.group, s["n"]
        qq, kq = self.qq, self.kq
        vq = tp.Quantized(self.vq.x, np.full_like(self.vq.frac, s.get("v_frac", 0))) \
            if self.engine else self.vq
        r = tp.decode_step(qq, kq, vq, n, s["eps"], cfg, s["eps_v"])
        image, owner = memory_image(p, kq, vq, s["k_base"], s["v_base"])
        for a, b in image.items():
            self.ram.write(a, b)
        self.ar_log.clear()
        qbytes = len(self.dut.s_axis__tdata) // 8
        frame = b"".join(
            (pack(qq.x[h], cfg.q_bits) | int(qq.frac[h] + kq.frac[0]) << (p.d * cfg.q_bits))
            .to_bytes(qbytes, "little") for h in range(g))
        await self.src.send(AxiStreamFrame(frame))
        if during is not None:
            await during()
        got = await with_timeout(self.sink.recv(), 2_000_000, "ns")
        await RisingEdge(self.dut.clk)
        ar_log = list(self.ar_log)
        want_ar = expected_reads(p, r, s["k_base"], s["v_base"])
        if self.check:
            check_pruned_reads(ar_log, owner, r, cfg.word_bits // 8)
            if ar_log != want_ar:
                first = next((i for i, (a, b) in enumerate(zip(ar_log, want_ar)) if a != b), None)
                raise AssertionError(f"AR requests differ from the golden read set: "
                                     f"{len(ar_log)} issued, {len(want_ar)} expected; first "
                                     f"difference at {first}")
        beats, want = self.compare_output(got, r, image, s["v_base"])
        figures = await self.figures(s, r, beats, want, ar_log == want_ar)
        return figures

    def compare_output(self, got, r, image, v_base):
        p, cfg, g = self.p, self.cfg, self.p.group
        wb = cfg.word_bits // 8
        lay = out_beat_layout(p)
        ob = lay.size // 8
        data = bytes(got.tdata)
        beats = [lay.from_bits(int.from_bytes(data[i:i + ob], "little"))
                 for i in range(0, len(data), ob)]
        beats = [(int(b.kind), int(b.tok), int(b.idx), int(b.payload)) for b in beats]
        want = []
        if self.engine:     # DecodeEngine: the requantized outputs of every head
            for h in range(g):
                want += [(2, h, i, int(r.out[h, i]) & 0xFFFFFFFF) for i in range(p.d)]
        else:               # DecodeGroup: the V words read, then kept tokens and scores
            rows = v_rows(p, v_base)
            for j in np.flatnonzero(r.read[cfg.n_chunks, 0]):
                idx = 0
                for a, w, part in rows(int(j)):
                    if part == 0 or r.read_v_lo[0, j]:
                        want += [(1, int(j), idx + i,
                                  int.from_bytes(image[a][i * wb:(i + 1) * wb], "little"))
                                 for i in range(w)]
                    idx += w
            for h in range(g):
                want += [(0, int(j), h, int(r.scores[h, j]) & 0xFFFFFFFF)
                         for j in np.flatnonzero(r.keep[h])]
        if self.check and beats != want:
            bad = next(i for i, (a, b) in enumerate(zip(beats + [None] * len(want), want))
                       if a != b)
            raise AssertionError(f"m_axis output differs at beat {bad}: {beats[bad:bad + 2]} vs "
                                 f"{want[bad:bad + 2]} ({len(beats)} beats, {len(want)} expected)")
        return beats, want

    async def figures(self, s, r, beats, want, reads_match) -> dict:
        p, cfg, g, st = self.p, self.cfg, self.p.group, r.stats
        f = {name: await self.counter(name) for name in ("k_words", "v_words", "cycles")}
        f.update({"k_words_golden": int(st.k_words_read[0]),
                  "v_words_golden": int(st.v_words_read[0]), "k_words_dense": int(st.k_words_dense),
                  "v_words_dense": int(st.v_words_dense), "kept_q": st.kept_q.tolist(),
                  "kept_kv": int(st.kept_kv[0]), "n": s["n"], "reads_match": reads_match,
                  "out_match": beats == want})
        if self.axil is not None:
            f["status"] = await self.read_reg("status")
            if self.check and f["status"]:
                raise AssertionError(f"status reads {f['status']:#x} after the step's last beat "
                                     f"(bit 0: still busy; bit 1: a read answered an error)")
        if self.engine:     # the outputs as sent: signed out_bits values, (group, d)
            rtl = np.zeros((g, p.d), np.int64)
            for kind, tok, idx, payload in beats:
                if kind == 2 and tok < g and idx < p.d:
                    x = payload & ((1 << cfg.out_bits) - 1)
                    rtl[tok, idx] = x - (1 << cfg.out_bits) if x >> (cfg.out_bits - 1) else x
            f["out"] = rtl.tolist()
        if self.check and (f["k_words"], f["v_words"]) != (f["k_words_golden"],
                                                           f["v_words_golden"]):
            raise AssertionError(f"word counters {f['k_words']}/{f['v_words']} vs golden "
                                 f"{f['k_words_golden']}/{f['v_words_golden']}")
        return f


@cocotb.test()
async def test_decode_step(dut):
    spec = json.loads(os.environ["HDPGEN_DECODE"])
    tb = Bench(dut, spec)
    await tb.start()
    v_frac = int(tb.vq.frac[0])
    first = tb.settings(spec["n"], spec["eps"], K_BASE, V_BASE, v_frac)
    await tb.program(first)
    if spec.get("write_while_busy"):
        # step 1 runs while the settings of step 2 (other eps, n, v_frac, and K and V at other
        # bases) are written; step 1 must still be golden's with its own settings, step 2 with
        # the new ones, which it uses without being written again
        w = spec["write_while_busy"]
        second = tb.settings(w["n"], w["eps"], K_BASE2, V_BASE2,
                             v_frac - 1 if v_frac > 0 else v_frac + 1)
        figures = await tb.step(first, during=lambda: tb.write_while_busy(second))
        figures["second"] = await tb.step(second)
        figures["second"]["v_frac"] = second["v_frac"]
    else:
        figures = await tb.step(first)
    out_path = os.environ.get("HDPGEN_DECODE_OUT")
    if out_path:
        with open(out_path, "w") as f:
            json.dump(figures, f)
