"""Elaboration parameters of the Token-Picker decode units and the constants they share with
:mod:`golden.token_picker` (exponent tables, scale constants, clamp limits per ``sf``)."""

from dataclasses import dataclass

from golden import token_picker as tp
from golden.tables import SCALE_SHIFT

__all__ = ["DecodeParams", "SCALE_SHIFT"]


def _clog2(n: int) -> int:
    return max(0, (int(n) - 1).bit_length())


def _need_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")
    return value


@dataclass(frozen=True)
class DecodeParams:
    """What a decode unit is built for.

    ``cfg`` is the golden :class:`~golden.token_picker.TokenPickerConfig` (formats, tables);
    ``d`` the head dimension; ``n_cache`` (N) the cache length (the table cap ``clog2(N)`` and
    the softmax guard depend on it, so it is the golden's ``N``, not the valid count ``n``, which
    is a run-time input); ``group`` the query heads per KV head."""
    cfg: tp.TokenPickerConfig
    d: int
    n_cache: int
    group: int = 1

    def __post_init__(self):
        if not isinstance(self.cfg, tp.TokenPickerConfig):
            raise ValueError(f"cfg must be a TokenPickerConfig, not {self.cfg!r}")
        _need_int("d", self.d, 1, 256)
        _need_int("n_cache", self.n_cache, 2, 4096)
        _need_int("group", self.group, 1, 16)
        width = self.cfg.exp_bits + 1 + _clog2(self.n_cache) + self.cfg.eps_frac
        if width > 62:
            raise ValueError(f"exp_bits + 1 + clog2(n_cache) + eps_frac must be <= 62 (the golden "
                             f"model's int64 comparison), not {width}")

    # ---------------------------------------------------------------- formats
    @property
    def n_chunks(self) -> int:
        return self.cfg.n_chunks

    @property
    def sf_max(self) -> int:
        """Largest score fraction ``q_frac + k_frac``."""
        return self.cfg.q_bits - 1 + self.cfg.k_bits - 1

    @property
    def score_width(self) -> int:
        """Signed width holding any score, bound or ``q . khigh`` (``|S| <= d 2**(qb-1) 2**(kb-1)``)."""
        return self.cfg.q_bits + self.cfg.k_bits - 1 + _clog2(self.d + 1) + 1

    @property
    def cap(self) -> int:
        return _clog2(self.n_cache)

    @property
    def tok_width(self) -> int:
        return max(1, _clog2(self.n_cache))

    # ---------------------------------------------------------------- constants
    @property
    def tables(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return tp.exp_tables(self.cfg.exp_frac, self.cfg.exp_bits)

    @property
    def scale(self) -> tuple[int, int]:
        return tp.exp_scale(self.d, self.cfg.exp_frac)

    def up_limits(self, sf: int) -> tuple[int, int]:
        """``(x_lo, x_hi)`` of :func:`golden.token_picker.exp_upper`: ``x`` is clamped to
        ``[-x_lo, x_hi]``."""
        E, W = self.cfg.exp_frac, self.cfg.exp_bits
        c_lo, c_hi = self.scale
        sh = SCALE_SHIFT + sf
        return -(-((W + 2) << (E + sh)) // c_lo), -(-((self.cap + 1) << (E + sh)) // c_hi)

    def lo_limit(self, sf: int) -> int:
        """``y_lo`` of :func:`golden.token_picker.exp_lower`: ``y`` is clamped to ``>= -y_lo``."""
        E, W = self.cfg.exp_frac, self.cfg.exp_bits
        return -(-((W + 2) << (E + SCALE_SHIFT + sf)) // self.scale[1])

    def k_chunk_words(self) -> tuple[int, ...]:
        return self.cfg.k_chunk_words(self.d)

    def v_row_words(self) -> int:
        return self.cfg.v_row_words(self.d)

    def burst_problem(self) -> str | None:
        """Why the memory side cannot read this layout in single bursts (None when it can):
        every K chunk and V plane row must be a power of two of at most 256 words (one INCR
        burst that never crosses 4 KB)."""
        vh, vl = self.cfg.v_part_words(self.d)
        sizes = [("k chunk words", w) for w in self.k_chunk_words()]
        sizes += [("v high plane words", vh), ("v low plane words", vl)] if vl else \
            [("v row words", vh)]
        for name, w in sizes:
            if w & (w - 1) or w > 256:
                return (f"{name} must be a power of two <= 256 (one burst, no 4 KB crossing), "
                        f"not {w} (d = {self.d}, word_bits = {self.cfg.word_bits})")
        return None
