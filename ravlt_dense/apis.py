"""mmdet's and mmseg's inferencers for RAVLT models, by zoo name or config.

    from ravlt_dense.apis import RAVLTDetInferencer, RAVLTSegInferencer
    inferencer = RAVLTDetInferencer('mask-rcnn_ravlt-s_fpn_amp-1x_coco')  # config + weights
    inferencer = RAVLTSegInferencer('upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512',
                                    weights='mine.pth', device='cpu')
    result = inferencer('photo.jpg')

They are ``DetInferencer`` and ``MMSegInferencer`` loading weights as the tools do: files, URLs
and zoo names, ours or the authors' mmdet 2.x / mmseg 0.x checkpoints, loaded strictly. (This
module is where users import them from, as from ``mmdet.apis``; they are defined in
``ravlt_dense.tools.inference``.)
"""
from ravlt_dense.tools.inference import RAVLTDetInferencer, RAVLTSegInferencer

__all__ = ['RAVLTDetInferencer', 'RAVLTSegInferencer']
