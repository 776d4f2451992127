"""The registration stages, each a :class:`~napari_reg.core.engine.stage.Stage`.

* ``linear.py``   translation / rigid / similarity / affine: sampled metric + L-BFGS
* ``bspline.py``  cubic B-spline FFD: the same sampled objective + bending energy
* ``syn.py``      symmetric diffeomorphic (stationary velocity field, dense forces)
* ``deformable_result.py``  what the deformable stages return (dense export, inverse)
* ``standalone.py``  one stage run on its own (``register_bspline``, ``register_syn``)

To add a stage: subclass :class:`~napari_reg.core.engine.stage.Stage` (see its module
docstring) and build it in ``core/engine/register.py`` (``_build_stages``).
"""
