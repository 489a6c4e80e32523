# The optimizer's parameter-wise rules of the query-based heads (DINO, Mask2Former) for a RAVLT
# backbone: the backbone learns at 0.1x the head's lr, as in mmdet's and mmseg's Swin configs of
# these heads, and its norms, layer scales and position convolutions are not decayed, as
# mmdet's and mmseg's Mask2Former Swin configs exempt Swin's norms and position tables (mmdet's
# Swin DINO config decays every backbone parameter; RAVLT's DINO takes the Mask2Former rules, so
# that both heads train the backbone alike).
# In mmengine a parameter takes the rules of the longest custom key in its name and then ignores
# norm_decay_mult, so 'backbone' alone would decay the backbone's norms again: every such group
# is listed by name, per variant (`ravlt_custom_keys.s` for RAVLT-S: its depths 3, 5, 9, 3), so
# that every key names parameters of the model (tests/test_configs check it). RAVLT's groups:
#   norms          patch_embed.proj.{1,4,7,10} (the stem's BNs), blocks' norm1/norm2,
#                  downsample.norm, extra_norms (the four output LayerNorms)
#   layer scales   blocks' gamma_1 / gamma_2
#   position       blocks' pos (the 3x3 depth-wise conditional position encoding) and
#                  attn.lepe (RALA's 5x5 depth-wise local position enhancement); RoPE's
#                  frequencies are a buffer, never optimised
ravlt_backbone_multi = dict(lr_mult=0.1, decay_mult=1.0)
ravlt_backbone_no_decay = dict(lr_mult=0.1, decay_mult=0.0)
# the depths of RAVLT's variants (ravlt_dense/models/backbones/ravlt.py)
ravlt_depths = dict(t=(2, 2, 6, 2), s=(3, 5, 9, 3), b=(4, 6, 12, 6), l=(4, 7, 19, 8))
ravlt_custom_keys = {
    arch: {
        'backbone': ravlt_backbone_multi,
        'backbone.extra_norms': ravlt_backbone_no_decay,
        **{f'backbone.patch_embed.proj.{i}.': ravlt_backbone_no_decay for i in (1, 4, 7, 10)},
        **{f'backbone.layers.{i}.downsample.norm': ravlt_backbone_no_decay for i in range(3)},
        **{
            f'backbone.layers.{i}.blocks.{j}.{part}': ravlt_backbone_no_decay
            for i, depth in enumerate(depths) for j in range(depth)
            for part in ('norm1.', 'norm2.', 'gamma_', 'pos.', 'attn.lepe.')
        },
    }
    for arch, depths in ravlt_depths.items()
}
