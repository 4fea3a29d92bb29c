"""The one configuration of an hdpgen accelerator.

Pure Python (no Amaranth import) so that the golden model, the command line and
the benches can all read it.  Every width the hardware uses is derived here from
the integer range of the quantity it holds, so no width can be narrower than the
values it must carry for any legal input (``tests/test_config.py`` proves the
bounds with extreme inputs against the golden model).

Run-time values (pruning mode, ``k_frac``, ``rho``, ``eps``, ``tau_head``,
approximation mode, causal masking, ``leopard_th``, ``valid_len``) are registers in the
hardware; the fields here give their defaults and the golden model reads them from here.
Limits that shape the hardware (``seq_len``, ``head_dim``, widths, block shape,
criterion, array size, the integer pass's ``int_lanes``, the score front end and its
``leopard_lanes``) are elaboration constants.
"""

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HDPConfig", "signed_width", "unsigned_width", "PRUNE_MODES",
           "CRITERIA", "APPROX_MODES", "FRONT_ENDS", "K_FRAC_BITS", "EPS_BITS", "LEOPARD_TH_STEP",
           "LEOPARD_TH_LIMIT", "DSP_OPERAND_BITS"]

PRUNE_MODES = ("off", "topk", "threshold", "mass")
CRITERIA = ("abs_sum", "sum", "max")
APPROX_MODES = ("drop_ff", "exact", "comp")
#: Score front ends, fixed at generation: ``hdp`` (integer estimate, block pruner) or ``leopard``
#: (bit-serial exact scores with early termination against a threshold).
FRONT_ENDS = ("hdp", "leopard")
#: ``leopard_th`` (a logit) is a multiple of this step, in ``[-LEOPARD_TH_LIMIT, LEOPARD_TH_LIMIT]``.
LEOPARD_TH_STEP = 1 / 16
LEOPARD_TH_LIMIT = 64.0
#: Fraction bits of ``k_frac`` in the hardware: the register holds ``k_frac_q = k_frac * 2**8``.
K_FRAC_BITS = 8
#: Operand width of an ECP5 MULT18X18D (signed): the hand-split and packed products are sized
#: to fit one.
DSP_OPERAND_BITS = 18
#: Fraction bits of ``eps`` (mass mode): the register holds ``eps_q = eps * 2**8``.
EPS_BITS = 8


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


def _bound(b):
    """A bound of an integer field: a number, or ``(label, function of the configuration)``."""
    return b if isinstance(b, tuple) else (str(b), lambda cfg, b=b: b)


def _knob(default, doc, lo=None, hi=None, choices=None, note=None, open_lo=False,
          frange=(0.0, 1.0)):
    """A configuration field with its rule in the metadata: validation, ``--list-settings`` and
    the error messages all read the rule from here, so they cannot disagree.  ``open_lo``: a
    float field whose range is ``(0, 1]`` instead of ``[0, 1]``; ``frange``: a float field's
    closed range (``[0, 1]`` unless given)."""
    meta = {"doc": doc, "note": note, "open_lo": open_lo, "frange": frange}
    if lo is not None:
        meta["lo"], meta["hi"] = _bound(lo), _bound(hi)
    if choices is not None:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


def _check_field(cfg, f) -> None:
    value, m = getattr(cfg, f.name), f.metadata
    if "lo" in m:
        (lo_label, lo_fn), (hi_label, hi_fn) = m["lo"], m["hi"]
        lo, hi = lo_fn(cfg), hi_fn(cfg)
        dynamic = not (lo_label.lstrip("-").isdigit() and hi_label.lstrip("-").isdigit())
        rule = f"in [{lo_label}, {hi_label}] = [{lo}, {hi}]" if dynamic else None
        _int_field(f.name, value, lo, hi, rule)
    elif "choices" in m:
        _choice_field(f.name, value, m["choices"])
    elif f.type is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{f.name} must be true or false, not {value!r}")
    elif f.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) \
                or not m["frange"][0] <= value <= m["frange"][1] \
                or (m.get("open_lo") and value == 0):
            raise ValueError(f"{f.name} must be a number in {_float_range(f)}, not {value!r}")


def _float_range(f) -> str:
    lo, hi = f.metadata["frange"]
    return f"({lo:g}, {hi:g}]" if f.metadata.get("open_lo") else f"[{lo:g}, {hi:g}]"


def _field_rule(f) -> str:
    """The rule of one field in words (for ``--list-settings``)."""
    m = f.metadata
    if "lo" in m:
        rule = f"integer in [{m['lo'][0]}, {m['hi'][0]}]"
    elif "choices" in m:
        rule = "one of " + ", ".join(m["choices"])
    elif f.type is bool:
        rule = "true or false"
    else:
        rule = f"number in {_float_range(f)}"
    return rule + (f"; {m['note']}" if m.get("note") else "")


_SCALE_NOTE = "and large enough that the softmax scale does not round to 0"


@dataclass(frozen=True, kw_only=True)
class HDPConfig:
    """Every knob of an hdpgen accelerator (the algorithm is described in ``docs/spec.md``).

    Each field's meaning and rule are in its metadata (``doc``, bounds, choices), which the
    validation reads; :meth:`describe` lists them (``hdpgen <command> --list-settings``).

    Run-time values (pruning mode, ``k_frac``, ``rho``, ``eps``, ``tau_head``, approximation
    mode, causal masking, ``leopard_th``) are registers in the hardware; the fields give their
    defaults.  The others shape the hardware and are elaboration constants.
    """

    # sizes
    seq_len: int = _knob(128, "maximum sequence length N the hardware accepts "
                              "(run-time valid_len <= N)", 1, 4096)
    head_dim: int = _knob(32, "head dimension d", 1, 1024)
    n_heads: int = _knob(12, "heads per layer (processed one after another)", 1, 256)
    # number formats (signed fixed point unless stated)
    qk_bits: int = _knob(8, "Q and K total bits B (signed fixed point)", 2, 16)
    qk_frac: int = _knob(4, "Q and K fraction bits F (or 'auto' in golden/simulate)", 0,
                         ("qk_bits - 1", lambda c: c.qk_bits - 1))
    v_bits: int = _knob(8, "V total bits (signed fixed point)", 2, 16)
    v_frac: int = _knob(4, "V fraction bits (or 'auto' in golden/simulate)", 0,
                        ("v_bits - 1", lambda c: c.v_bits - 1))
    # 12, not 8: a probability below half an LSB rounds to 0, and long rows are made of small
    # probabilities.  On MiniLM paragraphs truncated to 256 tokens (no pruning, exact scores)
    # 8 bits lose 8 % of a row's probability mass to zeros on average and the sentence
    # embedding falls to cosine 0.991, 12 bits lose 0.2 % and keep 0.999; rows of 512 keys
    # lose 19 % and 0.5 % (bench/prob_frac.py and hdpgen eval; docs/spec.md has the table).
    # The presets tiny and odd set fewer bits.
    prob_frac: int = _knob(12, "fraction bits of the unsigned softmax probabilities "
                               "(width prob_frac + 1, so that 1.0 is representable; 12 keeps "
                               "the small probabilities of long rows from rounding to 0)", 1, 16)
    out_bits: int = _knob(16, "output O total bits (signed, saturating)", 2, 32)
    out_frac: int = _knob(8, "output O fraction bits", 0,
                          ("out_bits - 1", lambda c: c.out_bits - 1))
    exp_frac: int = _knob(5, "fraction bits of the base-2 softmax exponent (the exp table has "
                             "2**exp_frac entries)", 0, 10, note=_SCALE_NOTE)
    exp_bits: int = _knob(16, "the exp table's fraction bits W (entry 0 is 2**W = 1.0)", 4, 24)
    # pruning
    block_rows: int = _knob(2, "block height b_r of the score matrix", 1,
                            ("seq_len", lambda c: c.seq_len))
    block_cols: int = _knob(2, "block width b_c of the score matrix", 1,
                            ("seq_len", lambda c: c.seq_len))
    criterion: str = _knob("max", "block importance: abs_sum (sum of |A|), sum (signed sum of A), "
                                  "max (signed max)", choices=CRITERIA)
    prune_mode: str = _knob("topk", "block pruning (run-time register default)",
                            choices=PRUNE_MODES)
    k_frac: float = _knob(0.75, "topk mode: fraction of each block-row's valid blocks kept "
                                "(ceil(k_frac * valid blocks), the diagonal included)",
                          note="a multiple of 2**-8", open_lo=True)
    rho: float = _knob(0.5, "threshold mode: mix between the block-row's max (1) and mean (0)",
                       note="a multiple of 2**-rho_frac")
    rho_frac: int = _knob(8, "fraction bits of rho in the hardware (unsigned fixed point)", 1, 16)
    eps: float = _knob(0.09765625, "mass mode: estimated softmax mass a block-row may drop (keep "
                                   "the fewest blocks holding 1 - eps of it)",
                       note="below 1 and a multiple of 2**-8")
    head_prune: bool = _knob(False, "prune a head when its importance H (sum of |A|) < tau_head")
    tau_head: int = _knob(0, "head-pruning threshold on H", 0,
                          ("largest head importance", lambda c: c.h_max))
    approx: str = _knob("drop_ff", "drop_ff (drop the fraction x fraction term), exact, or comp "
                                  "(drop_ff plus a per-key estimate of the dropped term)",
                        choices=APPROX_MODES)
    causal: bool = _knob(False, "decoder masking (key j > query i is masked)")
    # score front end (generation time)
    front_end: str = _knob("hdp", "score front end, fixed at generation: hdp (integer estimate "
                                  "and block pruner, then scores on the array) or leopard "
                                  "(bit-serial exact scores that stop early below leopard_th)",
                           choices=FRONT_ENDS,
                           note="leopard needs prune_mode off, approx exact, head_prune false")
    mass_pruner: bool = _knob(True, "hdp front end: build the probability-mass pruner, fixed at "
                                    "generation; false leaves it out of the top (the mode "
                                    "register's mass code then runs as off)",
                              note="prune_mode mass needs it")
    leopard_th: float = _knob(0.0, "leopard front end: keep an entry when its logit "
                                   "q.k / sqrt(d) >= leopard_th (run-time register, in units "
                                   "of q_q.k_q)", note="a multiple of 1/16",
                              frange=(-LEOPARD_TH_LIMIT, LEOPARD_TH_LIMIT))
    leopard_lanes: int = _knob(8, "leopard front end: bit-serial lanes (entries computed at "
                                  "once; a head of fewer tokens uses at most seq_len)", 1, 64)
    # integer pass
    int_lanes: int = _knob(16, "products of each integer dot product q_I . k_I the score unit "
                               "computes per cycle: a b_r x b_c block takes ceil(head_dim / "
                               "int_lanes) cycles", 1, 1024,
                           note="a value >= head_dim means head_dim: one block per cycle")
    # array
    array_rows: int = _knob(2, "systolic array rows R", 1, 64)
    array_cols: int = _knob(8, "systolic array columns C", 1, 64)

    # ------------------------------------------------------------------ validation
    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check_field(self, f)
            if f.name == "rho_frac" and self.rho * (1 << self.rho_frac) != self.rho_q:
                raise ValueError(f"rho must be a multiple of 2**-rho_frac = "
                                 f"{2.0 ** -self.rho_frac}, not {self.rho!r}")
            if f.name == "eps" and (self.eps >= 1 or self.eps * (1 << EPS_BITS) != self.eps_q):
                raise ValueError(f"eps must be below 1 and a multiple of 2**-{EPS_BITS} = "
                                 f"{2.0 ** -EPS_BITS}, not {self.eps!r}")
            if f.name == "leopard_th" and self.leopard_th / LEOPARD_TH_STEP \
                    != round(self.leopard_th / LEOPARD_TH_STEP):
                raise ValueError(f"leopard_th must be a multiple of {LEOPARD_TH_STEP}, "
                                 f"not {self.leopard_th!r}")
            if f.name == "k_frac" and self.k_frac * (1 << K_FRAC_BITS) != self.k_frac_q:
                raise ValueError(f"k_frac must be a multiple of 2**-{K_FRAC_BITS} = "
                                 f"{2.0 ** -K_FRAC_BITS}, not {self.k_frac!r}")
        if self.front_end == "leopard":
            for name, want in (("prune_mode", "off"), ("approx", "exact"), ("head_prune", False)):
                if getattr(self, name) != want:
                    raise ValueError(f"front_end leopard computes exact scores and prunes by "
                                     f"leopard_th alone: {name} must be {want!r}, not "
                                     f"{getattr(self, name)!r}")
        if self.prune_mode == "mass" and not self.mass_pruner:
            raise ValueError("prune_mode 'mass' needs the mass pruner in the top: mass_pruner "
                             "must be true for it, not False")
        scale = math.log2(math.e) / math.sqrt(self.head_dim)
        if round(scale * 2.0 ** (16 + self.exp_frac - 2 * self.qk_frac)) < 1:
            need = next(e for e in range(64) if round(scale * 2.0 ** (16 + e - 2 * self.qk_frac)) >= 1)
            raise ValueError(f"exp_frac must be >= {need} for qk_frac = {self.qk_frac} and head_dim = "
                             f"{self.head_dim} (else the softmax scale log2(e)/sqrt(d) * "
                             f"2**(16 + exp_frac - 2*qk_frac) rounds to 0), not {self.exp_frac}")

    @classmethod
    def describe(cls) -> list[dict[str, str]]:
        """Every field with its type name, its rule in words and its meaning, in field order."""
        return [{"name": f.name, "type": f.type.__name__, "rule": _field_rule(f),
                 "doc": f.metadata["doc"]} for f in dataclasses.fields(cls)]

    # ------------------------------------------------------------------ conversions
    @classmethod
    def _check_keys(cls, keys, where: str = "") -> None:
        unknown = sorted(set(keys) - set(cls.field_names()), key=str)
        if unknown:
            raise ValueError(f"{where}unknown configuration field {unknown[0]!r}; "
                             f"fields are {', '.join(cls.field_names())}")

    def replace(self, **changes: Any) -> "HDPConfig":
        """A copy with all ``changes`` applied at once, validated once like the constructor
        (so the order of the changes never matters)."""
        self._check_keys(changes)
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
        cls._check_keys(d)
        missing = sorted(set(cls.field_names()) - set(d))
        if missing:
            raise ValueError(f"configuration field {missing[0]!r} is missing")
        return cls(**d)

    def merged(self, d: dict[str, Any], where: str = "") -> "HDPConfig":
        """This configuration with the fields of the (possibly partial) mapping ``d`` applied,
        validated once; unknown keys are errors naming the key and listing the fields."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}configuration must be a JSON object, not {type(d).__name__}")
        self._check_keys(d, where)
        return self.replace(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "HDPConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def parse_setting(cls, key: str, value: str) -> Any:
        """The value of one ``key=value`` string from the command line, parsed by the field's
        type (not yet validated against the rules: see :meth:`replace`)."""
        cls._check_keys([key])
        t = {f.name: f.type for f in dataclasses.fields(cls)}[key]
        try:
            if t is bool:
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "on", "off", "yes", "no"):
                    raise ValueError
                return low in ("1", "true", "on", "yes")
            if t is int:
                return int(value, 0)
            if t is float:
                return float(value)
            return value
        except ValueError:
            kind = {int: "an integer", float: "a number", bool: "true or false"}.get(t, "a value")
            raise ValueError(f"{key} must be {kind}, not {value!r}") from None

    @classmethod
    def parse_settings(cls, items) -> dict[str, Any]:
        """``{key: value}`` of ``KEY=VALUE`` strings (``--set``), each parsed by
        :meth:`parse_setting` (not yet validated: merge them with :meth:`merged`)."""
        changes: dict[str, Any] = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set takes KEY=VALUE, not {item!r}")
            changes[key.strip()] = cls.parse_setting(key.strip(), value.strip())
        return changes

    def with_setting(self, key: str, value: str) -> "HDPConfig":
        """Apply one ``key=value`` string from the command line, parsed by the field's type."""
        return self.replace(**{key: self.parse_setting(key, value)})

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
    def k_frac_q(self) -> int:
        """``k_frac`` as an unsigned integer with ``K_FRAC_BITS`` fraction bits (1 ... 256)."""
        return int(round(self.k_frac * (1 << K_FRAC_BITS)))

    @property
    def leopard_lanes_used(self) -> int:
        """Lanes the LeOPArd engine builds: ``leopard_lanes``, at most ``seq_len``."""
        return min(self.leopard_lanes, self.seq_len)

    @property
    def eps_q(self) -> int:
        """``eps`` as an unsigned integer with ``EPS_BITS`` fraction bits (0 ... 255)."""
        return int(round(self.eps * (1 << EPS_BITS)))

    @property
    def rho_q(self) -> int:
        """``rho`` as an unsigned integer with ``rho_frac`` fraction bits."""
        return int(round(self.rho * (1 << self.rho_frac)))

    # ------------------------------------------------------------------ integer pass
    @property
    def int_passes(self) -> int:
        """Cycles (passes) of the score unit per block: ``ceil(head_dim / int_lanes)``."""
        return -(-self.head_dim // min(self.int_lanes, self.head_dim))

    @property
    def int_lanes_used(self) -> int:
        """Multipliers per dot product the score unit builds: ``ceil(head_dim / int_passes)``
        (at most ``int_lanes``; fewer when that takes as many passes, e.g. 11 for d = 32 and
        ``int_lanes`` = 12: 3 passes either way)."""
        return -(-self.head_dim // self.int_passes)

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
    def k_frac_width(self) -> int:
        """Unsigned width of the ``k_frac_q`` register: codes 0 ... ``2**(K_FRAC_BITS + 1) - 1``
        (``2**K_FRAC_BITS`` = 1.0 needs the extra bit)."""
        return K_FRAC_BITS + 1

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
    def comp_max(self) -> int:
        """Largest per-key compensation ``c_j = ((2^F - 1) sum_d k_F) >> 1`` (``comp``)."""
        return (self.qk_frac_max * self.head_dim * self.qk_frac_max) >> 1

    @property
    def comp_width(self) -> int:
        return unsigned_width(self.comp_max)

    @property
    def score_range(self) -> tuple[int, int]:
        """Range of a final score ``S`` (``2F`` fraction bits) in any approximation mode
        (``drop_ff`` lies ``C`` below the exact score, ``comp`` at most ``comp_max`` above
        ``drop_ff``)."""
        lo = -(1 << (self.qk_bits - 1))
        hi = (1 << (self.qk_bits - 1)) - 1
        exact_lo, exact_hi = self.head_dim * lo * hi, self.head_dim * lo * lo
        return (exact_lo - self.c_range[1], exact_hi + self.comp_max)

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
