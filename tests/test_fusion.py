"""Label fusion rules on small known cases, and the multi-atlas pipeline on phantoms."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_reg.core.atlas.fusion import (
    AtlasProgress,
    dice_table,
    fuse_labels,
    local_similarity,
    majority_vote,
    segment_with_atlases,
    weighted_vote,
)
from napari_reg.core.atlas.labels import Atlas, LabelError, LabelTableError, ModalityWarning
from napari_reg.core.image import Volume, apply_affine
from phantoms import grid_affine, homogeneous, phantom, phantom_volume, rotation


def test_majority_vote_counts_and_breaks_ties_towards_the_smaller_label() -> None:
    a = np.array([1, 1, 2, 3, 0])
    b = np.array([1, 2, 2, 4, 5])
    c = np.array([2, 2, 1, 5, 5])
    np.testing.assert_array_equal(majority_vote([a, b, c]), [1, 2, 2, 3, 5])
    np.testing.assert_array_equal(majority_vote([a, b]), [1, 1, 2, 3, 0])  # ties


def test_weighted_vote_lets_a_confident_minority_win() -> None:
    maps = [np.array([1, 1, 1]), np.array([2, 2, 2]), np.array([2, 2, 2])]
    weights = [np.array([3.0, 1.0, 2.0]), np.ones(3), np.ones(3)]
    np.testing.assert_array_equal(weighted_vote(maps, weights), [1, 2, 1])  # 2 vs 2: smaller
    with pytest.raises(LabelError, match="non-negative"):
        weighted_vote(maps, [np.full(3, -1.0), np.ones(3), np.ones(3)])
    with pytest.raises(LabelError, match="share one grid"):
        majority_vote([np.zeros(3), np.zeros(4)])


def test_local_similarity_of_identical_and_unrelated_images() -> None:
    subject = phantom_volume((40, 40), (1.0, 1.0), name="s")
    same = local_similarity(subject, subject, "lncc", radius_mm=3.0)
    structured = ndimage_std(subject.data) > 0.02
    assert np.all(same[structured] > 0.99)
    assert np.abs(local_similarity(subject, subject, "lssd")).max() < 1e-12
    negated = local_similarity(subject, subject.with_data(-subject.data), "lncc")
    assert np.all(negated[structured] < -0.99)


def ndimage_std(data: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    mean = ndimage.uniform_filter(data, 7)
    return np.sqrt(np.maximum(ndimage.uniform_filter(data * data, 7) - mean * mean, 0))


@pytest.mark.parametrize(("similarity", "at_most"), [("lncc", 0.5), ("lssd", 0.05)])
def test_weighted_voting_trusts_the_locally_similar_atlas(similarity: str, at_most: float) -> None:
    """Two atlases agree on a wrong (shifted) answer, one is right: majority follows the
    pair, locally weighted voting follows the atlas whose image matches the subject.
    (LNCC forgives a shift more than LSSD does: a shifted edge still correlates.)"""
    shape = (48, 48)
    affine = grid_affine(shape, (1.0, 1.0))
    world = Volume(np.zeros(shape), affine).world_grid()
    subject = Volume(phantom(world).astype(np.float32), affine, "subject")
    truth = (phantom(world) > 0.6).astype(np.uint8) + (phantom(world) > 0.75)
    shifted = world - [4.0, 3.0]
    bad_image = Volume(phantom(shifted).astype(np.float32), affine)
    bad_labels = (phantom(shifted) > 0.6).astype(np.uint8) + (phantom(shifted) > 0.75)
    maps = [Volume(truth, affine), Volume(bad_labels, affine), Volume(bad_labels.copy(), affine)]
    images = [subject, bad_image, bad_image]
    fused, confidence = fuse_labels(maps, "weighted", subject, images, similarity=similarity,
                                    radius_mm=3.0)
    majority, _ = fuse_labels(maps, "majority")
    errors_weighted = np.count_nonzero(fused.data != truth)
    errors_majority = np.count_nonzero(majority.data != truth)
    assert errors_majority == np.count_nonzero(bad_labels != truth) > 100
    assert errors_weighted < at_most * errors_majority
    assert 0.0 <= confidence.data.min() and confidence.data.max() <= 1.0 + 1e-6


def _atlas(matrix: np.ndarray, name: str, contrast: str = "t1", label_offset: int = 0) -> Atlas:
    """Phantom and its labels seen through the fixed->moving map ``matrix``."""
    shape, spacing = (26, 22, 20), (3.0, 3.0, 3.0)
    image = phantom_volume(shape, spacing, transform=matrix, contrast=contrast, name=name)
    world = apply_affine(np.linalg.inv(matrix), image.world_grid())
    labels = _phantom_labels(world) + label_offset * (_phantom_labels(world) > 0)
    return Atlas(image, Volume(labels, image.affine, f"{name} labels"), name)


def _phantom_labels(world: np.ndarray) -> np.ndarray:
    value = phantom(world)
    return ((value > 0.25).astype(np.uint8) + (value > 0.65)).astype(np.uint8)


FAST = {"levels": 2, "iterations": (40, 20), "samples": (2000, 4000)}


def test_multi_atlas_segmentation_of_a_phantom() -> None:
    subject = phantom_volume((26, 22, 20), (3.0, 3.0, 3.0), name="subject")
    truth = subject.with_data(_phantom_labels(subject.world_grid()))
    moves = [homogeneous(rotation(0.05, -0.04, 0.08), [4.0, -3.0, 2.0]),
             homogeneous(1.05 * rotation(-0.06, 0.03, 0.0), [-3.0, 2.0, -2.0]),
             homogeneous(0.95 * np.eye(3), [2.0, 3.0, 0.0])]
    atlases = [_atlas(m, f"a{k}") for k, m in enumerate(moves)]
    events: list[AtlasProgress] = []
    result = segment_with_atlases(subject, atlases, transform="affine", metric="ncc",
                                  fusion="weighted", truth=truth, register_options=FAST,
                                  callback=events.append)
    assert result.labels.same_grid(subject)
    assert result.values.tolist() == [0, 1, 2]
    assert set(result.dice) == {"fused", "a0", "a1", "a2"}
    assert min(result.dice["fused"].values()) > 0.9
    for k, m in enumerate(moves):  # each transform found its known move
        err = np.abs(apply_affine(result.transforms[k].matrix, subject.corners_world())
                     - apply_affine(m, subject.corners_world())).max()
        assert err < 1.5
    phases = [e.phase for e in events]
    assert phases.count("propagate") == 3 and phases[-1] == "done"
    assert {e.atlas_index for e in events if e.phase == "register"} == {0, 1, 2}
    assert "fused" in dice_table(result.dice)


def test_pipeline_refuses_disagreeing_label_tables_before_registering() -> None:
    subject = phantom_volume((26, 22, 20), (3.0, 3.0, 3.0), name="subject")
    atlases = [_atlas(np.eye(4), "a"), _atlas(np.eye(4), "b", label_offset=10)]
    called = []
    with pytest.raises(LabelTableError, match="'b' lacks labels"):
        segment_with_atlases(subject, atlases, register_fn=lambda *a, **k: called.append(1))
    assert not called


def test_pipeline_warns_about_an_intensity_metric_across_contrasts() -> None:
    subject = phantom_volume((26, 22, 20), (3.0, 3.0, 3.0), name="subject")
    atlas = _atlas(np.eye(4), "t2 atlas", contrast="t2")
    with pytest.warns(ModalityWarning):
        result = segment_with_atlases(subject, [atlas], metric="ssd", fusion="majority",
                                      register_options={"levels": 1, "iterations": 2})
    assert any("metric='mi'" in note for note in result.notes)


def test_segment_command_line(tmp_path, capsys) -> None:
    from napari_reg.cli import main
    from napari_reg.io.volumes import load_volume, save_volume

    subject = phantom_volume((26, 22, 20), (3.0, 3.0, 3.0), name="subject")
    save_volume(subject, tmp_path / "subject.nii.gz")
    save_volume(subject.with_data(_phantom_labels(subject.world_grid())), tmp_path / "gt.nii.gz")
    argv = ["segment", str(tmp_path / "subject.nii.gz")]
    for k, m in enumerate([homogeneous(np.eye(3), [3.0, -2.0, 1.0]),
                           homogeneous(np.eye(3), [-2.0, 2.0, -1.0])]):
        atlas = _atlas(m, f"a{k}")
        save_volume(atlas.image, tmp_path / f"a{k}.nii.gz")
        save_volume(atlas.labels, tmp_path / f"a{k}_labels.nii.gz")
        argv += ["--atlas", str(tmp_path / f"a{k}.nii.gz"), str(tmp_path / f"a{k}_labels.nii.gz")]
    out = tmp_path / "seg"
    argv += ["-o", str(out), "--truth", str(tmp_path / "gt.nii.gz"), "--levels", "2",
             "--metric", "ncc", "--fusion", "majority"]
    assert main(argv) == 0
    labels = load_volume(out / "labels.nii.gz")
    np.testing.assert_allclose(labels.affine, subject.affine, atol=1e-5)
    assert set(np.unique(labels.data)) == {0, 1, 2}
    record = json.loads((out / "segment.json").read_text())
    assert min(record["dice"]["fused"].values()) > 0.85
    assert (out / "dice.tsv").read_text().startswith("label\tfused\ta0\ta1")
    assert main(argv) == 1  # outputs exist: refused without --overwrite
    assert "pass --overwrite" in capsys.readouterr().err
    argv[argv.index("--truth") + 1] = str(tmp_path / "missing.nii.gz")
    assert main(argv + ["--overwrite"]) == 1
    assert "not found" in capsys.readouterr().err


def test_deformable_atlas_registration_through_the_driver() -> None:
    subject = phantom_volume((26, 22, 20), (3.0, 3.0, 3.0), name="subject")
    truth = subject.with_data(_phantom_labels(subject.world_grid()))
    atlas = _atlas(homogeneous(rotation(0.03, 0.0, 0.05), [3.0, -2.0, 1.0]), "a")
    result = segment_with_atlases(subject, [atlas], transform="syn", metric="ncc",
                                  fusion="majority", truth=truth, register_options=FAST)
    assert not result.transforms[0].is_linear
    assert min(result.dice["fused"].values()) > 0.8


def test_deformable_segment_writes_the_ants_layout(tmp_path) -> None:
    """Each deformable atlas map in register's layout: warp then affine = the whole map."""
    from ants_layout import check_warp_then_affine_is_the_whole_map
    from napari_reg.cli import main
    from napari_reg.io.volumes import save_volume

    subject = phantom_volume((26, 22, 20), (3.0, 3.0, 3.0), name="subject")
    save_volume(subject, tmp_path / "subject.nii.gz")
    atlas = _atlas(homogeneous(rotation(0.03, 0.0, 0.05), [3.0, -2.0, 1.0]), "a")
    save_volume(atlas.image, tmp_path / "a.nii.gz")
    save_volume(atlas.labels, tmp_path / "a_labels.nii.gz")
    out = tmp_path / "seg"
    assert main(["segment", str(tmp_path / "subject.nii.gz"), "--atlas",
                 str(tmp_path / "a.nii.gz"), str(tmp_path / "a_labels.nii.gz"), "-o", str(out),
                 "--transform", "syn", "--metric", "ncc", "--levels", "2",
                 "--fusion", "majority"]) == 0
    assert not (out / "atlas_1_field.nii.gz").exists()
    check_warp_then_affine_is_the_whole_map(out / "atlas_1", subject.affine, subject.shape)
