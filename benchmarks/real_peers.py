"""Deformable runners for the real-anatomy benchmark, 2D and 3D, fixed and moving grids apart.

Every runner has the signature ``run(fixed, fixed_affine, moving, moving_affine) ->
export`` (voxel-indexed float32 arrays, ``(d+1, d+1)`` voxel->world RAS mm affines) and
registers (what the benchmark times); ``export()`` returns the whole map as
displacements ``u`` with ``T(x) = x + u(x)``: ``(d, *fixed.shape)`` float32, world RAS
mm, ``T`` mapping **fixed** world points to **moving** world points (GUIDE §2); NaN where
the tool's read-back has no value.

How the peers' maps are read back: each tool's own image warper (greedy ``-rf/-rm/-r``,
ANTs ``apply_transforms``) applies the tool's own result, with linear interpolation, to
``d`` "coordinate images" of the moving grid (voxel value = its world RAS coordinate +
10 m): linear interpolation of a linear function is exact, so the warped images ARE
``T(x)``, and no transform order or LPS/RAS convention can be misread. elastix gives
its whole-map deformation field on the fixed grid directly (LPS vectors: x, y negated).

Peers' settings: greedy as its documentation recommends (affine ``-a -dof 12
-ia-image-centers -m NMI``; then ``-it affine -m NCC 2x2x2 -n 100x50x10 -s 2.0vox
0.5vox``); ANTsPy ``registration(type_of_transform="SyN")`` with its defaults; elastix's
default ``affine`` and ``bspline`` parameter maps. 2 threads everywhere.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable

import numpy as np

from real_pairs import world_grid

__all__ = ["REAL_TOOLS", "REAL_WARM", "REAL_ENV", "itk_geometry_nd"]

N_THREADS = 2
COORD_OFFSET_MM = 10000.0
Export = Callable[[], np.ndarray]


def itk_geometry_nd(affine: np.ndarray) -> tuple[list, list, np.ndarray]:
    """RAS voxel->world ``(d+1, d+1)`` affine -> ITK ``(origin, spacing, direction)``, LPS
    (x and y negated; in 2D both axes)."""
    d = affine.shape[0] - 1
    flip = np.ones(d)
    flip[:2] = -1.0
    lps = flip[:, None] * np.asarray(affine, np.float64)[:d, :]
    spacing = np.linalg.norm(lps[:, :d], axis=0)
    return lps[:, d].tolist(), spacing.tolist(), lps[:, :d] / spacing


def _coords(moving: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The ``d`` coordinate images (+ offset) and, last, an image of ones."""
    return np.concatenate([world_grid(moving.shape, affine) + COORD_OFFSET_MM,
                           np.ones((1, *moving.shape))])


def _map_from_warped(mapped: np.ndarray, fixed: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Warped coordinate images + warped ones -> ``u`` (RAS mm). Where the map leaves the
    moving grid the warper blends in its fill value 0: the warped ones drop below 1
    there, and the map is unknown (NaN)."""
    coords, ones = mapped[:-1], mapped[-1]
    u = (coords - COORD_OFFSET_MM - world_grid(fixed.shape, affine)).astype(np.float32)
    u[:, np.abs(ones - 1.0) > 1e-6] = np.nan
    return u


# ---------------------------------------------------------------- napari_reg
def _register():
    from napari_reg import register  # the front door (issue 11)

    return register


def _ours(fixed, fa, moving, ma, **kwargs) -> Export:
    from napari_reg.core.image import Volume

    fixed_v = Volume(fixed, fa, name="fixed")
    result = _register()(fixed_v, Volume(moving, ma, name="moving"), **kwargs)
    if result.deformable is None:  # linear: the dense map of the matrix
        m = np.asarray(result.transform.matrix, np.float64)
        d = fixed.ndim

        def export_linear() -> np.ndarray:
            x = world_grid(fixed.shape, fa)
            mapped = np.tensordot(m[:d, :d], x, axes=1) + m[:d, d].reshape((d,) + (1,) * d)
            return (mapped - x).astype(np.float32)

        return export_linear
    return lambda: np.asarray(result.deformable.displacement_field(fixed_v).components,
                              dtype=np.float32)


def run_ours_affine(fixed, fa, moving, ma) -> Export:
    """``register(..., transform="affine")`` (the Affine preset): the deformables' start."""
    return _ours(fixed, fa, moving, ma, transform="affine", metric="mi", init="com")


def run_ours_syn(fixed, fa, moving, ma) -> Export:
    """``register(..., transform="syn")`` (the Affine + diffeomorphic preset)."""
    return _ours(fixed, fa, moving, ma, transform="syn", metric="mi", init="com")


def run_ours_syn_mi(fixed, fa, moving, ma) -> Export:
    """SyN with mutual information as its deformable metric (the multi-modal variant)."""
    return _ours(fixed, fa, moving, ma, transform="syn", metric="mi", init="com",
                 deformable_metric="mi")


def run_ours_bspline(fixed, fa, moving, ma) -> Export:
    """``register(..., transform="bspline")`` (the Affine + B-spline preset, MI)."""
    return _ours(fixed, fa, moving, ma, transform="bspline", metric="mi", init="com")


def run_ours_bspline_ncc(fixed, fa, moving, ma) -> Export:
    """B-spline with NCC for the deformable stage (mono-modal variant)."""
    return _ours(fixed, fa, moving, ma, transform="bspline", metric="mi", init="com",
                 deformable_metric="ncc")


# ---------------------------------------------------------------- greedy
def _sitk(data: np.ndarray, affine: np.ndarray):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(data.T, dtype=np.float32))
    origin, spacing, direction = itk_geometry_nd(affine)
    img.SetOrigin(origin)
    img.SetSpacing(spacing)
    img.SetDirection(direction.ravel().tolist())
    return img


def run_greedy(fixed, fa, moving, ma) -> Export:
    """greedy (picsl-greedy): affine (NMI, 12 dof, image centres) then NCC deformable."""
    import SimpleITK as sitk
    from picsl_greedy import Greedy2D, Greedy3D

    d = fixed.ndim
    g = (Greedy2D if d == 2 else Greedy3D)()
    fixed_img, moving_img = _sitk(fixed, fa), _sitk(moving, ma)
    log = io.StringIO()
    g.execute(f"-threads {N_THREADS} -i fix mov -a -dof 12 -ia-image-centers -m NMI "
              "-o aff", fix=fixed_img, mov=moving_img, aff=None, out=log, err=log)
    radius = "x".join(["2"] * d)
    g.execute(f"-threads {N_THREADS} -i fix mov -it aff -m NCC {radius} -n 100x50x10 "
              "-s 2.0vox 0.5vox -wp 0 -o warp", fix=fixed_img, mov=moving_img, warp=None,
              out=log, err=log)  # "aff": greedy's cached output of the first call

    def export() -> np.ndarray:
        coords = _coords(moving, ma)
        names = {f"c{i}": _sitk(c, ma) for i, c in enumerate(coords)}
        outs = {f"o{i}": None for i in range(d + 1)}
        rm = " ".join(f"-rm c{i} o{i}" for i in range(d + 1))
        g.execute(f"-threads {N_THREADS} -rf fix {rm} -r warp aff", fix=fixed_img,
                  out=log, err=log, **names, **outs)
        mapped = np.stack([sitk.GetArrayFromImage(g[f"o{i}"]).T for i in range(d + 1)])
        return _map_from_warped(mapped.astype(np.float64), fixed, fa)

    return export


def run_greedy_affine(fixed, fa, moving, ma) -> Export:
    """greedy's affine stage alone (``-a -dof 12 -ia-image-centers -m NMI``); its ``-o``
    matrix is RAS fixed -> moving, our convention."""
    from picsl_greedy import Greedy2D, Greedy3D

    d = fixed.ndim
    g = (Greedy2D if d == 2 else Greedy3D)()
    log = io.StringIO()
    g.execute(f"-threads {N_THREADS} -i fix mov -a -dof 12 -ia-image-centers -m NMI "
              "-o aff", fix=_sitk(fixed, fa), mov=_sitk(moving, ma), aff=None, out=log,
              err=log)
    m = np.asarray(g["aff"], np.float64)

    def export() -> np.ndarray:
        x = world_grid(fixed.shape, fa)
        mapped = np.tensordot(m[:d, :d], x, axes=1) + m[:d, d].reshape((d,) + (1,) * d)
        return (mapped - x).astype(np.float32)

    return export


# ---------------------------------------------------------------- ANTs
def run_ants(fixed, fa, moving, ma) -> Export:
    """ANTsPy ``registration(type_of_transform="SyN")`` with its defaults (affine + SyN)."""
    import ants

    def to_ants(data, affine):
        origin, spacing, direction = itk_geometry_nd(affine)
        return ants.from_numpy(np.asarray(data, np.float32), origin=tuple(origin),
                               spacing=tuple(spacing), direction=direction)

    tmp = tempfile.mkdtemp(prefix="bench_real_ants_")
    fixed_img = to_ants(fixed, fa)
    out = ants.registration(fixed_img, to_ants(moving, ma), type_of_transform="SyN",
                            outprefix=os.path.join(tmp, "reg_"))

    def export() -> np.ndarray:
        try:
            mapped = np.stack([
                ants.apply_transforms(fixed_img, to_ants(c, ma), out["fwdtransforms"],
                                      interpolator="linear").numpy()
                for c in _coords(moving, ma)])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return _map_from_warped(mapped.astype(np.float64), fixed, fa)

    return export


# ---------------------------------------------------------------- elastix
def run_elastix(fixed, fa, moving, ma) -> Export:
    """itk-elastix, default ``affine`` then default ``bspline`` parameter maps."""
    import itk

    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(N_THREADS)

    def to_itk(data, affine):
        img = itk.image_from_array(np.ascontiguousarray(data.T, dtype=np.float32))
        origin, spacing, direction = itk_geometry_nd(affine)
        img.SetOrigin(origin)
        img.SetSpacing(spacing)
        img.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction)))
        return img

    fixed_img, moving_img = to_itk(fixed, fa), to_itk(moving, ma)
    params = itk.ParameterObject.New()
    params.AddParameterMap(params.GetDefaultParameterMap("affine"))
    params.AddParameterMap(params.GetDefaultParameterMap("bspline"))
    _, result = itk.elastix_registration_method(
        fixed_img, moving_img, parameter_object=params, number_of_threads=N_THREADS,
        log_to_console=False)

    def export() -> np.ndarray:
        # whole-map field on the fixed grid, array (..., j, i, vector), LPS mm vectors
        field = np.asarray(itk.array_from_image(
            itk.transformix_deformation_field(moving_img, result)), np.float32)
        d = fixed.ndim
        u = np.moveaxis(field, -1, 0)
        u = np.stack([c.T for c in u])
        if u.shape[1:] != fixed.shape:
            raise RuntimeError(f"elastix field grid {u.shape[1:]} != fixed {fixed.shape}")
        flip = np.ones(d, np.float32)
        flip[:2] = -1.0
        return u * flip.reshape((d,) + (1,) * d)

    return export


REAL_TOOLS: dict[str, Callable[..., Export]] = {
    "napari_reg_affine": run_ours_affine,
    "napari_reg_bspline": run_ours_bspline,
    "napari_reg_bspline_ncc": run_ours_bspline_ncc,
    "napari_reg_syn": run_ours_syn,
    "napari_reg_syn_mi": run_ours_syn_mi,
    "greedy": run_greedy,
    "greedy_affine": run_greedy_affine,
    "ants": run_ants,
    "elastix": run_elastix,
}

_OURS = "import napari_reg.core.engine.register, napari_reg.core.image; import napari_reg as m"
REAL_WARM = {
    **{t: _OURS for t in REAL_TOOLS if t.startswith("napari_reg")},
    "greedy": "import SimpleITK, picsl_greedy; import picsl_greedy as m",
    "greedy_affine": "import SimpleITK, picsl_greedy; import picsl_greedy as m",
    "ants": "import ants as m",
    "elastix": "import itk; itk.ParameterObject; itk.elastix_registration_method; "
               "itk.transformix_deformation_field; import itk as m",
}
# itk-elastix's TBB threader segfaults in its B-spline stage with 2 threads here
# (benchmarks/README.md); ITK's own pool runs it.
REAL_ENV = {"elastix": {"ITK_GLOBAL_DEFAULT_THREADER": "Pool"}}
