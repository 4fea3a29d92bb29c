"""A small stage/progress display for long commands: one line per stage with its time, and an
in-place counter on a terminal (plain lines when output is not a terminal, e.g. in CI logs)."""

import sys
import time

__all__ = ["Stages"]


class Stages:
    def __init__(self, total: int, stream=None):
        self.total = total
        self.index = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.timings: dict[str, float] = {}
        self._t0 = 0.0
        self._name = ""
        self._last_tick = 0.0
        self._last_done = -1

    def start(self, name: str, what: str) -> None:
        self.index += 1
        self._name, self._t0 = name, time.monotonic()
        print(f"[{self.index}/{self.total}] {what} ...", file=self.stream, flush=True)

    def tick(self, done: int, total: int, note: str = "") -> None:
        """Progress inside the current stage (rate-limited to a few updates a second).  A note
        that comes with no change in ``done`` is news about a long job still running (such as
        a place and route's, which its sender sends about once a minute): it is always shown,
        also when the output is not a terminal."""
        now = time.monotonic()
        news = bool(note) and done == self._last_done
        if done < total and now - self._last_tick < 0.25 and not news:
            return
        self._last_tick, self._last_done = now, done
        msg = f"      {self._name}: {done}/{total} {note}".rstrip()
        if self.tty:
            end = "\n" if done >= total else "\r"
            print(msg.ljust(70), end=end, file=self.stream, flush=True)
        elif news or done >= total or done % max(1, total // 10) == 0:
            print(msg, file=self.stream, flush=True)

    def done(self, summary: str = "") -> None:
        dt = time.monotonic() - self._t0
        self.timings[self._name] = round(dt, 2)
        print(f"      done in {dt:.1f} s{': ' + summary if summary else ''}", file=self.stream, flush=True)

    def skip(self, name: str, why: str) -> None:
        self.index += 1
        print(f"[{self.index}/{self.total}] {name}: skipped ({why})", file=self.stream, flush=True)
