"""The registration engine: ``register()`` runs a list of stages over one run context.

* ``register.py``  the entry point: checks the inputs, picks the start, runs the stages
* ``stage.py``     what a stage is (fixed, moving, transform so far, context -> result)
* ``context.py``   the run context: one reporter, the cancel token, the level schedule
* ``events.py``    progress events (kinds as an enum) and the one reporter that sends them
* ``result.py``    what a level, a stage and a run return
* ``errors.py``    the one error hierarchy (``RegistrationError`` and its kinds)
* ``inputs.py``    the one pair check, mask check and start transform
* ``sampling.py``  where sample points go; reading the moving image at them
* ``objective.py`` the one sampled objective for parametric transforms + one level's run
* ``presets.py``   model, metric and init names; the presets a user picks first
* ``threads.py``   BLAS on one thread while a registration runs

The stages themselves (linear, B-spline, SyN) live in :mod:`napari_reg.core.stages`.
This package ``__init__`` imports nothing, so that stages can import engine modules
without an import circle; use ``from napari_reg import register``.
"""
