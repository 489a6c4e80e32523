"""Save the weights of a config's model right after initialisation (no training).

    python tools/misc/init_checkpoint.py CONFIG OUT.pth [--seed 0]

The untrained baseline of the quick start: ``tools/test.py CONFIG OUT.pth`` evaluates it.
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.runner import set_random_seed

import ravlt_dense  # noqa: F401  registers RAVLT
from ravlt_dense.models import build_model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('out')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    set_random_seed(args.seed)
    model = build_model(Config.fromfile(args.config))
    model.init_weights()
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    torch.save({'state_dict': model.state_dict(), 'meta': {'init_only': True, 'seed': args.seed}},
               args.out)
    print(f'Wrote the initial weights of {args.config} (seed {args.seed}) to {args.out}')


if __name__ == '__main__':
    main()
