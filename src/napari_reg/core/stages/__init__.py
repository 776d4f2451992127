"""The registration stages, each a :class:`~napari_reg.core.engine.stage.Stage`.

* ``linear.py``   translation / rigid / similarity / affine: sampled metric + L-BFGS
* ``bspline.py``  cubic B-spline FFD: the same sampled objective + bending energy
* ``syn.py``      symmetric diffeomorphic (stationary velocity field, dense forces)
* ``deformable_result.py``  what the deformable stages return (dense export, inverse)
"""
