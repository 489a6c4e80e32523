"""The effective receptive field (ravlt_dense.tools.analysis.erf, tools/analysis/erf.py): what it
measures on models whose ERF is known, the tool end to end on a tiny RAVLT config, its weights
by URL, and its errors on bad input (with nothing written)."""
import csv

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

from ravlt_dense.models.backbones.ravlt import RAVLT
from ravlt_dense.tools.analysis.erf import (
    area_shares,
    effective_receptive_field,
    log_scaled,
    stage_geometry,
)

from conftest import TINY_ARCH, randomised, release_imagenet_checkpoint, run_tool

SIZE = 24  # the toy models' inputs


def toy_images(num=3, size=SIZE):
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(1, 3, size, size, generator=generator) for _ in range(num)]


class GlobalAttention(nn.Module):
    """A 1x1 embedding, then one softmax attention over every pixel: each output token sees all."""

    def __init__(self, dim=16):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 1)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)

    def forward(self, x):
        tokens = self.embed(x)
        n, c, h, w = tokens.shape
        tokens = tokens.flatten(2).transpose(1, 2)
        out = self.attn(tokens, tokens, tokens, need_weights=False)[0]
        return (out.transpose(1, 2).reshape(n, c, h, w), )


def test_erf_of_pointwise_convolutions_is_one_pixel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GELU(), nn.Conv2d(8, 8, 1), nn.GELU(),
                          nn.Conv2d(8, 4, 1))
    result = effective_receptive_field(model, toy_images())
    assert np.flatnonzero(result.scores).tolist() == [SIZE // 2 * SIZE + SIZE // 2]
    assert result.images == 3 and result.stage.stride == 1
    for t, (side, share) in result.shares.items():
        assert (side, share) == (1, 1 / SIZE**2), t


def test_erf_of_global_attention_covers_the_input():
    torch.manual_seed(0)
    result = effective_receptive_field(GlobalAttention(), toy_images())
    assert (result.scores > 0).all()  # every pixel contributes
    shares = {t: share for t, (_, share) in result.shares.items()}
    assert shares[0.99] > 0.9
    assert shares[0.5] > 0.25  # half of the contribution is not near the centre
    assert shares[0.2] <= shares[0.3] <= shares[0.5] <= shares[0.99]


def test_erf_of_a_convolution_stack_stays_inside_its_receptive_field():
    torch.manual_seed(0)
    depth = 3  # 3x3 convolutions: a 7x7 theoretical receptive field
    model = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1) for i in range(depth)])
    result = effective_receptive_field(model, toy_images())
    rows, cols = np.nonzero(result.scores)
    centre, reach = SIZE // 2, depth
    assert rows.min() >= centre - reach and rows.max() <= centre + reach
    assert cols.min() >= centre - reach and cols.max() <= centre + reach
    assert result.shares[0.99][0] <= 2 * reach + 1


class Constant(nn.Module):
    def forward(self, x):
        return x * 0 + 1


def test_centre_that_does_not_depend_on_the_input_is_an_error_not_one_pixel():
    with pytest.raises(ValueError, match='the centre of stage 0 does not depend on the input'):
        effective_receptive_field(Constant(), toy_images(1))


def test_area_shares_clip_squares_at_the_edges():
    heat = np.zeros((9, 15))
    heat[4, 7] = 1  # the centre
    heat[:, 0] = 1  # the left edge: a square holds it only at half-side 7, clipped to 9 rows
    shares = area_shares(heat, (0.05, 1.0))
    assert shares[0.05] == (1, 1 / heat.size)
    assert shares[1.0] == (15, 1.0)
    assert log_scaled(np.zeros((3, 3))).max() == 0  # no contribution: no division by zero


def test_stage_that_does_not_divide_the_input_is_named():
    with pytest.raises(ValueError, match=r'shape 30x30 is not divisible by stage 0: its map is '
                       r'8x8 \(stride 4\).*--shape 32 32'):
        stage_geometry((30, 30), [torch.zeros(1, 4, 8, 8)], 0)


# ------------------------------------------------------------------ the tool, on tiny RAVLTs
def write_config(path, init_cfg=None, attn_types=('rala', 'rala', 'softmax', 'softmax')):
    path.write_text(
        "custom_imports = dict(imports=['ravlt_dense'], allow_failed_imports=False)\n"
        f'model = dict(backbone=dict(type=\'RAVLT\', arch={TINY_ARCH!r}, '
        f'attn_types={tuple(attn_types)!r}, out_indices=(0, 1, 2, 3), init_cfg={init_cfg!r}),\n'
        '    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], '
        'std=[58.395, 57.12, 57.375], bgr_to_rgb=True))\n')
    return path


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp('erf_images')
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(folder / f'{i}.png'), rng.integers(0, 255, (48, 40, 3), np.uint8))
    return folder


@pytest.fixture(scope='module')
def erf_tool():
    from conftest import load_script
    return load_script('tools/analysis/erf.py')


def test_tool_writes_figure_table_and_maps_of_two_backbones(tmp_path, images):
    released = write_config(tmp_path / 'ravlt_tiny.py')
    linear = write_config(tmp_path / 'ravlt_tiny_rala.py', attn_types=('rala', ) * 4)
    out = tmp_path / 'erf'
    proc = run_tool(['tools/analysis/erf.py', released, linear, '--images', images,
                     '--shape', 64, '--num-images', 5, '--save-maps', '--out-dir', out,
                     '--labels', 'released mix', 'all-RALA'])
    assert sorted(p.name for p in out.iterdir()) == [
        'erf.csv', 'erf.md', 'erf.png', 'erf_ravlt_tiny.npy', 'erf_ravlt_tiny_rala.npy']
    assert cv2.imread(str(out / 'erf.png')).shape[1] > cv2.imread(str(out / 'erf.png')).shape[0]
    rows = list(csv.DictReader((out / 'erf.csv').open()))
    assert [(r['model'], r['backbone']) for r in rows] == [(str(released), 'released mix'),
                                                           (str(linear), 'all-RALA')]
    for row, npy in zip(rows, ('erf_ravlt_tiny.npy', 'erf_ravlt_tiny_rala.npy')):
        assert row['weights'].startswith('random (architecture only)')
        assert (row['stage'], row['map_height'], row['stride'], row['images']) == (
            '3', '2', '32', '2')  # the last stage; the folder has 2 of the 5 images asked
        # the table is RepLKNet's area shares of the saved map
        shares = area_shares(log_scaled(np.load(out / npy)))
        assert [float(row[f'area_{t}']) for t in (20, 30, 50, 99)] == pytest.approx(
            [shares[t][1] for t in (0.2, 0.3, 0.5, 0.99)], abs=1e-6)
    table = (out / 'erf.md').read_text()
    assert '| all-RALA | random (architecture only): no weights named |' in table
    assert '2 image(s) from' in table
    assert '[>>' in proc.stdout  # the progress bar


def test_config_weights_load_by_url_else_architecture_only(tmp_path, images, erf_tool,
                                                           file_server, torch_home, refused_url):
    source = randomised(RAVLT(TINY_ARCH))
    torch.save(release_imagenet_checkpoint(source), file_server.root / 'RAVLT_T.pth')
    url = f'{file_server.url}/RAVLT_T.pth'
    served = write_config(tmp_path / 'served.py', dict(type='Pretrained', checkpoint=url))
    args = erf_tool.parse_args([str(served), '--images', str(images), '--shape', '64'])
    subject = erf_tool.resolve_model(str(served), args)
    assert subject.weights == f'pretrained: {url}'
    assert torch.equal(subject.backbone.layers[2].blocks[0].attn.qkvo.weight,
                       source.layers[2].blocks[0].attn.qkvo.weight)
    assert (torch_home / 'RAVLT_T.pth').is_file()  # cached for the next run

    args.random = True
    random = erf_tool.resolve_model(str(served), args)
    assert random.weights == 'random (architecture only): --random'
    offline = refused_url.replace('RAVLT_T', 'RAVLT_S')  # a file the cache does not hold
    refused = write_config(tmp_path / 'refused.py', dict(type='Pretrained', checkpoint=offline))
    args.random = False
    fallback = erf_tool.resolve_model(str(refused), args)
    assert fallback.weights == 'random (architecture only): weights not available'
    assert all(torch.equal(v, fallback.backbone.state_dict()[k])  # as with --random
               for k, v in random.backbone.state_dict().items())


BAD_INPUT = {  # what is wrong -> the message naming it
    'model': r"Unknown MODEL 'ravlt-x_in1k'.*ravlt-s_in1k.*ravlt_s_rala"
             r".*mask-rcnn_ravlt-s_fpn_amp-1x_coco",
    'folder': r'--images .*absent: no such folder',
    'empty': r'--images: No images .* in folder .*empty',
    'stage': (r'--stage 4: MODEL .*tiny.py has no such stage .*out_indices must be a non-empty '
              r'subset of 0..3'),
    'negative': (r'--stage -5: MODEL .*tiny.py: stage -5 is out of range: the backbone returns '
                 r'4 feature map'),
    'shape': (r'--shape 80 80: MODEL .*tiny.py: shape 80x80 is not divisible by stage 3: its '
              r'map is 3x3 \(stride 32\).*--shape 96 96'),
}


@pytest.mark.parametrize('case', BAD_INPUT)
def test_bad_input_is_named_and_nothing_is_written(tmp_path, images, erf_tool, case):
    config = write_config(tmp_path / 'tiny.py')
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('no images here')
    argv = {'model': ['ravlt-x_in1k', '--images', images],
            'folder': [config, '--images', tmp_path / 'absent'],
            'empty': [config, '--images', tmp_path / 'empty'],
            'stage': [config, '--images', images, '--stage', 4],
            'negative': [config, '--images', images, '--stage', -5],
            'shape': [config, '--images', images, '--shape', 80]}[case]
    out = tmp_path / 'out'
    with pytest.raises(SystemExit, match=BAD_INPUT[case]):
        erf_tool.main([str(a) for a in argv] + ['--shape', '64'] * (case != 'shape')
                      + ['--out-dir', str(out)])
    assert not out.exists()
