"""Deformable runners: each tool registers, then exports its whole fixed->moving map.

Every runner has the signature ``run_<tool>(fixed, moving, affine) -> export`` with
voxel-indexed ``(i, j, k)`` float32 arrays on one grid whose voxel->world affine (RAS
mm) is ``affine``. The runner performs the registration (this is what the benchmark
times and measures memory for) and returns a zero-argument ``export`` callable that
returns the dense map as displacements ``u`` with ``T(x) = x + u(x)``: shape
``(3, X, Y, Z)`` float32, world **RAS** mm, ``T`` mapping **fixed** world points to
**moving** world points (napari_reg's convention, GUIDE §2).

How each peer's map is read back:

* napari_reg: ``result.deformable.displacement_field(fixed).components``.
* elastix: ``itk.transformix_deformation_field`` (fixed grid, LPS vectors -> RAS by
  flipping x and y).
* ANTs, DIPY and greedy: the tool's own image warper applied to three "coordinate images" of
  the moving grid (voxel value = its world RAS x, y or z) with linear interpolation.
  Warping is ``warped(x) = image(T(x))`` and linear interpolation of a linear function is
  exact, so the warped coordinate images ARE ``T(x)`` in RAS mm: no transform-order or
  LPS/RAS convention of the tool can be misread. Where ``T(x)`` leaves the moving grid
  they read the tool's fill value 0; the coordinates carry a 10 m offset, so such
  points are recognised and returned as NaN (the map is unknown there).

Thread pools are capped at 2 by :func:`peers.set_threads` before the tool is imported.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

import numpy as np

from deform_pairs import world_grid
from peers import LPS, N_THREADS, _itk_image, itk_geometry

__all__ = ["DEFORM_TOOLS", "ENV", "WARM"]

Export = Callable[[], np.ndarray]


def _ours(fixed: np.ndarray, moving: np.ndarray, affine: np.ndarray, **kwargs) -> Export:
    from napari_reg import register
    from napari_reg.core.image import Volume

    fixed_v = Volume(fixed, affine, name="fixed")
    result = register(fixed_v, Volume(moving, affine, name="moving"), **kwargs)
    return lambda: np.asarray(result.deformable.displacement_field(fixed_v).components,
                              dtype=np.float32)


def run_ours_syn(fixed: np.ndarray, moving: np.ndarray, affine: np.ndarray) -> Export:
    """``register(fixed, moving, transform="syn")``: affine (MI) then SVF with local NCC."""
    return _ours(fixed, moving, affine, transform="syn")


def run_ours_bspline(fixed: np.ndarray, moving: np.ndarray, affine: np.ndarray) -> Export:
    """``register(fixed, moving, transform="bspline")``: affine then FFD, MI (default)."""
    return _ours(fixed, moving, affine, transform="bspline")


def run_ours_bspline_ncc(fixed: np.ndarray, moving: np.ndarray, affine: np.ndarray) -> Export:
    """``register(..., transform="bspline", metric="ncc")``: the mono-modal variant."""
    return _ours(fixed, moving, affine, transform="bspline", metric="ncc")


# Non-default settings, to see which option moves our accuracy (opt-in with --tools).
def run_ours_syn_fine(fixed: np.ndarray, moving: np.ndarray, affine: np.ndarray) -> Export:
    """SyN with 10 iterations at full resolution too (default: 100/70/50/0)."""
    return _ours(fixed, moving, affine, transform="syn",
                 deformable_options={"iterations": [100, 70, 50, 10]})


def run_ours_syn_tight(fixed: np.ndarray, moving: np.ndarray, affine: np.ndarray) -> Export:
    """SyN with a 10x tighter convergence test (1e-5: more iterations per level)."""
    return _ours(fixed, moving, affine, transform="syn",
                 deformable_options={"convergence_tolerance": 1e-5})


def run_ours_bspline_box(fixed: np.ndarray, moving: np.ndarray, affine: np.ndarray
                         ) -> Export:
    """B-spline (MI) sampling the whole fixed box, air included (default: foreground)."""
    return _ours(fixed, moving, affine, transform="bspline",
                 deformable_options={"sampling": "all"})


def run_elastix(fixed: np.ndarray, moving: np.ndarray, affine: np.ndarray) -> Export:
    """itk-elastix with its default ``affine`` then default ``bspline`` parameter maps."""
    import itk

    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(N_THREADS)
    fixed_img = _itk_image(itk, fixed, affine)
    moving_img = _itk_image(itk, moving, affine)
    params = itk.ParameterObject.New()
    params.AddParameterMap(params.GetDefaultParameterMap("affine"))
    params.AddParameterMap(params.GetDefaultParameterMap("bspline"))
    _, result = itk.elastix_registration_method(
        fixed_img, moving_img, parameter_object=params, number_of_threads=N_THREADS,
        log_to_console=False)

    def export() -> np.ndarray:
        # the field lives on the fixed grid (elastix writes the fixed geometry into the
        # final map), array indexed (k, j, i, vector) with LPS mm vectors
        field = itk.transformix_deformation_field(moving_img, result)
        u_lps = np.asarray(itk.array_from_image(field), dtype=np.float32)
        if u_lps.shape[:3] != fixed.shape[::-1]:
            raise RuntimeError(f"elastix field has grid {u_lps.shape[:3][::-1]}, "
                               f"expected the fixed grid {fixed.shape}")
        flip = LPS.diagonal()[:3].astype(np.float32).reshape(3, 1, 1, 1)
        return np.ascontiguousarray(u_lps.transpose(3, 2, 1, 0)) * flip

    return export


# Added to the coordinate images so that a real coordinate is never 0: the warpers' fill
# value (0 outside the moving grid) then marks the points a tool maps off the grid.
COORD_OFFSET_MM = 10000.0


def _coordinate_images(moving: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World RAS x, y, z (+ offset) of every moving voxel, ``(3, *shape)`` float64."""
    return world_grid(moving.shape, affine) + COORD_OFFSET_MM


def _map_from_warped(mapped: np.ndarray, fixed: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Warped coordinate images -> displacement ``u`` (RAS mm); NaN where off the grid."""
    off = np.any(mapped == 0.0, axis=0)
    u = (mapped - COORD_OFFSET_MM - world_grid(fixed.shape, affine)).astype(np.float32)
    u[:, off] = np.nan
    return u


def run_ants(fixed: np.ndarray, moving: np.ndarray, affine: np.ndarray) -> Export:
    """ANTsPy ``registration(type_of_transform='SyN')`` with its defaults (affine + SyN)."""
    import ants

    origin, spacing, direction = itk_geometry(affine)

    def to_ants(data: np.ndarray):
        return ants.from_numpy(np.asarray(data, dtype=np.float32), origin=tuple(origin),
                               spacing=tuple(spacing), direction=direction)

    tmp = tempfile.mkdtemp(prefix="bench_ants_syn_")
    fixed_img = to_ants(fixed)
    out = ants.registration(fixed_img, to_ants(moving), type_of_transform="SyN",
                            outprefix=os.path.join(tmp, "reg_"))

    def export() -> np.ndarray:
        try:
            coords = _coordinate_images(moving, affine)
            mapped = np.stack([
                ants.apply_transforms(fixed_img, ants.from_numpy(
                    c, origin=tuple(origin), spacing=tuple(spacing), direction=direction),
                    out["fwdtransforms"], interpolator="linear").numpy()
                for c in coords])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return _map_from_warped(mapped, fixed, affine)

    return export


def run_greedy(fixed: np.ndarray, moving: np.ndarray, affine: np.ndarray) -> Export:
    """greedy (picsl-greedy) as its documentation recommends: affine ``-a -dof 12
    -ia-image-centers -m NMI``, then ``-it`` that affine, ``-m NCC 2x2x2 -n 100x50x10
    -s 2.0vox 0.5vox``. The map is read back with greedy's own reslicer (``-rf -rm -r
    warp affine``) on coordinate images, like ANTs'."""
    import io

    import SimpleITK as sitk
    from picsl_greedy import Greedy3D

    from peers import sitk_image

    g = Greedy3D()
    log = io.StringIO()
    fixed_img, moving_img = sitk_image(fixed, affine), sitk_image(moving, affine)
    g.execute(f"-threads {N_THREADS} -i fix mov -a -dof 12 -ia-image-centers -m NMI -o aff",
              fix=fixed_img, mov=moving_img, aff=None, out=log, err=log)
    # "aff" below is greedy's cached output of the call above
    g.execute(f"-threads {N_THREADS} -i fix mov -it aff -m NCC 2x2x2 -n 100x50x10 "
              "-s 2.0vox 0.5vox -wp 0 -o warp", fix=fixed_img, mov=moving_img, warp=None,
              out=log, err=log)

    def export() -> np.ndarray:
        coords = _coordinate_images(moving, affine)
        images = {f"c{i}": sitk_image(c, affine) for i, c in enumerate(coords)}
        g.execute(f"-threads {N_THREADS} -rf fix -rm c0 o0 -rm c1 o1 -rm c2 o2 -r warp aff",
                  fix=fixed_img, o0=None, o1=None, o2=None, out=log, err=log, **images)
        mapped = np.stack([sitk.GetArrayFromImage(g[f"o{i}"]).transpose(2, 1, 0)
                           for i in range(3)])
        return _map_from_warped(mapped, fixed, affine)

    return export


def run_dipy(fixed: np.ndarray, moving: np.ndarray, affine: np.ndarray) -> Export:
    """DIPY ``SymmetricDiffeomorphicRegistration(CCMetric(3))`` with default iterations
    (100/100/25), prealigned by the centres of mass (the truth has no affine part)."""
    from dipy.align.imaffine import transform_centers_of_mass
    from dipy.align.imwarp import SymmetricDiffeomorphicRegistration
    from dipy.align.metrics import CCMetric

    static = np.asarray(fixed, dtype=np.float64)
    mov = np.asarray(moving, dtype=np.float64)
    prealign = transform_centers_of_mass(static, affine, mov, affine).affine
    sdr = SymmetricDiffeomorphicRegistration(CCMetric(3))
    mapping = sdr.optimize(static, mov, static_grid2world=affine, moving_grid2world=affine,
                           prealign=prealign)

    def export() -> np.ndarray:
        coords = _coordinate_images(moving, affine)
        mapped = np.stack([mapping.transform(c, interpolation="linear") for c in coords])
        return _map_from_warped(mapped, fixed, affine)

    return export


DEFORM_TOOLS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], Export]] = {
    "napari_reg_syn": run_ours_syn,
    "napari_reg_bspline": run_ours_bspline,
    "napari_reg_bspline_ncc": run_ours_bspline_ncc,
    "napari_reg_syn_fine": run_ours_syn_fine,
    "napari_reg_syn_tight": run_ours_syn_tight,
    "napari_reg_bspline_box": run_ours_bspline_box,
    "elastix": run_elastix,
    "ants": run_ants,
    "dipy": run_dipy,
    "greedy": run_greedy,
}

# Environment set in the child before the tool is imported. itk-elastix 0.25.4's wheel
# defaults to the TBB threader, and its B-spline stage (ASGD "Sampling gradients") then
# segfaults with 2 threads on this machine; ITK's own thread pool runs it fine.
ENV = {"elastix": {"ITK_GLOBAL_DEFAULT_THREADER": "Pool"}}

# Imports done in the child before the timer starts (as bench_affine.WARM).
_OURS = "from napari_reg import register; import napari_reg as m"
WARM = {
    "napari_reg_syn": _OURS,
    "napari_reg_bspline": _OURS,
    "napari_reg_bspline_ncc": _OURS,
    "napari_reg_syn_fine": _OURS,
    "napari_reg_syn_tight": _OURS,
    "napari_reg_bspline_box": _OURS,
    "elastix": "import itk; itk.ParameterObject; itk.elastix_registration_method; "
               "itk.transformix_deformation_field; import itk as m",
    "ants": "import ants as m",
    "dipy": "import dipy.align.imwarp, dipy.align.metrics, dipy.align.imaffine; import dipy as m",
    "greedy": "import SimpleITK, picsl_greedy; import picsl_greedy as m",
}
