"""ravlt_dense.tools.names: a model named by a config file, a zoo name or an installed
package's config, read the same way by every tool and demo, with errors that say what is wrong."""
from pathlib import Path

import pytest

from ravlt_dense import zoo
from ravlt_dense.tools.cli import model_or_exit
from ravlt_dense.tools.inference import resolve_demo_model
from ravlt_dense.tools.names import resolve_model

from conftest import REPO

SWIN_M2F = 'mask2former/mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco.py'
MRCNN = 'mask-rcnn_ravlt-s_fpn_amp-1x_coco'
MRCNN_FILE = f'configs/mask_rcnn/{MRCNN}.py'


def test_a_config_file_is_itself_with_the_weights_given():
    named = resolve_model(MRCNN_FILE)
    assert named.config == MRCNN_FILE and named.weights is None
    assert named.zoo_name == MRCNN and not named.from_zoo
    assert resolve_model(MRCNN_FILE, 'mine.pth').checkpoint() == 'mine.pth'
    with pytest.raises(ValueError, match=f'{MRCNN_FILE} is a config: give its checkpoint'):
        named.checkpoint()
    outside = resolve_model(str(REPO / 'configs/quickstart'
                                / 'fpn_ravlt-t_1xb8-200it_ade-shapes-64x64.py'))
    assert outside.zoo_name is None
    with pytest.raises(FileNotFoundError, match='config not found: nope.py'):
        resolve_model('nope.py')
    # a zoo config under the path it had before: the renamed file
    old = resolve_model('configs/retinanet_ravlt_s_coco.py')
    assert old.config == zoo.config_path('retinanet_ravlt-s_fpn_amp-1x_coco')
    assert old.zoo_name == 'retinanet_ravlt-s_fpn_amp-1x_coco' and not old.from_zoo


def test_a_zoo_name_brings_its_config_and_weights():
    named = resolve_model(MRCNN)
    assert named.from_zoo and named.config == zoo.config_path(MRCNN) and named.zoo_name == MRCNN
    assert named.weights == zoo.weights_url(MRCNN) == named.checkpoint()
    assert resolve_model(MRCNN, 'mine.pth').weights == 'mine.pth'
    # a config of the zoo that no one has released weights for
    name = next(n for n in zoo.config_names() if not zoo.has_weights(n))
    bare = resolve_model(name)
    assert Path(bare.config).is_file() and bare.weights is None
    with pytest.raises(ValueError, match='config without trained weights'):
        bare.checkpoint()
    with pytest.raises(ValueError, match=r"Unknown model 'maskrcnn_ravlt_x_coco': the model zoo "
                       r'\(.*\) has ravlt-t_in1k, '):
        resolve_model('maskrcnn_ravlt_x_coco')


def test_a_package_name_is_the_package_s_own_config():
    swin = resolve_model(f'mmdet::{SWIN_M2F}')
    assert Path(swin.config).is_file() and swin.zoo_name is None and swin.weights is None
    assert Path(swin.config).parts[-5:] == ('mmdet', '.mim', 'configs', *SWIN_M2F.split('/'))
    with pytest.raises(FileNotFoundError, match="mmseg has no config 'mask2former/nope.py'"):
        resolve_model('mmseg::mask2former/nope.py')
    with pytest.raises(ValueError, match="no installed package 'mmnothing'"):
        resolve_model('mmnothing::a/b.py')


def test_command_lines_exit_with_the_reason():
    assert model_or_exit(MRCNN).config == zoo.config_path(MRCNN)
    with pytest.raises(SystemExit, match='model config not found: nope.py'):
        model_or_exit('nope.py', what='model config')
    with pytest.raises(SystemExit, match="Unknown model 'nope'"):
        model_or_exit('nope')
    with pytest.raises(SystemExit, match="no installed package 'mmnothing'"):
        model_or_exit('mmnothing::a/b.py')


def test_demo_arguments_a_config_takes_its_checkpoint_a_zoo_name_its_weights():
    config = MRCNN_FILE
    named, inputs = resolve_demo_model(config, ['ckpt.pth', 'a.jpg', 'b.jpg'])
    assert (named.config, named.weights, inputs) == (config, 'ckpt.pth', ['a.jpg', 'b.jpg'])
    named, inputs = resolve_demo_model(config, ['a.jpg'], weights='w.pth')
    assert (named.weights, inputs) == ('w.pth', ['a.jpg'])
    named, inputs = resolve_demo_model(MRCNN, ['a.jpg'])
    assert named.weights == zoo.weights_url(MRCNN) and inputs == ['a.jpg']
    with pytest.raises(ValueError, match=f'give the checkpoint of {config} before the images'):
        resolve_demo_model(config, [])
    with pytest.raises(ValueError, match='no input images given'):
        resolve_demo_model(MRCNN, [])
    assert resolve_demo_model(MRCNN, [], need_inputs=False)[1] == []
    with pytest.raises(ValueError, match="Unknown model 'photo.jpg'"):
        resolve_demo_model('photo.jpg', ['x.jpg'])
    with pytest.raises(FileNotFoundError, match='config not found: nope.py'):
        resolve_demo_model('nope.py', ['ckpt.pth', 'x.jpg'])
