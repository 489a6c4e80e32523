"""Speed and memory of RAVLT against other backbones and whole models, measured one case per
fresh process: the code behind tools/analysis/benchmark.py and resolution_sweep.py, whose
clocks and models tools/analysis/profile_backbone.py, accuracy_cost.py and erf.py use too.

* ``models``: what is measured (backbones, whole detectors / segmentors, ``module:factory``)
  and how each is built;
* ``timing``: the clocks and gauges (device waits, peak memory, wall times timed in turn);
* ``case``: one case measured in its own process (``python -m ravlt_dense.tools.benchmark.case
  SPEC_JSON``), with its time and memory limits;
* ``report``: CSV in and out, the tables, the ratios to Swin-T, the log-log fits and plots;
* ``presets``: named runs, each answering one question a user asks;
* ``run``: the benchmark's command line (cases planned, run, reported);
* ``sweep``: the resolution sweep's command line (growth with the input size, budgets).

Each module imports only what it uses; nothing here is imported by ``import ravlt_dense``.
"""
