"""Compile every fused RALA kernel (ravlt_dense/ops/rala_kernels.py) for NVIDIA targets without a
GPU, and print each one's resource use as ptxas reports it.

    python tools/analysis/compile_kernels.py [--archs 80 90] [--head-dims 32 64 96]
        [--dtypes float32 float16] [--kernels grad_sums ...]

Triton lowers each kernel to PTX and runs its bundled ptxas for the target, so a kernel that
compiles here compiles on that GPU with this triton. Per kernel, head dim and input dtype (the
constants the launcher picks: block sizes, warps, stages, dot precision): registers per thread,
spills, and shared memory per program (the launch fails where it exceeds the GPU's). Integers
are compiled unspecialised (a GPU run also specialises strides equal to 1 and multiples of 16,
which changes the code a little but not the tiles). Seconds per kernel on a CPU; TRITON_INTERPRET
must not be set. Exits non-zero if any variant fails to compile.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

if os.environ.get('TRITON_INTERPRET') == '1':
    sys.exit('compile_kernels.py: unset TRITON_INTERPRET (the interpreter compiles nothing)')

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from ravlt_dense.ops import rala_kernels as K  # noqa: E402

KERNELS = {  # name -> (kernel, block size used, takes PRECISION, num_stages)
    'query_sum': (K._query_sum_kernel, 'block_n', False, 1),
    'key_value': (K._key_value_kernel, 'block_n', True, 'stages'),
    'output': (K._output_kernel, 'block_n', True, 1),
    'output+epilogue': (K._output_kernel, 'block_n', True, 1),
    'grad_sums': (K._grad_sums_kernel, 'grad_block_n', True, 1),
    'grad_key_value': (K._grad_key_value_kernel, 'grad_block_n', True, 1),
    'grad_query': (K._grad_query_kernel, 'grad_block_n', True, 1),
}
# pointers to the (B, heads, N, d) maps take the input dtype; the others are fp32 statistics
MAP_POINTERS = {'q_ptr', 'k_ptr', 'v_ptr', 'out_ptr', 'lepe_ptr', 'gate_ptr', 'dout_ptr',
                'dq_ptr', 'dk_ptr', 'dv_ptr'}
FLOATS = {'scale'}


def signature(kernel, map_type: str, constexprs: dict) -> dict:
    sig = {}
    for name in kernel.arg_names:
        if name in constexprs:
            sig[name] = 'constexpr'
        elif name.endswith('_ptr'):
            sig[name] = f'*{map_type}' if name in MAP_POINTERS else '*fp32'
        else:
            sig[name] = 'fp32' if name in FLOATS else 'i32'
    return sig


def resources(cubin: bytes) -> dict:
    """Registers / stack / shared memory of the kernel from cuobjdump's resource report."""
    tool = Path(triton.__file__).parent / 'backends' / 'nvidia' / 'bin' / 'cuobjdump'
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(cubin)
        f.flush()
        report = subprocess.run([str(tool), '--dump-resource-usage', f.name],
                                capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in re.findall(r'(REG|STACK|SHARED|LOCAL):(\d+)', report)}


def compile_one(name: str, arch: int, head_dim: int, dtype: torch.dtype):
    kernel, block, dots, stages = KERNELS[name]
    q = torch.empty(1, 1, 1, head_dim, dtype=dtype)
    cfg = K._config(q)
    stages = (2 if arch >= 80 else 1) if stages == 'stages' else stages
    meta = K._constexprs(cfg, getattr(cfg, block))
    num_warps = meta.pop('num_warps')
    constexprs = dict(meta)
    if dots:
        constexprs['PRECISION'] = cfg.precision
    if kernel is K._output_kernel:
        constexprs['GATED'] = name == 'output+epilogue'
    map_type = {torch.float32: 'fp32', torch.float16: 'fp16', torch.bfloat16: 'bf16'}[dtype]
    src = ASTSource(fn=kernel, signature=signature(kernel, map_type, constexprs),
                    constexprs=constexprs)
    compiled = triton.compile(src, target=GPUTarget('cuda', arch, 32),
                              options=dict(num_warps=num_warps, num_stages=stages))
    use = resources(compiled.asm['cubin'])
    return dict(kernel=name, arch=f'sm_{arch}', head_dim=head_dim, dtype=map_type,
                block=f'{constexprs["BLOCK_N"]}x{constexprs["BLOCK_D"]}', warps=num_warps,
                stages=stages, regs=use.get('REG'), spill_bytes=use.get('LOCAL', 0),
                shared_kb=round(compiled.metadata.shared / 1024, 1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--archs', type=int, nargs='+', default=[80, 90])
    parser.add_argument('--head-dims', type=int, nargs='+', default=[32, 64, 96])
    parser.add_argument('--dtypes', nargs='+', default=['float32', 'float16'])
    parser.add_argument('--kernels', nargs='+', default=list(KERNELS), choices=list(KERNELS))
    args = parser.parse_args()
    columns = ['kernel', 'arch', 'head_dim', 'dtype', 'block', 'warps', 'stages', 'regs',
               'spill_bytes', 'shared_kb']
    print('| ' + ' | '.join(columns) + ' |')
    print('|' + '---|' * len(columns))
    failed = 0
    for arch in args.archs:
        for head_dim in args.head_dims:
            for dtype in args.dtypes:
                for name in args.kernels:
                    try:
                        row = compile_one(name, arch, head_dim, getattr(torch, dtype))
                    except Exception as exc:  # report every failure, then exit non-zero
                        failed += 1
                        print(f'| {name} | sm_{arch} | {head_dim} | {dtype} | FAILED: '
                              f'{type(exc).__name__}: {str(exc).splitlines()[0][:120]} |')
                        continue
                    print('| ' + ' | '.join(str(row[c]) for c in columns) + ' |', flush=True)
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
