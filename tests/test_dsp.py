"""The registered multiplier cell (hw/dsp.py): its three definitions agree, cycle for cycle.

* Amaranth's simulator against a NumPy model of the registers (random enables, extreme
  operands), for every signedness mix and with and without operand registers.
* Icarus: the Verilog Amaranth writes for the plain elaboration, the behavioural ``hdpgen_mul``
  appended to exported Verilog, and the ECP5 definition over a register-level MULT18X18D model
  (the cell's documented register options), driven together with random operands, enables and
  resets, compared on every cycle.
* Yosys + the ECP5 script: one MULT18X18D with its input and output registers, no fabric
  flip-flops; exported units name the cell and carry its definition.
"""

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import signed, unsigned
from amaranth.sim import Simulator

from hw.dsp import CELL_NAME, CELL_VERILOG, VERILOG_CELLS, RegisteredMul, ecp5_cell_verilog
from hw.export import fix_initializers, verilog_text
from hw.presets import preset
from synth import driver

ROOT = Path(__file__).resolve().parents[1]
ECP5_CELL_VERILOG = ecp5_cell_verilog(driver.ECP5_DSP_MIN_WIDTH)

# (a shape, b shape, input registers): every signedness mix, the widest single-DSP operands
CASES = [
    (signed(4), signed(18), True),
    (unsigned(10), signed(8), True),
    (unsigned(18), unsigned(18), True),
    (signed(18), signed(18), True),
    (unsigned(18), signed(18), True),
    (signed(6), unsigned(5), False),
    (signed(4), signed(4), True),     # under the ECP5 flow's DSP threshold: stays logic
]


def _extremes(shape):
    lo = -(1 << (shape.width - 1)) if shape.signed else 0
    hi = (1 << (shape.width - 1)) - 1 if shape.signed else (1 << shape.width) - 1
    return lo, hi


def _operand(rng, shape):
    lo, hi = _extremes(shape)
    pick = rng.integers(4)
    return int(lo if pick == 0 else hi if pick == 1 else rng.integers(lo, hi + 1))


@pytest.mark.parametrize("a_shape,b_shape,input_regs", CASES)
def test_amaranth_model_matches_register_semantics(a_shape, b_shape, input_regs):
    dut = RegisteredMul(a_shape, b_shape, input_regs=input_regs)
    assert dut.latency == (2 if input_regs else 1)
    assert len(dut.p) == a_shape.width + b_shape.width
    rng = np.random.default_rng(7)
    n = 600
    stim = [(_operand(rng, a_shape), _operand(rng, b_shape), int(rng.integers(2)),
             int(rng.integers(2))) for _ in range(n)]
    got = []

    async def bench(ctx):
        for a, b, ce_in, ce_out in stim:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.ce_in, ce_in)
            ctx.set(dut.ce_out, ce_out)
            await ctx.tick()
            got.append(ctx.get(dut.p))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # reference: the registers of the docstring, in Python integers
    a_r = b_r = p = 0
    want = []
    for a, b, ce_in, ce_out in stim:
        mul_a, mul_b = (a_r, b_r) if input_regs else (a, b)
        if ce_out:
            p = mul_a * mul_b
        if ce_in:
            a_r, b_r = a, b
        want.append(p)
    assert got == want
    assert len(set(want)) > 20    # the data varied (ce_out holds p half the time)


# A register-level model of the MULT18X18D options the ECP5 definition uses: operands A and B
# (SIGNEDA / SIGNEDB) with optional input registers, an optional output register, each on CLK0
# with its own CE0..CE3 and RST0 (synchronous, over the enable).  Anything else stops the run.
_PORTS_18 = ", ".join(f"{p}{i}" for p in "ABC" for i in range(18))
_PORTS_P = ", ".join(f"P{i}" for i in range(36))
_BUS_A = ", ".join(f"A{i}" for i in reversed(range(18)))
_BUS_B = ", ".join(f"B{i}" for i in reversed(range(18)))
_BUS_P = ", ".join(f"P{i}" for i in reversed(range(36)))
MULT18X18D_MODEL = f"""
module MULT18X18D #(
  parameter REG_INPUTA_CLK = "NONE", parameter REG_INPUTA_CE = "CE0",
  parameter REG_INPUTA_RST = "RST0", parameter REG_INPUTB_CLK = "NONE",
  parameter REG_INPUTB_CE = "CE0", parameter REG_INPUTB_RST = "RST0",
  parameter REG_OUTPUT_CLK = "NONE", parameter REG_OUTPUT_CE = "CE0",
  parameter REG_OUTPUT_RST = "RST0", parameter RESETMODE = "SYNC", parameter GSR = "ENABLED"
) (
  input {_PORTS_18}, input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
  input CLK0, CLK1, CLK2, CLK3, CE0, CE1, CE2, CE3, RST0, RST1, RST2, RST3,
  output {_PORTS_P}
);
  wire [17:0] a = {{{_BUS_A}}};
  wire [17:0] b = {{{_BUS_B}}};
  wire [3:0] ce = {{CE3, CE2, CE1, CE0}};
  function integer ce_index(input [8*4-1:0] name);
    ce_index = name == "CE0" ? 0 : name == "CE1" ? 1 : name == "CE2" ? 2 : 3;
  endfunction
  initial begin
    if (RESETMODE != "SYNC" || REG_INPUTA_RST != "RST0" || REG_INPUTB_RST != "RST0"
        || REG_OUTPUT_RST != "RST0" || REG_OUTPUT_CLK != "CLK0"
        || (REG_INPUTA_CLK != "NONE" && REG_INPUTA_CLK != "CLK0")
        || REG_INPUTA_CLK != REG_INPUTB_CLK) begin
      $display("MULT18X18D model: unsupported options");
      $finish;
    end
  end
  reg [17:0] a_r = 0, b_r = 0;
  reg [35:0] p_r = 0;
  wire [17:0] a_m = REG_INPUTA_CLK == "CLK0" ? a_r : a;
  wire [17:0] b_m = REG_INPUTB_CLK == "CLK0" ? b_r : b;
  wire signed [18:0] a_x = {{SIGNEDA & a_m[17], a_m}};
  wire signed [18:0] b_x = {{SIGNEDB & b_m[17], b_m}};
  wire signed [37:0] prod = a_x * b_x;
  always @(posedge CLK0) begin
    if (RST0) begin
      a_r <= 0;
      b_r <= 0;
      p_r <= 0;
    end else begin
      if (ce[ce_index(REG_INPUTA_CE)]) a_r <= a;
      if (ce[ce_index(REG_INPUTB_CE)]) b_r <= b;
      if (ce[ce_index(REG_OUTPUT_CE)]) p_r <= prod[35:0];
    end
  end
  assign {{{_BUS_P}}} = p_r;
endmodule
"""


def _bench(a_shape, b_shape, input_regs, cycles=3000):
    aw, bw = a_shape.width, b_shape.width
    pw = aw + bw
    params = (f"#(.A_WIDTH({aw}), .B_WIDTH({bw}), .P_WIDTH({pw}), .A_SIGNED({int(a_shape.signed)}), "
              f".B_SIGNED({int(b_shape.signed)}), .INPUT_REGS({int(input_regs)}))")
    ports = ".clk(clk), .rst(rst), .ce_in(ce_in), .ce_out(ce_out), .a(a), .b(b)"
    lo_a, hi_a = _extremes(a_shape)
    lo_b, hi_b = _extremes(b_shape)
    return f"""
module tb;
  reg clk = 0, rst = 1, ce_in = 0, ce_out = 0;
  reg [{aw - 1}:0] a = 0;
  reg [{bw - 1}:0] b = 0;
  wire [{pw - 1}:0] p_amaranth, p_cell, p_ecp5;
  mul_amaranth u_amaranth({ports}, .p(p_amaranth));
  hdpgen_mul {params} u_cell({ports}, .p(p_cell));
  hdpgen_mul_ecp5 {params} u_ecp5({ports}, .p(p_ecp5));
  integer i, errors = 0, pick;
  always #5 clk = ~clk;
  initial begin
    for (i = 0; i < {cycles}; i = i + 1) begin
      @(negedge clk);
      if (p_amaranth !== p_cell || p_amaranth !== p_ecp5) begin
        errors = errors + 1;
        if (errors < 5) $display("cycle %0d: amaranth %h cell %h ecp5 %h", i, p_amaranth, p_cell, p_ecp5);
      end
      rst = ($random & 63) == 0;
      ce_in = $random;
      ce_out = $random;
      pick = $random & 3;
      a = pick == 0 ? {aw}'d{lo_a & ((1 << aw) - 1)} : pick == 1 ? {aw}'d{hi_a & ((1 << aw) - 1)} : $random;
      pick = $random & 3;
      b = pick == 0 ? {bw}'d{lo_b & ((1 << bw) - 1)} : pick == 1 ? {bw}'d{hi_b & ((1 << bw) - 1)} : $random;
    end
    $display("RESULT errors=%0d", errors);
    $finish;
  end
endmodule
"""


def _run_bench(a_shape, b_shape, input_regs, folder, ecp5_cell=ECP5_CELL_VERILOG) -> str:
    for tool in ("iverilog", "vvp"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: Icarus Verilog is part of the set-up (make setup)")
    dut = RegisteredMul(a_shape, b_shape, input_regs=input_regs)
    assert dut.one_dsp
    plain = fix_initializers(verilog.convert(dut, name="mul_amaranth", emit_src=False))
    src = folder / "tb.v"
    src.write_text("\n".join([
        plain, CELL_VERILOG, ecp5_cell.replace(f"module {CELL_NAME} #(", f"module {CELL_NAME}_ecp5 #("),
        MULT18X18D_MODEL, _bench(a_shape, b_shape, input_regs)]))
    subprocess.run(["iverilog", "-g2012", "-o", str(folder / "tb.vvp"), "-s", "tb", str(src)],
                   check=True, capture_output=True, text=True)
    return subprocess.run(["vvp", "-n", str(folder / "tb.vvp")], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("a_shape,b_shape,input_regs", CASES)
def test_verilog_cell_and_ecp5_mapping_agree_with_amaranth(a_shape, b_shape, input_regs, tmp_path):
    out = _run_bench(a_shape, b_shape, input_regs, tmp_path)
    assert "RESULT errors=0" in out, out[-2000:]


def test_the_cross_check_catches_a_wrong_mapping(tmp_path):
    # the ECP5 definition with operand A always unsigned: the bench must see it
    wrong = ECP5_CELL_VERILOG.replace(".SIGNEDA(A_SIGNED ? 1'b1 : 1'b0)", ".SIGNEDA(1'b0)")
    assert wrong != ECP5_CELL_VERILOG
    out = _run_bench(signed(4), signed(18), True, tmp_path, wrong)
    assert "RESULT errors=" in out and "RESULT errors=0" not in out, out[-2000:]


def test_wide_products_stay_plain_logic():
    wide = RegisteredMul(signed(20), signed(8))
    assert not wide.one_dsp
    text = verilog.convert(wide, name="w", emit_src=False, platform=VERILOG_CELLS)
    assert CELL_NAME not in text


def test_exported_units_name_the_cell_and_carry_its_definition():
    cfg = preset("tiny")
    text, _ = verilog_text("systolic_array", cfg)
    assert text.count(f"module {CELL_NAME} ") == 1
    n_inst = sum(1 for line in text.splitlines() if line.strip().startswith(f"{CELL_NAME} #("))
    assert n_inst == 2 * cfg.array_rows * cfg.array_cols        # two products per PE
    assert driver.ecp5_cells_text(text) == ECP5_CELL_VERILOG
    assert driver.ecp5_cells_text(text, 13) == ecp5_cell_verilog(13) != ECP5_CELL_VERILOG
    head, _ = verilog_text("head_detector", cfg)
    assert CELL_NAME not in head and "MULT18X18D" not in driver.ecp5_cells_text(head)


@pytest.mark.synth
def test_ecp5_flow_maps_the_cell_to_one_registered_mult18x18d():
    out = ROOT / "build" / "pytest-synth" / f"regmul-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        out.mkdir(parents=True)
        dut = RegisteredMul(unsigned(10), signed(8))
        src = out / "regmul.v"
        src.write_text(verilog.convert(dut, name="regmul", emit_src=False,
                                       platform=VERILOG_CELLS)
                       + "\n" + CELL_VERILOG)
        res = driver.synth_verilog(src, out / "b", targets=("ecp5",), fmax=False)
        cells = res["ecp5"]["cells_by_type"]
        # every register is inside the DSP block: no fabric flip-flop, no LUT
        assert cells == {"MULT18X18D": 1}, cells
        # with a DSP threshold above its 18 bits the same cell is LUT logic and flip-flops
        high = driver.synth_verilog(src, out / "h", targets=("ecp5",), fmax=False,
                                    ecp5_dsp_min_width=19)["ecp5"]["cells_by_type"]
        assert "MULT18X18D" not in high and high.get("TRELLIS_FF", 0) >= 18 + 18, high
        import json
        netlist = json.loads((out / "b" / "ecp5_netlist.json").read_text())
        (dsp,) = [c for mod in netlist["modules"].values() for c in mod.get("cells", {}).values()
                  if c["type"] == "MULT18X18D"]
        params = dsp["parameters"]
        assert params["REG_INPUTA_CLK"] == params["REG_INPUTB_CLK"] == "CLK0"
        assert params["REG_OUTPUT_CLK"] == "CLK0" and params["REG_OUTPUT_CE"] == "CE1"
    finally:
        shutil.rmtree(out, ignore_errors=True)
