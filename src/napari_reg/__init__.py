"""napari_reg: interactive registration of 3D medical images in world (RAS mm) space.

The registration core (``napari_reg.core``) depends on numpy and scipy only; file I/O
lives in ``napari_reg.io``; napari widgets in ``napari_reg.widgets``.
"""

__version__ = "0.1.0"
