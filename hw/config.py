"""The one configuration of an hdpgen accelerator.

Pure Python (no Amaranth import) so that the golden model, the command line and
the benches can all read it.  Every width the hardware uses is derived here from
the integer range of the quantity it holds, so no width can be narrower than the
values it must carry for any legal input (``tests/test_config.py`` proves the
bounds with extreme inputs against the golden model).

Run-time values (pruning mode, ``k_b``, ``rho``, ``tau_head``, approximation
mode, causal masking, ``valid_len``) are registers in the hardware; the fields
here give their defaults and the golden model reads them from here.  Limits that
shape the hardware (``seq_len``, ``head_dim``, widths, block shape, criterion,
array size) are elaboration constants.
"""

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["HDPConfig", "signed_width", "unsigned_width", "PRUNE_MODES",
           "CRITERIA", "APPROX_MODES"]

PRUNE_MODES = ("off", "topk", "threshold")
CRITERIA = ("abs_sum", "sum", "max")
APPROX_MODES = ("drop_ff", "exact")


def signed_width(lo: int, hi: int) -> int:
    """Smallest two's complement width holding every integer in ``[lo, hi]``."""
    w = 1
    while not (-(1 << (w - 1)) <= lo and hi <= (1 << (w - 1)) - 1):
        w += 1
    return w


def unsigned_width(hi: int) -> int:
    """Smallest unsigned width holding every integer in ``[0, hi]`` (at least 1)."""
    return max(1, int(hi).bit_length())


def _clog2(n: int) -> int:
    return max(0, (n - 1).bit_length())


def _int_field(name, value, lo, hi=None, rule=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = rule or (f"in [{lo}, {hi}]" if hi is not None else f">= {lo}")
        raise ValueError(f"{name} must be {rng}, not {value}")


def _choice_field(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


@dataclass(frozen=True, kw_only=True)
class HDPConfig:
    """Every knob of an hdpgen accelerator (see ``shared/ALGORITHM.md``).

    Sizes
    -----
    seq_len : maximum sequence length N the hardware accepts (run-time ``valid_len`` <= N).
    head_dim : head dimension d.
    n_heads : heads per layer (processed one after another).

    Number formats (signed fixed point unless stated)
    -------------------------------------------------
    qk_bits, qk_frac : Q and K total and fraction bits (B, F).
    v_bits, v_frac : V total and fraction bits.
    prob_frac : fraction bits of the unsigned softmax probabilities (width ``prob_frac + 1``,
        so that 1.0 is representable).
    out_bits, out_frac : output O total and fraction bits (saturating).
    exp_frac : fraction bits of the base-2 softmax exponent (the exp table has ``2**exp_frac`` entries).
    exp_bits : the exp table's fraction bits W (entry 0 is ``2**W`` = 1.0).

    Pruning
    -------
    block_rows, block_cols : block shape b_r x b_c of the score matrix.
    criterion : block importance: ``abs_sum`` (sum of |A|), ``sum`` (signed sum of A), ``max`` (signed max).
    prune_mode : ``off``, ``topk`` or ``threshold`` (run-time register default).
    k_b : blocks kept per block-row in ``topk`` mode, the diagonal included.
    rho, rho_frac : threshold mix between max and mean, unsigned fixed point with ``rho_frac`` bits.
    head_prune, tau_head : prune the head when its importance H (sum of |A|) < tau_head.
    approx : ``drop_ff`` (drop the fraction x fraction term) or ``exact``.
    causal : decoder masking (key j > query i is masked).

    Array
    -----
    array_rows, array_cols : systolic array R x C.
    """

    seq_len: int = 128
    head_dim: int = 32
    n_heads: int = 12
    qk_bits: int = 8
    qk_frac: int = 4
    v_bits: int = 8
    v_frac: int = 4
    prob_frac: int = 8
    out_bits: int = 16
    out_frac: int = 8
    exp_frac: int = 5
    exp_bits: int = 16
    block_rows: int = 2
    block_cols: int = 2
    criterion: str = "max"
    prune_mode: str = "topk"
    k_b: int = 48
    rho: float = 0.5
    rho_frac: int = 8
    head_prune: bool = False
    tau_head: int = 0
    approx: str = "drop_ff"
    causal: bool = False
    array_rows: int = 2
    array_cols: int = 8

    # ------------------------------------------------------------------ validation
    def __post_init__(self):
        _int_field("seq_len", self.seq_len, 1, 4096)
        _int_field("head_dim", self.head_dim, 1, 1024)
        _int_field("n_heads", self.n_heads, 1, 256)
        _int_field("qk_bits", self.qk_bits, 2, 16)
        _int_field("qk_frac", self.qk_frac, 0, self.qk_bits - 1,
                   f"in [0, qk_bits - 1] = [0, {self.qk_bits - 1}]")
        _int_field("v_bits", self.v_bits, 2, 16)
        _int_field("v_frac", self.v_frac, 0, self.v_bits - 1,
                   f"in [0, v_bits - 1] = [0, {self.v_bits - 1}]")
        _int_field("prob_frac", self.prob_frac, 1, 16)
        _int_field("out_bits", self.out_bits, 2, 32)
        _int_field("out_frac", self.out_frac, 0, self.out_bits - 1,
                   f"in [0, out_bits - 1] = [0, {self.out_bits - 1}]")
        _int_field("exp_frac", self.exp_frac, 0, 10)
        _int_field("exp_bits", self.exp_bits, 4, 24)
        _int_field("block_rows", self.block_rows, 1, self.seq_len,
                   f"in [1, seq_len] = [1, {self.seq_len}]")
        _int_field("block_cols", self.block_cols, 1, self.seq_len,
                   f"in [1, seq_len] = [1, {self.seq_len}]")
        _choice_field("criterion", self.criterion, CRITERIA)
        _choice_field("prune_mode", self.prune_mode, PRUNE_MODES)
        _int_field("k_b", self.k_b, 1, self.n_block_cols,
                   f"in [1, number of block columns] = [1, {self.n_block_cols}]")
        if isinstance(self.rho, bool) or not isinstance(self.rho, (int, float)) \
                or not math.isfinite(self.rho) or not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"rho must be a number in [0, 1], not {self.rho!r}")
        _int_field("rho_frac", self.rho_frac, 1, 16)
        if self.rho * (1 << self.rho_frac) != self.rho_q:
            raise ValueError(f"rho must be a multiple of 2**-rho_frac = {2.0 ** -self.rho_frac}, "
                             f"not {self.rho!r}")
        if not isinstance(self.head_prune, bool):
            raise ValueError(f"head_prune must be true or false, not {self.head_prune!r}")
        _int_field("tau_head", self.tau_head, 0, self.h_max,
                   f"in [0, largest head importance] = [0, {self.h_max}]")
        _choice_field("approx", self.approx, APPROX_MODES)
        if not isinstance(self.causal, bool):
            raise ValueError(f"causal must be true or false, not {self.causal!r}")
        _int_field("array_rows", self.array_rows, 1, 64)
        _int_field("array_cols", self.array_cols, 1, 64)
        scale = math.log2(math.e) / math.sqrt(self.head_dim)
        if round(scale * 2.0 ** (16 + self.exp_frac - 2 * self.qk_frac)) < 1:
            need = next(e for e in range(64) if round(scale * 2.0 ** (16 + e - 2 * self.qk_frac)) >= 1)
            raise ValueError(f"exp_frac must be >= {need} for qk_frac = {self.qk_frac} and head_dim = "
                             f"{self.head_dim} (else the softmax scale log2(e)/sqrt(d) * "
                             f"2**(16 + exp_frac - 2*qk_frac) rounds to 0), not {self.exp_frac}")

    # ------------------------------------------------------------------ conversions
    def replace(self, **changes: Any) -> "HDPConfig":
        """A copy with ``changes`` applied (validated like the constructor)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown configuration field {unknown[0]!r}; "
                             f"fields are {', '.join(self.field_names())}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HDPConfig":
        """Rebuild from :meth:`to_dict` output; unknown or missing keys are errors."""
        if not isinstance(d, dict):
            raise ValueError(f"configuration must be a JSON object, not {type(d).__name__}")
        names = set(cls.field_names())
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown configuration field {unknown[0]!r}")
        missing = sorted(names - set(d))
        if missing:
            raise ValueError(f"configuration field {missing[0]!r} is missing")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "HDPConfig":
        return cls.from_dict(json.loads(text))

    def with_setting(self, key: str, value: str) -> "HDPConfig":
        """Apply one ``key=value`` string from the command line, parsed by the field's type."""
        types = {f.name: f.type for f in dataclasses.fields(self)}
        if key not in types:
            raise ValueError(f"unknown configuration field {key!r}; "
                             f"fields are {', '.join(self.field_names())}")
        t = types[key]
        try:
            if t in (bool, "bool"):
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "on", "off", "yes", "no"):
                    raise ValueError
                parsed: Any = low in ("1", "true", "on", "yes")
            elif t in (int, "int"):
                parsed = int(value, 0)
            elif t in (float, "float"):
                parsed = float(value)
            else:
                parsed = value
        except ValueError:
            kind = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(
                getattr(t, "__name__", t), "a value")
            raise ValueError(f"{key} must be {kind}, not {value!r}") from None
        return self.replace(**{key: parsed})

    # ------------------------------------------------------------------ blocks
    @property
    def n_block_rows(self) -> int:
        return -(-self.seq_len // self.block_rows)

    @property
    def n_block_cols(self) -> int:
        return -(-self.seq_len // self.block_cols)

    @property
    def block_size(self) -> int:
        return self.block_rows * self.block_cols

    @property
    def rho_q(self) -> int:
        """``rho`` as an unsigned integer with ``rho_frac`` fraction bits."""
        return int(round(self.rho * (1 << self.rho_frac)))

    # ------------------------------------------------------------------ operand ranges
    @property
    def qk_int_bits(self) -> int:
        """Signed width of the integer part ``x_I = x_q >> F``."""
        return self.qk_bits - self.qk_frac

    @property
    def qk_int_range(self) -> tuple[int, int]:
        h = 1 << (self.qk_int_bits - 1)
        return (-h, h - 1)

    @property
    def qk_frac_max(self) -> int:
        return (1 << self.qk_frac) - 1

    @property
    def valid_len_width(self) -> int:
        return unsigned_width(self.seq_len)

    @property
    def k_b_width(self) -> int:
        return unsigned_width(self.n_block_cols)

    # ------------------------------------------------------------------ score ranges
    @property
    def a_range(self) -> tuple[int, int]:
        """Range of ``A = sum_d q_I k_I``."""
        lo, hi = self.qk_int_range
        return (self.head_dim * lo * hi, self.head_dim * lo * lo)

    @property
    def a_width(self) -> int:
        return signed_width(*self.a_range)

    @property
    def x_range(self) -> tuple[int, int]:
        """Range of ``X = sum_d (q_I k_F + q_F k_I)``."""
        lo, hi = self.qk_int_range
        fm = self.qk_frac_max
        return (2 * self.head_dim * lo * fm, 2 * self.head_dim * hi * fm)

    @property
    def x_width(self) -> int:
        return signed_width(*self.x_range)

    @property
    def c_range(self) -> tuple[int, int]:
        """Range of ``C = sum_d q_F k_F`` (unsigned)."""
        return (0, self.head_dim * self.qk_frac_max ** 2)

    @property
    def c_width(self) -> int:
        return unsigned_width(self.c_range[1])

    @property
    def score_range(self) -> tuple[int, int]:
        """Range of a final score ``S`` (``2F`` fraction bits) in either approximation mode."""
        lo = -(1 << (self.qk_bits - 1))
        hi = (1 << (self.qk_bits - 1)) - 1
        exact_lo, exact_hi = self.head_dim * lo * hi, self.head_dim * lo * lo
        return (exact_lo - self.c_range[1], exact_hi)

    @property
    def score_width(self) -> int:
        return signed_width(*self.score_range)

    # ------------------------------------------------------------------ importances
    @property
    def a_abs_max(self) -> int:
        return max(-self.a_range[0], self.a_range[1])

    @property
    def importance_range(self) -> tuple[int, int]:
        """Range of a block importance ``I`` under :attr:`criterion`."""
        n = self.block_size
        lo, hi = self.a_range
        if self.criterion == "abs_sum":
            return (0, n * self.a_abs_max)
        if self.criterion == "sum":
            return (n * lo, n * hi)
        return (lo, hi)

    @property
    def importance_width(self) -> int:
        return signed_width(*self.importance_range)

    @property
    def importance_row_sum_range(self) -> tuple[int, int]:
        """Range of the sum of the importances of one block-row."""
        lo, hi = self.importance_range
        n = self.n_block_cols
        return (min(0, n * lo), max(0, n * hi))

    @property
    def threshold_width(self) -> int:
        """Signed width of both sides of the threshold rule
        ``I * n * 2^P >= rho_q * max * n + (2^P - rho_q) * sum``."""
        lo, hi = self.importance_range
        n = self.n_block_cols
        one = 1 << self.rho_frac
        m = max(abs(lo), abs(hi)) * n * one
        # rho_q*max*n + (1-rho_q)*sum is a convex mix of n*max and sum, so |rhs| <= n*|I|max*2^P.
        return signed_width(-m, m)

    @property
    def h_max(self) -> int:
        """Largest head importance ``H = sum |A|`` over the whole (unmasked) score matrix."""
        return self.seq_len * self.seq_len * self.a_abs_max

    @property
    def h_width(self) -> int:
        return unsigned_width(self.h_max)

    # ------------------------------------------------------------------ softmax
    @property
    def exp_value_width(self) -> int:
        """Unsigned width of one exponent ``e`` in ``[0, 2**exp_bits]``."""
        return self.exp_bits + 1

    @property
    def exp_sum_width(self) -> int:
        return unsigned_width(self.seq_len << self.exp_bits)

    @property
    def recip_guard(self) -> int:
        """Guard bits G of the row-sum reciprocal ``R = floor(2**(W+P+G) / sum)``."""
        return _clog2(self.seq_len) + 2

    @property
    def recip_shift(self) -> int:
        """``W + P + G``: the reciprocal's numerator is ``2**recip_shift``."""
        return self.exp_bits + self.prob_frac + self.recip_guard

    @property
    def recip_width(self) -> int:
        return unsigned_width(1 << (self.prob_frac + self.recip_guard))

    @property
    def prob_width(self) -> int:
        """Unsigned width of a probability in ``[0, 2**prob_frac]``."""
        return self.prob_frac + 1

    # ------------------------------------------------------------------ P x V and output
    @property
    def v_range(self) -> tuple[int, int]:
        return (-(1 << (self.v_bits - 1)), (1 << (self.v_bits - 1)) - 1)

    @property
    def prob_sum_max(self) -> int:
        """Bound on the sum of one row's probabilities: each rounds up by at most half an LSB."""
        return (1 << self.prob_frac) + (self.seq_len + 1) // 2

    @property
    def pv_range(self) -> tuple[int, int]:
        lo, hi = self.v_range
        return (self.prob_sum_max * lo, self.prob_sum_max * hi)

    @property
    def pv_width(self) -> int:
        return signed_width(*self.pv_range)

    @property
    def out_shift(self) -> int:
        """Right shift (round half up) from the P x V accumulator to the output format;
        negative means a left shift."""
        return self.prob_frac + self.v_frac - self.out_frac

    @property
    def out_range(self) -> tuple[int, int]:
        return (-(1 << (self.out_bits - 1)), (1 << (self.out_bits - 1)) - 1)

    # ------------------------------------------------------------------ array
    @property
    def array_acc_width(self) -> int:
        """Accumulator width of a systolic-array PE: wide enough for any score or P x V sum."""
        return max(self.score_width, self.x_width, self.c_width + 1, self.pv_width)
