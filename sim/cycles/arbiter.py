"""Cycle model of the array and :class:`hw.stages.arbiter.ArrayArbiter`."""

from hw.config import HDPConfig
from hw.systolic import array_latency, result_fifo_depth

__all__ = ["ArrayModel"]


class ArrayModel:
    """The arbiter's grant, its two-entry register slice and the array's issue rules
    (:class:`hw.systolic.SystolicArray`): a tile's last beat at least ``2R - 1`` cycles
    after the previous one, a new tile only with credit for its ``R`` result rows; result
    row ``r`` of a tile leaves ``array_latency + 2r`` cycles after its last beat."""

    def __init__(self, cfg: HDPConfig):
        self.R = cfg.array_rows
        self.lat = array_latency(cfg)
        self.gap_min = 2 * self.R - 1
        self.owner = 0                  # 0 free, 1 S, 2 P
        self.in_tile = False
        self.gap = self.gap_min
        self.credit = result_fifo_depth(cfg)
        self.beats = 0                  # beats accepted (the top's array_cycles)
        self._slice: list[tuple[bool, int]] = []   # the arbiter's register slice: (last, kind)
        self._releases: dict[int, int] = {}
        self._res_last: dict[int, list[int]] = {}

    def arbitrate(self, s_valid: bool, s_last: bool, p_valid: bool, p_last: bool):
        """This cycle's grant into the register slice: ``(s_fire, p_fire, op_valid, op_last,
        grant_s)``; the slice takes a beat unless it holds two."""
        grant_p = self.owner == 2 or (self.owner == 0 and p_valid)
        grant_s = self.owner == 1 or (self.owner == 0 and not p_valid and s_valid)
        op_valid = (grant_s and s_valid) or (grant_p and p_valid)
        op_last = s_last if grant_s else p_last
        fire = op_valid and len(self._slice) < 2
        return fire and grant_s, fire and grant_p, op_valid, op_last, grant_s

    def results(self, t: int) -> tuple[int, int]:
        """Tiles whose last result row leaves at cycle ``t``: ``(score, P x V)``."""
        kinds = self._res_last.pop(t, ())
        s_res = sum(1 for k in kinds if k == 0)
        return s_res, len(kinds) - s_res

    def step(self, t: int, op_valid: bool, fire: bool, op_last: bool, grant_s: bool) -> None:
        if op_valid:            # an offered beat locks the grant
            self.owner = 0 if fire and op_last else (1 if grant_s else 2)
        # the array takes the slice's first beat
        gap_ok = self.gap >= self.gap_min
        a_fire = False
        if self._slice:
            last, kind = self._slice[0]
            a_fire = (self.in_tile or self.credit >= self.R) and (gap_ok or not last)
        if a_fire:
            self._slice.pop(0)
            self.beats += 1
            if not self.in_tile:
                self.credit -= self.R
            self.in_tile = not last
        if a_fire and last:
            self.gap = 1
            for r in range(self.R):
                k = t + self.lat + 2 * r
                self._releases[k] = self._releases.get(k, 0) + 1
            self._res_last.setdefault(t + self.lat + 2 * (self.R - 1), []).append(kind)
        elif not gap_ok:
            self.gap += 1
        self.credit += self._releases.pop(t, 0)
        if fire:
            self._slice.append((op_last, 0 if grant_s else 1))
