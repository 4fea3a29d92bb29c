"""Cycle model of :class:`hw.stages.score.ScoreStage` (S)."""

from types import SimpleNamespace

from hw.config import HDPConfig

__all__ = ["ScoreModel"]


class ScoreModel:
    """S's state machine, key loader, tile runner and operand skid, group by group.

    ``nkept``: the gathered keys of each group (from the golden keep masks); ``mask_valid``:
    the cycle each block-row's mask leaves the pruner (-1: none to wait for)."""

    def __init__(self, cfg: HDPConfig, L: int, nkept: list[int], mask_valid):
        self.R, self.C, self.D, self.br = (cfg.array_rows, cfg.array_cols, cfg.head_dim,
                                           cfg.block_rows)
        self.L, self.nkept, self.mask_valid = L, nkept, mask_valid
        self.state = "IDLE"
        self.g = self.i0 = self.r = self.n = 0
        self.fine_cr, self.key_cr = 2, 3
        self.slot = self.step_ = self.it_left = self.out = 0
        self.kl_vld = self.kl_full = self.keys_done = self.running = self.it_valid = False
        self.fire = False                # the runner advances this cycle (a register)
        self.vld = self.kd_vld = False   # a Q row / a key at its memory's output
        self.fifo: list[int] = []        # the S -> M descriptor FIFO (group numbers)
        self.skid: list[bool] = []       # the operand skid towards the arbiter (last flags)

    @property
    def op_valid(self) -> bool:
        return bool(self.skid)

    @property
    def op_last(self) -> bool:
        return bool(self.skid) and self.skid[0]

    def step(self, t: int, s_fire: bool, s_res: int, m_done: bool, p_done: bool) -> None:
        """``s_fire``: the arbiter takes the skid's head this cycle."""
        s = SimpleNamespace(**self.__dict__)
        R, D, L = self.R, self.D, self.L
        # the tile runner advances (a beat into the skid) on its registered decision
        adv = s.fire
        tile_end = adv and s.step_ + 1 == D
        self.skid = s.skid[1:] if s_fire else list(s.skid)
        if adv:
            self.skid.append(s.step_ + 1 == D)
        self.kl_vld = self.vld = False
        self.kd_vld = s.kl_vld           # the key registered, written into its slot next
        pushed = False
        if s.state == "IDLE":
            if s.i0 < L and s.fine_cr > 0 and s.key_cr > 0:
                self.r, self.n = 0, self.nkept[s.g]
                self.state = "PREP"
        elif s.state == "PREP":
            # a row waits until its block-row's mask has arrived
            i = s.i0 + s.r
            if s.r < R and (i >= L or self.mask_valid[i // self.br] < t):
                self.r, self.vld = s.r + 1, True
            elif s.r == R and not s.vld:     # the last row's registers are written
                self.state = "UNION"
        elif s.state == "UNION":
            self.it_valid = False
            self.state = "IT_INIT"
        elif s.state == "IT_INIT":
            self.it_valid, self.it_left = s.n > 0, s.n
            self.slot, self.kl_full, self.keys_done, self.running = 0, False, False, False
            self.state = "TILES"
        elif s.state == "TILES":
            self._tiles(s, adv, tile_end)
        elif s.state == "DRAIN":
            if s.out == 0 and not tile_end:
                self.fifo.append(s.g)
                pushed = True
                self.g, self.i0 = s.g + 1, s.i0 + R
                self.state = "IDLE"
        self.out = s.out + (1 if tile_end else 0) - s_res
        # next cycle's advance: running then, and at most two beats in the three-entry skid
        # after this cycle's push, not counting this cycle's pop
        self.fire = self.running and len(s.skid) + adv <= 2
        self.fine_cr = s.fine_cr + m_done - pushed
        self.key_cr = s.key_cr + p_done - pushed

    def _tiles(self, s, adv: bool, tile_end: bool) -> None:
        C = self.C
        if not s.kl_full and not s.keys_done:
            if s.slot == 0 and not s.it_valid:
                self.keys_done = True
            elif s.slot < C:
                if s.it_valid:
                    self.it_left = s.it_left - 1
                    self.it_valid = self.it_left > 0
                self.kl_vld = True
                self.slot = s.slot + 1
            elif not s.kl_vld and not s.kd_vld:
                self.kl_full, self.slot = True, 0
        if adv:
            self.step_ = s.step_ + 1
            if tile_end:
                self.running = False
        if (not s.running or tile_end) and s.kl_full:
            self.kl_full, self.running, self.step_ = False, True, 0
        if not s.running and not s.kl_full and s.keys_done:
            self.state = "DRAIN"
