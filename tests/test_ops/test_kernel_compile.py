"""Every kernel compiles for a real GPU target (sm_90) without one: triton's code generator
and ptxas check what Triton's interpreter does not (types, layouts, loop-carried values,
resources)."""
import pytest

from conftest import run_tool

pytest.importorskip('triton')


KERNELS = ['query_sum', 'key_value', 'output', 'output+epilogue', 'grad_sums', 'grad_key_value',
           'grad_query']


def test_kernels_compile_for_hopper_without_spilling():
    proc = run_tool(['tools/analysis/compile_kernels.py', '--archs', '90', '--head-dims', '32',
                     '--dtypes', 'float16', '--kernels', *KERNELS], timeout=600)
    rows = [line.strip('|').split('|') for line in proc.stdout.splitlines()[2:]]
    assert [r[0].strip() for r in rows] == KERNELS
    for row in rows:
        regs, spill, shared = (float(c) for c in row[7:10])
        assert 0 < regs <= 255 and spill == 0 and 0 < shared < 99, row
