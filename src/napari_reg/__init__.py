"""napari_reg: interactive registration of 3D medical images in world (RAS mm) space.

The front door for scripts::

    from napari_reg import load_volume, register, resample, write_transform

    fixed, moving = load_volume("fixed.nii.gz"), load_volume("moving.nii.gz")
    result = register(fixed, moving, transform="affine", metric="mi")
    warped = resample(moving, fixed, result.transform)   # moving(T(x)) on the fixed grid
    write_transform(result.matrix, "fixed_to_moving.tfm")

Every name below is imported on first use (PEP 562 ``__getattr__``), so ``import
napari_reg`` stays cheap: napari imports this package to find the plugin's reader and
widgets, and must not pay for the registration core or nibabel until they are used.
None of these names imports napari or Qt.

Layout: ``napari_reg.core`` (numpy + scipy only) does the registration, ``napari_reg.io``
reads and writes files, ``napari_reg.widgets`` is the napari plugin.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute" it is loaded from
_FRONT_DOOR: dict[str, str] = {
    "register": "napari_reg.core.engine.register:register",
    "RegistrationResult": "napari_reg.core.engine.result:RegistrationResult",
    "RegistrationError": "napari_reg.core.engine.errors:RegistrationError",
    "NapariRegError": "napari_reg.core.errors:NapariRegError",
    "ProgressEvent": "napari_reg.core.engine.events:ProgressEvent",
    "EventKind": "napari_reg.core.engine.events:EventKind",
    "PRESETS": "napari_reg.core.engine.presets:PRESETS",
    "CancelToken": "napari_reg.core.optimize:CancelToken",
    "Cancelled": "napari_reg.core.optimize:Cancelled",
    "Volume": "napari_reg.core.image:Volume",
    "resample": "napari_reg.core.resample:resample",
    "load_volume": "napari_reg.io.volumes:load_volume",
    "save_volume": "napari_reg.io.volumes:save_volume",
    "read_transform": "napari_reg.io.transform_files:read_transform",
    "load_transform": "napari_reg.io.transform_files:load_transform",
    "write_transform": "napari_reg.io.transform_files:write_transform",
}

__all__ = ["__version__", *_FRONT_DOOR]

def __getattr__(name: str) -> Any:
    target = _FRONT_DOOR.get(name)
    if target is None:
        raise AttributeError(f"module 'napari_reg' has no attribute {name!r}")
    module_name, attributes = target.split(":")
    module = importlib.import_module(module_name)
    value = next(getattr(module, a) for a in attributes.split("|") if hasattr(module, a))
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_FRONT_DOOR})
