"""tools/analysis/test_robustness.py and ravlt_dense.tools.analysis.robustness: the trained
quick-start detector and segmentor under a heavy corruption score lower, at severity 0 exactly as
tools/test.py reports; mPC and rPC as mmdet's robustness_eval.py defines them; bad input."""
import functools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ravlt_dense.tools.analysis import robustness as R

from conftest import load_script, run_tool

TOOL = 'tools/analysis/test_robustness.py'


def _test_py_metrics(model, work_dir):
    """The metrics tools/test.py reports for ``model`` (its scalars file)."""
    run_tool(['tools/test.py', model.config, model.checkpoint, '--work-dir', work_dir])
    return json.loads(next(Path(work_dir).glob('*/*.json')).read_text())


def _robustness(model, out_dir, *options):
    """Run the tool; its JSON results and printed output."""
    proc = run_tool([TOOL, model.config, model.checkpoint, '--out-dir', out_dir,
                     '--work-dir', Path(out_dir).parent / 'work', *options])
    return json.loads((Path(out_dir) / 'robustness.json').read_text()), proc.stdout + proc.stderr


def _check_heavy_corruption(model, tmp_path, metric, corruption):
    """The tool on a trained model: ``corruption`` at severity 5 lowers ``metric`` clearly,
    severity 0 gives every metric exactly as tools/test.py reports it, the outputs are there."""
    reference = _test_py_metrics(model, tmp_path / 'test_py')
    data, log = _robustness(model, tmp_path / 'out', '--corruptions', corruption,
                            '--severities', '0', '5')
    assert data['clean'] == {k: reference[k] for k in data['clean']}
    assert metric in data['clean'] and data['metric'] == metric
    clean, damaged = data['clean'][metric], data['corrupted'][corruption]['5'][metric]
    assert clean > 0 and damaged < 0.8 * clean, (clean, damaged)
    assert data['mPC'][metric] == damaged
    assert data['rPC'][metric] == pytest.approx(damaged / clean)
    assert '[1/2] clean: ' in log and f'[2/2] {corruption}, severity 5: ' in log
    out = tmp_path / 'out'
    assert sorted(p.name for p in out.iterdir()) == [
        'robustness.csv', 'robustness.json', 'robustness.md', 'robustness.png']
    assert (out / 'robustness.md').read_text().count(f'| {corruption} |') == 1
    assert (out / 'robustness.csv').read_text().splitlines()[2].startswith(f'{corruption},5,')


def test_detector_heavy_noise_lowers_box_ap(quickstart_detector, tmp_path):
    _check_heavy_corruption(quickstart_detector, tmp_path, 'coco/bbox_mAP', 'gaussian_noise')


def test_segmentor_low_contrast_lowers_miou(quickstart_segmentor, tmp_path):
    # It sees its 128 px images at 64 px: the downscaling averages most noise away, while low
    # contrast takes the colours that tell its classes apart.
    _check_heavy_corruption(quickstart_segmentor, tmp_path, 'mIoU', 'contrast')


def _known_results():
    """Two benchmark corruptions and one hold-out one, with values easy to average by hand."""
    return R.RobustnessResults(
        clean={'m': 0.5, 'n': 40.0},
        corrupted={
            'gaussian_noise': {s: {'m': 0.5 - 0.1 * s, 'n': 40.0 - s} for s in range(1, 6)},
            'fog': {s: {'m': 0.4, 'n': 30.0} for s in range(1, 6)},
            'spatter': {s: {'m': 0.0, 'n': 0.0} for s in range(1, 6)},
        })


def test_mpc_rpc_of_a_known_table():
    results = _known_results()
    # gaussian_noise: 0.4 0.3 0.2 0.1 0.0 (mean 0.2), fog: 0.4; spatter is hold-out
    assert results.corruption_mean('gaussian_noise', 'm') == pytest.approx(0.2)
    assert results.mpc('m') == pytest.approx(0.3)
    assert results.rpc('m') == pytest.approx(0.6)
    assert results.mpc('n') == pytest.approx((37 + 30) / 2)
    assert results.mpc_corruptions() == ['gaussian_noise', 'fog']
    # 'all' (mmdet's aggregate='all') counts the hold-out corruption too
    assert results.mpc('m', aggregate='all') == pytest.approx(0.2)
    assert results.rpc('m', aggregate='all') == pytest.approx(0.4)
    # some severities only: their mean (mmdet would count the missing ones as 0)
    partial = R.RobustnessResults(clean={'m': 0.5}, corrupted={
        'fog': {1: {'m': 0.4}, 5: {'m': 0.2}}})
    assert partial.mpc('m') == pytest.approx(0.3) and partial.rpc('m') == pytest.approx(0.6)
    # only hold-out corruptions run: mPC over those (as mmdet's first-15 rows would)
    holdout = R.RobustnessResults(clean={'m': 1.0}, corrupted={'spatter': {1: {'m': 0.5}}})
    assert holdout.mpc('m') == 0.5
    # no clean run: no rPC
    assert R.RobustnessResults(corrupted={'fog': {1: {'m': 0.4}}}).rpc('m') is None


def test_no_detection_at_all_counts_as_ap_zero():
    # mmdet's CocoMetric reports nothing when a model detects nothing in any image
    reference = {'coco/bbox_mAP': 0.3, 'coco/bbox_mAP_l': -1.0}
    assert R.complete_metrics({}, reference, 'fog 5') == {'coco/bbox_mAP': 0.0,
                                                         'coco/bbox_mAP_l': -1.0}
    assert R.complete_metrics({'mIoU': 40.0}, None, 'clean') == {'mIoU': 40.0}
    with pytest.raises(RuntimeError, match='no metrics for the clean images.*score_thr'):
        R.complete_metrics({}, None, 'the clean images')
    with pytest.raises(RuntimeError, match='no metrics for fog 5'):
        R.complete_metrics({}, {'mIoU': 40.0}, 'fog 5')


def test_outputs_written_whole(tmp_path):
    out = tmp_path / 'out'
    image = tmp_path / 'image.png'
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (48, 48, 3), np.uint8))
    examples = functools.partial(R.plot_examples, str(image), ['fog', 'snow'], 3)
    paths = R.write_results(str(out), _known_results(), 'm', meta=dict(config='x.py'),
                            extra={'robustness_examples.png': examples})
    assert Path(paths['robustness_examples.png']).stat().st_size > 1000
    data = json.loads(Path(paths['json']).read_text())
    assert data['mPC']['m'] == pytest.approx(0.3) and data['config'] == 'x.py'
    assert data['corrupted']['fog']['3'] == {'m': 0.4, 'n': 30.0}
    assert R.RobustnessResults.from_dict(data).mpc('n') == pytest.approx(33.5)
    table = Path(paths['md']).read_text()
    assert '| fog | 0.5 | 0.4 | 0.4 | 0.4 | 0.4 | 0.4 | 0.4 |' in table
    assert '- mPC: 0.3 (mean over 2 corruption(s)' in table and '- rPC: 60.0%' in table
    rows = Path(paths['csv']).read_text().splitlines()
    assert rows[:2] == ['corruption,severity,m,n', 'clean,0,0.5,40.0'] and len(rows) == 17
    assert Path(paths['png']).stat().st_size > 1000
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(p).name for p in paths.values())


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def broken_plot(*args, **kwargs):
        raise RuntimeError('no figure')

    monkeypatch.setattr(R, 'plot', broken_plot)
    with pytest.raises(RuntimeError, match='no figure'):
        R.write_results(str(tmp_path / 'new'), _known_results(), 'm')
    assert not (tmp_path / 'new').exists()
    old = tmp_path / 'old'
    old.mkdir()
    (old / 'robustness.json').write_text('{"before": 1}')
    with pytest.raises(RuntimeError, match='no figure'):
        R.write_results(str(old), _known_results(), 'm')
    assert [p.name for p in old.iterdir()] == ['robustness.json']  # untouched, no temp files
    assert json.loads((old / 'robustness.json').read_text()) == {'before': 1}


def test_corruption_goes_right_after_loading():
    pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64)),
                dict(type='PackDetInputs')]
    loader = dict(batch_size=1, dataset=dict(type='ConcatDataset', datasets=[
        dict(type='CocoDataset', pipeline=pipeline),
        dict(type='RepeatDataset', times=2, dataset=dict(type='CocoDataset', pipeline=[
            dict(type='mmdet.LoadImageFromFile', channel_order='rgb'),
            dict(type='PackDetInputs')]))]))
    corrupted = R.corrupted_dataloader(loader, 'fog', 3)
    step = dict(type='mmseg.ImageCorruption', corruption='fog', severity=3, channel_order='bgr',
                seed=0)
    first, second = corrupted['dataset']['datasets']
    assert first['pipeline'][1] == step and len(first['pipeline']) == 4
    assert second['dataset']['pipeline'][1] == dict(step, channel_order='rgb')
    assert loader['dataset']['datasets'][0]['pipeline'] == pipeline  # the original is kept
    assert R.insert_corruption(pipeline, 'fog', 0) == pipeline
    with pytest.raises(ValueError, match='no step that loads the image.*Resize -> PackDetInputs'):
        R.insert_corruption(pipeline[1:], 'fog', 1)


def test_corruption_names_and_groups():
    assert R.resolve_corruptions(['benchmark']) == list(R.BENCHMARK_CORRUPTIONS)
    assert len(R.resolve_corruptions(['all'])) == 19
    assert R.resolve_corruptions(['fog', 'weather', 'noise']) == [
        'fog', 'snow', 'frost', 'brightness', 'gaussian_noise', 'shot_noise', 'impulse_noise']
    with pytest.raises(ValueError, match=r"Unknown corruption 'foggy'.*gaussian_noise.*"
                       r"jpeg_compression.*groups: all, benchmark, noise"):
        R.resolve_corruptions(['fog', 'foggy'])
    assert R.check_severities([5, 0, 5]) == [0, 5]
    with pytest.raises(ValueError, match='Severity out of range: 6.*0 .clean images. to 5'):
        R.check_severities([1, 6])


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_corruption_transform_builds_repeats_and_damages(scope):
    from mmengine.registry import TRANSFORMS, DefaultScope
    R.check_corruption_package(R.CORRUPTIONS)
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    bgr = rgb[..., ::-1]
    loader = dict(dataset=dict(pipeline=[dict(type='LoadImageFromFile')]))

    def damaged(step, img, path='a.png'):
        return TRANSFORMS.build(step)(dict(img=img.copy(), img_path=path))['img']

    with DefaultScope.overwrite_default_scope(scope):
        for name in R.BENCHMARK_CORRUPTIONS if scope == 'mmdet' else ('frost', 'glass_blur'):
            step = R.corrupted_dataloader(loader, name, 5, seed=1)['dataset']['pipeline'][1]
            np.random.seed(7)
            out = damaged(step, bgr)
            after = np.random.rand()  # the global generator is left as it was
            assert out.shape == rgb.shape and out.dtype == np.uint8, name
            assert np.abs(out.astype(int) - bgr).mean() > 1, name
            assert np.array_equal(damaged(step, bgr), out), f'{name}: not repeatable'
            # the package sees RGB: the BGR result is the RGB one in BGR order
            assert np.array_equal(damaged(dict(step, channel_order='rgb'), rgb),
                                  out[..., ::-1]), name
            np.random.seed(7)
            assert np.random.rand() == after, name
        # another image or seed, other draws
        step = R.corrupted_dataloader(loader, 'glass_blur', 5, seed=1)['dataset']['pipeline'][1]
        out = damaged(step, bgr)
        assert not np.array_equal(damaged(step, bgr, 'b.png'), out)
        assert not np.array_equal(damaged(dict(step, seed=2), bgr), out)


@pytest.fixture(scope='module')
def tool():
    return load_script(TOOL)


@pytest.mark.parametrize('options, message', [
    (['--corruptions', 'fog', 'rain'],
     "Unknown corruption 'rain'. Valid corruptions: gaussian_noise, shot_noise"),
    (['--severities', '0', '7'], 'Severity out of range: 7'),
])
def test_bad_corruption_or_severity(tool, monkeypatch, capsys, options, message):
    monkeypatch.setattr('sys.argv', [TOOL, 'config.py', 'model.pth', *options])
    with pytest.raises(SystemExit) as exc:
        tool.parse_args()
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_missing_data_root_writes_nothing(tool, quickstart_segmentor, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    monkeypatch.setattr('sys.argv', [
        TOOL, str(quickstart_segmentor.config), str(quickstart_segmentor.checkpoint),
        '--corruptions', 'fog', '--out-dir', str(out), '--work-dir', str(tmp_path / 'work'),
        '--cfg-options', f'test_dataloader.dataset.data_root={tmp_path / "nowhere"}'])
    with pytest.raises(FileNotFoundError, match=f'{tmp_path / "nowhere"}/images/validation '
                       'does not exist'):
        tool.main()
    assert not out.exists()
