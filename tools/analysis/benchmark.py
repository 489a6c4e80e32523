"""Speed, memory and FLOPs of RAVLT against Swin, ResNet-50, PVTv2 and ConvNeXt, on CPU or CUDA:
the command line of ``ravlt_dense.tools.benchmark`` (``--help``).

    python tools/analysis/benchmark.py [--preset cuda-detection] [--level backbone|model]
        [--models ...] [--shape H W ...] [--device cpu|cuda] ... [--work-dir work_dirs/benchmark]
"""
from ravlt_dense.tools.benchmark.run import main

if __name__ == '__main__':
    main()
