"""A real napari viewer: files on different grids line up in world space (RAS mm).

nibabel's ``make_moved_anat.py`` made ``anat_moved.nii`` = anatomical.nii's voxels with
the affine ``extra @ anat.affine`` (a header-only rigid move) and SPM resampled that
image onto a 4 mm canonical grid: ``reoriented_anat_moved.nii``. So anat_moved and the
reoriented file show the same anatomy at the same world point, on different grids; the
un-moved anatomical.nii does not.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from napari.utils.notifications import notification_manager
from nibabel.affines import from_matvec
from nibabel.eulerangles import euler2mat
from scipy import ndimage

from napari_reg.core.image import apply_affine
from napari_reg.io.volumes import load_volume


def make_anat_moved(nibabel_data, directory):
    """anat_moved.nii exactly as nibabel's make_moved_anat.py builds it."""
    img = nib.load(str(nibabel_data / "anatomical.nii"))
    extra = from_matvec(euler2mat(0.1, 0.2, 0.3), [3, 4, 5])
    moved = nib.Nifti1Image(img.dataobj, extra.dot(img.affine), img.header)
    moved.set_data_dtype(np.float32)
    path = directory / "anat_moved.nii"
    nib.save(moved, str(path))
    return path


def values_at_world(layer, world_points: np.ndarray, blur: float = 0.0) -> np.ndarray:
    """Trilinear samples of a layer (optionally blurred by ``blur`` voxels) at world
    points, located through napari's own world->data transform; NaN outside."""
    vox = np.array([layer.world_to_data(p) for p in world_points])
    data = ndimage.gaussian_filter(np.asarray(layer.data, float), blur)
    return ndimage.map_coordinates(data, vox.T, order=1, cval=np.nan)


def test_same_anatomy_at_same_world_point(make_napari_viewer, nibabel_data, tmp_path):
    viewer = make_napari_viewer()
    moved_path = make_anat_moved(nibabel_data, tmp_path)
    (moved,) = viewer.open(moved_path, plugin="napari-reg")
    (resliced,) = viewer.open(nibabel_data / "reoriented_anat_moved.nii", plugin="napari-reg")
    (unmoved,) = viewer.open(nibabel_data / "anatomical.nii", plugin="napari-reg")
    assert moved.data.shape != resliced.data.shape
    assert not np.allclose(moved.affine.affine_matrix, resliced.affine.affine_matrix)

    # World points: random voxel centres of anat_moved away from its border. The 4 mm
    # reslice lost the 2 mm detail, so anat_moved is compared after a 2 mm blur.
    vol = load_volume(moved_path)
    rng = np.random.default_rng(1)
    ijk = np.argwhere(np.ones(vol.shape, bool)[2:-2, 2:-2, 2:-2]) + 2
    world = apply_affine(vol.affine, ijk[rng.choice(len(ijk), 400, replace=False)])
    a = values_at_world(moved, world, blur=1.0)
    b = values_at_world(resliced, world)
    c = values_at_world(unmoved, world)
    ok = np.isfinite(b) & np.isfinite(c)
    assert ok.sum() > 300
    same = np.corrcoef(a[ok], b[ok])[0, 1]
    other = np.corrcoef(a[ok], c[ok])[0, 1]
    assert same > 0.93  # same anatomy at the same world point (measured 0.98)
    assert other < 0.5  # the un-moved file is 3-5 mm and ~20 deg off (measured 0.14)

    # napari's own lookup (on the current slice) at one world point agrees with the voxel
    # the file's affine names. (The axis-aligned layer: napari slices a rotated layer
    # without its out-of-plane rotation, GUIDE section 3.)
    point = world[0]
    viewer.dims.point = tuple(point)
    expected_voxel = np.rint(load_volume(nibabel_data / "reoriented_anat_moved.nii")
                             .world_to_voxel(point)).astype(int)
    assert resliced.get_value(point, world=True) == resliced.data[tuple(expected_voxel)]


def test_broken_file_keeps_viewer_working(make_napari_viewer, tmp_path, nibabel_data,
                                          make_broken_file):
    viewer = make_napari_viewer()
    received = []
    notification_manager.notification_ready.connect(received.append)
    try:
        path = make_broken_file("truncated")
        before = sorted(tmp_path.iterdir())
        assert viewer.open(path, plugin="napari-reg") == []
    finally:
        notification_manager.notification_ready.disconnect(received.append)
    assert any(path.name in str(n.message) for n in received)
    assert sorted(tmp_path.iterdir()) == before and len(viewer.layers) == 0
    (layer,) = viewer.open(nibabel_data / "anatomical.nii", plugin="napari-reg")
    assert layer.data.shape == (33, 41, 25)


def test_sample_and_save_through_manifest(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-reg", "mni_pair")
    fixed, moving = layers[0], layers[1]
    assert moving.colormap.name == "magenta" and moving.blending == "additive"
    out = tmp_path / "moving_copy.nii.gz"
    viewer.layers.selection = {moving}
    written = viewer.layers.save(str(out), selected=True, plugin="napari-reg")
    assert written == [str(out)]
    back = load_volume(out)
    np.testing.assert_array_equal(back.data, moving.data)
    np.testing.assert_allclose(back.affine, moving.affine.affine_matrix, atol=1e-5)
    assert fixed.affine.affine_matrix[0, 0] > 0 > moving.affine.affine_matrix[0, 0]
