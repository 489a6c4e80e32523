"""tools/analysis/rank_analysis.py on a tiny input: the ranks it reports, and where its
images come from."""
import cv2
import numpy as np

from ravlt_dense.models.backbones.ravlt import RAVLT

from conftest import load_script

rank_analysis = load_script('tools/analysis/rank_analysis.py')


def test_rank_tool_measures_every_layer_of_the_stages(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    for i in range(2):
        cv2.imwrite(str(images / f'{i}.png'), np.full((40, 50, 3), 60 * i, np.uint8))
    work = tmp_path / 'work'
    summary, _ = rank_analysis.main(['--arch', 't', '--shape', '64', '--num-images', '1',
                                     '--images', str(images), '--stages', '2', '3',
                                     '--work-dir', str(work)])
    model = RAVLT('t')
    assert len(summary) == len(model.layers[2].blocks) + len(model.layers[3].blocks)
    for entry in summary.values():
        meta = entry['meta']
        cap_out = min(meta['tokens'], meta['channels'])
        for variant in ('linear', 'linear_rope', 'rala', 'softmax'):
            e = entry[variant]
            assert 1 <= e['out_rank'] <= cap_out and 1 <= e['gated_rank'] <= cap_out
            assert 1 <= e['out_energy_rank'] <= e['out_rank']
            if variant != 'softmax':
                assert 1 <= e['buffer_rank'] <= meta['head_dim']
    assert f'Inputs: 1 image(s) from {images}, 64x64.' in (work / 'rank_table.md').read_text()
    rows = (work / 'rank_per_head.csv').read_text().splitlines()
    # a header, then one row per image, head and variant
    assert len(rows) == 1 + 4 * sum(entry['meta']['heads'] for entry in summary.values())


def test_rank_tool_images_default_to_the_shapes_set_else_procedural(tmp_path, monkeypatch):
    args = rank_analysis.parse_args(['--num-images', '2', '--shape', '32', '48'])
    monkeypatch.setattr(rank_analysis, 'SHAPES_DIR', str(tmp_path / 'absent'))
    images, source = rank_analysis.load_images(args)
    assert source == '2 procedural images' and images.shape == (2, 32, 48, 3)
    shapes = tmp_path / 'coco_shapes' / 'train'
    shapes.mkdir(parents=True)
    cv2.imwrite(str(shapes / '0.png'), np.zeros((20, 30, 3), np.uint8))
    monkeypatch.setattr(rank_analysis, 'SHAPES_DIR', str(tmp_path / 'coco_shapes'))
    images, source = rank_analysis.load_images(args)
    assert source == f'1 image(s) from {tmp_path / "coco_shapes"}'
    assert images.shape == (1, 32, 48, 3)  # --shape is H W
