"""ravlt_dense.engine.hooks: the hook tools/train.py adds for ``compile=True``, built by name
from mmengine's HOOKS (as ``custom_hooks`` of a config builds it)."""
from types import SimpleNamespace

import torch
from mmengine.config import ConfigDict
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import HOOKS

import ravlt_dense.engine  # noqa: F401  registers the hook


def test_param_groups_become_plain_dicts_before_training():
    hook = HOOKS.build(dict(type='PlainParamGroupsHook'))
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    optimizer = torch.optim.SGD([ConfigDict(params=[params[0]], lr=0.1),
                                 ConfigDict(params=[params[1]], lr=0.2)], lr=0.1)
    optimizer.param_groups[:] = [ConfigDict(g) for g in optimizer.param_groups]  # as mmengine's
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    other.param_groups[:] = [ConfigDict(g) for g in other.param_groups]
    for wrapper in (OptimWrapper(optimizer),
                    OptimWrapperDict(a=OptimWrapper(other))):  # one wrapper, or one per module
        hook.before_train(SimpleNamespace(optim_wrapper=wrapper))
    groups = optimizer.param_groups + other.param_groups
    assert [type(g) for g in groups] == [dict, dict, dict]
    assert [g['lr'] for g in groups] == [0.1, 0.2, 0.3]
    assert groups[0]['params'][0] is params[0]
