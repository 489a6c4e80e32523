"""ravlt_dense.tools.saving: which checkpoint files count as damaged and why, what resuming
does with them (in process, on hand-made work dirs; through tools/train.py in
tests/test_tools/test_seg_tools.py), and saves through mmengine's CheckpointHook that a full
disk interrupts."""
import os
import re
import resource
import signal

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, MODELS
from mmengine.runner import Runner
from torch.utils.data import Dataset

from ravlt_dense.checkpoint import CorruptCheckpointError
from ravlt_dense.tools.saving import check_resume, checkpoint_damage, save_checkpoints_atomically


def save(path, step=1):
    torch.save(dict(meta=dict(iter=step), state_dict=dict(w=torch.arange(4096.) * step)), path)
    return path


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def zero_fill(path):
    path.write_bytes(bytes(path.stat().st_size))


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the tensor's record
    path.write_bytes(bytes(data))


@pytest.mark.parametrize('damage, reason', [
    (truncate, r'it is cut short \(\d+ bytes, the end of the zip archive .*missing\): the save '
               r'was interrupted'),
    (zero_fill, r'it is zero-filled \(\d+ bytes.*\): its data never reached the disk'),
    (flip_a_byte, r'its record \S+/data/0 is damaged \(CRC mismatch\)'),
    (lambda p: p.write_bytes(b''), r'it is empty \(0 bytes\)'),
    (lambda p: p.write_text('{"not": "a checkpoint"}'), r'it is not a torch checkpoint'),
])
def test_damage_is_found_and_named(tmp_path, damage, reason):
    path = save(tmp_path / 'iter_1.pth')
    assert checkpoint_damage(str(path)) is None
    damage(path)
    assert re.match(reason, checkpoint_damage(str(path)))


def work_dir_with(tmp_path, steps=(1, 2, 3), last=3):
    for step in steps:
        save(tmp_path / f'epoch_{step}.pth', step)
    save(tmp_path / 'best_coco_bbox_mAP_epoch_2.pth')  # never a resume candidate
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / f'epoch_{last}.pth'))
    return Config(dict(resume=True, load_from=None, work_dir=str(tmp_path)))


def test_auto_resume_skips_a_damaged_last_checkpoint(tmp_path):
    cfg = work_dir_with(tmp_path)
    assert check_resume(cfg) == [] and cfg.load_from is None  # whole: mmengine's auto resume
    truncate(tmp_path / 'epoch_3.pth')
    zero_fill(tmp_path / 'epoch_2.pth')
    warnings = check_resume(cfg)
    assert cfg.load_from == str(tmp_path / 'epoch_1.pth')
    assert len(warnings) == 1
    assert re.match(rf'{tmp_path}/last_checkpoint names {tmp_path}/epoch_3.pth, which is damaged: '
                    rf'it is cut short .*\. Resuming from {tmp_path}/epoch_1.pth instead, the '
                    r'newest checkpoint before it that loads', warnings[0])
    assert f'{tmp_path}/epoch_2.pth: it is zero-filled' in warnings[0]


@pytest.mark.parametrize('last_checkpoint, reason', [
    ('', 'is empty'), ('{dir}/epoch_9.pth', 'names {dir}/epoch_9.pth, which does not exist')])
def test_auto_resume_without_a_usable_last_checkpoint(tmp_path, last_checkpoint, reason):
    cfg = work_dir_with(tmp_path, steps=(1, 2, 10))
    (tmp_path / 'last_checkpoint').write_text(last_checkpoint.format(dir=tmp_path))
    warnings = check_resume(cfg)
    # numbered, not sorted as text: epoch_10 is newer than epoch_9 and epoch_2
    expected = 'epoch_10.pth' if not last_checkpoint else 'epoch_2.pth'
    assert cfg.load_from == str(tmp_path / expected)
    assert reason.format(dir=tmp_path) in warnings[0]


def test_auto_resume_with_nothing_that_loads_is_an_error(tmp_path):
    cfg = work_dir_with(tmp_path, steps=(1, 2))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_2.pth'))
    truncate(tmp_path / 'epoch_2.pth')
    zero_fill(tmp_path / 'epoch_1.pth')
    with pytest.raises(CorruptCheckpointError, match=r'(?s)Cannot resume: .*epoch_2.pth, which is '
                       r'damaged: it is cut short.* and no checkpoint saved before it in \S+ '
                       r'loads\. Damaged:\n  \S+epoch_1.pth: it is zero-filled.*train from the '
                       r'start without --resume'):
        check_resume(cfg)


def test_no_last_checkpoint_is_left_to_mmengine(tmp_path):
    cfg = work_dir_with(tmp_path)
    (tmp_path / 'last_checkpoint').unlink()
    assert check_resume(cfg) == [] and cfg.load_from is None


def test_resume_from_a_damaged_path_names_the_one_to_use(tmp_path):
    work_dir_with(tmp_path)
    zero_fill(tmp_path / 'epoch_2.pth')
    cfg = Config(dict(resume=True, load_from=str(tmp_path / 'epoch_2.pth')))
    with pytest.raises(CorruptCheckpointError, match=rf'Cannot resume from {tmp_path}/epoch_2.pth: '
                       rf'it is zero-filled .*\.\nThe newest checkpoint before it that loads is '
                       rf'{tmp_path}/epoch_1.pth: resume from it with --resume '
                       rf'{tmp_path}/epoch_1.pth'):
        check_resume(cfg)
    zero_fill(tmp_path / 'epoch_1.pth')
    with pytest.raises(CorruptCheckpointError, match=r'(?s)No checkpoint saved before it in .* '
                       r'loads.*Damaged as well:\n  \S+epoch_1.pth: it is zero-filled'):
        check_resume(cfg)
    cfg.load_from = str(tmp_path / 'epoch_3.pth')  # whole: loaded by mmengine as given
    assert check_resume(cfg) == [] and cfg.load_from == str(tmp_path / 'epoch_3.pth')


# --------------------------------------------------------------------------------------------
# Saving through mmengine's CheckpointHook when the disk fills up mid-save
# --------------------------------------------------------------------------------------------


@MODELS.register_module(name='RAVLTTestLinear', force=True)
class Linear(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(256, 256)  # checkpoints of ~0.5 MB

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.fc(inputs)
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


@DATASETS.register_module(name='RAVLTTestVectors', force=True)
class Vectors(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return dict(inputs=torch.full((256, ), float(i)))


@HOOKS.register_module(name='RAVLTTestDiskFull', force=True)
class DiskFull(Hook):
    """From the ``at``-th save on, files cannot grow past ``limit`` bytes (RLIMIT_FSIZE: the
    write fails part-way with EFBIG, as with a full disk)."""

    def __init__(self, at, limit):
        self.at, self.limit, self.saves = at, limit, 0

    def before_save_checkpoint(self, runner, checkpoint):
        self.saves += 1
        if self.saves == self.at:
            resource.setrlimit(resource.RLIMIT_FSIZE,
                               (self.limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def train_toy(work_dir, atomic, disk_full_at=None, limit=0):
    cfg = Config(dict(
        model=dict(type='RAVLTTestLinear'), work_dir=str(work_dir),
        train_dataloader=dict(dataset=dict(type='RAVLTTestVectors'), batch_size=2,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate'), num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=2),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='RAVLTTestDiskFull', at=disk_full_at, limit=limit)],
        # runners of one process share loggers and visualizers by experiment name
        experiment_name=f'{work_dir.parent.name}_{work_dir.name}', log_level='WARNING'))
    if atomic:
        save_checkpoints_atomically(cfg)
        assert cfg.default_hooks.checkpoint.backend_args == dict(backend='atomic_local')
        assert cfg.custom_imports.imports == ['ravlt_dense.tools.saving']  # registers the backend
    Runner.from_cfg(cfg).train()


@pytest.fixture
def fsize_limit_restored():
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
    yield limits
    resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    signal.signal(signal.SIGXFSZ, handler)


@pytest.mark.parametrize('atomic', [True, False])
def test_a_save_cut_short_leaves_no_partial_checkpoint(tmp_path, atomic, fsize_limit_restored):
    train_toy(tmp_path / 'whole', atomic)
    size = (tmp_path / 'whole' / 'iter_2.pth').stat().st_size
    assert checkpoint_damage(str(tmp_path / 'whole' / 'iter_2.pth')) is None

    work_dir = tmp_path / 'full'
    with pytest.raises(OSError, match='File too large'):
        train_toy(work_dir, atomic, disk_full_at=2, limit=size // 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, fsize_limit_restored)
    partial = work_dir / 'iter_2.pth'
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'iter_1.pth')
    assert checkpoint_damage(str(work_dir / 'iter_1.pth')) is None
    if atomic:
        assert not partial.exists()
        assert [name for name in os.listdir(work_dir) if 'tmp' in name] == []  # cleaned up
    else:  # mmengine's own backend writes in place: half a checkpoint under the final name
        assert partial.stat().st_size == size // 2
        assert 'cut short' in checkpoint_damage(str(partial))


def test_the_dumped_config_imports_the_backend(tmp_path):
    """Our configs import ravlt_dense; the config a run dumps adds ravlt_dense.tools.saving, so that
    training from it with mmdet's or mmseg's tools finds the 'atomic_local' backend."""
    cfg = Config(dict(work_dir=str(tmp_path), custom_imports=dict(imports=['ravlt_dense']),
                      default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1))))
    save_checkpoints_atomically(cfg)
    cfg.dump(tmp_path / 'dumped.py')
    dumped = Config.fromfile(tmp_path / 'dumped.py')  # imports its custom_imports
    assert dumped.custom_imports.imports == ['ravlt_dense', 'ravlt_dense.tools.saving']
    assert dumped.default_hooks.checkpoint.backend_args == dict(backend='atomic_local')
    save_checkpoints_atomically(dumped)  # once is enough
    assert dumped.custom_imports.imports == ['ravlt_dense', 'ravlt_dense.tools.saving']


def test_configs_that_chose_their_storage_are_left_alone():
    for hook in (dict(type='CheckpointHook', backend_args=dict(backend='petrel')),
                 dict(type='CheckpointHook', out_dir='s3://bucket/ckpts'),
                 dict(type='EMAHook')):
        cfg = Config(dict(work_dir='work', default_hooks=dict(checkpoint=dict(hook))))
        save_checkpoints_atomically(cfg)
        assert cfg.default_hooks.checkpoint == hook
    cfg = Config(dict(work_dir='work', default_hooks=dict(checkpoint=None)))
    save_checkpoints_atomically(cfg)  # no hook, nothing to do
    assert cfg.default_hooks.checkpoint is None
