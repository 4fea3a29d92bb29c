"""Golden vectors of the board self-test: one head's quantized Q, K, V, the register writes,
and the checksum of the golden output (:func:`checksum`, the RTL twin is in
:class:`hw.board.selftest.SelfTest`)."""

from dataclasses import dataclass

import numpy as np

from golden.model import attention_head_int, quantize_qkv
from hw.config import HDPConfig
from hw.top import out_lane_width, pack_input_rows, register_map, register_values

__all__ = ["SelftestVectors", "checksum", "make_vectors", "random_vectors", "fixture_vectors",
           "corrupted_vectors", "corrupt_bit", "report_line", "MASK32"]

MASK32 = 0xFFFF_FFFF


def checksum(cfg: HDPConfig, out_rows) -> int:
    """32-bit checksum of output rows in ``m_axis`` order: for each row, for each element
    (element 0 first), ``s = rotl32(s, 1) + w mod 2^32`` from ``s = 0``, where ``w`` is the
    element's ``out_lane_width``-bit two's complement pattern (the lane bits, zero-extended)."""
    lane_mask = (1 << out_lane_width(cfg)) - 1
    s = 0
    for row in out_rows:
        for x in row:
            s = ((((s << 1) | (s >> 31)) & MASK32) + (int(x) & lane_mask)) & MASK32
    return s


def report_line(passed: bool, cycles: int, csum: int) -> str:
    """The UART line the harness sends after every run."""
    return f"{'PASS' if passed else 'FAIL'} cycles={cycles:08X} sum={csum:08X}\r\n"


@dataclass(frozen=True)
class SelftestVectors:
    """What the harness stores: ``rows`` (the ``3L`` packed ``s_axis`` beats), ``valid_len``,
    ``writes`` ((byte address, 32-bit word) register writes before the head), ``checksum``
    (golden), and for the benches the golden ``head`` (:class:`golden.model.HeadResult`) and
    whether the head is ``dense``."""

    rows: tuple
    valid_len: int
    writes: tuple
    checksum: int
    head: object
    dense: bool


def _register_writes(cfg: HDPConfig, valid_len: int) -> tuple:
    values = register_values(cfg, valid_len)
    writes = []
    for reg in register_map(cfg):
        if reg.rw and reg.name in values:
            for w in range(-(-reg.width // 32)):
                writes.append((reg.addr + 4 * w, (values[reg.name] >> (32 * w)) & MASK32))
    return tuple(writes)


def make_vectors(cfg: HDPConfig, q_q, k_q, v_q, valid_len: int | None = None) -> SelftestVectors:
    """Vectors of one head given as quantized integer arrays (``seq_len x head_dim``)."""
    if not isinstance(cfg, HDPConfig):
        raise TypeError(f"cfg must be an HDPConfig, not {cfg!r}")
    n = cfg.seq_len if valid_len is None else valid_len
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= cfg.seq_len:
        raise ValueError(f"valid_len must be an integer in 1 ... seq_len = {cfg.seq_len}, "
                         f"not {valid_len!r}")
    n = int(n)
    head = attention_head_int(q_q, k_q, v_q, cfg, n)
    dense = cfg.prune_mode == "off" and not cfg.head_prune
    return SelftestVectors(
        rows=tuple(pack_input_rows(cfg, k_q, q_q, v_q, n)), valid_len=n,
        writes=_register_writes(cfg, n), checksum=checksum(cfg, head.out_int[:n]),
        head=head, dense=dense)


def random_vectors(cfg: HDPConfig, seed: int = 1, valid_len: int | None = None):
    """A seeded random head (full-range quantized integers)."""
    rng = np.random.default_rng(seed)
    shape = (cfg.seq_len, cfg.head_dim)
    qk = 1 << (cfg.qk_bits - 1)
    vv = 1 << (cfg.v_bits - 1)
    q, k = rng.integers(-qk, qk, shape), rng.integers(-qk, qk, shape)
    v = rng.integers(-vv, vv, shape)
    return make_vectors(cfg, q, k, v, valid_len)


def fixture_vectors(cfg: HDPConfig, fixture: str = "medium", head: int = 0):
    """A real captured head: head ``head`` (layer-major index) of fixture ``fixture``
    (``tests/data``), quantized with :func:`golden.model.quantize_qkv`, at its valid length."""
    from sim.fixtures import load_fixture
    fx = load_fixture(fixture)
    n_heads = fx["q"].shape[0]
    if not isinstance(head, int) or not 0 <= head < n_heads:
        raise ValueError(f"head must be an integer in 0 ... {n_heads - 1}, not {head!r}")
    n, d = fx["q"].shape[1:]
    if d != cfg.head_dim or n > cfg.seq_len or fx["valid_len"] > cfg.seq_len:
        raise ValueError(f"fixture {fixture!r} has heads of {n} tokens x {d}, the configuration "
                         f"needs at most seq_len = {cfg.seq_len} tokens x head_dim = "
                         f"{cfg.head_dim}")
    pad = ((0, cfg.seq_len - n), (0, 0))   # tokens past the fixture's are padding (zero)
    q, k, v = (np.pad(a, pad) for a in quantize_qkv(fx["q"][head], fx["k"][head],
                                                     fx["v"][head], cfg))
    return make_vectors(cfg, q, k, v, fx["valid_len"])


def corrupt_bit(cfg: HDPConfig) -> int:
    """The bit a corrupted ROM row has flipped in its lane 0: below the sign bit of both the
    Q/K and the V format, so the top reads the change in any of the three matrices."""
    return min(cfg.qk_bits, cfg.v_bits) - 2


def corrupted_vectors(cfg: HDPConfig, vec: SelftestVectors, row: int) -> SelftestVectors:
    """The vectors of the head as a harness built with ``corrupt=row`` actually runs it (ROM
    row ``row`` of the ``3L``, K then Q then V, with :func:`corrupt_bit` of element 0
    flipped): its ``checksum`` is what that harness computes and reports."""
    n = vec.valid_len
    if not isinstance(row, int) or not 0 <= row < 3 * n:
        raise ValueError(f"row must be a ROM row index in 0 ... {3 * n - 1}, not {row!r}")
    h = vec.head
    k, q, v = (np.array(a, dtype=np.int64) for a in (h.k_q, h.q_q, h.v_q))
    mat = (k, q, v)[row // n]
    mat[row % n, 0] ^= 1 << corrupt_bit(cfg)
    return make_vectors(cfg, q, k, v, n)
