"""Speed, memory and FLOPs of RAVLT against Swin, ResNet-50, PVTv2 and ConvNeXt, on CPU or CUDA:
the command line of ``ravlt_dense.tools.benchmark`` (``--help``; ``--preset NAME`` answers one
question, e.g. ``latency-cpu``: does RAVLT run fast on my CPU?).

    python tools/analysis/benchmark.py [--preset NAME] [--level backbone|model] [--models ...]
        [--shape H W ...] [--device cpu|cuda] ... [--work-dir work_dirs/benchmark]
"""
from ravlt_dense.tools.benchmark.run import main

if __name__ == '__main__':
    main()
