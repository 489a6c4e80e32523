"""Run a trained detector or segmentor on a video or a camera and write an annotated video.

    python demo/video_demo.py VIDEO CONFIG CHECKPOINT --out out.mp4 [--show] [--score-thr 0.3]
        [--batch-size 4] [--device cpu|cuda:0] [--opacity 0.5] [--max-frames N]
    python demo/video_demo.py VIDEO ZOO_NAME --out out.mp4  # mask-rcnn_ravlt-s_fpn_amp-1x_coco
    python demo/video_demo.py 0 CONFIG CHECKPOINT --show        # camera 0, in a window

The arguments are those of mmdet's and mmseg's demo/video_demo.py: VIDEO is a video file OpenCV
can decode, or the index of a camera (``0``); the model is a config and its CHECKPOINT (file,
URL or zoo name, ours or the authors' release, converted on load), or a name of the model zoo
(configs/metafile.yml) that brings its config and the authors' weights (``--weights`` replaces
them). Detection, instance and panoptic models (mmdet) draw their instances above
``--score-thr``; semantic segmentors (mmseg) paint their classes with ``--opacity``.

Frames go through the model ``--batch-size`` at a time (mmdet's DetInferencer or mmseg's
MMSegInferencer: the config's test pipeline applies) and are drawn by the config's visualizer.
``--out`` writes an mp4 of the input's size and frame rate; it appears whole when the video has
been read to its end (a camera: to ``--max-frames``, Ctrl-C or ``q`` in the window), never half
written. ``--show`` plays the result in a window (``q`` or Esc stops), which needs a display.
"""
import argparse
import contextlib
import os
import os.path as osp
import sys
import time
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np
from mmengine.config import Config
from mmengine.utils import ProgressBar

# importing ravlt_dense registers RAVLT and the types found in our checkpoints
from ravlt_dense.checkpoint import find_checkpoint
from ravlt_dense.tools import names
from ravlt_dense.tools.inference import default_device

import seg_demo  # demo/ is sys.path[0] when this runs as a script

WINDOW = 'video_demo'
ESCAPE_KEYS = (ord('q'), 27)  # q, Esc
CAMERA_FPS = 30.  # written for a camera that reports no frame rate


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('video', help='video file, or the index of a camera (e.g. 0)')
    parser.add_argument('model', help='config file, or a name of the model zoo '
                        '(configs/metafile.yml)')
    parser.add_argument('checkpoint', nargs='?',
                        help='checkpoint file or URL (a zoo name brings its own)')
    parser.add_argument('--weights', help="checkpoint (file or URL) instead of the zoo's")
    parser.add_argument('--out', help='output video file (.mp4)')
    parser.add_argument('--show', action='store_true', help='show the video in a window')
    parser.add_argument('--wait-time', type=float, default=1,
                        help='milliseconds each shown frame waits for a key (0: until one)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw instances with at least this score (detection)')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='opacity of the painted classes, in (0, 1] (segmentation)')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='frames per forward pass')
    parser.add_argument('--fps', type=float, default=None,
                        help=f"frame rate of --out (default: the input's; {CAMERA_FPS:g} for a "
                        'camera that reports none)')
    parser.add_argument('--fourcc', default='mp4v', help='four-character codec of --out')
    parser.add_argument('--max-frames', type=int, default=None,
                        help='stop after this many frames (default: the whole video)')
    parser.add_argument('--device', default=None,
                        help="'cpu' or a GPU such as 'cuda:0' (default: cuda:0 if available)")
    args = parser.parse_args(argv)
    check_options(parser, args)
    try:
        args.config, args.checkpoint = model_and_checkpoint(args.model, args.checkpoint,
                                                            args.weights)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    args.device = args.device or default_device()
    return args


def check_options(parser, args) -> None:
    """The options' values, before anything is opened or loaded."""
    if not (args.out or args.show):
        parser.error('nothing to do: give --out FILE.mp4 to write the video and/or --show to '
                     'watch it')
    if args.out and osp.isdir(args.out):
        parser.error(f'--out {args.out} is a folder: give a file name such as out.mp4')
    if args.out and osp.splitext(args.out)[1].lower() != '.mp4':
        parser.error(f'--out {args.out}: the video is written as mp4, name it FILE.mp4')
    if not 0 <= args.score_thr <= 1:
        parser.error(f'--score-thr must be in [0, 1], got {args.score_thr}')
    if not 0 < args.opacity <= 1:
        parser.error(f'--opacity must be in (0, 1], got {args.opacity}')
    if args.batch_size < 1:
        parser.error(f'--batch-size must be at least 1, got {args.batch_size}')
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f'--max-frames must be at least 1, got {args.max_frames}')
    if args.fps is not None and args.fps <= 0:
        parser.error(f'--fps must be positive, got {args.fps}')
    if len(args.fourcc) != 4:
        parser.error(f'--fourcc takes four characters (e.g. mp4v), got {args.fourcc!r}')
    if args.show and not has_display():
        parser.error('--show needs a display, and there is none (DISPLAY and WAYLAND_DISPLAY '
                     'are unset): write the video with --out instead')


def has_display() -> bool:
    """Whether a window can open: on Linux an X or Wayland display must be set (OpenCV's GUI
    aborts the process without one); other systems have their own."""
    if not sys.platform.startswith('linux'):
        return True
    return bool(os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))


def model_and_checkpoint(model: str, checkpoint: Optional[str],
                         weights: Optional[str]) -> Tuple[str, str]:
    """(config, checkpoint) of ``MODEL [CHECKPOINT]``: a config and its checkpoint, or a zoo
    name and its weights; ``weights`` replaces either checkpoint."""
    named = names.resolve_model(model, weights or checkpoint)  # a zoo name brings its weights
    if named.from_zoo:
        named.checkpoint()  # ValueError: a zoo config without released weights
    config, checkpoint = named.config, named.weights
    if checkpoint is None:
        raise ValueError(f'give the CHECKPOINT of {model} after it (or --weights)')
    if find_checkpoint(checkpoint) is None:
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    return config, checkpoint


@contextlib.contextmanager
def opencv_quiet():
    """OpenCV's own log silenced in the block."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


class VideoSource:
    """Frames of a video file or a camera (cv2.VideoCapture), checked when opened: a source
    that cannot be opened or gives no frame raises ValueError naming it.

    Args:
        source (str): A video file, or the index of a camera as digits ('0').
    """

    def __init__(self, source: str):
        self.is_camera = source.isdigit()
        self.name = f'camera {source}' if self.is_camera else source
        if not self.is_camera and not osp.isfile(source):
            raise FileNotFoundError(f'video not found: {source} (give a video file, or the index '
                                    'of a camera such as 0)')
        with opencv_quiet():  # its backends each log their failure: the message below says it
            self.capture = cv2.VideoCapture(int(source) if self.is_camera else source)
        if not self.capture.isOpened():
            self.capture.release()
            raise ValueError(f'cannot open camera {source}: there is no such camera here (or '
                             'it is in use)' if self.is_camera else
                             f'cannot read the video {source}: OpenCV cannot decode it (not a '
                             'video file, or a codec it lacks)')
        ok, first = self.capture.read()
        if not ok or first is None:
            self.capture.release()
            raise ValueError(f'{self.name} gives no frame (empty or damaged video)')
        self._first = first
        self.height, self.width = first.shape[:2]
        self.fps = self.capture.get(cv2.CAP_PROP_FPS)
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.num_frames = count if count > 0 and not self.is_camera else None

    def frames(self) -> Iterator[np.ndarray]:
        """The BGR frames, the first included, until the source ends."""
        frame = self._first
        while frame is not None:
            yield frame
            ok, frame = self.capture.read()
            if not ok:
                frame = None

    def batches(self, batch_size: int, max_frames: Optional[int]) -> Iterator[List[np.ndarray]]:
        """Lists of up to ``batch_size`` frames, ``max_frames`` in all at most."""
        batch, taken = [], 0
        for frame in self.frames():
            batch.append(frame)
            taken += 1
            if len(batch) == batch_size or taken == max_frames:
                yield batch
                batch = []
            if taken == max_frames:
                return
        if batch:
            yield batch

    def release(self):
        self.capture.release()


class AtomicVideoWriter:
    """cv2.VideoWriter into a temporary file beside ``path`` (same extension: OpenCV picks the
    container by it), renamed to ``path`` by :meth:`commit`; :meth:`discard` removes it."""

    def __init__(self, path: str, fourcc: str, fps: float, size: Tuple[int, int]):
        folder, name = osp.split(osp.abspath(path))
        self.made = missing_folders(folder)  # removed again by discard()
        os.makedirs(folder, exist_ok=True)
        self.path = path
        stem, ext = osp.splitext(name)
        self.tmp = osp.join(folder, f'.{stem}.tmp{os.getpid()}{ext}')
        self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if not self.writer.isOpened():
            self.discard()
            raise ValueError(f'OpenCV cannot write {path} with codec {fourcc!r} (try another '
                             '--fourcc, e.g. mp4v)')

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(frame)

    def commit(self) -> None:
        self.writer.release()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.writer.release()
        if osp.lexists(self.tmp):
            os.remove(self.tmp)
        for folder in self.made:
            os.rmdir(folder)


def missing_folders(folder: str) -> List[str]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while folder and not osp.exists(folder):
        missing.append(folder)
        folder = osp.dirname(folder)
    return missing


def is_segmentor(config: str) -> bool:
    """Whether ``config`` is an mmseg model (else mmdet's: detection, instance, panoptic)."""
    return Config.fromfile(config).get('default_scope') == 'mmseg'


def det_inferencer(config: str, checkpoint: str, device: str):
    """mmdet's DetInferencer with RAVLT's weights loading; its visualizer without storage
    backends (the demos write their drawings themselves)."""
    from ravlt_dense.apis import RAVLTDetInferencer
    cfg = Config.fromfile(config)
    cfg.visualizer.vis_backends = None
    return RAVLTDetInferencer(model=cfg, weights=checkpoint, device=device, show_progress=False)


class FramePainter:
    """The model and visualizer of a config: BGR frames in, BGR frames with the predictions
    drawn out (mmdet's or mmseg's visualizer, which draw on RGB images)."""

    def __init__(self, config: str, checkpoint: str, device: str, score_thr: float = 0.3,
                 opacity: float = 0.5):
        self.segmentation = is_segmentor(config)
        self.score_thr = score_thr
        if self.segmentation:
            self.inferencer = seg_demo.build_inferencer(seg_demo.load_config(config),
                                                        checkpoint, device)
            self.inferencer.visualizer.alpha = opacity
        else:
            self.inferencer = det_inferencer(config, checkpoint, device)
        self.inferencer.show_progress = False  # the demo shows its own progress, per frame

    def __call__(self, frames: List[np.ndarray]) -> List[np.ndarray]:
        samples = self.predict(frames)
        return [self.draw(frame, sample) for frame, sample in zip(frames, samples)]

    def predict(self, frames: List[np.ndarray]) -> list:
        """One data sample per frame, the frames in one batch."""
        if self.segmentation:
            samples = self.inferencer(frames, batch_size=len(frames), return_datasamples=True)
            return samples if isinstance(samples, list) else [samples]
        return self.inferencer(frames, batch_size=len(frames), return_datasamples=True,
                               no_save_pred=True)['predictions']

    def draw(self, frame: np.ndarray, sample) -> np.ndarray:
        visualizer = self.inferencer.visualizer
        kwargs = {} if self.segmentation else dict(pred_score_thr=self.score_thr)
        visualizer.add_datasample('frame', np.ascontiguousarray(frame[:, :, ::-1]), sample,
                                  draw_gt=False, show=False, **kwargs)
        return np.ascontiguousarray(visualizer.get_image()[:, :, ::-1])


def run(source: VideoSource, painter: FramePainter,
        writer: Optional[AtomicVideoWriter] = None, show: bool = False, batch_size: int = 1,
        max_frames: Optional[int] = None, wait_time: float = 1) -> Tuple[int, bool]:
    """Paint the frames of ``source``; write them with ``writer`` and/or show them.

    Return the number of frames painted and whether the user stopped the run (Ctrl-C, or q /
    Esc in the window). The video is committed once the source has been read to its end or to
    ``max_frames``, a camera's also when the user stops it; a video file stopped halfway, an
    error or no frame at all leave nothing.
    """
    total = min(filter(None, (source.num_frames, max_frames)), default=0)
    progress = ProgressBar(total)  # frames done, frames per second ("task/s"), ETA
    done, stopped = 0, False
    try:
        for batch in source.batches(batch_size, max_frames):
            for painted in painter(batch):
                if writer:
                    writer.write(painted)
                done += 1
                progress.update()
                if show and stop_key(painted, wait_time):
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        stopped = True
    except BaseException:
        if writer:
            writer.discard()
        raise
    finally:
        source.release()
        if show:
            cv2.destroyAllWindows()
        sys.stdout.write('\n')
    if writer:
        if done == 0 or (stopped and not source.is_camera):
            writer.discard()
        else:
            writer.commit()
    return done, stopped


def stop_key(frame: np.ndarray, wait_time: float) -> bool:
    """Show ``frame`` in the window; whether the user pressed q or Esc."""
    cv2.imshow(WINDOW, frame)
    return (cv2.waitKey(int(wait_time)) & 0xFF) in ESCAPE_KEYS


def main(argv=None):
    args = parse_args(argv)
    try:
        source = VideoSource(args.video)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'video_demo: error: {err}')
    try:
        painter = FramePainter(args.config, args.checkpoint, args.device, args.score_thr,
                               args.opacity)
    except BaseException:
        source.release()
        raise
    writer = None
    if args.out:
        try:
            writer = AtomicVideoWriter(args.out, args.fourcc, args.fps or source.fps or
                                       CAMERA_FPS, (source.width, source.height))
        except ValueError as err:  # a codec OpenCV lacks
            source.release()
            sys.exit(f'video_demo: error: {err}')
    start = time.perf_counter()
    done, stopped = run(source, painter, writer, args.show, args.batch_size, args.max_frames,
                        args.wait_time)
    seconds = time.perf_counter() - start
    print(f'{source.name}: {done} frame(s) in {seconds:.1f} s, {done / seconds:.2f} frames/s',
          flush=True)
    if args.out and stopped and not source.is_camera:
        sys.exit(f'video_demo: stopped at frame {done}: {args.out} not written (a video file is '
                 'written whole; --max-frames N writes its first N frames)')
    if args.out:
        print(f'{args.out}: {done} frame(s) of {source.width}x{source.height}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
