"""A hook for the runner's ``compile=True`` (torch.compile of the train step)."""
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class PlainParamGroupsHook(Hook):
    """Turns the optimizer's param groups into plain dicts before training, so that the runner's
    ``compile=True`` can trace the optimizer step inside ``train_step``.

    mmengine's optimizer constructor builds the groups through the registry, which makes them
    ``ConfigDict``s; torch 2.13's dynamo fails on an optimizer whose groups are a dict subclass
    (InternalTorchDynamoError: 'UserDefinedDictVariable' object has no attribute 'items').
    """
    priority = 'VERY_LOW'  # after the optimizer is built and a resumed state is loaded

    def before_train(self, runner) -> None:
        wrapper = runner.optim_wrapper
        wrappers = wrapper.values() if hasattr(wrapper, 'values') else [wrapper]
        for optim_wrapper in wrappers:
            groups = optim_wrapper.optimizer.param_groups
            groups[:] = [dict(group) for group in groups]
