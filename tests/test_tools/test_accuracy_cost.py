"""tools/analysis/accuracy_cost.py and ravlt_dense.tools.analysis.accuracy: published accuracies
read from the metafiles (ours, and the installed mmdet's and mmseg's), matched by head, dataset and
schedule; one end-to-end run on a tiny input; bad input refused, outputs whole or absent."""
import csv
import os.path as osp

import pytest
import yaml

from ravlt_dense import zoo
from ravlt_dense.tools.analysis import accuracy

from conftest import load_script

accuracy_cost = load_script('tools/analysis/accuracy_cost.py')

MASK_RCNN_T = 'mask-rcnn_ravlt-t_fpn_amp-1x_coco'


def metafile_with_box_ap(tmp_path, name, box_ap):
    """A copy of the zoo's metafile where model ``name`` has another box AP."""
    with open(zoo.METAFILE) as f:
        data = yaml.safe_load(f)
    entry = next(m for m in data['Models'] if m['Name'] == name)
    for result in entry['Results']:
        if 'box AP' in result['Metrics']:
            result['Metrics']['box AP'] = box_ap
    path = tmp_path / 'metafile.yml'
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def mm_entry(package, metafile, name):
    """The entry ``name`` of an installed package's metafile, read from the file itself."""
    root = accuracy.package_root(package)
    if root is None:
        pytest.skip(f'{package} is not installed')
    with open(osp.join(root, 'configs', metafile)) as f:
        return next(m for m in yaml.safe_load(f)['Models'] if m['Name'] == name)


def metric(entry, name):
    results = entry['Results']
    return next(r['Metrics'][name] for r in ([results] if isinstance(results, dict) else results)
                if name in r['Metrics'])


def by_model(rows, benchmark):
    return {r.model: r for r in rows if r.benchmark == benchmark}


def test_ravlt_accuracies_follow_the_metafile_given(tmp_path):
    zoo_ap = zoo.metrics(MASK_RCNN_T)['box AP']
    rows = by_model(accuracy.published(['maskrcnn_1x']), 'maskrcnn_1x')
    assert rows['ravlt_t'].value == zoo_ap and rows['ravlt_t'].entry == MASK_RCNN_T
    changed = metafile_with_box_ap(tmp_path, MASK_RCNN_T, round(zoo_ap - 11.5, 1))
    rows = by_model(accuracy.published(['maskrcnn_1x'], metafile=changed), 'maskrcnn_1x')
    assert rows['ravlt_t'].value == round(zoo_ap - 11.5, 1)
    assert rows['ravlt_t'].metafile == changed
    # the other variants are as the zoo has them
    assert rows['ravlt_s'].value == zoo.metrics('mask-rcnn_ravlt-s_fpn_amp-1x_coco')['box AP']


def test_peer_accuracies_come_from_the_installed_metafiles():
    swin_det = mm_entry('mmdet', 'swin/metafile.yml', 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco')
    swin_seg = mm_entry('mmseg', 'swin/metafile.yaml',
                        'swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512')
    rows = accuracy.published(['maskrcnn_1x', 'maskrcnn_3x', 'upernet_160k'])
    det = by_model(rows, 'maskrcnn_1x')['swin_t']
    assert (det.value, det.entry, det.source) == (metric(swin_det, 'box AP'), swin_det['Name'],
                                                  'mmdet')
    seg = by_model(rows, 'upernet_160k')['swin_t']
    assert (seg.value, seg.source) == (metric(swin_seg, 'mIoU'), 'mmseg')
    # the 3x schedule is another row: mmdet's multi-scale 3x Swin-T, not the 1x one
    assert by_model(rows, 'maskrcnn_3x')['swin_t'].entry != det.entry
    assert by_model(rows, 'maskrcnn_3x')['swin_t'].entry.endswith('3x_coco')


def test_entries_are_matched_by_schedule_and_backbone():
    assert accuracy.schedule({'Name': 'a', 'Metadata': {'Epochs': 36}}) == '3x'
    assert accuracy.schedule({'Name': 'a', 'Metadata': {'Iterations': 80000}}) == '80k'
    # mmseg's entries give no iterations: the name's, not the batch's '8x'
    assert accuracy.schedule({'Name': 'swin_upernet_8xb2-160k_ade20k-512x512'}) == '160k'
    # mmseg names one Twins-SVT-L entry twins_pcpvt-l: its Architecture decides
    name = 'twins_pcpvt-l_uperhead_8xb2-160k_ade20k-512x512'
    assert accuracy.peer_of({'Name': name, 'Metadata': {
        'Architecture': ['Twins-PCPVT-L', 'UPerNet']}}) == 'pcpvt_l'
    assert accuracy.peer_of({'Name': name, 'Metadata': {
        'Architecture': ['Twins-SVT-L', 'UPerNet']}}) is None
    assert accuracy.peer_of({'Name': 'mask-rcnn_r50-caffe_fpn_1x_coco'}) is None
    assert accuracy.peer_of({'Name': 'mask-rcnn_r50_fpn_1x_coco'}) == 'r50'


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_cli_plots_published_accuracy_against_measured_cost(tmp_path):
    zoo_ap = zoo.metrics(MASK_RCNN_T)['box AP']
    new_ap = round(zoo_ap - 11.5, 1)
    changed = metafile_with_box_ap(tmp_path, MASK_RCNN_T, new_ap)
    swin = accuracy.published(['maskrcnn_1x'])
    swin_ap = by_model(swin, 'maskrcnn_1x')['swin_t'].value
    out = tmp_path / 'out'
    accuracy_cost.main(['--models', 'ravlt_t', 'swin_t', '--benchmarks', 'maskrcnn_1x',
                        '--shape', '64', '96', '--repeat', '1', '--threads', '1',
                        '--metafile', changed, '--out-dir', str(out)])
    assert sorted(p.name for p in out.iterdir()) == sorted(accuracy_cost.OUTPUTS)
    rows = {r['model']: r for r in read_csv(out / 'accuracy_cost.csv')}
    assert set(rows) == {'ravlt_t', 'swin_t'}
    assert float(rows['ravlt_t']['published']) == new_ap
    assert float(rows['swin_t']['published']) == swin_ap
    for r in rows.values():
        assert r['input'] == '64x96' and r['not_measured'] == ''
        assert float(r['params_M']) > 1 and float(r['flops_full_G']) > 0
        assert float(r['latency_ms']) > 0
    md = (out / 'accuracy_cost.md').read_text()
    # the changed accuracy, and RAVLT-T's gain over Swin-T computed from it
    assert f'| RAVLT-T | {new_ap} | ravlt_dense: `{MASK_RCNN_T}` |' in md
    ratios = [float(rows['ravlt_t'][k]) / float(rows['swin_t'][k])
              for k in ('params_M', 'flops_full_G', 'latency_ms')]
    assert ('| RAVLT-T | ' + ' | '.join(f'{r:.2f}x' for r in ratios)
            + f' | {new_ap - swin_ap:+.1f} |') in md
    # one row per model: its costs, then its accuracy
    assert f"| RAVLT-T | {float(rows['ravlt_t']['params_M']):.1f} |" in md
    assert md.split('## Every model')[1].split('\n## ')[0].count(f'| {new_ap} |') == 1
    assert (out / 'accuracy_cost.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    # re-rendered from these costs, the accuracies are read anew: the zoo's again
    again = tmp_path / 'again'
    accuracy_cost.main(['--costs-from', str(out / 'accuracy_cost.csv'), '--models', 'ravlt_t',
                        'swin_t', 'r50', '--benchmarks', 'maskrcnn_1x', '--out-dir', str(again)])
    rows = {r['model']: r for r in read_csv(again / 'accuracy_cost.csv')}
    assert float(rows['ravlt_t']['published']) == zoo_ap
    assert rows['ravlt_t']['params_M'] == read_csv(out / 'accuracy_cost.csv')[0]['params_M']
    assert rows['r50']['not_measured'].startswith('not in ')


def test_unknown_model_is_refused_with_the_valid_names(tmp_path, capsys):
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as exit_info:
        accuracy_cost.main(['--models', 'ravlt_t', 'swin_x', '--out-dir', str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown model 'swin_x'" in err
    for name in ('ravlt_l', 'swin_t', 'r101', 'pvtv2_b2'):
        assert name in err
    assert not out.exists()


def test_a_failure_while_writing_leaves_no_output(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'accuracy_cost.md').write_text('an earlier run')
    contents = {name: b'new' for name in accuracy_cost.OUTPUTS}
    with pytest.raises(TypeError):  # the last file cannot be written
        accuracy_cost.write_all(str(out), dict(contents, **{accuracy_cost.OUTPUTS[-1]: None}))
    assert [p.name for p in out.iterdir()] == ['accuracy_cost.md']  # no temporary files
    assert (out / 'accuracy_cost.md').read_text() == 'an earlier run'
    written = accuracy_cost.write_all(str(out), contents)
    assert sorted(osp.basename(p) for p in written) == sorted(accuracy_cost.OUTPUTS)
    assert all(p.read_bytes() == b'new' for p in out.iterdir())
