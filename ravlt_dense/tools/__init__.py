"""What the command-line tools (``tools/``) and demos (``demo/``) share; the model, its ops,
checkpoint loading, data transforms and deployment rewrites live beside this package.

  names.py       one way to name a model: config file, zoo name or ``mmdet::`` / ``mmseg::``
  cli.py         the options train/test share with mmdet's tools, ``--shape H W``
  launch.py      distributed runs without CUDA (torchrun, srun) through mmengine's runner
  precision.py   the zoo's AMP configs in fp32 where no accelerator is
  run_checks.py  a built runner's datasets checked against its files and model
  saving.py      checkpoints saved whole during training; what a resume would load, checked
  images.py      demo inputs: files and folders of images, decoded with clear errors
  inference.py   mmdet's / mmseg's inferencers with the release's weights (``ravlt_dense.apis``)
  analysis/      FLOPs, rank, receptive field, class activation maps, robustness, accuracy
  benchmark/     speed and memory, one case per process: the benchmark, the resolution sweep

Nothing here is imported by ``import ravlt_dense`` or by a config (but ``saving``, which a
dumped config imports for its file backend): each tool imports what it uses.
"""
