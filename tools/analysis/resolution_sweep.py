"""How latency and peak memory grow with the input size, against time and memory budgets: the
command line of ``ravlt_dense.tools.benchmark.sweep`` (``--help``).

    python tools/analysis/resolution_sweep.py [--level backbone|model] [--models ravlt_s ...]
        [--sizes 224 512 ... 4096] [--max-latency 120] [--max-memory-gb 8] ...
"""
import signal
import sys

from ravlt_dense.tools.benchmark.sweep import main

if __name__ == '__main__':
    # `kill PID` ends the sweep as Ctrl-C does: the case running stops with it, the CSV of the
    # cases before stays
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    main()
