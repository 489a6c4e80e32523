"""Robustness to common image corruptions, as mmdet's COCO-C benchmark measures it.

The 15 corruptions of ImageNet-C (Hendrycks & Dietterich, 2019), each at severities 1-5, applied
to the test images right after they are loaded (``ImageCorruption``: mmdet's ``Corrupt`` on the
``imagecorruptions`` package, given RGB images and seeded draws, see
``ravlt_dense.datasets.transforms``), and the model evaluated by the config's own test loop and
evaluator. The summary measures are those of mmdet's ``tools/analysis_tools/robustness_eval.py``
(Michaelis et al., 2019, "Benchmarking Robustness in Object Detection"):

* P, the performance on clean data (severity 0);
* mPC, the mean performance under corruption: the metric averaged over the corruptions and the
  severities 1-5 (by default over the 15 benchmark corruptions only; the 4 hold-out ones are
  reported but left out, as mmdet's ``aggregate='benchmark'``);
* rPC = mPC / P, the relative performance under corruption.

Where only some severities were run, mPC averages those that were (mmdet counts the missing
ones as 0); without severity 0 there is no rPC.
"""
import copy
import csv
import io
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

# The order of ImageNet-C / mmdet's test_robustness.py.
BENCHMARK_CORRUPTIONS = (
    'gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur', 'glass_blur',
    'motion_blur', 'zoom_blur', 'snow', 'frost', 'fog', 'brightness', 'contrast',
    'elastic_transform', 'pixelate', 'jpeg_compression')
HOLDOUT_CORRUPTIONS = ('speckle_noise', 'gaussian_blur', 'spatter', 'saturate')
CORRUPTIONS = BENCHMARK_CORRUPTIONS + HOLDOUT_CORRUPTIONS

# mmdet's groups (the choices of its --corruptions, 'None' aside).
CORRUPTION_GROUPS = {
    'all': CORRUPTIONS,
    'benchmark': BENCHMARK_CORRUPTIONS,
    'noise': ('gaussian_noise', 'shot_noise', 'impulse_noise'),
    'blur': ('defocus_blur', 'glass_blur', 'motion_blur', 'zoom_blur'),
    'weather': ('snow', 'frost', 'fog', 'brightness'),
    'digital': ('contrast', 'elastic_transform', 'pixelate', 'jpeg_compression'),
    'holdout': HOLDOUT_CORRUPTIONS,
}

# The family of each corruption (ImageNet-C's, the hold-out ones included): one panel each in
# the figure.
FAMILIES = {name: family for family in ('noise', 'blur', 'weather', 'digital')
            for name in CORRUPTION_GROUPS[family]}
FAMILIES.update(speckle_noise='noise', gaussian_blur='blur', spatter='weather',
                saturate='digital')

SEVERITIES = (0, 1, 2, 3, 4, 5)  # 0: the clean images

# The metric summarised when none is asked for: the first of these the evaluator reports.
DEFAULT_METRICS = ('coco/bbox_mAP', 'mIoU', 'pascal_voc/mAP')

# The package that provides all 15 corruptions beside numpy 2 (imported as imagecorruptions).
PACKAGE_HINT = 'pip install imagecorruptions-imaug==1.1.5'

# The transforms that load the image: the corruption goes right after the first of them.
IMAGE_LOADERS = ('LoadImageFromFile', 'LoadImageFromNDArray', 'LoadMultiChannelImageFromFiles',
                 'InferencerLoader', 'LoadImageFromWebcam')


def resolve_corruptions(names: Iterable[str]) -> List[str]:
    """The corruptions named by ``names`` (corruption names and group names, see
    ``CORRUPTION_GROUPS``), in the order given, each once.

    Raises:
        ValueError: for a name that is neither, listing the valid ones.
    """
    resolved = []
    for name in names:
        members = CORRUPTION_GROUPS.get(name, (name, ) if name in CORRUPTIONS else None)
        if members is None:
            raise ValueError(
                f"Unknown corruption '{name}'. Valid corruptions: {', '.join(CORRUPTIONS)}; "
                f"groups: {', '.join(CORRUPTION_GROUPS)}.")
        resolved += [m for m in members if m not in resolved]
    if not resolved:
        raise ValueError('No corruption given: name at least one, or a group such as benchmark')
    return resolved


def check_severities(severities: Iterable[int]) -> List[int]:
    """The severities, sorted and each once; ValueError for one outside 0..5."""
    severities = sorted(set(severities))
    bad = [s for s in severities if s not in SEVERITIES]
    if bad:
        raise ValueError(f'Severity out of range: {", ".join(map(str, bad))}. Severities are '
                         '0 (clean images) to 5 (the strongest corruption).')
    if not severities:
        raise ValueError('No severity given: name at least one of 0..5')
    return severities


def check_corruption_package(corruptions: Sequence[str]) -> None:
    """Run each corruption once on a small image, so that a missing or broken
    ``imagecorruptions`` fails here, naming the fix, rather than after minutes of evaluation.

    The 2020 release (1.1.2) fails glass_blur, gaussian_blur and fog beside numpy 2 and current
    scikit-image; imagecorruptions-imaug (same import name) runs them all.
    """
    try:
        from imagecorruptions import corrupt
    except ImportError as err:
        raise ImportError(f'The corruptions need the imagecorruptions package ({err}): '
                          f'{PACKAGE_HINT}') from None
    image = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    state = np.random.get_state()  # the draws here must not shift those of the evaluation
    try:
        for name in corruptions:
            try:
                corrupt(image, corruption_name=name, severity=1)
            except Exception as err:
                raise RuntimeError(
                    f"The installed imagecorruptions cannot apply '{name}': "
                    f'{type(err).__name__}: {err}. Its 2020 release fails some corruptions '
                    f'beside numpy 2; install the maintained one: {PACKAGE_HINT}') from err
    finally:
        np.random.set_state(state)


def _transform_name(transform: Mapping) -> str:
    kind = transform.get('type', '')
    name = kind if isinstance(kind, str) else getattr(kind, '__name__', str(kind))
    return name.rsplit('.', 1)[-1]


def corruption_transform(corruption: str, severity: int, channel_order: str = 'bgr',
                         seed: Optional[int] = 0) -> dict:
    """The pipeline step that corrupts the loaded image (of ``channel_order``, as loaded; each
    image's draws seeded by ``seed`` and its path): ``ImageCorruption``, named with the scope
    it is registered in, so that it builds in mmdet's pipelines as well."""
    import ravlt_dense.datasets  # noqa: F401  registers ImageCorruption
    return dict(type='mmseg.ImageCorruption', corruption=corruption, severity=severity,
                channel_order=channel_order, seed=seed)


def insert_corruption(pipeline: Sequence[Mapping], corruption: str, severity: int,
                      seed: Optional[int] = 0) -> list:
    """A copy of a test ``pipeline`` with the corruption right after the image is loaded (the
    images are corrupted at their stored size, before any resize); severity 0 leaves it as it
    is.

    Raises:
        ValueError: when no step of the pipeline loads the image.
    """
    pipeline = copy.deepcopy(list(pipeline))
    if severity == 0:
        return pipeline
    names = [_transform_name(t) for t in pipeline]
    for i, name in enumerate(names):
        if name.startswith(IMAGE_LOADERS):
            order = pipeline[i].get('channel_order', 'bgr')  # mmcv's loaders' default
            pipeline.insert(i + 1, corruption_transform(corruption, severity, order, seed))
            return pipeline
    raise ValueError(f'The test pipeline has no step that loads the image (one of '
                     f'{", ".join(IMAGE_LOADERS)}), after which the corruption would go: '
                     f'{" -> ".join(names)}')


def corrupted_dataloader(dataloader: Mapping, corruption: str, severity: int,
                         seed: Optional[int] = 0) -> dict:
    """A copy of a test dataloader config whose dataset(s) corrupt their images (dataset
    wrappers such as ConcatDataset are followed to the datasets that hold a pipeline)."""
    dataloader = copy.deepcopy(dict(dataloader))
    stack, found = [dataloader['dataset']], 0
    while stack:
        dataset = stack.pop()
        if dataset.get('pipeline') is not None:
            dataset['pipeline'] = insert_corruption(dataset['pipeline'], corruption, severity,
                                                    seed)
            found += 1
        else:
            stack += [dataset['dataset']] if dataset.get('dataset') else []
            stack += list(dataset.get('datasets') or [])
    if not found:
        raise ValueError('The test dataset has no pipeline to insert the corruption into')
    return dataloader


def complete_metrics(metrics: Mapping[str, float], reference: Optional[Mapping[str, float]],
                     what: str) -> Dict[str, float]:
    """The metrics of one evaluation, with those an evaluator leaves out for a model that
    found nothing filled in.

    mmdet's CocoMetric reports nothing at all ("The testing results of the whole dataset is
    empty") when the model detects no object in any image, as heavily corrupted images can
    make it: COCO's AP of such a model is 0, or -1 where the subset holds no object (as the
    ``reference`` run, an earlier evaluation on the same images, reports).

    Args:
        metrics (dict): What the evaluator reported.
        reference (dict, optional): An earlier evaluation's metrics (the first one: None).
        what (str): The evaluation, as an error names it.
    """
    if metrics:
        return dict(metrics)
    if reference and all(name.startswith('coco/') for name in reference):
        from mmengine.logging import print_log
        print_log(f'No detection in any of {what}: COCO\'s AP of that is 0 (-1 where the '
                  'subset holds no object)', logger='current', level=30)
        return {name: -1.0 if value == -1 else 0.0 for name, value in reference.items()}
    hint = (' For a detector: it may have found nothing at all; lower its score threshold '
            '(e.g. --cfg-options model.test_cfg.rcnn.score_thr=0.0).' if reference is None
            else '')
    raise RuntimeError(f'The evaluator reported no metrics for {what}.{hint}')


def default_metric(metrics: Mapping[str, float]) -> str:
    """The metric to summarise among those an evaluator reported (``DEFAULT_METRICS``, else
    the first it reported)."""
    for name in DEFAULT_METRICS:
        if name in metrics:
            return name
    return next(iter(metrics))


class RobustnessResults:
    """The metrics of one model on clean data and under each corruption and severity.

    Args:
        clean (dict, optional): Metric name -> value on the clean images (severity 0).
        corrupted (dict): Corruption -> severity (1..5) -> metric name -> value.
    """

    def __init__(self, clean: Optional[Mapping[str, float]] = None,
                 corrupted: Optional[Mapping[str, Mapping[int, Mapping[str, float]]]] = None):
        self.clean = dict(clean) if clean is not None else None
        self.corrupted = {c: {int(s): dict(m) for s, m in by_severity.items()}
                          for c, by_severity in (corrupted or {}).items()}

    @property
    def corruptions(self) -> List[str]:
        return list(self.corrupted)

    @property
    def metrics(self) -> List[str]:
        """The metric names, in the order the evaluator reported them."""
        tables = ([self.clean] if self.clean else []) + [
            m for by_severity in self.corrupted.values() for m in by_severity.values()]
        return list(dict.fromkeys(name for table in tables for name in table))

    def value(self, corruption: str, severity: int, metric: str) -> Optional[float]:
        """The metric at one corruption and severity (0: clean); None if it was not run."""
        table = self.clean if severity == 0 else self.corrupted.get(corruption, {}).get(severity)
        return None if table is None else table.get(metric)

    def mpc_corruptions(self, aggregate: str = 'benchmark') -> List[str]:
        """The corruptions mPC averages: with ``aggregate='benchmark'`` the benchmark ones run
        (all of those run when none of them was), with ``'all'`` every one run."""
        if aggregate not in ('benchmark', 'all'):
            raise ValueError(f"aggregate must be 'benchmark' or 'all', got {aggregate!r}")
        run = [c for c in self.corrupted if self.corrupted[c]]
        benchmark = [c for c in run if c in BENCHMARK_CORRUPTIONS]
        return benchmark if aggregate == 'benchmark' and benchmark else run

    def corruption_mean(self, corruption: str, metric: str) -> Optional[float]:
        """The metric under one corruption, averaged over the severities 1-5 that were run."""
        values = [m[metric] for m in self.corrupted.get(corruption, {}).values() if metric in m]
        return float(np.mean(values)) if values else None

    def mpc(self, metric: str, aggregate: str = 'benchmark') -> Optional[float]:
        """Mean performance under corruption: the metric over the corruptions of
        :meth:`mpc_corruptions` and their severities 1-5 (each pair weighs the same)."""
        values = [m[metric] for c in self.mpc_corruptions(aggregate)
                  for m in self.corrupted[c].values() if metric in m]
        return float(np.mean(values)) if values else None

    def rpc(self, metric: str, aggregate: str = 'benchmark') -> Optional[float]:
        """Relative performance under corruption: mPC / P (None without clean results, or
        with a P of 0 or below: COCO reports -1 where a subset, say large objects, is empty)."""
        mpc = self.mpc(metric, aggregate)
        clean = (self.clean or {}).get(metric)
        return None if mpc is None or clean is None or clean <= 0 else mpc / clean

    def summary(self, aggregate: str = 'benchmark') -> dict:
        """P, mPC and rPC of every metric, and the corruptions mPC averages."""
        return dict(
            aggregate=aggregate, mpc_corruptions=self.mpc_corruptions(aggregate),
            P={m: (self.clean or {}).get(m) for m in self.metrics},
            mPC={m: self.mpc(m, aggregate) for m in self.metrics},
            rPC={m: self.rpc(m, aggregate) for m in self.metrics})

    def to_dict(self, aggregate: str = 'benchmark') -> dict:
        return dict(clean=self.clean,
                    corrupted={c: {str(s): m for s, m in by_severity.items()}
                               for c, by_severity in self.corrupted.items()},
                    **self.summary(aggregate))

    @classmethod
    def from_dict(cls, data: Mapping) -> 'RobustnessResults':
        return cls(data.get('clean'), data.get('corrupted'))


def _fmt(value: Optional[float], percent: bool = False) -> str:
    if value is None:
        return '–'
    return f'{100 * value:.1f}%' if percent else f'{value:.4g}'


def markdown_table(results: RobustnessResults, metric: str,
                   aggregate: str = 'benchmark') -> str:
    """One row per corruption, one column per severity (0 = clean) and their mean over 1-5,
    then P, mPC and rPC of ``metric``."""
    severities = sorted({s for by_severity in results.corrupted.values() for s in by_severity})
    columns = (['0 (clean)'] if results.clean else []) + [str(s) for s in severities]
    lines = [f'| {metric} | ' + ' | '.join(columns) + ' | mean 1-5 |',
             '|---|' + '---:|' * (len(columns) + 1)]
    clean = _fmt(results.value('', 0, metric))
    for corruption in results.corruptions:
        cells = ([clean] if results.clean else []) + [
            _fmt(results.value(corruption, s, metric)) for s in severities]
        mean = _fmt(results.corruption_mean(corruption, metric))
        lines.append(f'| {corruption} | ' + ' | '.join(cells) + f' | {mean} |')
    averaged = results.mpc_corruptions(aggregate)
    lines += ['', f'- P (clean): {_fmt((results.clean or {}).get(metric))}',
              f'- mPC: {_fmt(results.mpc(metric, aggregate))} (mean over {len(averaged)} '
              f'corruption(s) x severities {", ".join(map(str, severities)) or "none"})',
              f'- rPC: {_fmt(results.rpc(metric, aggregate), percent=True)} (mPC / P)']
    return '\n'.join(lines) + '\n'


def csv_text(results: RobustnessResults) -> str:
    """One row per evaluation (clean: corruption 'clean', severity 0), one column per metric."""
    metrics = results.metrics
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow(['corruption', 'severity', *metrics])
    rows = ([('clean', 0, results.clean)] if results.clean else []) + [
        (c, s, m) for c, by_severity in results.corrupted.items()
        for s, m in sorted(by_severity.items())]
    for corruption, severity, table in rows:
        writer.writerow([corruption, severity, *(table.get(m, '') for m in metrics)])
    return out.getvalue()


def plot(results: RobustnessResults, metric: str, path: str, title: str = '',
         aggregate: str = 'benchmark', dpi: int = 90) -> None:
    """``metric`` against severity, one line per corruption, one panel per corruption family;
    the clean value (severity 0) is every line's start and a dotted level, mPC a dashed one."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    families = list(dict.fromkeys(FAMILIES[c] for c in results.corruptions))
    fig, axes = plt.subplots(1, len(families), figsize=(2.6 * len(families) + 0.6, 2.9),
                             sharey=True, squeeze=False)
    clean = (results.clean or {}).get(metric)
    mpc = results.mpc(metric, aggregate)
    for ax, family in zip(axes[0], families):
        for corruption in (c for c in results.corruptions if FAMILIES[c] == family):
            points = sorted(results.corrupted[corruption].items())
            xs = ([0] if clean is not None else []) + [s for s, _ in points]
            ys = ([clean] if clean is not None else []) + [m.get(metric, np.nan)
                                                          for _, m in points]
            ax.plot(xs, ys, marker='o', markersize=3, label=corruption.replace('_', ' '))
        if clean is not None:
            ax.axhline(clean, color='grey', linestyle=':', linewidth=1)
        if mpc is not None:
            ax.axhline(mpc, color='black', linestyle='--', linewidth=1)
        ax.set_title(family, fontsize=9)
        ax.set_xlabel('severity', fontsize=8)
        ax.set_xticks(range(6))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc='best')
    axes[0][0].set_ylabel(metric, fontsize=8)
    note = f'dotted: clean ({_fmt(clean)}), dashed: mPC ({_fmt(mpc)})'
    fig.suptitle(f'{title}  {note}' if title else note, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def plot_examples(img_path: str, corruptions: Sequence[str], severity: int, path: str,
                  seed: Optional[int] = 0, dpi: int = 90) -> None:
    """One image, clean and under each corruption at ``severity``, as the evaluation damages it
    (the same transform, seed and path: the same draws)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import mmcv

    from ravlt_dense.datasets.transforms import ImageCorruption
    image = mmcv.imread(img_path)  # BGR, as the loaders give it
    panels = [('clean', image)] + [
        (name.replace('_', ' '),
         ImageCorruption(name, severity, seed=seed)(dict(img=image.copy(),
                                                         img_path=img_path))['img'])
        for name in corruptions]
    cols = min(len(panels), 8)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis('off')
    for ax, (title, img) in zip(axes.flat, panels):
        ax.imshow(img[..., ::-1])
        ax.set_title(title, fontsize=7)
    fig.suptitle(f'severity {severity}: {osp.basename(img_path)}', fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi)
    plt.close(fig)
    # 256 colours: noise panels stored in full colour would make the file several times larger
    from PIL import Image
    Image.open(buffer).convert('RGB').quantize(colors=256).save(path, format='PNG',
                                                                 optimize=True)


def write_results(out_dir: str, results: RobustnessResults, metric: str,
                  meta: Optional[Mapping] = None, aggregate: str = 'benchmark',
                  title: str = '', name: str = 'robustness',
                  extra: Optional[Mapping[str, Callable[[str], None]]] = None) -> Dict[str, str]:
    """Write NAME.json (every metric, P/mPC/rPC, ``meta``), NAME.csv, NAME.md and NAME.png to
    ``out_dir``, and ``extra`` files (file name -> a function that writes it to the path it is
    given), all or none: they are made in a temporary folder inside ``out_dir`` and moved into
    place once all exist. Returns the paths by extension (the extra ones by file name)."""
    made_dir = not osp.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: osp.join(out_dir, f'{name}.{ext}') for ext in ('json', 'csv', 'md', 'png')}
    paths.update({file: osp.join(out_dir, file) for file in extra or {}})
    staging = tempfile.mkdtemp(prefix=f'.{name}.', dir=out_dir)
    done = False
    try:
        staged = {key: osp.join(staging, osp.basename(p)) for key, p in paths.items()}
        data = dict(meta or {}, metric=metric, **results.to_dict(aggregate))
        with open(staged['json'], 'w') as f:
            json.dump(data, f, indent=2)
        with open(staged['csv'], 'w') as f:
            f.write(csv_text(results))
        with open(staged['md'], 'w') as f:
            f.write((f'{title}\n\n' if title else '') + markdown_table(results, metric, aggregate))
        plot(results, metric, staged['png'], title=title, aggregate=aggregate)
        for file, write in (extra or {}).items():
            write(staged[file])
        for key, path in paths.items():
            os.replace(staged[key], path)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if made_dir and not done and not os.listdir(out_dir):
            os.rmdir(out_dir)  # leave no trace of a failed write
    return paths
