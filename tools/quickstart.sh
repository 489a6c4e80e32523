#!/usr/bin/env bash
# The main job (`make quickstart`): every RAVLT variant, then on the shipped synthetic datasets
# train, evaluate (before and after training) and run the demo, for detection and segmentation.
#   QUICK_MODELS="maskrcnn fpn" bash tools/quickstart.sh    # a subset
#   QUICK_MODELS="dino mask2former mask2former-panoptic mask2former-ade" bash tools/quickstart.sh
#                                                           # the query-based heads
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-${VENV:-.venv}/bin/python}  # make passes VENV
WORK=${WORK:-work_dirs/quickstart}
MODELS=${QUICK_MODELS:-maskrcnn retinanet fpn upernet}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::DeprecationWarning,ignore::FutureWarning}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "RAVLT variants: parameters and output shapes"
$PY tools/analysis/ravlt_variants.py --shape 223 301

step "Synthetic datasets: data/coco_shapes (COCO format), data/ade_shapes (ADE20K layout)"
$PY tools/data/make_coco_shapes.py --out data/coco_shapes
$PY tools/data/make_ade_shapes.py --out data/ade_shapes
case " $MODELS " in
  *" mask2former-panoptic "*) $PY tools/data/make_coco_panoptic_shapes.py --out data/coco_panoptic_shapes ;;
esac

for model in $MODELS; do
  case $model in
    maskrcnn) cfg=configs/quickstart/mask-rcnn_ravlt-t_fpn_1xb4-8e_coco-shapes.py ;;
    retinanet) cfg=configs/quickstart/retinanet_ravlt-t_fpn_1xb4-8e_coco-shapes.py ;;
    fpn) cfg=configs/quickstart/fpn_ravlt-t_1xb8-200it_ade-shapes-64x64.py ;;
    upernet) cfg=configs/quickstart/upernet_ravlt-t_1xb8-200it_ade-shapes-64x64.py ;;
    dino) cfg=configs/quickstart/dino-4scale_ravlt-t_1xb4-4e_coco-shapes.py ;;
    mask2former) cfg=configs/quickstart/mask2former_ravlt-t_1xb4-150it_coco-shapes.py ;;
    mask2former-panoptic) cfg=configs/quickstart/mask2former_ravlt-t_1xb4-150it_coco-panoptic-shapes.py ;;
    mask2former-ade) cfg=configs/quickstart/mask2former_ravlt-t_1xb8-120it_ade-shapes-64x64.py ;;
    *) echo "unknown model '$model' in QUICK_MODELS (maskrcnn retinanet fpn upernet dino" \
         "mask2former mask2former-panoptic mask2former-ade)" >&2; exit 2 ;;
  esac
  case $model in
    fpn|upernet|mask2former-ade) images=data/ade_shapes/images/validation; demo=demo/seg_demo.py ;;
    mask2former-panoptic) images=data/coco_panoptic_shapes/val; demo=demo/image_demo.py ;;
    *) images=data/coco_shapes/val; demo=demo/image_demo.py ;;
  esac
  out=$WORK/$model
  step "$model + RAVLT-T: evaluate the untrained model"
  $PY tools/misc/init_checkpoint.py "$cfg" "$out/untrained.pth"
  $PY tools/test.py "$cfg" "$out/untrained.pth" --work-dir "$out/untrained"
  step "$model + RAVLT-T: train ($cfg)"
  start=$(date +%s)
  $PY tools/train.py "$cfg" --work-dir "$out/train"
  echo "trained in $(( $(date +%s) - start )) s"
  ckpt=$(cat "$out/train/last_checkpoint")
  step "$model + RAVLT-T: evaluate the trained model"
  $PY tools/test.py "$cfg" "$ckpt" --work-dir "$out/trained"
  step "$model + RAVLT-T: demo on 4 validation images -> $out/demo"
  $PY "$demo" "$cfg" "$ckpt" $(ls "$images"/* | head -n 4) --out-dir "$out/demo"
done

step "Summary"
$PY tools/misc/quickstart_summary.py "$WORK"
