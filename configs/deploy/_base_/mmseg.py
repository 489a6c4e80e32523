# with_argmax=False: the graph returns the logits (at the input's size); mmdeploy's End2EndModel
# and demo/onnx_demo.py take their argmax. tools/deployment/deploy.py checks both.
codebase_config = dict(type='mmseg', task='Segmentation', with_argmax=False)
