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
"""

import json
import os
import random

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge, with_timeout
from cocotbext.axi import (
    AxiRamRead,
    AxiReadBus,
    AxiStreamBus,
    AxiStreamFrame,
    AxiStreamSink,
    AxiStreamSource,
)

from golden import token_picker as tp
from hw.decode.group import out_beat_layout
from hw.decode.params import DecodeParams
from sim.decode_vectors import extreme_step, random_step, synthetic_step
from sim.streams import reset, start_clock

K_BASE, V_BASE = 0x1000, 0x40000


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


def memory_image(p: DecodeParams, kq, vq):
    """``{address: bytes}`` of the layout documented in ``DecodeGroup`` (KV head 0), and
    ``{word address: (c, j)}`` naming what each word holds (``c = n_chunks`` for V rows)."""
    cfg, wb = p.cfg, p.cfg.word_bits // 8
    kw, vw = p.k_chunk_words(), p.v_row_words()
    digits = tp.chunk_digits(kq.x, cfg)
    image, owner = {}, {}
    for c, w in enumerate(cfg.chunk_widths):
        for j in range(p.n_cache):
            a = K_BASE + (p.n_cache * sum(kw[:c]) + j * kw[c]) * wb
            image[a] = pack(digits[c, 0, j], w).to_bytes(kw[c] * wb, "little")
            owner.update({a + i * wb: (c, j) for i in range(kw[c])})
    for j in range(p.n_cache):
        a = V_BASE + j * vw * wb
        image[a] = pack(vq.x[0, j], cfg.v_bits).to_bytes(vw * wb, "little")
        owner.update({a + i * wb: (cfg.n_chunks, j) for i in range(vw)})
    return image, owner


def expected_reads(p: DecodeParams, r: tp.StepResult):
    cfg, wb = p.cfg, p.cfg.word_bits // 8
    kw, vw = p.k_chunk_words(), p.v_row_words()
    out = []
    for c in range(cfg.n_chunks):
        out += [(K_BASE + (p.n_cache * sum(kw[:c]) + int(j) * kw[c]) * wb, kw[c] - 1)
                for j in np.flatnonzero(r.read[c, 0])]
    out += [(V_BASE + int(j) * vw * wb, vw - 1) for j in np.flatnonzero(r.read[cfg.n_chunks, 0])]
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
    """No read touches a chunk the group no longer reads or the V row of a pruned token."""
    nc = r.read.shape[0] - 1
    for a, ln in ar_log:
        for b in range(a, a + (ln + 1) * wb, wb):
            if b not in owner:
                raise AssertionError(f"read outside the K and V data at {b:#x}")
            c, j = owner[b]
            if not r.read[c, 0, j]:
                what = f"K chunk {c + 1}" if c < nc else "the V row"
                raise AssertionError(f"read of {what} of token {j}, which the group had "
                                     f"dropped (address {b:#x})")


@cocotb.test()
async def test_decode_step(dut):
    spec = json.loads(os.environ["HDPGEN_DECODE"])
    cfg = tp.TokenPickerConfig(**spec["cfg"])
    p = DecodeParams(cfg, d=spec["d"], n_cache=spec["n_cache"], group=spec["group"])
    g, n, stall = p.group, spec["n"], spec["stall"]
    qq, kq, vq = case_data(spec, cfg)
    r = tp.decode_step(qq, kq, vq, n, spec["eps"], cfg)
    eps_q = tp.eps_q_of(spec["eps"], cfg)
    rng = random.Random(spec["seed"])
    wb = cfg.word_bits // 8

    clock = start_clock(dut)
    ram = AxiRamRead(AxiReadBus.from_prefix(dut, "m_axi_"), dut.clk, dut.rst, size=1 << 20)
    ram.log.setLevel("WARNING")
    ram.ar_channel.set_pause_generator(pauses(random.Random(rng.random()), stall))
    ram.r_channel.set_pause_generator(pauses(random.Random(rng.random()), stall))
    src = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_"), dut.clk, dut.rst)
    sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis_"), dut.clk, dut.rst)
    src.set_pause_generator(pauses(random.Random(rng.random()), stall))
    sink.set_pause_generator(pauses(random.Random(rng.random()), stall))
    for lg in (src.log, sink.log):
        lg.setLevel("WARNING")
    image, owner = memory_image(p, kq, vq)
    for a, b in image.items():
        ram.write(a, b)
    dut.eps_q.value = eps_q
    dut.n.value = n
    dut.k_base.value = K_BASE
    dut.v_base.value = V_BASE
    if spec.get("engine"):
        dut.v_frac.value = int(vq.frac[0])
    await reset(dut, clock)
    ar_log = []
    cocotb.start_soon(watch_ar(dut, ar_log))

    qbytes = len(dut.s_axis__tdata) // 8
    frame = b"".join(
        (pack(qq.x[h], cfg.q_bits) | int(qq.frac[h] + kq.frac[0]) << (p.d * cfg.q_bits))
        .to_bytes(qbytes, "little") for h in range(g))
    await src.send(AxiStreamFrame(frame))
    got = await with_timeout(sink.recv(), 2_000_000, "ns")
    await RisingEdge(dut.clk)

    vw = p.v_row_words()
    check = spec.get("check", True)
    if check:
        check_pruned_reads(ar_log, owner, r, wb)
    want_ar = expected_reads(p, r)
    if check and ar_log != want_ar:
        raise AssertionError(f"AR requests differ from the golden read set: {len(ar_log)} "
                             f"issued, {len(want_ar)} expected; first difference at "
                             f"{next((i for i, (a, b) in enumerate(zip(ar_log, want_ar)) if a != b), None)}")
    lay = out_beat_layout(p)
    ob = lay.size // 8
    data = bytes(got.tdata)
    beats = [lay.from_bits(int.from_bytes(data[i:i + ob], "little")) for i in range(0, len(data), ob)]
    beats = [(int(b.kind), int(b.tok), int(b.idx), int(b.payload)) for b in beats]
    want = []
    if spec.get("engine"):      # DecodeEngine: the requantized outputs of every head
        for h in range(g):
            want += [(2, h, i, int(r.out[h, i]) & 0xFFFFFFFF) for i in range(p.d)]
    else:                       # DecodeGroup: the V words read, then kept tokens and scores
        for j in np.flatnonzero(r.read[cfg.n_chunks, 0]):
            row = image[V_BASE + int(j) * vw * wb]
            want += [(1, int(j), w, int.from_bytes(row[w * wb:(w + 1) * wb], "little"))
                     for w in range(vw)]
        for h in range(g):
            want += [(0, int(j), h, int(r.scores[h, j]) & 0xFFFFFFFF)
                     for j in np.flatnonzero(r.keep[h])]
    if check and beats != want:
        bad = next(i for i, (a, b) in enumerate(zip(beats + [None] * len(want), want)) if a != b)
        raise AssertionError(f"m_axis output differs at beat {bad}: {beats[bad:bad + 2]} vs "
                             f"{want[bad:bad + 2]} ({len(beats)} beats, {len(want)} expected)")
    st = r.stats
    figures = {"k_words": int(dut.k_words.value), "v_words": int(dut.v_words.value),
               "cycles": int(dut.cycles.value), "k_words_golden": int(st.k_words_read[0]),
               "v_words_golden": int(st.v_words_read[0]), "k_words_dense": int(st.k_words_dense),
               "v_words_dense": int(st.v_words_dense), "kept_q": st.kept_q.tolist(),
               "kept_kv": int(st.kept_kv[0]), "n": n, "reads_match": ar_log == want_ar,
               "out_match": beats == want}
    if spec.get("engine"):     # the outputs as sent: signed out_bits values, (group, d)
        rtl = np.zeros((g, p.d), np.int64)
        for kind, tok, idx, payload in beats:
            if kind == 2 and tok < g and idx < p.d:
                x = payload & ((1 << cfg.out_bits) - 1)
                rtl[tok, idx] = x - (1 << cfg.out_bits) if x >> (cfg.out_bits - 1) else x
        figures["out"] = rtl.tolist()
    if check and (figures["k_words"], figures["v_words"]) != (figures["k_words_golden"],
                                                    figures["v_words_golden"]):
        raise AssertionError(f"word counters {figures['k_words']}/{figures['v_words']} vs golden "
                             f"{figures['k_words_golden']}/{figures['v_words_golden']}")
    out_path = os.environ.get("HDPGEN_DECODE_OUT")
    if out_path:
        with open(out_path, "w") as f:
            json.dump(figures, f)
