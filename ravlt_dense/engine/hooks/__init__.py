from .plain_param_groups_hook import PlainParamGroupsHook

__all__ = ['PlainParamGroupsHook']
