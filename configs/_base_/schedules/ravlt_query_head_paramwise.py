# The optimizer's parameter-wise rules of the query-based heads (DINO, Mask2Former) for a RAVLT
# backbone, as mmdet's and mmseg's Swin configs of these heads set them: the backbone learns at
# 0.1x the head's lr, and its norms, layer scales and position terms are not decayed.
# In mmengine a parameter takes the rules of the longest custom key in its name and then ignores
# norm_decay_mult, so 'backbone' alone would decay the backbone's norms again: every such group
# is listed by name. The keys cover the deepest variant (RAVLT-L: 4, 7, 19, 8 blocks), hence
# every variant. RAVLT's groups:
#   norms          patch_embed.proj.{1,4,7,10} (the stem's BNs), blocks' norm1/norm2,
#                  downsample.norm, extra_norms (the four output LayerNorms)
#   layer scales   blocks' gamma_1 / gamma_2
#   position       blocks' pos (the 3x3 depth-wise conditional position encoding); RoPE's
#                  frequencies are a buffer, never optimised
ravlt_backbone_multi = dict(lr_mult=0.1, decay_mult=1.0)
ravlt_backbone_no_decay = dict(lr_mult=0.1, decay_mult=0.0)
ravlt_custom_keys = {
    'backbone': ravlt_backbone_multi,
    'backbone.extra_norms': ravlt_backbone_no_decay
}
ravlt_custom_keys.update({f'backbone.patch_embed.proj.{i}.': ravlt_backbone_no_decay
                          for i in (1, 4, 7, 10)})
ravlt_custom_keys.update({f'backbone.layers.{i}.downsample.norm': ravlt_backbone_no_decay
                          for i in range(3)})
ravlt_custom_keys.update({
    f'backbone.layers.{i}.blocks.{j}.{part}': ravlt_backbone_no_decay
    for i, depth in enumerate((4, 7, 19, 8)) for j in range(depth)
    for part in ('norm1.', 'norm2.', 'gamma_', 'pos.')
})
