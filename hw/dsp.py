"""A multiplier whose operand and product registers are those of the DSP block itself.

On the ECP5 the multipliers sit in fixed rows of MULT18X18D blocks, often 20-40 rows or columns
from the logic that feeds and reads them.  With the multiplier's registers in fabric flip-flops,
a path runs operand register -> routing -> multiplier -> routing -> product register, and that
was the whole top's critical path (about 6 ns of routing plus the multiplier).  The MULT18X18D
has its own input and output registers; with them the routing into the block, the multiply and
the routing out of it are three separate register-to-register paths.  Yosys never moves fabric
registers into a MULT18X18D, so the design names the cell itself:

* ``RegisteredMul`` elaborated by Amaranth's simulator (no platform) is plain Amaranth: the
  registers and the product written out.
* Exported Verilog (``hw.export`` elaborates with :data:`VERILOG_CELLS`) instantiates the module
  ``hdpgen_mul``, and the export appends :data:`CELL_VERILOG`, its behavioural definition with
  the same registers, so the file stays self-contained and runs in any simulator or Yosys flow.
* The ECP5 synthesis script (``synth/driver.py``) replaces ``hdpgen_mul`` with
  :func:`ecp5_cell_verilog`: a MULT18X18D with ``REG_INPUTA/B_CLK`` (when the operands are
  registered) and ``REG_OUTPUT_CLK`` on ``CLK0``, which nextpnr times as a clocked cell
  (products narrower than the flow's DSP threshold stay logic, as every other product).

Semantics, the same in all three: on a rising clock edge, reset clears both registers;
otherwise ``ce_in`` loads the operand registers from ``a`` and ``b`` and ``ce_out`` loads
``p`` with the product of the operand registers (of ``a`` and ``b`` directly when
``input_regs`` is false).  Latency: 2 cycles with input registers, 1 without.
"""

from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal, Shape, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RegisteredMul", "registered_product", "VERILOG_CELLS", "CELL_NAME", "CELL_VERILOG",
           "ecp5_cell_verilog", "DSP_OPERAND_MAX"]

#: widest operand of one MULT18X18D (signed or unsigned, per ``SIGNEDA`` / ``SIGNEDB``)
DSP_OPERAND_MAX = 18
CELL_NAME = "hdpgen_mul"


class _VerilogCells:
    """Elaboration platform of exported Verilog: multipliers become ``hdpgen_mul`` cells."""

    dsp_cells = True

    def __repr__(self) -> str:
        return "VERILOG_CELLS"


VERILOG_CELLS = _VerilogCells()


class RegisteredMul(wiring.Component):
    """``p = a * b`` through optional operand registers and a product register.

    Parameters
    ----------
    a_shape, b_shape : shape-castable
        Operand shapes, each at most 18 bits (one MULT18X18D), signed or unsigned.
    input_regs : bool
        Register the operands (enable ``ce_in``) in front of the multiplier.

    Ports: ``a``, ``b`` (in), ``ce_in`` and ``ce_out`` (in, 1 when left undriven), ``p`` (out,
    ``a_shape`` x ``b_shape``'s product shape as Amaranth's ``*`` gives it).
    """

    def __init__(self, a_shape, b_shape, *, input_regs: bool = True):
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        self._a_shape, self._b_shape = a_shape, b_shape
        self._input_regs = bool(input_regs)
        p_shape = (Signal(a_shape) * Signal(b_shape)).shape()
        super().__init__({"a": In(a_shape), "b": In(b_shape), "ce_in": In(1, init=1),
                          "ce_out": In(1, init=1), "p": Out(p_shape)})

    @property
    def one_dsp(self) -> bool:
        """Whether the product fits one MULT18X18D (operands of at most 18 bits): only then
        does exported Verilog name the cell; a wider product stays plain logic with the same
        registers, which Yosys splits over several DSPs."""
        return max(self._a_shape.width, self._b_shape.width) <= DSP_OPERAND_MAX

    @property
    def latency(self) -> int:
        """Cycles from the operands to ``p`` with both enables high."""
        return 2 if self._input_regs else 1

    def elaborate(self, platform):
        m = Module()
        if getattr(platform, "dsp_cells", False) and self.one_dsp:
            a_s, b_s = self._a_shape, self._b_shape
            m.submodules.cell = Instance(
                CELL_NAME,
                p_A_WIDTH=a_s.width, p_B_WIDTH=b_s.width, p_P_WIDTH=len(self.p),
                p_A_SIGNED=int(a_s.signed), p_B_SIGNED=int(b_s.signed),
                p_INPUT_REGS=int(self._input_regs),
                i_clk=ClockSignal(), i_rst=ResetSignal(), i_ce_in=self.ce_in,
                i_ce_out=self.ce_out, i_a=self.a, i_b=self.b, o_p=self.p)
            return m
        if self._input_regs:
            a_r, b_r = Signal(self._a_shape), Signal(self._b_shape)
            with m.If(self.ce_in):
                m.d.sync += [a_r.eq(self.a), b_r.eq(self.b)]
        else:
            a_r, b_r = self.a, self.b
        with m.If(self.ce_out):
            m.d.sync += self.p.eq(a_r * b_r)
        return m


def registered_product(m, name, a, b, *, a_shape=None, b_shape=None, into=None,
                       input_regs=True, ce_in=None, ce_out=None):
    """Add a :class:`RegisteredMul` named ``name`` to ``m`` on ``a`` and ``b`` and return its
    product: ``p`` itself, or the signal ``into``, which takes it (truncated or extended as an
    assignment would).  ``a_shape`` / ``b_shape`` default to the operands' own shapes;
    ``ce_in`` / ``ce_out`` default to always enabled."""
    a_shape = Value.cast(a).shape() if a_shape is None else a_shape
    b_shape = Value.cast(b).shape() if b_shape is None else b_shape
    mul = RegisteredMul(a_shape, b_shape, input_regs=input_regs)
    m.submodules[name] = mul
    m.d.comb += [mul.a.eq(a), mul.b.eq(b)]
    for port, enable in ((mul.ce_in, ce_in), (mul.ce_out, ce_out)):
        if enable is not None:
            m.d.comb += port.eq(enable)
    if into is None:
        return mul.p
    m.d.comb += into.eq(mul.p)
    return into


# The cell's module header, ``p`` declared as ``{kind}`` (reg or wire).
_HEADER = """\
module hdpgen_mul #(
  parameter A_WIDTH = 18, parameter B_WIDTH = 18, parameter P_WIDTH = 36,
  parameter A_SIGNED = 0, parameter B_SIGNED = 0, parameter INPUT_REGS = 1
) (
  input wire clk, input wire rst, input wire ce_in, input wire ce_out,
  input wire [A_WIDTH-1:0] a, input wire [B_WIDTH-1:0] b,
  output {kind} [P_WIDTH-1:0] p
);
"""
# The behavioural definition appended to exported Verilog that instantiates the cell.  Each
# operand is extended by one bit (its sign, or 0) and multiplied as signed, which gives the
# product of any mix of signed and unsigned operands; p keeps its low P_WIDTH bits.
CELL_VERILOG = """\
// hdpgen_mul: a registered multiplier (hw/dsp.py).  On a rising edge, rst clears both
// register stages; otherwise ce_in loads the operand registers (when INPUT_REGS) and ce_out
// loads p with the product of the operand registers (of a and b without INPUT_REGS).
// hdpgen's ECP5 flow maps it to a MULT18X18D with the same registers.
""" + _HEADER.format(kind="reg") + """\
  reg [A_WIDTH-1:0] a_r;
  reg [B_WIDTH-1:0] b_r;
  initial begin
    a_r = {A_WIDTH{1'b0}};
    b_r = {B_WIDTH{1'b0}};
    p = {P_WIDTH{1'b0}};
  end
  always @(posedge clk)
    if (rst) begin
      a_r <= {A_WIDTH{1'b0}};
      b_r <= {B_WIDTH{1'b0}};
    end else if (ce_in) begin
      a_r <= a;
      b_r <= b;
    end
  wire [A_WIDTH-1:0] a_m = INPUT_REGS ? a_r : a;
  wire [B_WIDTH-1:0] b_m = INPUT_REGS ? b_r : b;
  wire signed [A_WIDTH:0] a_x = {A_SIGNED ? a_m[A_WIDTH-1] : 1'b0, a_m};
  wire signed [B_WIDTH:0] b_x = {B_SIGNED ? b_m[B_WIDTH-1] : 1'b0, b_m};
  wire signed [A_WIDTH+B_WIDTH+1:0] prod = a_x * b_x;
  always @(posedge clk)
    if (rst)
      p <= {P_WIDTH{1'b0}};
    else if (ce_out)
      p <= prod[P_WIDTH-1:0];
endmodule
"""

_BITS18 = ", ".join(f".{{p}}{i}({{w}}[{i}])" for i in range(18))
_BITS36 = ", ".join(f".P{i}(prod[{i}])" for i in range(36))

def ecp5_cell_verilog(dsp_min_width: int) -> str:
    """The ECP5 definition of ``hdpgen_mul``, which the ECP5 synthesis script reads over
    :data:`CELL_VERILOG`: one MULT18X18D, operands extended to 18 bits, CLK0 / RST0 for every
    register, CE0 for the operand registers and CE1 for the output register, synchronous
    reset.  A cell whose operand widths sum to less than ``dsp_min_width`` keeps the
    behavioural definition (``hdpgen_mul_soft``), so the flow's rule for narrow products
    (LUT logic, ``synth.driver``'s ``ecp5_dsp_min_width``) holds for the cell too."""
    soft = CELL_VERILOG.replace(f"module {CELL_NAME} #(", f"module {CELL_NAME}_soft #(")
    return soft + _ECP5_CELL.replace("@DSP_MIN_WIDTH@", str(int(dsp_min_width)))


_ECP5_CELL = _HEADER.format(kind="wire") + f"""\
  localparam DSP_MIN_WIDTH = @DSP_MIN_WIDTH@;
  generate if (A_WIDTH + B_WIDTH < DSP_MIN_WIDTH) begin : g_soft
  hdpgen_mul_soft #(
    .A_WIDTH(A_WIDTH), .B_WIDTH(B_WIDTH), .P_WIDTH(P_WIDTH), .A_SIGNED(A_SIGNED),
    .B_SIGNED(B_SIGNED), .INPUT_REGS(INPUT_REGS)
  ) u_soft (.clk(clk), .rst(rst), .ce_in(ce_in), .ce_out(ce_out), .a(a), .b(b), .p(p));
  end else begin : g_dsp
  wire signed [A_WIDTH:0] a_e = {{A_SIGNED ? a[A_WIDTH-1] : 1'b0, a}};
  wire signed [B_WIDTH:0] b_e = {{B_SIGNED ? b[B_WIDTH-1] : 1'b0, b}};
  wire [17:0] a_x = a_e;
  wire [17:0] b_x = b_e;
  wire [17:0] c_x = 18'd0;
  wire [35:0] prod;
  MULT18X18D #(
    .REG_INPUTA_CLK(INPUT_REGS ? "CLK0" : "NONE"), .REG_INPUTA_CE("CE0"), .REG_INPUTA_RST("RST0"),
    .REG_INPUTB_CLK(INPUT_REGS ? "CLK0" : "NONE"), .REG_INPUTB_CE("CE0"), .REG_INPUTB_RST("RST0"),
    .REG_OUTPUT_CLK("CLK0"), .REG_OUTPUT_CE("CE1"), .REG_OUTPUT_RST("RST0"),
    .RESETMODE("SYNC"), .GSR("DISABLED")
  ) dsp (
    {_BITS18.format(p="A", w="a_x")},
    {_BITS18.format(p="B", w="b_x")},
    {_BITS18.format(p="C", w="c_x")},
    .SIGNEDA(A_SIGNED ? 1'b1 : 1'b0), .SIGNEDB(B_SIGNED ? 1'b1 : 1'b0),
    .SOURCEA(1'b0), .SOURCEB(1'b0),
    .CLK0(clk), .CLK1(1'b0), .CLK2(1'b0), .CLK3(1'b0),
    .CE0(ce_in), .CE1(ce_out), .CE2(1'b0), .CE3(1'b0),
    .RST0(rst), .RST1(1'b0), .RST2(1'b0), .RST3(1'b0),
    {_BITS36}
  );
  assign p = prod[P_WIDTH-1:0];
  end endgenerate
endmodule
"""
