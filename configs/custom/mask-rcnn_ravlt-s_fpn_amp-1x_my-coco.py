# Mask R-CNN + RAVLT-S fine-tuned on a COCO-format data set of your own (README: "Train on your
# own data"). Set the first block to your data (or copy this file and edit the copy), then
#     python tools/train.py configs/custom/mask-rcnn_ravlt-s_fpn_amp-1x_my-coco.py
# Layout, COCO's annotation format (polygons or RLE; `classes` are the category names there):
#     data/my_coco/annotations/instances_train.json    data/my_coco/train/<file_name>
#     data/my_coco/annotations/instances_val.json      data/my_coco/val/<file_name>
# As it stands it trains on the generated shapes set: python tools/data/make_coco_shapes.py
# --out data/my_coco. Model and recipe: configs/mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py
# (12 epochs, AdamW, fp16 AMP on a GPU and fp32 without one); the backbone starts from the zoo's
# ImageNet-1k weights of RAVLT-S (ravlt-s_in1k, downloaded once).
_base_ = '../mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py'

# ---- your data ----
data_root = 'data/my_coco/'
# The category names of the annotation files, in the order of the model's labels; images
# without any of them are skipped in training.
classes = ('circle', 'square', 'triangle', 'star')
palette = [(220, 20, 60), (0, 160, 80), (250, 170, 30), (70, 130, 180)]  # demo colours
# --------------------

metainfo = dict(classes=classes, palette=palette)
num_classes = len(classes)
model = dict(
    roi_head=dict(
        bbox_head=dict(num_classes=num_classes), mask_head=dict(num_classes=num_classes)))
train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/')))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
# To start the whole detector from the zoo's COCO model instead (its box and mask classifiers
# have 80 classes: mmengine reports them as size mismatches and leaves them initialised):
# load_from = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/maskrcnn_s_1x_12_epoch.pth'
