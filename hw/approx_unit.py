"""Approximation unit: the final score of every kept entry, reusing the integer score ``A``.

Golden twin: :func:`golden.score.cross_terms`, :func:`golden.score.ff_terms` and
:func:`golden.approx.approx_scores` (``S = 2**(2F) A + 2**F X (+ C)``).
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import HDPConfig

__all__ = ["ApproxUnit", "approx_in_layout", "approx_out_layout", "default_tag_width",
           "TREE_LEVELS_PER_STAGE"]

#: Adder-tree levels between two pipeline registers (the tree over ``head_dim`` products).
TREE_LEVELS_PER_STAGE = 2


def default_tag_width(cfg: HDPConfig) -> int:
    """Tag width used when none is given: room for a query index, a key index and two flags
    (e.g. ``keep`` and ``last``), which is what the top passes through to the softmax."""
    idx = max(1, (cfg.seq_len - 1).bit_length())
    return 2 * idx + 2


def approx_in_layout(cfg: HDPConfig, tag_width: int | None = None) -> data.StructLayout:
    """Payload of :attr:`ApproxUnit.in_`: ``q``, ``k`` rows (quantized ``q_q``/``k_q`` words),
    the reused integer score ``a`` and a pass-through ``tag``."""
    tw = default_tag_width(cfg) if tag_width is None else tag_width
    row = data.ArrayLayout(signed(cfg.qk_bits), cfg.head_dim)
    return data.StructLayout({"q": row, "k": row, "a": signed(cfg.a_width), "tag": unsigned(tw)})


def approx_out_layout(cfg: HDPConfig, tag_width: int | None = None) -> data.StructLayout:
    """Payload of :attr:`ApproxUnit.out`: the score ``s`` (``2F`` fraction bits) and the tag."""
    tw = default_tag_width(cfg) if tag_width is None else tag_width
    return data.StructLayout({"s": signed(cfg.score_width), "tag": unsigned(tw)})


def _split(cfg: HDPConfig, x):
    """``(x_I, x_F)`` of a signed ``qk_bits`` word (golden.intmath.split_int_frac)."""
    f = cfg.qk_frac
    if f == 0:
        return x, Const(0, 1)
    return x[f:].as_signed(), x[:f]


def _tree(values, levels_per_stage, name, valid_stages):
    """Reduce ``values`` by a balanced adder tree; returns (sum, number of register stages)."""
    level = 0
    stages = 0
    while len(values) > 1:
        nxt = [values[i] + values[i + 1] for i in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
        level += 1
        if level % levels_per_stage == 0 and len(values) > 1:
            regs = []
            for n, v in enumerate(values):
                r = Signal(v.shape(), name=f"{name}_l{level}_{n}")
                valid_stages.append((r, v))
                regs.append(r)
            values = regs
            stages += 1
    return values[0], stages


class ApproxUnit(wiring.Component):
    """Final scores of kept entries: ``S = 2**(2F) A + 2**F X`` or ``... + C`` (``exact``).

    Golden twin: :func:`golden.approx.approx_scores` applied to
    :func:`golden.score.cross_terms` and :func:`golden.score.ff_terms`.

    Per input beat (one kept entry) the unit splits every ``q_q``/``k_q`` word into its integer
    and fraction parts (``x_I = x_q >> F`` arithmetic, ``x_F = x_q - (x_I << F)``, i.e. the low
    ``F`` bits), forms ``X = sum_d (q_I k_F + q_F k_I)`` and ``C = sum_d q_F k_F`` with
    ``head_dim`` narrow multipliers each, and outputs
    ``S = (A << 2F) + (X << F) + (C if exact else 0)`` reusing the ``A`` of the integer pass.
    Everything is exact integer arithmetic at widths derived from the configuration
    (``x_width``, ``c_width``, ``score_width``): no rounding, no saturation, no ties.

    Parameters
    ----------
    cfg : HDPConfig
        The accelerator configuration (``head_dim``, ``qk_bits``, ``qk_frac``, widths).
    tag_width : int, keyword-only
        Width of the pass-through tag (default :func:`default_tag_width`).

    Ports
    -----
    in_ : In(stream.Signature(approx_in_layout(cfg, tag_width)))
    out : Out(stream.Signature(approx_out_layout(cfg, tag_width)))
    exact : In(1)
        Run-time approximation mode: index in ``hw.config.APPROX_MODES`` (0 ``drop_ff``,
        1 ``exact``).  Read in the last pipeline stage; hold it stable during a head.

    Timing
    ------
    Fully pipelined, one entry per cycle when ``out.ready`` stays high.  Latency
    :attr:`latency` cycles from an accepted input beat to its output beat being valid:
    1 (split and products) + ``ceil(ceil_log2(head_dim) / 2) - 1`` (adder-tree registers, two
    levels per stage) + 1 (``X``, ``C`` register; absent when ``head_dim`` = 1) + 1
    (recombination, the output register): 5 at ``head_dim`` = 32, 3 at 4, 4 at 5.
    Backpressure stalls the whole pipeline (global enable ``~out.valid | out.ready``), so no
    beat is ever lost or duplicated; ``in_.ready`` depends combinationally on ``out.ready``.
    """

    def __init__(self, cfg: HDPConfig, *, tag_width: int | None = None):
        if not isinstance(cfg, HDPConfig):
            raise TypeError(f"cfg must be an HDPConfig, not {cfg!r}")
        if tag_width is None:
            tag_width = default_tag_width(cfg)
        if isinstance(tag_width, bool) or not isinstance(tag_width, int) or tag_width < 1:
            raise ValueError(f"tag_width must be a positive integer, not {tag_width!r}")
        self._cfg = cfg
        self._tag_width = tag_width
        self._x_width = cfg.x_width
        super().__init__({
            "in_": In(stream.Signature(approx_in_layout(cfg, tag_width))),
            "out": Out(stream.Signature(approx_out_layout(cfg, tag_width))),
            "exact": In(1),
        })

    @property
    def cfg(self) -> HDPConfig:
        return self._cfg

    @property
    def tag_width(self) -> int:
        return self._tag_width

    @property
    def latency(self) -> int:
        """Cycles from an accepted input beat to the same entry's valid output beat."""
        levels = max(0, (self._cfg.head_dim - 1).bit_length())
        # products, [tree registers every TREE_LEVELS_PER_STAGE levels], X/C register, output
        tree_regs = max(0, -(-levels // TREE_LEVELS_PER_STAGE) - 1)
        return 2 + tree_regs + (1 if levels else 0)

    def elaborate(self, platform):
        cfg = self._cfg
        f = cfg.qk_frac
        d = cfg.head_dim
        m = Module()

        enable = Signal()
        m.d.comb += [enable.eq(~self.out.valid | self.out.ready), self.in_.ready.eq(enable)]

        pipe = []  # (register, next value) pairs, all loaded on `enable`

        # stage 1: split and narrow products
        pay = self.in_.payload
        xs, cs = [], []
        for i in range(d):
            q_i, q_f = _split(cfg, pay.q[i])
            k_i, k_f = _split(cfg, pay.k[i])
            x_e, c_e = q_i * k_f + q_f * k_i, q_f * k_f
            x_i = Signal(x_e.shape(), name=f"xprod_{i}")
            c_i = Signal(c_e.shape(), name=f"cprod_{i}")
            pipe += [(x_i, x_e), (c_i, c_e)]
            xs.append(x_i)
            cs.append(c_i)
        a1 = Signal(signed(cfg.a_width), name="a_s1")
        tag1 = Signal(self._tag_width, name="tag_s1")
        pipe += [(a1, pay.a), (tag1, pay.tag)]

        tree_pipe = []
        x_sum, nx = _tree(xs, TREE_LEVELS_PER_STAGE, "xsum", tree_pipe)
        c_sum, nc = _tree(cs, TREE_LEVELS_PER_STAGE, "csum", tree_pipe)
        assert nx == nc
        pipe += tree_pipe
        a_prev, tag_prev = a1, tag1
        for s in range(nx):
            a_n = Signal(signed(cfg.a_width), name=f"a_t{s}")
            t_n = Signal(self._tag_width, name=f"tag_t{s}")
            pipe += [(a_n, a_prev), (t_n, tag_prev)]
            a_prev, tag_prev = a_n, t_n

        # last tree level + register of X, C
        x_r = Signal(signed(self._x_width), name="x")
        c_r = Signal(unsigned(cfg.c_width), name="c")
        a_r = Signal(signed(cfg.a_width), name="a_s3")
        tag_r = Signal(self._tag_width, name="tag_s3")
        levels = max(0, (d - 1).bit_length())
        if levels:
            pipe += [(x_r, x_sum), (c_r, c_sum), (a_r, a_prev), (tag_r, tag_prev)]
        else:
            m.d.comb += [x_r.eq(x_sum), c_r.eq(c_sum), a_r.eq(a_prev), tag_r.eq(tag_prev)]

        # recombination
        s = (a_r << (2 * f)) + (x_r << f) + Mux(self.exact, c_r, 0)
        pipe += [(self.out.payload.s, s), (self.out.payload.tag, tag_r)]

        with m.If(enable):
            m.d.sync += [reg.eq(val) for reg, val in pipe]

        # valid pipeline
        n_stages = self.latency
        vs = [Signal(name=f"valid_{i}") for i in range(n_stages - 1)]
        chain = [self.in_.valid, *vs, self.out.valid]
        with m.If(enable):
            m.d.sync += [chain[i + 1].eq(chain[i]) for i in range(n_stages)]
        return m
