"""mmdet's and mmseg's inferencers for RAVLT models, by zoo name or config.

    from ravlt_dense.apis import RAVLTDetInferencer, RAVLTSegInferencer
    inferencer = RAVLTDetInferencer('mask-rcnn_ravlt-s_fpn_amp-1x_coco')  # config + weights
    inferencer = RAVLTSegInferencer('upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512',
                                    weights='mine.pth', device='cpu')
    result = inferencer('photo.jpg')

They are ``DetInferencer`` and ``MMSegInferencer`` with the weights loading of the demos
(:class:`ravlt_dense.inference.ReleaseWeightsMixin`): files, URLs and zoo names, ours or the
authors' mmdet 2.x / mmseg 0.x checkpoints, loaded strictly.
"""
from mmdet.apis import DetInferencer
from mmseg.apis import MMSegInferencer

from ravlt_dense.inference import ReleaseWeightsMixin, full_palette


class RAVLTDetInferencer(ReleaseWeightsMixin, DetInferencer):
    """mmdet's ``DetInferencer`` taking RAVLT's zoo names and the release's checkpoints."""


class RAVLTSegInferencer(ReleaseWeightsMixin, MMSegInferencer):
    """mmseg's ``MMSegInferencer`` taking RAVLT's zoo names and the release's checkpoints,
    its drawings labelled with the model's classes.

    ``MMSegInferencer`` labels its drawings with the classes passed to it (Cityscapes' by
    default) whatever the checkpoint says: here the model's own classes and palette are used.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        meta = self.model.dataset_meta
        classes = list(meta['classes'])
        self.visualizer.set_dataset_meta(classes=classes,
                                         palette=full_palette(classes, meta.get('palette')))


__all__ = ['RAVLTDetInferencer', 'RAVLTSegInferencer']
