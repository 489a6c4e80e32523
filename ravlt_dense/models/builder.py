"""Models of a config, built as mmdet's and mmseg's tools build them."""
import torch


def build_model(cfg) -> torch.nn.Module:
    """The model of a config, built in the config's scope (mmdet or mmseg).

    Args:
        cfg (Config): A config with ``model`` (and ``default_scope``, default mmdet).
    """
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return MODELS.build(cfg.model)
