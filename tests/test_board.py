"""The board self-test harness in cocotb on Icarus and Verilator (bench:
sim/benches/bench_board.py): the UART line must be the golden report (PASS, the golden
checksum, the cycle model's count), LEDs and a button-started second run must agree; a harness
with one corrupted ROM row must report FAIL with the checksum of the corrupted head."""

import gc
import json

import pytest

from hw.board.selftest import LINE_LEN, SelfTest
from hw.board.vectors import (
    checksum,
    corrupted_vectors,
    fixture_vectors,
    random_vectors,
    report_line,
)
from hw.presets import preset
from sim.benches.bench_board import JOB_VAR, RESULT_VAR, write_job
from sim.runner import run_cocotb
from sim.top_cycles import head_cycles

BAUD_DIV = 4


def run_board(cfg, vec, simulator, build_dir, *, corrupt=None, name="board"):
    golden = vec if corrupt is None else corrupted_vectors(cfg, vec, corrupt)
    cycles = head_cycles(cfg, golden.head, golden.dense)
    line = report_line(golden.checksum == vec.checksum, cycles, golden.checksum)
    job, result = build_dir / "job.json", build_dir / "result.json"
    budget = 8 * cycles + 20 * len(vec.writes) + 4 * len(vec.rows) * cfg.head_dim + 2000 \
        + 2 * LINE_LEN * 10 * BAUD_DIV
    write_job(job, baud_div=BAUD_DIV, line=line, timeout_cycles=budget)
    harness = SelfTest(cfg, vec, baud_div=BAUD_DIV, corrupt=corrupt, heartbeat_bit=4)
    run_cocotb(unit=harness, name=name, cfg=cfg, test_module="sim.benches.bench_board",
               simulator=simulator, build_dir=build_dir,
               extra_env={JOB_VAR: job, RESULT_VAR: result})
    return line, json.loads(result.read_text())


def test_checksum_definition():
    cfg = preset("tiny")
    assert checksum(cfg, [[1, 2]]) == 4            # rotl(1) + 2
    assert checksum(cfg, [[-1]]) == 0xFFFF         # 16-bit lane pattern of -1
    assert checksum(cfg, [[1, 2]]) != checksum(cfg, [[2, 1]])
    assert report_line(True, 0x1A2B3, 0xDEADBEEF) == "PASS cycles=0001A2B3 sum=DEADBEEF\r\n"
    assert len(report_line(False, 0, 0)) == LINE_LEN


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_invalid_parameters():
    """(A harness refused in its constructor is never elaborated: Amaranth's warning about it
    is expected here, and collected inside the test so it does not land on a later one.)"""
    cfg = preset("tiny")
    vec = random_vectors(cfg, 3)
    for kw, word in (({"baud_div": 1}, "divisor"), ({"period": -1}, "period"),
                     ({"corrupt": 3 * vec.valid_len}, "corrupt"),
                     ({"heartbeat_bit": 0}, "heartbeat_bit")):
        with pytest.raises(ValueError, match=word):
            SelfTest(cfg, vec, **kw)
    with pytest.raises(ValueError, match="valid_len"):
        random_vectors(cfg, 3, valid_len=cfg.seq_len + 1)
    gc.collect()


@pytest.mark.cocotb
def test_board_tiny_pass(simulator, build_dir):
    cfg = preset("tiny")
    line, res = run_board(cfg, random_vectors(cfg, 3), simulator, build_dir)
    assert line.startswith("PASS") and res["lines"] == [line, line]


@pytest.mark.cocotb
def test_board_tiny_corrupt_fails(simulator, build_dir):
    cfg = preset("tiny")
    vec = random_vectors(cfg, 3)
    row = 2 * vec.valid_len + 1                     # a V row: changes the output
    assert corrupted_vectors(cfg, vec, row).checksum != vec.checksum
    line, res = run_board(cfg, vec, simulator, build_dir, corrupt=row)
    assert line.startswith("FAIL") and res["lines"] == [line, line]
    assert res["leds"][0] == {"pass": 0, "fail": 1, "busy": 0}


@pytest.mark.slow
@pytest.mark.cocotb
def test_board_default_minilm_head(simulator, build_dir):
    cfg = preset("default")
    line, res = run_board(cfg, fixture_vectors(cfg, "medium", 13), simulator, build_dir)
    assert line.startswith("PASS") and res["lines"] == [line, line]


@pytest.mark.cocotb
def test_cli_board_simulates_first(tmp_path):
    from hdpgen.cli import main
    out = tmp_path / "board"
    assert main(["board", "--board", "ulx3s-85f", "--preset", "tiny", "--sim", "icarus",
                 "--no-build", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    sim = rep["simulation"]
    assert sim["lines"][0] == sim["expected_line"] and sim["expected_line"].startswith("PASS")
    assert "build" not in rep and (out / "report.md").read_text().count("PASS") == 1


def test_cli_board_errors(tmp_path, monkeypatch, capsys):
    from hdpgen.cli import main
    assert main(["board", "--board", "ulx3s-85f", "--period", "-1", "--no-build",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--period" in capsys.readouterr().err
    import sys
    monkeypatch.setitem(sys.modules, "amaranth_boards", None)   # import fails: not installed
    monkeypatch.setitem(sys.modules, "amaranth_boards.ulx3s", None)
    from hw.board.ulx3s import board_platform
    with pytest.raises(ImportError, match="'board' extra"):
        board_platform("ulx3s-85f")


def test_parse_nextpnr_log():
    from hdpgen.cmd_board import parse_nextpnr_log
    log = ("Info: Device utilisation:\nInfo: \t          TRELLIS_IO:    11/   365     3%\n"
           "Info: \t          TRELLIS_FF:  1234/ 83640     1%\nInfo: \nInfo: Placed 3 cells\n"
           "Info: Max frequency for clock '$glbnet$clk': 71.30 MHz (PASS at 25.00 MHz)\n")
    rep = parse_nextpnr_log(log)
    assert rep["utilization"]["TRELLIS_FF"] == {"used": 1234, "available": 83640}
    assert rep["fmax_mhz"] == {"$glbnet$clk": 71.30}


@pytest.mark.slow
@pytest.mark.synth
@pytest.mark.cocotb
def test_cli_board_bitstream_tiny(tmp_path):
    pytest.importorskip("amaranth_boards")
    from hdpgen.cli import main
    out = tmp_path / "board"
    assert main(["board", "--board", "ulx3s-85f", "--preset", "tiny", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["build"]["bitstream_bytes"] > 0 and rep["build"]["fmax_mhz"]
    assert rep["build"]["utilization"]["TRELLIS_FF"]["used"] > 0
