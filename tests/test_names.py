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


def test_a_config_file_is_itself_with_the_weights_given():
    named = resolve_model('configs/maskrcnn_ravlt_s_coco.py')
    assert named.config == 'configs/maskrcnn_ravlt_s_coco.py' and named.weights is None
    assert named.zoo_name == 'maskrcnn_ravlt_s_coco' and not named.from_zoo
    assert resolve_model('configs/maskrcnn_ravlt_s_coco.py', 'mine.pth').checkpoint() == 'mine.pth'
    with pytest.raises(ValueError, match='configs/maskrcnn_ravlt_s_coco.py is a config: give its '
                       'checkpoint'):
        named.checkpoint()
    outside = resolve_model(str(REPO / 'configs/quickstart/fpn_ravlt_t_shapes.py'))
    assert outside.zoo_name is None
    with pytest.raises(FileNotFoundError, match='config not found: nope.py'):
        resolve_model('nope.py')


def test_a_zoo_name_brings_its_config_and_weights():
    named = resolve_model('maskrcnn_ravlt_s_coco')
    assert named.from_zoo and named.config == zoo.config_path('maskrcnn_ravlt_s_coco')
    assert named.weights == zoo.weights_url('maskrcnn_ravlt_s_coco') == named.checkpoint()
    assert resolve_model('maskrcnn_ravlt_s_coco', 'mine.pth').weights == 'mine.pth'
    # a config of the zoo that no one has released weights for
    name = next(n for n in zoo.config_names() if not zoo.has_weights(n))
    bare = resolve_model(name)
    assert Path(bare.config).is_file() and bare.weights is None
    with pytest.raises(ValueError, match='config without trained weights'):
        bare.checkpoint()
    with pytest.raises(ValueError, match=r"Unknown model 'maskrcnn_ravlt_x_coco': the model zoo "
                       r'\(.*\) has ravlt_t_in1k, '):
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
    assert model_or_exit('maskrcnn_ravlt_s_coco').config == zoo.config_path(
        'maskrcnn_ravlt_s_coco')
    with pytest.raises(SystemExit, match='model config not found: nope.py'):
        model_or_exit('nope.py', what='model config')
    with pytest.raises(SystemExit, match="Unknown model 'nope'"):
        model_or_exit('nope')
    with pytest.raises(SystemExit, match="no installed package 'mmnothing'"):
        model_or_exit('mmnothing::a/b.py')


def test_demo_arguments_a_config_takes_its_checkpoint_a_zoo_name_its_weights():
    config = 'configs/maskrcnn_ravlt_s_coco.py'
    named, inputs = resolve_demo_model(config, ['ckpt.pth', 'a.jpg', 'b.jpg'])
    assert (named.config, named.weights, inputs) == (config, 'ckpt.pth', ['a.jpg', 'b.jpg'])
    named, inputs = resolve_demo_model(config, ['a.jpg'], weights='w.pth')
    assert (named.weights, inputs) == ('w.pth', ['a.jpg'])
    named, inputs = resolve_demo_model('maskrcnn_ravlt_s_coco', ['a.jpg'])
    assert named.weights == zoo.weights_url('maskrcnn_ravlt_s_coco') and inputs == ['a.jpg']
    with pytest.raises(ValueError, match=f'give the checkpoint of {config} before the images'):
        resolve_demo_model(config, [])
    with pytest.raises(ValueError, match='no input images given'):
        resolve_demo_model('maskrcnn_ravlt_s_coco', [])
    assert resolve_demo_model('maskrcnn_ravlt_s_coco', [], need_inputs=False)[1] == []
    with pytest.raises(ValueError, match="Unknown model 'photo.jpg'"):
        resolve_demo_model('photo.jpg', ['x.jpg'])
    with pytest.raises(FileNotFoundError, match='config not found: nope.py'):
        resolve_demo_model('nope.py', ['ckpt.pth', 'x.jpg'])
