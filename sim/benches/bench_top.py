"""cocotb bench of :class:`hw.top.Top`: whole heads through AXI4-Stream, registers through
AXI4-Lite, with cocotbext-axi's ``AxiStreamSource``/``AxiStreamSink``/``AxiLiteMaster``.

The work comes from a *job file* (``HDPGEN_TOP_JOB``, written by :func:`write_job`): quantized
``k_q``, ``q_q``, ``v_q`` of shape (H, N, d), ``valid_len`` (H,), per-head run-time settings
(configuration fields, JSON; ``regs``: raw register values written over the fields', for a code
the configuration cannot express), a stall probability, whether to reset in the middle of the first
head, and whether to check against the golden model here.  Results go to ``HDPGEN_TOP_RESULT``
(:func:`read_result`): ``out_int`` (H, N, d; rows >= valid_len are 0, as golden gives),
``head_keep``, ``block_keep`` (read back through the ``mask_sel``/``mask_data`` registers),
``cycles``, ``array_cycles``, ``kept_keys``, ``head_imp``.  ``HDPGEN_TOP_PROGRESS`` (optional)
is rewritten with ``done/total`` after every head (``hdpgen simulate`` shows it).

With ``check`` on, every head's output is compared whole with
:func:`golden.model.attention_head_int` under the head's settings and the first difference
fails the test, naming configuration, seed, head, settings, row, column, expected and actual.
"""

import json
import os
import random
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, with_timeout
from cocotbext.axi import (
    AxiLiteBus,
    AxiLiteMaster,
    AxiStreamBus,
    AxiStreamFrame,
    AxiStreamSink,
    AxiStreamSource,
)

from golden.model import attention_head_int
from hw.config import HDPConfig
from hw.top import in_row_layout, register_map, register_values, unpack_output_row
from sim.cocotb_env import env_str, load_config
from sim.streams import read_reg, reset, start_clock, write_reg

__all__ = ["JOB_VAR", "RESULT_VAR", "PROGRESS_VAR", "write_job", "read_result", "head_cycle_bound",
           "TB"]

JOB_VAR = "HDPGEN_TOP_JOB"
RESULT_VAR = "HDPGEN_TOP_RESULT"
PROGRESS_VAR = "HDPGEN_TOP_PROGRESS"


def write_job(path: Path, k_q, q_q, v_q, valid_len, settings: list[dict] | None = None, *,
              stall: float = 0.0, seed: int = 1, reset_mid: bool = False,
              check: bool = True) -> None:
    """Write a job file for :func:`test_job` (pure NumPy; used by tests and the CLI)."""
    k_q, q_q, v_q = (np.asarray(a, np.int64) for a in (k_q, q_q, v_q))
    h = k_q.shape[0]
    vl = np.broadcast_to(np.asarray(valid_len, np.int64), (h,)).copy()
    settings = [{}] * h if settings is None else list(settings)
    if len(settings) != h:
        raise ValueError(f"settings must have one entry per head ({h}), not {len(settings)}")
    np.savez(path, k_q=k_q, q_q=q_q, v_q=v_q, valid_len=vl,
             settings=np.array(json.dumps(settings)), stall=np.array(float(stall)),
             seed=np.array(int(seed)), reset_mid=np.array(bool(reset_mid)),
             check=np.array(bool(check)))


def read_result(path: Path) -> dict:
    with np.load(path) as z:
        return {name: z[name] for name in z.files}


def head_cycle_bound(cfg: HDPConfig, valid_len: int) -> int:
    """A generous bound on one head's cycles (for the timeout): every key of every row group
    through the array, the softmax and P x V, several times over."""
    n = valid_len
    groups = -(-n // cfg.array_rows)
    per_group = (-(-n // cfg.array_cols) * (cfg.head_dim + cfg.array_cols + 4 * cfg.array_rows)
                 + cfg.array_rows * (n + cfg.recip_width + 40)
                 + -(-cfg.head_dim // cfg.array_cols) * (n + 4 * cfg.array_rows + 10) + 200)
    # the LeOPArd front end: up to qk_bits cycles per entry on a single lane
    serial = n * n * cfg.qk_bits if cfg.front_end == "leopard" else 0
    return 4 * (3 * n + n * n + serial + groups * per_group) + 2000


class TB:
    """Clock, reset, AXI4-Lite master, AXI4-Stream source and sink on one top."""

    def __init__(self, dut, cfg: HDPConfig, stall: float, seed: int):
        self.dut = dut
        self.cfg = cfg
        self.stall = stall
        self.seed = seed
        self.clock = start_clock(dut)
        self.regs = {r.name: r for r in register_map(cfg)}
        self.in_bytes = len(dut.s_axis__tdata) // 8
        self.out_bytes = len(dut.m_axis__tdata) // 8
        # every input defined before the reset ends (an X valid would poison the FSM)
        for name in ("s_axis__tvalid", "s_axis__tdata", "s_axis__tlast", "m_axis__tready",
                     "s_axil__awvalid", "s_axil__wvalid", "s_axil__bready", "s_axil__arvalid",
                     "s_axil__rready"):
            getattr(dut, name).value = 0

    async def start(self) -> "TB":
        """Reset, then attach cocotbext-axi's drivers.  They are created after the reset because
        cocotbext-axi 0.1.28 samples ``tvalid`` from the first instant and cocotb 2 refuses to
        turn the simulator's initial X into a bool."""
        await reset(self.dut, self.clock)
        dut, stall, seed = self.dut, self.stall, self.seed
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)
        self.src = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_"), dut.clk, dut.rst)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis_"), dut.clk, dut.rst)
        if stall > 0:
            self.src.set_pause_generator(self._pauses(random.Random(seed), stall))
            self.sink.set_pause_generator(self._pauses(random.Random(seed + 1), stall))
        return self

    @staticmethod
    def _pauses(rng: random.Random, p: float):
        while True:
            yield rng.random() < p

    async def reset(self) -> None:
        await reset(self.dut, self.clock)

    async def write_reg(self, name: str, value: int) -> None:
        await write_reg(self.axil, self.regs[name], value)

    async def read_reg(self, name: str) -> int:
        return await read_reg(self.axil, self.regs[name])

    def frame(self, k_q, q_q, v_q, n: int) -> AxiStreamFrame:
        lay = in_row_layout(self.cfg)
        data = bytearray()
        for mat in (k_q, q_q, v_q):
            for i in range(n):
                bits = lay.const([int(x) for x in mat[i]]).as_bits()
                data += bits.to_bytes(self.in_bytes, "little")
        return AxiStreamFrame(bytes(data))

    async def run_head(self, run_cfg: HDPConfig, k_q, q_q, v_q, n: int, no_et: int = 0,
                       regs: dict | None = None) -> dict:
        """One head: registers (``regs``: raw values written over the settings'), input frame,
        output frame, then status and statistics."""
        values = register_values(run_cfg, n) | (regs or {})
        if run_cfg.front_end == "leopard":
            values["no_et"] = int(no_et)
        for name, val in values.items():
            await self.write_reg(name, val)
        await self.src.send(self.frame(k_q, q_q, v_q, n))
        frame = await with_timeout(self.sink.recv(), head_cycle_bound(self.cfg, n) * 10, "ns")
        data = bytes(frame.tdata)
        if len(data) != n * self.out_bytes:
            raise AssertionError(f"output frame has {len(data) // self.out_bytes} rows "
                                 f"(tlast misplaced?), expected {n}")
        rows = [unpack_output_row(self.cfg, int.from_bytes(data[i * self.out_bytes:(i + 1)
                                                               * self.out_bytes], "little"))
                for i in range(n)]
        for _ in range(1000):
            status = await self.read_reg("status")
            if status & 2:
                break
        else:
            raise AssertionError(f"status never showed done (status={status:#x})")
        out = {"rows": rows, "head_keep": bool(status >> 2 & 1), "masks": [],
               "cycles": await self.read_reg("cycles"),
               "array_cycles": await self.read_reg("array_cycles"),
               "kept_keys": await self.read_reg("kept_keys")}
        if self.cfg.front_end == "leopard":
            out["head_imp"] = 0
            for name in LEOPARD_STATS:
                out[name] = await self.read_reg(name)
            return out
        out["head_imp"] = await self.read_reg("head_imp")
        for r in range(-(-n // self.cfg.block_rows)):
            await self.write_reg("mask_sel", r)
            out["masks"].append(await self.read_reg("mask_data"))
        return out


#: Statistics registers of the LeOPArd front end, read after every head.
LEOPARD_STATS = ("kept_entries", "bits_read", "fe_cycles")


def _check_leopard(res, h: int, settings: dict, r: dict) -> None:
    """The engine's kept entries and bits read against the golden front end's."""
    bits = res.stats["bits_dense"] if settings.get("no_et") else res.stats["bits_processed"]
    got = (r["kept_entries"], r["bits_read"])
    if got != (res.stats["kept_entries"], bits):
        raise AssertionError(f"head {h} settings={settings}: kept entries / bits read {got}, "
                             f"expected {(res.stats['kept_entries'], bits)}")


def _check_hdp(res, h: int, settings: dict, run_cfg: HDPConfig, r: dict, block_keep) -> None:
    """The head decision, H and the block keep masks against golden's."""
    # a dense head (no pruning, no head pruning) runs no integer pass: H reads 0
    dense = run_cfg.prune_mode == "off" and not run_cfg.head_prune
    want_h = 0 if dense else res.head_importance
    if r["head_keep"] != res.head_keep or r["head_imp"] != want_h:
        raise AssertionError(f"head {h}: head_keep/H {r['head_keep']}/{r['head_imp']}, "
                             f"expected {res.head_keep}/{want_h}")
    if not np.array_equal(block_keep, res.block_keep):
        raise AssertionError(f"head {h} settings={settings}: block keep mask "
                             f"{block_keep.astype(int).tolist()}, expected "
                             f"{res.block_keep.astype(int).tolist()}")


def _check(cfg, run_cfg, seed, h, settings, q, k, v, n, got) -> None:
    res = attention_head_int(q, k, v, run_cfg, n)
    exp = res.out_int
    where = (f"config={cfg!r} seed={seed} head={h} settings={settings} valid_len={n}")
    if not np.array_equal(exp, got):
        i, j = (int(x) for x in np.argwhere(exp != got)[0])
        raise AssertionError(f"top mismatch: {where} row={i} col={j}: expected {exp[i, j]}, "
                             f"actual {got[i, j]}")


@cocotb.test()
async def test_job(dut):
    """Every head of the job file, checked against golden when the job says so."""
    cfg = load_config()
    job_path = Path(env_str(JOB_VAR))
    with np.load(job_path) as z:
        job = {name: z[name] for name in z.files}
    settings = json.loads(str(job["settings"]))
    stall, seed = float(job["stall"]), int(job["seed"])
    k_all, q_all, v_all, vl = job["k_q"], job["q_q"], job["v_q"], job["valid_len"]
    heads, n_tok, d = k_all.shape
    progress = os.environ.get(PROGRESS_VAR)
    tb = await TB(dut, cfg, stall, seed).start()
    if bool(job["reset_mid"]):
        # two thirds of the first head, then a reset in the middle of its load
        n = int(vl[0])
        full = tb.frame(k_all[0], q_all[0], v_all[0], n)
        part = (3 * n * 2 // 3 + 1) * tb.in_bytes
        await tb.src.send(AxiStreamFrame(bytes(full.tdata)[:part]))
        await tb.src.wait()
        await ClockCycles(dut.clk, 5)
        await tb.reset()
        if await tb.read_reg("status") != 0:
            raise AssertionError("status is not 0 after a reset")
    out = np.zeros((heads, n_tok, d), np.int64)
    nbc_n = -(-n_tok // cfg.block_cols)
    nbr_n = -(-n_tok // cfg.block_rows)
    block_keep = np.zeros((heads, nbr_n, nbc_n), bool)
    keys = ("cycles", "array_cycles", "kept_keys", "head_imp")
    if cfg.front_end == "leopard":
        keys += LEOPARD_STATS
    stats = {key: np.zeros(heads, np.int64) for key in keys}
    head_keep = np.zeros(heads, bool)
    for h in range(heads):
        head_settings = dict(settings[h])
        no_et = head_settings.pop("no_et", 0)
        regs = head_settings.pop("regs", None)
        run_cfg = cfg.replace(**head_settings)
        n = int(vl[h])
        r = await tb.run_head(run_cfg, k_all[h], q_all[h], v_all[h], n, no_et, regs)
        out[h, :n] = np.array(r["rows"], np.int64)
        head_keep[h] = r["head_keep"]
        for br, mask in enumerate(r["masks"]):
            for c in range(nbc_n):
                block_keep[h, br, c] = bool(mask >> c & 1) and r["head_keep"]
        for key in stats:
            stats[key][h] = r[key]
        if bool(job["check"]):
            _check(cfg, run_cfg, seed, h, settings[h], q_all[h], k_all[h], v_all[h], n, out[h])
            res = attention_head_int(q_all[h], k_all[h], v_all[h], run_cfg, n)
            if cfg.front_end == "leopard":
                _check_leopard(res, h, settings[h], r)
            else:
                _check_hdp(res, h, settings[h], run_cfg, r, block_keep[h])
        dut._log.info("head %d/%d: %d cycles, array %d, kept keys %d, head kept %d",
                      h + 1, heads, r["cycles"], r["array_cycles"], r["kept_keys"],
                      r["head_keep"])
        if progress:
            Path(progress).write_text(f"{h + 1}/{heads}\n")
    result = os.environ.get(RESULT_VAR)
    if result:
        np.savez(result, out_int=out, head_keep=head_keep, block_keep=block_keep, **stats)
