"""cocotb bench of :class:`hw.head_detector.HeadDetector` (Icarus and Verilator).

Run through :func:`sim.runner.run_cocotb` (``tests/test_score_cocotb.py``).  Cases come from
:func:`sim.vectors.score.head_detector_cases` (golden :func:`golden.pruner.head_keep`), the
same generator the Amaranth-simulator tests use; the whole ``keep_out`` stream is compared.
The number of transactions checked is logged as ``TRANSACTIONS head_detector <n>``.
"""

import cocotb
from cocotb.triggers import RisingEdge

from sim.cocotb_env import load_config
from sim.streams import StreamSink, StreamSource, reset, start_clock
from sim.vectors import score as vec


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.4])
async def golden_cases(dut, stall: float):
    """tau_head at 0, 1, h_max/2, h_max-1, h_max with H at, below and above it; pruning off and
    on; seeded random H."""
    cfg = load_config()
    seed = 7
    clock = start_clock(dut)
    await reset(dut, clock)
    src = StreamSource(dut, "h_in", clock, stall=stall, seed=seed)
    sink = StreamSink(dut, "keep_out", clock, stall=stall, seed=seed + 1)
    checked = 0
    for case in vec.head_detector_cases(cfg, seed):
        dut.head_prune.value = case.head_prune
        dut.tau_head.value = case.tau_head
        sender = cocotb.start_soon(src.send_many(case.h))
        got = [int(x) for x in await sink.recv_many(len(case.h))]
        await sender
        for i, (h, e, a) in enumerate(zip(case.h, case.keep, got)):
            assert e == a, (f"config={cfg.to_dict()} seed={seed} case={case.name} index={i} "
                            f"(H={h}, tau_head={case.tau_head}, head_prune={case.head_prune}): "
                            f"expected keep={e}, got {a}")
        checked += len(got)
    for _ in range(4):
        await RisingEdge(dut.clk)
        assert not int(dut.keep_out__valid.value), "extra keep_out beat"
    dut._log.info(f"TRANSACTIONS head_detector {checked} (stall={stall})")
