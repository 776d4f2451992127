"""Registration core: numpy + scipy only (no Qt, no napari, no file I/O).

Where each concept lives (world RAS mm everywhere; a transform maps FIXED -> MOVING):

* ``image.py``        Volume: an array with its voxel->world affine
* ``transforms/``     the transform models (linear, B-spline, velocity field, dense field)
* ``resample.py``     sampling an image at world points; resampling onto another grid
* ``pyramid.py``      Gaussian smoothing and downsampling; the default level schedule
* ``metrics/``        similarity metrics: sampled (value + derivative) and dense
* ``optimize.py``     L-BFGS and regular-step gradient descent; CancelToken
  ``line_search.py``  (L-BFGS's strong-Wolfe line search)
* ``initialize.py``   start transforms: image centres, centres of mass, moments, landmarks
* ``engine/``         ``register()``: the run context, events, results, errors, presets
* ``stages/``         the stages ``register()`` runs: linear, B-spline, SyN
* ``preview.py``      cheap live-display approximations of deformable transforms
* ``warp_result.py``  a registration result's warped image
* ``thin_plate.py``   thin-plate spline through landmark pairs
* ``structure_check.py``  does a deformation align edges better than the linear map?
* ``qc.py``           quality control: checkerboard, difference, edges, Dice, TRE, Jacobian
* ``atlas/``          label propagation, multi-atlas fusion, groupwise templates
* ``motion.py``       4D motion correction: every frame registered to a reference

Scripts use the front door instead: ``from napari_reg import register, resample``.
"""
