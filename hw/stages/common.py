"""Sizes and stream payloads shared by the top's stages (:mod:`hw.stages`)."""

from dataclasses import dataclass

from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In

from hw.config import HDPConfig, unsigned_width
from hw.systolic import array_widths

__all__ = ["Dims", "group_layout", "key_layout", "fine_layout", "entry_layout", "qk_mem_row", "v_mem_row",
           "addr_width", "in_lane_width", "out_lane_width", "prob_ports"]


def in_lane_width(cfg: HDPConfig) -> int:
    """Bits per element lane of the input stream: ``max(qk_bits, v_bits)`` rounded up to
    bytes."""
    return 8 * -(-max(cfg.qk_bits, cfg.v_bits) // 8)


def out_lane_width(cfg: HDPConfig) -> int:
    """Bits per element lane of the output stream: ``out_bits`` rounded up to bytes."""
    return 8 * -(-cfg.out_bits // 8)


def addr_width(depth: int) -> int:
    """Address bits of a ``lib.memory.Memory`` of ``depth`` words."""
    return max(0, (depth - 1).bit_length())


@dataclass(frozen=True)
class Dims:
    """Elaboration sizes of the top, derived once from the configuration."""
    N: int       # seq_len
    D: int       # head_dim
    R: int       # array rows = query rows per group
    C: int       # array columns
    br: int      # block rows
    bc: int      # block columns
    nbr: int     # block-rows
    nbc: int     # block columns of the score matrix
    iw: int      # width of 0 .. N
    cw: int      # width of a block-column index
    rbw: int     # width of a block-row index
    rw: int      # width of 0 .. R
    nu: int      # P x V tiles (output dims) per row group
    n_words: int  # score tiles per row group, at most
    idxw: int    # tile index bits of the array tag
    tagw: int    # array tag: tile index, bank, kind (0 score, 1 P x V)

    @classmethod
    def of(cls, cfg: HDPConfig) -> "Dims":
        N, D, R, C = cfg.seq_len, cfg.head_dim, cfg.array_rows, cfg.array_cols
        nu, n_words = -(-D // C), -(-N // C)
        idxw = max(unsigned_width(n_words), unsigned_width(nu))
        return cls(N=N, D=D, R=R, C=C, br=cfg.block_rows, bc=cfg.block_cols,
                   nbr=cfg.n_block_rows, nbc=cfg.n_block_cols, iw=unsigned_width(N),
                   cw=unsigned_width(max(cfg.n_block_cols - 1, 1)),
                   rbw=unsigned_width(max(cfg.n_block_rows - 1, 1)), rw=unsigned_width(R),
                   nu=nu, n_words=n_words, idxw=idxw, tagw=idxw + 2)


def qk_mem_row(cfg: HDPConfig) -> data.ArrayLayout:
    """A word of the K and Q memories: one row, ``head_dim`` signed ``qk_bits`` values."""
    return data.ArrayLayout(signed(cfg.qk_bits), cfg.head_dim)


def v_mem_row(cfg: HDPConfig) -> data.ArrayLayout:
    """A word of the V memory: one row, ``head_dim`` signed ``v_bits`` values."""
    return data.ArrayLayout(signed(cfg.v_bits), cfg.head_dim)


def key_layout(cfg: HDPConfig) -> data.StructLayout:
    """A gathered key: its row ``j`` and block column ``c``."""
    d = Dims.of(cfg)
    return data.StructLayout({"j": unsigned(d.iw), "c": unsigned(d.cw)})


def entry_layout(cfg: HDPConfig) -> data.StructLayout:
    """One entry of a LeOPArd score tile: the exact score (0 when pruned) and its keep bit."""
    return data.StructLayout({"s": signed(array_widths(cfg).acc), "keep": unsigned(1)})


def fine_layout(cfg: HDPConfig) -> data.ArrayLayout:
    """A word of the fine-score memory: one ``R x C`` score tile (lane ``r * C + c``).  A lane
    is a score (HDP front end: the block mask decides the keep) or, with the LeOPArd front
    end, an :func:`entry_layout` (each entry carries its own keep bit)."""
    lane = signed(array_widths(cfg).acc) if cfg.front_end == "hdp" else entry_layout(cfg)
    return data.ArrayLayout(lane, cfg.array_rows * cfg.array_cols)


def group_layout(cfg: HDPConfig) -> data.StructLayout:
    """Descriptor of one row group, passed S -> M -> P.

    ``rowmask[r]``: keep mask of the block-row of group row ``r`` (0 for rows ``>= L``);
    ``nkept``: keys gathered (the union of the masks, ``j < L``); ``i0``: first query row;
    ``nrows``: rows of the group; ``b2``, ``b3``: the group's bank in the two-bank (fine
    scores, probabilities) and three-bank (gathered keys) memories."""
    d = Dims.of(cfg)
    return data.StructLayout({
        "rowmask": data.ArrayLayout(unsigned(d.nbc), d.R),
        "nkept": unsigned(d.iw),
        "i0": unsigned(d.iw + 1),
        "nrows": unsigned(d.rw),
        "b2": unsigned(1),
        "b3": unsigned(2),
    })


def prob_ports(cfg: HDPConfig, kind: str) -> dict:
    """The members ``prob_<kind>_<r>`` of a stage that writes (``kind`` ``"wr"``) or reads
    (``"rd"``) the ``R`` probability memories (two banks of ``N`` probabilities each); the
    stage drives the ports, so they are ``In`` (flipped) port interfaces."""
    d = Dims.of(cfg)
    sig = {"wr": WritePort.Signature, "rd": ReadPort.Signature}[kind]
    return {f"prob_{kind}_{r}": In(sig(addr_width=addr_width(2 * d.N),
                                       shape=unsigned(cfg.prob_width)))
            for r in range(d.R)}
