"""How a long command shows its progress: one rule for every command.

The rule is :func:`cnnlab.cli.datasets.show_progress`, as for training and data decoding: on
a terminal, tqdm bars for the long loops; in a log or a pipe, plain lines instead (as Keras
prints in a non-interactive run), a line every tenth of a loop at most. Either way each
finished step gets one line with its seconds. Library code only takes hooks (a ``log`` for
lines, a ``tick(done, total)`` for loops, a ``step(name)`` context); this module decides
how they look.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cnnlab.cli.datasets import show_progress

Tick = Callable[[int, int], None]

LINES_PER_LOOP = 10  # a log gets at most this many lines for one loop, and the last


def seconds(s: float) -> str:
    """A step's duration: "0.4 s", "41 s", "4 min 17 s"."""
    if s < 10:
        return f"{s:.1f} s"
    if s < 90:
        return f"{round(s)} s"
    m, r = divmod(round(s), 60)
    return f"{m} min {r} s"


@dataclass
class Progress:
    """Where a command's progress goes: ``bars`` on a terminal, else lines to ``say``."""

    bars: bool
    say: Callable[[str], None] = field(default=lambda line: print(line, flush=True))

    @classmethod
    def of(cls, args: argparse.Namespace) -> Progress:
        return cls(bars=show_progress(args))

    def tick(self, what: str, unit: str = "") -> Tick | None:
        """A loop's ``tick(done, total)`` hook: None on a terminal (the bar shows it), else
        a line each time another tenth is done, with the seconds so far."""
        if self.bars:
            return None
        start, shown = time.perf_counter(), [-1]

        def tick(done: int, total: int) -> None:
            tenth = LINES_PER_LOOP * done // max(total, 1)
            if tenth <= shown[0] or tenth == 0:  # within the tenth already shown
                return
            shown[0] = tenth
            pct = 100 * done // max(total, 1)
            took = seconds(time.perf_counter() - start)
            self.say(f"{what}: {done:,} of {total:,}{unit} ({pct}%), {took}")

        return tick

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """One line when the step ``what`` is done, with its seconds."""
        start = time.perf_counter()
        yield
        self.say(f"{what}: done in {seconds(time.perf_counter() - start)}")

    @contextmanager
    def items(self, what: str, total: int) -> Iterator[Callable[[str], None]]:
        """``done(name)`` for each of ``total`` items: a bar on a terminal, else one line
        per item with its seconds ("[3/19] figure padding_valid: 0.4 s")."""
        if self.bars:
            from tqdm.auto import tqdm

            with tqdm(total=total, desc=what, unit="") as bar:

                def step(name: str) -> None:
                    bar.set_postfix_str(name)
                    bar.update(1)

                yield step
            return
        count, last = [0], [time.perf_counter()]

        def done(name: str) -> None:
            now = time.perf_counter()
            count[0] += 1
            self.say(f"[{count[0]}/{total}] {what} {name}: {seconds(now - last[0])}")
            last[0] = now

        yield done
