"""cnnlab: convolutional neural networks made real, verifiable and fast."""

import os as _os

__version__ = "0.1.0"

# OpenMP threads that finish their share of an operation wait for the next one by
# spinning (libgomp's default: 300,000 spins, milliseconds) on a core another thread may
# need. On a shared machine that is ruinous: with other jobs running, a spinning thread
# takes the core from the thread it waits for, and each of a step's ~100 parallel regions
# can wait a scheduler slice. Measured on 2 cores shared with other test runs
# (benchmarks/README.md): fcn1d's training pass on JapaneseVowels 2.2-10.5 s spinning
# against 0.24-0.28 s waiting passively (load average 4-7); a Case 1 step 2.6-37 ms
# against 1.2-1.6 ms (load 2.4-3.1). Passive threads sleep until woken, which costs a few
# microseconds a region on an idle machine. libgomp reads this when torch loads, so it is
# set here, before any cnnlab module imports torch; a value the user set (OMP_WAIT_POLICY
# or GOMP_SPINCOUNT) is kept.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
