"""ravlt_dense.tools.images: image collection from files and folders, decoding errors, and the names
of the results."""
import mmcv
import numpy as np
import pytest

from ravlt_dense.tools.images import collect_images, read_image, unique_stem


def test_folders_flat_and_recursive(tmp_path):
    (tmp_path / 'sub').mkdir()
    img = np.zeros((8, 8, 3), np.uint8)
    for path in (tmp_path / 'b.png', tmp_path / 'a.JPG', tmp_path / 'sub' / 'c.png'):
        mmcv.imwrite(img, str(path))
    (tmp_path / 'notes.txt').write_text('not an image')
    assert collect_images([str(tmp_path)]) == [str(tmp_path / 'a.JPG'), str(tmp_path / 'b.png')]
    assert collect_images([str(tmp_path)], recursive=True)[-1] == str(tmp_path / 'sub' / 'c.png')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='No images .* in folder .*empty'):
        collect_images([str(tmp_path / 'empty')])
    with pytest.raises(FileNotFoundError, match='Input image or folder not found: nowhere.png'):
        collect_images(['nowhere.png'])


def test_corrupt_image_is_named(tmp_path):
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'\xff\xd8 not a jpeg')
    with pytest.raises(ValueError, match=f'Cannot decode the image {bad}'):
        read_image(str(bad))


def test_unique_stem_keeps_results_of_same_named_inputs_apart():
    taken = set()
    names = [unique_stem(p, taken) for p in ('a/x.jpg', 'b/x.jpg', 'a/x.png', 'a/x_1.jpg')]
    assert names == ['x', 'x_1', 'x_2', 'x_1_1']
    assert taken == set(names)
