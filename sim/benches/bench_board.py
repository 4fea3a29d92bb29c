"""cocotb bench of the board self-test harness (:class:`hw.board.selftest.SelfTest`).

The harness runs on its own after reset; the bench only clocks it, decodes its UART line
(8N1, sampled in the middle of every bit at the baud divisor), checks the LEDs, presses the
button and decodes the second run's line.  The job (``HDPGEN_BOARD_JOB``, JSON written by
:func:`write_job`) gives ``baud_div``, the expected ``line`` (the golden report:
:func:`hw.board.vectors.report_line`) and a cycle budget; the decoded lines are written to
``HDPGEN_BOARD_RESULT`` (JSON: ``lines``, ``leds``) for the test to compare across simulators.
"""

import json
from pathlib import Path

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, with_timeout

from sim.cocotb_env import env_str
from sim.streams import reset, start_clock

__all__ = ["JOB_VAR", "RESULT_VAR", "write_job", "uart_line"]

JOB_VAR = "HDPGEN_BOARD_JOB"
RESULT_VAR = "HDPGEN_BOARD_RESULT"
CLOCK_NS = 10


def write_job(path: Path, *, baud_div: int, line: str, timeout_cycles: int) -> None:
    Path(path).write_text(json.dumps({"baud_div": baud_div, "line": line,
                                      "timeout_cycles": timeout_cycles}))


async def uart_byte(dut, baud_div: int) -> int:
    """One 8N1 frame on ``uart_tx``: waits for the start bit's falling edge, samples every bit
    in its middle, checks the start and stop bits."""
    while int(dut.uart_tx.value) == 1:
        await RisingEdge(dut.clk)
    await ClockCycles(dut.clk, baud_div // 2)
    assert int(dut.uart_tx.value) == 0, "UART start bit not low in its middle (glitch)"
    byte = 0
    for i in range(8):
        await ClockCycles(dut.clk, baud_div)
        byte |= int(dut.uart_tx.value) << i
    await ClockCycles(dut.clk, baud_div)
    assert int(dut.uart_tx.value) == 1, f"UART stop bit low after byte {byte:#04x} (framing)"
    return byte


async def uart_line(dut, baud_div: int, max_len: int = 80) -> str:
    """Bytes up to and including ``\\n``."""
    chars = []
    while not chars or chars[-1] != "\n":
        chars.append(chr(await uart_byte(dut, baud_div)))
        assert len(chars) <= max_len, f"no line end in {max_len} bytes: {''.join(chars)!r}"
    return "".join(chars)


def leds(dut) -> dict:
    return {k: int(getattr(dut, f"led_{k}").value) for k in ("pass", "fail", "busy")}


@cocotb.test()
async def test_selftest(dut):
    job = json.loads(Path(env_str(JOB_VAR)).read_text())
    div, want, budget = job["baud_div"], job["line"], job["timeout_cycles"]
    clock = start_clock(dut, CLOCK_NS)
    dut.button.value = 0
    await reset(dut, clock)
    lines, led_states = [], []
    for run in range(2):
        line = await with_timeout(uart_line(dut, div), budget * CLOCK_NS, "ns")
        dut._log.info("run %d: UART %r", run, line)
        await ClockCycles(dut.clk, div + 4)   # stop bit over, the FSM in DONE
        led_states.append(leds(dut))
        lines.append(line)
        passed = line.startswith("PASS")
        assert led_states[-1] == {"pass": int(passed), "fail": int(not passed), "busy": 0}, (
            f"LEDs {led_states[-1]} after line {line!r}")
        if run == 0:   # press the button: a second run must report the same line
            await FallingEdge(dut.clk)
            dut.button.value = 1
            await ClockCycles(dut.clk, 6)   # synchroniser, edge detect, START
            assert int(dut.led_busy.value) == 1, "button press did not start a run"
            dut.button.value = 0
    Path(env_str(RESULT_VAR)).write_text(json.dumps({"lines": lines, "leds": led_states}))
    assert lines[0] == want, f"UART line {lines[0]!r}, golden {want!r}"
    assert lines[1] == lines[0], f"second run {lines[1]!r} differs from the first {lines[0]!r}"
