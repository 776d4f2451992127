"""Groupwise template construction converges to the known mean of a synthetic group."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from napari_reg.core.atlas.template import (
    TemplateError,
    TemplateProgress,
    build_template,
    mean_affine,
)
from napari_reg.core.engine.result import RegistrationResult
from napari_reg.core.image import Volume, apply_affine
from napari_reg.core.transforms.base import CompositeTransform, MatrixTransform
from napari_reg.core.transforms.field import DisplacementField
from phantoms import phantom, phantom_volume

SHAPE, SPACING = (64, 56), (1.25, 1.25)


def _generators() -> list[np.ndarray]:
    """Matrix logarithms of two small 2D affines (rotation, scale, shear, shift)."""
    g1 = np.array([[0.05, -0.12, 4.0], [0.12, -0.03, -2.5], [0, 0, 0]])
    g2 = np.array([[-0.04, 0.03, -1.5], [-0.05, 0.06, 3.5], [0, 0, 0]])
    return [g1, g2]


def _group() -> tuple[list[Volume], list[np.ndarray]]:
    """Four phantoms moved by exp(+-G1), exp(+-G2): their log-Euclidean mean is the
    identity, so the unbiased template is the phantom itself, in its own place."""
    moves = [linalg.expm(s * g) for g in _generators() for s in (1.0, -1.0)]
    images = [phantom_volume(SHAPE, SPACING, transform=m, name=f"img{k}")
              for k, m in enumerate(moves)]
    return images, moves


def test_mean_affine_log_and_arithmetic() -> None:
    g = _generators()[0]
    pair = [linalg.expm(g), linalg.expm(-g)]
    np.testing.assert_allclose(mean_affine(pair, "log"), np.eye(3), atol=1e-10)
    arithmetic = mean_affine(pair, "arithmetic")
    assert np.abs(arithmetic - np.eye(3)).max() > 1e-3  # the log mean is the symmetric one
    with pytest.raises(TemplateError, match="reflection"):
        mean_affine([np.diag([-1.0, 1.0, 1.0]), np.eye(3)])


def test_affine_template_converges_to_the_known_mean() -> None:
    images, moves = _group()
    # The first image as the reference grid: a biased start that the correction removes.
    events: list[TemplateProgress] = []
    result = build_template(images, iterations=4, transform="affine", metric="ncc",
                            register_options={"levels": 2, "iterations": (60, 40),
                                              "samples": (2000, 3000)},
                            callback=events.append)
    grid = result.template
    truth = phantom(grid.world_grid())
    inner = tuple(slice(8, -8) for _ in SHAPE)  # the average is darker where images end
    r = np.corrcoef(grid.data[inner].ravel(), truth[inner].ravel())[0, 1]
    assert r > 0.98
    corners = grid.corners_world()
    for t, m in zip(result.transforms, moves, strict=True):
        # template world -> image world should be the image's own move
        assert np.abs(apply_affine(t.matrix, corners) - apply_affine(m, corners)).max() < 1.0
    biases = [h.bias_mm for h in result.history]
    assert biases[0] > 0.2 and biases[-1] < 0.1 and biases[-1] < biases[0] / 4, biases
    assert {e.phase for e in events} >= {"register", "registered", "average", "done"}


def test_deformable_correction_removes_a_shared_warp() -> None:
    """Non-linear maps from a stand-in driver: every image = phantom o (shared smooth warp
    o own affine). The correction must undo the shared warp, and the final maps compose
    the correction in (template -> image)."""
    grid = phantom_volume(SHAPE, SPACING, name="ref")
    points = grid.world_grid()
    bump = np.exp(-np.sum((points - [5.0, -4.0]) ** 2, axis=-1) / (2 * 12.0 ** 2))
    shared = DisplacementField(np.stack([2.5 * bump, -1.5 * bump], axis=-1), grid.affine)
    moves = [linalg.expm(s * g) for g in _generators()[:1] for s in (1.0, -1.0)]
    images = [Volume(phantom(apply_affine(np.linalg.inv(m), points)).astype(np.float32),
                     grid.affine, f"img{k}") for k, m in enumerate(moves)]
    calls = []

    def fake_register(fixed, moving, callback=None, cancel=None, **options):
        k = int(moving.name[3:])
        calls.append(options["transform"])
        return RegistrationResult(transform=CompositeTransform([shared, MatrixTransform(moves[k])]),
                                  initial_transform=MatrixTransform(np.eye(3)), levels=[],
                                  parameters={}, timings={}, linear_matrix=moves[k],
                                  final_cost=0.0)

    result = build_template(images, iterations=1, transform="syn", shape_step=1.0,
                            register_fn=fake_register)
    assert calls == ["syn", "syn"]
    history = result.history[0]
    assert history.bias_mm > 0.2
    # N(y) = A(D^-1(y)): the correction composed with the shared warp is the identity
    final = result.transforms[0]
    expected = apply_affine(moves[0], points.reshape(-1, 2))
    err = np.abs(final.transform_points(points.reshape(-1, 2)) - expected)
    assert np.percentile(np.linalg.norm(err, axis=1), 95) < 0.05


def test_bad_template_inputs() -> None:
    image = phantom_volume((8, 8), (1.0, 1.0))
    with pytest.raises(TemplateError, match="at least 2 images"):
        build_template([image])
    with pytest.raises(TemplateError, match="all images must be 2D or all 3D"):
        build_template([image, phantom_volume((8, 8, 8), (1.0, 1.0, 1.0))])
    with pytest.raises(TemplateError, match="unknown affine mean"):
        build_template([image, image], affine_mean="median")


def test_template_command_line(tmp_path) -> None:
    import json

    from napari_reg.cli import main
    from napari_reg.io.transform_files import read_itk_transform
    from napari_reg.io.volumes import load_volume, save_volume
    from phantoms import homogeneous

    shifts = [(4.0, -2.0, 2.0), (-2.0, 3.0, -1.0), (1.0, -4.0, 2.0)]
    paths = []
    for k, shift in enumerate(shifts):
        path = tmp_path / f"img{k}.nii.gz"
        save_volume(phantom_volume((24, 22, 20), (3.0, 3.0, 3.0),
                                   transform=homogeneous(np.eye(3), shift)), path)
        paths.append(str(path))
    out = tmp_path / "tpl"
    assert main(["template", *paths, "-o", str(out), "--workers", "0", "--transform",
                 "translation", "--metric", "ncc", "--levels", "2",
                 "--template-iterations", "2"]) == 0
    template = load_volume(out / "template.nii.gz")
    assert template.shape == (24, 22, 20)
    record = json.loads((out / "template.json").read_text())
    assert record["parameters"]["transform"] == "translation"
    mean = np.mean(shifts, axis=0)
    for k, shift in enumerate(shifts):  # template -> image = the shift about the group mean
        matrix = read_itk_transform(out / "transforms" / f"img{k}.tfm")
        np.testing.assert_allclose(matrix[:3, 3], np.subtract(shift, mean), atol=0.4)
    assert main(["template", str(tmp_path / "nope.nii.gz"), paths[0], "-o", str(out)]) == 1


def test_intensity_metric_across_contrasts_is_flagged() -> None:
    from napari_reg.core.atlas.labels import ModalityWarning

    images = [phantom_volume((32, 28), (2.0, 2.0), name="t1"),
              phantom_volume((32, 28), (2.0, 2.0), contrast="t2", name="t2")]
    with pytest.warns(ModalityWarning, match="metric='mi'"):
        result = build_template(images, iterations=1, transform="translation", metric="ssd",
                                register_options={"levels": 1, "iterations": 5})
    assert len(result.notes) == 1 and "'t2'" in result.notes[0]


def test_deformable_template_through_the_driver() -> None:
    """transform='syn' goes through register() (affine + SyN): non-linear maps, a template
    at least as close to the known mean as the affine one."""
    images, _ = _group()
    options = {"levels": 2, "iterations": (60, 40), "samples": (2000, 3000)}
    affine = build_template(images, iterations=2, metric="ncc", register_options=options)
    syn = build_template(images, iterations=2, transform="syn", metric="ncc",
                         register_options=options, shape_step=0.5)
    assert not syn.transforms[0].is_linear
    inner = tuple(slice(8, -8) for _ in SHAPE)
    truth = phantom(syn.template.world_grid())[inner].ravel()

    def r(t):
        return np.corrcoef(t.data[inner].ravel(), truth)[0, 1]

    assert r(syn.template) > 0.98 and r(syn.template) >= r(affine.template) - 0.002


def test_deformable_template_command_writes_the_ants_layout(tmp_path) -> None:
    """Each deformable template map in register's layout: warp then affine = the whole map."""
    import json

    from ants_layout import check_warp_then_affine_is_the_whole_map
    from napari_reg.cli import main
    from napari_reg.io.volumes import save_volume
    from phantoms import homogeneous

    paths = []
    for k, shift in enumerate([(3.0, -2.0, 2.0), (-2.0, 3.0, -1.0)]):
        path = tmp_path / f"img{k}.nii.gz"
        save_volume(phantom_volume((24, 22, 20), (3.0, 3.0, 3.0),
                                   transform=homogeneous(np.eye(3), shift)), path)
        paths.append(str(path))
    out = tmp_path / "tpl"
    assert main(["template", *paths, "-o", str(out), "--workers", "0", "--transform", "syn",
                 "--metric", "ncc", "--levels", "2", "--template-iterations", "1"]) == 0
    grid = np.asarray(nib_affine(out / "template.nii.gz"))
    record = json.loads((out / "template.json").read_text())
    for k in range(2):
        stem = out / "transforms" / f"img{k}"
        entry = record["transforms"][k]
        assert entry["transform"] == str(stem) + "_whole_map_field.nii.gz"
        assert entry["warp"] == str(stem) + "_warp.nii.gz"
        check_warp_then_affine_is_the_whole_map(stem, grid, (24, 22, 20))


def nib_affine(path):
    import nibabel as nib

    return nib.load(str(path)).affine
