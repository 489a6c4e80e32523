"""Published accuracies of RAVLT and of the backbones OpenMMLab publishes under the same heads,
read from metafiles (never typed in): RAVLT's from the zoo's ``configs/metafile.yml``
(:mod:`ravlt_dense.zoo`), the others from the model-index of the installed mmdet and mmseg
(``<package>/.mim/model-index.yml`` and the metafiles it imports).

A metafile entry counts for a benchmark (:data:`BENCHMARKS`) when its collection is the head,
its results are on the dataset with the metric, and its training schedule is the benchmark's
(``1x`` = 12 epochs, ``160k`` = 160,000 iterations). It counts for a backbone (:data:`PEERS`)
when the backbone's pattern is in the entry's name and, in mmseg's metafiles, the backbone is in
the entry's ``Architecture``. Where several entries of one backbone fit a benchmark (mixed
precision, other pre-training, other augmentations), the plainest, i.e. the shortest name,
stands for it.
"""
import importlib.util
import os.path as osp
import re
from functools import lru_cache
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from ravlt_dense import zoo


class Benchmark(NamedTuple):
    """A head trained on a dataset for a schedule, and the metric its accuracy is given in."""
    head: str
    dataset: str
    schedule: str
    metric: str

    @property
    def title(self) -> str:
        return f'{self.head} {self.schedule}, {self.dataset} {self.metric}'


BENCHMARKS: Dict[str, Benchmark] = {
    'maskrcnn_1x': Benchmark('Mask R-CNN', 'COCO', '1x', 'box AP'),
    'maskrcnn_3x': Benchmark('Mask R-CNN', 'COCO', '3x', 'box AP'),
    'retinanet_1x': Benchmark('RetinaNet', 'COCO', '1x', 'box AP'),
    'upernet_160k': Benchmark('UperNet', 'ADE20K', '160k', 'mIoU'),
    'fpn_80k': Benchmark('Semantic FPN', 'ADE20K', '80k', 'mIoU'),
}

# The heads' collections as the metafiles name them (mmseg: 'UPerNet', 'FPN'), lower-cased.
HEADS = {'mask r-cnn': 'Mask R-CNN', 'retinanet': 'RetinaNet', 'upernet': 'UperNet',
         'semantic fpn': 'Semantic FPN', 'fpn': 'Semantic FPN'}


class Peer(NamedTuple):
    """A backbone that mmdet or mmseg publishes: how its entries are named."""
    label: str
    family: str
    pattern: str  # regular expression found in the names of its mmdet / mmseg entries
    architectures: Tuple[str, ...]  # one of these is in an entry's ``Architecture`` list, if any


def _peer(label: str, family: str, pattern: str, mmdet_name: str = '') -> Peer:
    # mmseg lists the backbone ('Swin-T'), mmdet its family ('Swin Transformer')
    return Peer(label, family, pattern, (label, ) + ((mmdet_name, ) if mmdet_name else ()))


# ImageNet-1k pre-training at 224, as RAVLT's: the Swin patterns leave out mmseg's in22k and
# 384x384 pre-trained entries. '_r50_' leaves out the caffe-style ResNets ('r50-caffe').
# mmseg names a Twins-SVT-L entry twins_pcpvt-l: its Architecture tells them apart.
PEERS: Dict[str, Peer] = {
    'swin_t': _peer('Swin-T', 'Swin', r'swin-t(-p4-w7|iny-patch4-window7-in1k-pre)_',
                    'Swin Transformer'),
    'swin_s': _peer('Swin-S', 'Swin', r'swin-s(-p4-w7|mall-patch4-window7-in1k-pre)_',
                    'Swin Transformer'),
    'swin_b': _peer('Swin-B', 'Swin', r'swin-b(-p4-w7|ase-patch4-window7-in1k-pre)_',
                    'Swin Transformer'),
    'r50': Peer('ResNet-50', 'ResNet', r'_r50_', ('R-50', 'ResNet')),
    'r101': Peer('ResNet-101', 'ResNet', r'_r101_', ('R-101', 'ResNet')),
    'convnext_t': _peer('ConvNeXt-T', 'ConvNeXt', r'convnext-t(-p4-w7|iny)_', 'ConvNeXt'),
    'convnext_s': _peer('ConvNeXt-S', 'ConvNeXt', r'convnext-s(-p4-w7|mall)_', 'ConvNeXt'),
    **{f'pvtv2_b{i}': _peer(f'PVTv2-b{i}', 'PVTv2', fr'pvtv2-b{i}_', 'PyramidVisionTransformerV2')
       for i in range(6)},
    # mmseg's only Semantic FPN entries at RAVLT's 80k schedule
    **{f'pcpvt_{s}': _peer(f'Twins-PCPVT-{s.upper()}', 'Twins-PCPVT', fr'twins_pcpvt-{s}_')
       for s in 'sbl'},
}
PACKAGES = ('mmdet', 'mmseg')
RAVLT_FAMILY = 'RAVLT'


class Published(NamedTuple):
    """One published accuracy: ``model`` (a key of :func:`model_names`) on ``benchmark``."""
    model: str
    benchmark: str
    value: float
    entry: str  # the metafile's name of the trained model
    source: str  # 'ravlt_dense', 'mmdet' or 'mmseg'
    metafile: str  # the file it was read from
    config: str  # the entry's config, as the metafile gives it


def ravlt_models(metafile: Optional[str] = None) -> Dict[str, str]:
    """``{'ravlt_t': 'RAVLT-T', ...}``: the variants of the zoo's metafile."""
    return {f'ravlt_{v}': f'RAVLT-{v.upper()}' for v in zoo.variants(metafile)}


def model_names(metafile: Optional[str] = None) -> Dict[str, Tuple[str, str]]:
    """Every model that can be compared: ``{name: (label, family)}``, RAVLT's first."""
    names = {name: (label, RAVLT_FAMILY) for name, label in ravlt_models(metafile).items()}
    names.update({name: (p.label, p.family) for name, p in PEERS.items()})
    return names


def check_names(names: Sequence[str], valid: Sequence[str], what: str = 'model') -> None:
    """ValueError naming every unknown one of ``names`` and listing the ``valid`` ones."""
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown {what}{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}: choose from {', '.join(valid)}")


@lru_cache(maxsize=None)
def _load_yaml(path: str):
    import yaml  # libyaml's loader where present: mmdet's ~100 metafiles in a fraction of a second
    with open(path) as f:
        return yaml.load(f, Loader=getattr(yaml, 'CSafeLoader', yaml.SafeLoader))


def package_root(package: str) -> Optional[str]:
    """Where an installed OpenMMLab package keeps its configs and model-index (its ``.mim``);
    None if it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    root = osp.join(osp.dirname(spec.origin), '.mim')
    return root if osp.isfile(osp.join(root, 'model-index.yml')) else None


def package_metafiles(package: str) -> List[str]:
    """The metafiles that the installed ``package``'s model-index imports ([] if it is not
    installed)."""
    root = package_root(package)
    if root is None:
        return []
    index = _load_yaml(osp.join(root, 'model-index.yml'))
    return [osp.join(root, path) for path in index.get('Import') or ()]


def schedule(entry: dict) -> Optional[str]:
    """'1x', '3x' (epochs / 12), '160k' (iterations / 1000): from the entry's metadata, else
    from its name ('..._8xb2-160k_ade20k...', mmseg's entries give no iterations)."""
    meta = entry.get('Metadata') or {}
    epochs, iters = meta.get('Epochs'), meta.get('Iterations')
    if epochs:
        return f'{epochs // 12}x' if epochs % 12 == 0 else f'{epochs}e'
    if iters:
        return f'{iters // 1000}k' if iters % 1000 == 0 else str(iters)
    found = re.search(r'(?:^|[_-])(\d+[xk])(?=[_-]|$)', entry.get('Name', ''))
    return found.group(1) if found else None


def results(entry: dict) -> Iterator[Tuple[str, str, float]]:
    """(dataset, metric, value) of every result of an entry (mmseg writes one result as a
    mapping, mmdet and ours a list)."""
    found = entry.get('Results') or []
    for result in [found] if isinstance(found, dict) else found:
        for metric, value in (result.get('Metrics') or {}).items():
            yield result.get('Dataset'), metric, value


def value_on(entry: dict, bench: Benchmark) -> Optional[float]:
    """The entry's published ``bench.metric`` if it is a result of ``bench``, else None."""
    head = HEADS.get(str(entry.get('In Collection', '')).lower())
    if head != bench.head or schedule(entry) != bench.schedule:
        return None
    return next((float(v) for dataset, metric, v in results(entry)
                 if dataset == bench.dataset and metric == bench.metric), None)


def peer_of(entry: dict) -> Optional[str]:
    """The key of :data:`PEERS` whose backbone an mmdet / mmseg entry is trained with, or None."""
    name = entry.get('Name', '')
    listed = (entry.get('Metadata') or {}).get('Architecture')
    for key, peer in PEERS.items():
        if re.search(peer.pattern, name) and (
                not listed or any(a in listed for a in peer.architectures)):
            return key
    return None


def _plainest(rows: List[Published]) -> List[Published]:
    """One row per (model, benchmark): the shortest entry name, then the first in file order."""
    best: Dict[Tuple[str, str], Published] = {}
    for row in rows:
        key = (row.model, row.benchmark)
        if key not in best or len(row.entry) < len(best[key].entry):
            best[key] = row
    return list(best.values())


def ravlt_published(benchmarks: Sequence[str] = tuple(BENCHMARKS),
                    metafile: Optional[str] = None) -> List[Published]:
    """RAVLT's accuracies on ``benchmarks`` from the zoo's metafile (default:
    configs/metafile.yml)."""
    path = osp.abspath(metafile or zoo.METAFILE)
    rows = []
    for name, entry in zoo.models(path).items():
        if not entry.get('Config'):
            continue  # the ImageNet backbones
        for key in benchmarks:
            value = value_on(entry, BENCHMARKS[key])
            if value is not None:
                rows.append(Published(f'ravlt_{zoo.variant(name, path)}', key, value, name,
                                      'ravlt_dense', path, entry['Config']))
    return _plainest(rows)


def peer_published(benchmarks: Sequence[str] = tuple(BENCHMARKS),
                   packages: Sequence[str] = PACKAGES) -> List[Published]:
    """The accuracies of :data:`PEERS` on ``benchmarks`` from the installed packages'
    metafiles (a package that is not installed gives none)."""
    rows = []
    for package in packages:
        for path in package_metafiles(package):
            for entry in _load_yaml(path).get('Models') or ():
                peer = peer_of(entry)
                if peer is None:
                    continue
                for key in benchmarks:
                    value = value_on(entry, BENCHMARKS[key])
                    if value is not None:
                        rows.append(Published(peer, key, value, entry['Name'], package, path,
                                              entry.get('Config', '')))
    return _plainest(rows)


def published(benchmarks: Sequence[str] = tuple(BENCHMARKS), metafile: Optional[str] = None,
              packages: Sequence[str] = PACKAGES) -> List[Published]:
    """Every published accuracy on ``benchmarks``: RAVLT's (from ``metafile``, default the
    zoo's) and its peers' (from the installed ``packages``), in benchmark order, RAVLT first."""
    check_names(benchmarks, list(BENCHMARKS), 'benchmark')
    rows = ravlt_published(benchmarks, metafile) + peer_published(benchmarks, packages)
    order = {name: i for i, name in enumerate(model_names(metafile))}
    return sorted(rows, key=lambda r: (benchmarks.index(r.benchmark), order[r.model]))
