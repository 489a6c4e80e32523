"""Build every RAVLT variant and print its parameters and multi-scale output shapes.

    python tools/analysis/ravlt_variants.py [--shape 224 224]
"""
import argparse

import torch

from ravlt_dense import zoo
from ravlt_dense.models.backbones.ravlt import RAVLT
from ravlt_dense.tools.cli import add_shape_argument, parsed_shape


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_shape_argument(parser, default=(224, 224))
    args = parser.parse_args(argv)
    shape = parsed_shape(parser, args.shape)
    print(f'| variant | params | spec | attention per stage | outputs for 1x3x{shape[0]}x'
          f'{shape[1]} |')
    print('|---|---|---|---|---|')
    rows = []
    for arch in zoo.variants():
        expected = zoo.backbone_params(arch)
        model = RAVLT(arch).eval()
        params = sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            outs = model(torch.randn(1, 3, *shape))
        shapes = ', '.join('x'.join(map(str, o.shape[1:])) for o in outs)
        check = 'ok' if params == expected else f'expected {expected:,}'
        print(f'| RAVLT-{arch.upper()} | {params:,} | {check} | {"/".join(model.attn_types)} '
              f'| {shapes} |', flush=True)
        rows.append((arch, params, [tuple(o.shape) for o in outs]))
    return rows


if __name__ == '__main__':
    main()
