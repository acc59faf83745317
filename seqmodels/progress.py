"""Progress of long work as plain lines, for consoles where no progress bar can be drawn.

On a terminal Ray Data draws its own bars; under DVC, in CI or into a log file a bar is
either off or a stream of control characters, so a long run would otherwise be silent until
it ends. `ProgressLine` prints at most one line every few seconds:

    infer: 120,000/1,000,000 rows (12%), 40,000 rows/s, ETA 22 s

`RowFiles` is how writers in other processes tell the printing process how far they are.
Nothing here imports Ray.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

DEFAULT_EVERY_S = 10.0


class ProgressLine:
    """Prints `label: done/total rows (pct), rate rows/s, ETA t` to `stream` when `update`
    is called, at most once every `every_s` seconds and never before `every_s` have passed:
    a run shorter than that prints nothing. No line while nothing is done yet (a pool still
    starting says nothing useful). Without a known `total` the line has the count and the
    rate only.

    The rate counts from the first update that saw rows done, once that is at least
    `every_s` old: start-up (Ray, actors, model loading) is not the work still to do, and
    counted in, it made the first ETAs several times too long. Until then it is the rate
    since the line was created.
    """

    def __init__(self, label: str, total: int | None, every_s: float = DEFAULT_EVERY_S,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if every_s <= 0:
            raise ValueError(f"every_s must be > 0, got {every_s}")
        self.label = label
        self.total = total if total is None or total > 0 else None
        self.every_s = every_s
        self.stream = stream  # None: sys.stderr when printing (pytest's capture swaps it)
        self.clock = clock
        self.started = clock()
        self.last_printed = self.started
        self.first_done: tuple[float, int] | None = None  # (time, rows) of the first rows seen

    def update(self, done: int) -> str | None:
        """Print the line for `done` rows if it is time; returns what was printed."""
        now = self.clock()
        if done > 0 and self.first_done is None:
            self.first_done = (now, done)
        if done <= 0 or now - self.last_printed < self.every_s:
            return None
        self.last_printed = now
        line = self.format(done, self.rate(done, now))
        print(line, file=self.stream or sys.stderr, flush=True)
        return line

    def rate(self, done: int, now: float) -> float:
        """Rows per second at `now` (see the class)."""
        if self.first_done is not None and now - self.first_done[0] >= self.every_s:
            since, rows = self.first_done
            return (done - rows) / (now - since)
        elapsed = now - self.started
        return done / elapsed if elapsed > 0 else 0.0

    def format(self, done: int, rate: float) -> str:
        """The line for `done` rows at `rate` rows per second."""
        if self.total is None:
            return f"{self.label}: {done:,} rows, {rate:,.0f} rows/s"
        shown = min(done, self.total)
        percent = 100 * shown // self.total
        text = f"{self.label}: {shown:,}/{self.total:,} rows ({percent}%), {rate:,.0f} rows/s"
        if rate > 0 and shown < self.total:
            text += f", ETA {duration((self.total - shown) / rate)}"
        return text


def duration(seconds: float) -> str:
    """`22 s`, `3 min 05 s`, `2 h 07 min`: as precise as a person reads an ETA."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class RowFiles:
    """Rows written so far, counted in one small file per writer under `directory`.

    A writer (one write task) rewrites its own file with its running count after each
    block; the reader sums the files. Files, not a Ray actor: an actor is a worker process
    of its own (a second or more to start on a small machine, for every run), while a write
    task already runs where the output folder is, on the reader's node. Each file is
    replaced whole (os.replace), so the reader sees the old count or the new one; a writer
    that is retried starts its file again from 0 rather than counting its rows twice. A
    count that cannot be written is skipped: progress never fails the work it reports on.
    """

    SUFFIX = ".rows"

    def __init__(self, directory: str | Path) -> None:
        self.directory = str(directory)

    def writer(self, name: str) -> Callable[[int], None]:
        """The callback for writer `name`: call it with each written block's row count."""
        path = os.path.join(self.directory, name + self.SUFFIX)
        done = 0

        def written(rows: int) -> None:
            nonlocal done
            done += rows
            partial = f"{path}.tmp"
            try:
                with open(partial, "w") as file:
                    file.write(str(done))
                os.replace(partial, path)
            except OSError:  # e.g. the folder is gone because the run ended
                pass

        return written

    def total(self) -> int:
        """Rows written so far by every writer."""
        rows = 0
        for path in Path(self.directory).glob(f"*{self.SUFFIX}"):
            try:
                rows += int(path.read_text())
            except (OSError, ValueError):  # removed since the listing (the run is ending)
                continue
        return rows
