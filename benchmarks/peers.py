"""Run one registration tool on arrays and return its 4x4 world RAS fixed->moving matrix.

Every runner has the signature ``run_<tool>(fixed, fixed_affine, moving, moving_affine)``
with voxel-indexed ``(i, j, k)`` float arrays and 4x4 voxel->world RAS mm affines, and
returns the homogeneous matrix ``T`` that maps **fixed** world RAS mm to **moving** world
RAS mm (napari_reg's convention, GUIDE §2).

ITK-based tools (elastix, ANTs, SimpleITK) live in LPS physical space and their
registration transforms map fixed physical points to moving physical points, in the
ITK matrix-offset form ``T(p) = A (p - c) + c + t`` with centre ``c``. The conversion is
``T_ras = L T_lps L`` with ``L = diag(-1, -1, 1, 1)``. DIPY works in the images' own
(nibabel, RAS) world and its ``AffineMap.affine`` already maps static (fixed) world to
moving world.

Imports of the tools happen inside the runners so that each tool is loaded only in the
child process that runs it (bench_affine.py forks one process per run), and thread
counts are set before the import: 2 threads everywhere, for fairness on 2 cores.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import numpy as np

__all__ = [
    "LPS",
    "TOOLS",
    "itk_geometry",
    "itk_params_to_ras",
    "fit_affine",
    "run_napari_reg",
    "run_elastix",
    "run_ants",
    "run_dipy",
    "run_simpleitk",
    "run_greedy",
    "set_threads",
]

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
N_THREADS = 2

Runner = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def set_threads(n: int = N_THREADS) -> None:
    """Cap every thread pool we know of (ITK, OpenMP, BLAS) at ``n``; call before imports."""
    for var in (
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    ):
        os.environ[var] = str(n)


# ---------------------------------------------------------------- conversions
def itk_geometry(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RAS voxel->world affine -> ITK ``(origin, spacing, direction)`` in LPS.

    ITK: ``p_lps = origin + direction @ diag(spacing) @ index`` with index ``(i, j, k)``.
    """
    lps = LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    return lps[:3, 3].copy(), spacing, direction


def itk_params_to_ras(params: np.ndarray, center: np.ndarray) -> np.ndarray:
    """ITK AffineTransform parameters (9 matrix entries row-major, 3 translation) and
    centre (LPS mm) -> 4x4 RAS fixed->moving matrix.

    ITK: ``T(p) = A (p - c) + c + t`` on LPS points; returns ``L T L``.
    """
    params = np.asarray(params, dtype=np.float64)
    if params.size != 12:
        raise ValueError(f"expected 12 affine parameters, got {params.size}")
    a = params[:9].reshape(3, 3)
    c = np.asarray(center, dtype=np.float64).reshape(3)
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = params[9:] + c - a @ c
    return LPS @ m @ LPS


def fit_affine(points: np.ndarray, mapped: np.ndarray) -> np.ndarray:
    """Least-squares 4x4 affine with ``mapped ~= M @ points`` (both ``(N, 3)``, N >= 4).

    Used to read any point-mapping transform back as a matrix, exactly when it is affine.
    """
    x = np.hstack([points, np.ones((len(points), 1))])
    sol, *_ = np.linalg.lstsq(x, mapped, rcond=None)
    m = np.eye(4)
    m[:3, :] = sol.T
    return m


def _probe_points(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The 8 corner voxels of a grid plus its centre, in world RAS mm."""
    n = np.asarray(shape, dtype=np.float64) - 1.0
    ijk = np.array([[a, b, c] for a in (0, n[0]) for b in (0, n[1]) for c in (0, n[2])])
    ijk = np.vstack([ijk, n / 2.0])
    return ijk @ affine[:3, :3].T + affine[:3, 3]


# ---------------------------------------------------------------- our tool
def run_napari_reg(
    fixed: np.ndarray, fixed_affine: np.ndarray, moving: np.ndarray, moving_affine: np.ndarray
) -> np.ndarray:
    """napari_reg's public driver with the documented defaults for an affine MI run."""
    from napari_reg import register
    from napari_reg.core.image import Volume

    result = register(
        Volume(fixed, fixed_affine, name="fixed"),
        Volume(moving, moving_affine, name="moving"),
        transform="affine",
        metric="mi",
        init="com",
    )
    return np.asarray(result.transform.matrix, dtype=np.float64)


# ---------------------------------------------------------------- elastix
def _itk_image(itk, data: np.ndarray, affine: np.ndarray):
    """numpy (i, j, k) + RAS affine -> itk.Image[F, 3] with LPS geometry."""
    # itk.image_from_array takes arrays indexed (k, j, i).
    img = itk.image_from_array(np.ascontiguousarray(data.transpose(2, 1, 0), dtype=np.float32))
    origin, spacing, direction = itk_geometry(affine)
    img.SetOrigin(origin.tolist())
    img.SetSpacing(spacing.tolist())
    img.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction)))
    return img


def run_elastix(
    fixed: np.ndarray, fixed_affine: np.ndarray, moving: np.ndarray, moving_affine: np.ndarray
) -> np.ndarray:
    """itk-elastix with its default ``affine`` parameter map (what a user gets first)."""
    import itk

    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(N_THREADS)
    fixed_img = _itk_image(itk, fixed, fixed_affine)
    moving_img = _itk_image(itk, moving, moving_affine)
    params = itk.ParameterObject.New()
    params.AddParameterMap(params.GetDefaultParameterMap("affine"))
    _, result = itk.elastix_registration_method(
        fixed_img,
        moving_img,
        parameter_object=params,
        number_of_threads=N_THREADS,
        log_to_console=False,
    )
    transform = result.GetParameter(0, "Transform")[0]
    if transform != "AffineTransform":
        raise RuntimeError(f"elastix returned a {transform}, expected AffineTransform")
    values = np.array([float(v) for v in result.GetParameter(0, "TransformParameters")])
    center = np.array([float(v) for v in result.GetParameter(0, "CenterOfRotationPoint")])
    return itk_params_to_ras(values, center)


# ---------------------------------------------------------------- ANTs
def run_ants(
    fixed: np.ndarray, fixed_affine: np.ndarray, moving: np.ndarray, moving_affine: np.ndarray
) -> np.ndarray:
    """ANTsPy ``registration(type_of_transform='Affine')`` with its defaults."""
    import ants

    def to_ants(data: np.ndarray, affine: np.ndarray):
        origin, spacing, direction = itk_geometry(affine)
        # ANTsPy arrays are indexed like ITK's (i, j, k) index.
        return ants.from_numpy(
            np.asarray(data, dtype=np.float32),
            origin=tuple(origin),
            spacing=tuple(spacing),
            direction=direction,
        )

    with tempfile.TemporaryDirectory(prefix="bench_ants_") as tmp:
        out = ants.registration(
            to_ants(fixed, fixed_affine),
            to_ants(moving, moving_affine),
            type_of_transform="Affine",
            outprefix=os.path.join(tmp, "reg_"),
        )
        # fwdtransforms: the ITK .mat that maps fixed LPS points to moving LPS points.
        tx = ants.read_transform(out["fwdtransforms"][0])
        return itk_params_to_ras(np.asarray(tx.parameters), np.asarray(tx.fixed_parameters))


# ---------------------------------------------------------------- DIPY
def run_dipy(
    fixed: np.ndarray, fixed_affine: np.ndarray, moving: np.ndarray, moving_affine: np.ndarray
) -> np.ndarray:
    """DIPY's tutorial pipeline: centres of mass -> translation -> rigid -> affine, MI.

    ``MutualInformationMetric(nbins=32, sampling_proportion=None)``, ``level_iters
    [10000, 1000, 100]``, ``sigmas [3, 1, 0]``, ``factors [4, 2, 1]``.
    """
    from dipy.align.imaffine import (
        AffineRegistration,
        MutualInformationMetric,
        transform_centers_of_mass,
    )
    from dipy.align.transforms import AffineTransform3D, RigidTransform3D, TranslationTransform3D

    static = np.asarray(fixed, dtype=np.float64)
    mov = np.asarray(moving, dtype=np.float64)
    current = transform_centers_of_mass(static, fixed_affine, mov, moving_affine).affine
    affreg = AffineRegistration(
        metric=MutualInformationMetric(nbins=32, sampling_proportion=None),
        level_iters=[10000, 1000, 100],
        sigmas=[3.0, 1.0, 0.0],
        factors=[4, 2, 1],
        verbosity=0,
    )
    for transform in (TranslationTransform3D(), RigidTransform3D(), AffineTransform3D()):
        amap = affreg.optimize(
            static,
            mov,
            transform,
            None,
            static_grid2world=fixed_affine,
            moving_grid2world=moving_affine,
            starting_affine=current,
        )
        current = amap.affine
    # AffineMap.affine maps static (fixed) world -> moving world, RAS (nibabel affines).
    return np.asarray(current, dtype=np.float64)


# ---------------------------------------------------------------- SimpleITK
def run_simpleitk(
    fixed: np.ndarray, fixed_affine: np.ndarray, moving: np.ndarray, moving_affine: np.ndarray
) -> np.ndarray:
    """SimpleITK's textbook affine: geometric centring, Mattes MI (50 bins, 1 % random
    samples), gradient descent (lr 1, 100 iterations), shrink 4/2/1, smoothing 2/1/0 mm,
    scales from physical shift."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(N_THREADS)

    def to_sitk(data: np.ndarray, affine: np.ndarray):
        img = sitk.GetImageFromArray(
            np.ascontiguousarray(data.transpose(2, 1, 0), dtype=np.float32)
        )
        origin, spacing, direction = itk_geometry(affine)
        img.SetOrigin(origin.tolist())
        img.SetSpacing(spacing.tolist())
        img.SetDirection(direction.ravel().tolist())
        return img

    fixed_img = to_sitk(fixed, fixed_affine)
    moving_img = to_sitk(moving, moving_affine)
    init = sitk.CenteredTransformInitializer(
        fixed_img,
        moving_img,
        sitk.AffineTransform(3),
        sitk.CenteredTransformInitializerFilter.GEOMETRY,
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.01, 20261124)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsGradientDescent(
        learningRate=1.0,
        numberOfIterations=100,
        convergenceMinimumValue=1e-6,
        convergenceWindowSize=10,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=False)
    reg.SetNumberOfThreads(N_THREADS)
    out = reg.Execute(fixed_img, moving_img)
    # Read the (composite) result back by mapping probe points: exact for an affine.
    pts_ras = _probe_points(fixed_affine, fixed.shape)
    pts_lps = pts_ras * LPS.diagonal()[:3]
    mapped_lps = np.array([out.TransformPoint(p.tolist()) for p in pts_lps])
    return fit_affine(pts_ras, mapped_lps * LPS.diagonal()[:3])


# ---------------------------------------------------------------- greedy
def sitk_image(data: np.ndarray, affine: np.ndarray):
    """numpy (i, j, k) + RAS affine -> SimpleITK float image with LPS geometry."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0), dtype=np.float32))
    origin, spacing, direction = itk_geometry(affine)
    img.SetOrigin(origin.tolist())
    img.SetSpacing(spacing.tolist())
    img.SetDirection(direction.ravel().tolist())
    return img


def run_greedy(
    fixed: np.ndarray, fixed_affine: np.ndarray, moving: np.ndarray, moving_affine: np.ndarray
) -> np.ndarray:
    """greedy (picsl-greedy, ITK-SNAP's engine) as its documentation recommends for an
    affine: ``-a -dof 12 -ia-image-centers -m NMI`` (default iterations). Its ``-o``
    matrix is RAS and maps fixed -> moving, our convention: returned as is."""
    import io

    from picsl_greedy import Greedy3D

    g = Greedy3D()
    log = io.StringIO()
    g.execute(f"-threads {N_THREADS} -i fix mov -a -dof 12 -ia-image-centers -m NMI -o aff",
              fix=sitk_image(fixed, fixed_affine), mov=sitk_image(moving, moving_affine),
              aff=None, out=log, err=log)
    return np.asarray(g["aff"], dtype=np.float64)


TOOLS: dict[str, Runner] = {
    "napari_reg": run_napari_reg,
    "elastix": run_elastix,
    "ants": run_ants,
    "dipy": run_dipy,
    "simpleitk": run_simpleitk,
    "greedy": run_greedy,
}
