"""napari-reg as napari's preferred reader for medical volume files.

napari's builtin reader also claims ``*.nii``, ``*.nii.gz``, ``*.img``, ``*.mgh``, ``*.mnc``
... but cannot read them ("Could not find a backend"), so with two candidate readers
napari asks the user on every drag and drop and ``viewer.open(path)`` (no plugin named)
raises. napari remembers a choice in its settings, ``plugins.extension2reader``
(pattern -> plugin name; *Preferences > Plugins* shows and edits it).

:func:`activate` is the manifest's ``on_activate`` hook: npe2 calls it the first time any
napari-reg contribution is used (a reader, a widget, the sample data). It adds
``pattern -> "napari-reg"`` for every reader pattern of our manifest that has **no**
preference yet; a pattern the user has mapped to another reader is left alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["PLUGIN_NAME", "activate", "prefer_napari_reg_reader", "reader_patterns"]

PLUGIN_NAME = "napari-reg"


def reader_patterns() -> list[str]:
    """The filename patterns of napari-reg's reader, as the manifest declares them."""
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(Path(__file__).resolve().parent / "napari.yaml")
    patterns: list[str] = []
    for reader in manifest.contributions.readers or []:
        patterns.extend(p for p in reader.filename_patterns if p not in patterns)
    return patterns


def prefer_napari_reg_reader(settings: Any = None) -> list[str]:
    """Map each reader pattern without a preference to napari-reg; return those added.

    ``settings`` is a napari ``NapariSettings`` (default: napari's global settings, which
    napari saves to its settings file).
    """
    if settings is None:
        from napari.settings import get_settings

        settings = get_settings()
    current = dict(settings.plugins.extension2reader)
    added = [p for p in reader_patterns() if p not in current]
    if added:
        settings.plugins.extension2reader = {**current, **dict.fromkeys(added, PLUGIN_NAME)}
    return added


def activate(context: Any = None) -> None:
    """npe2 ``on_activate`` hook (``context`` is npe2's PluginContext, unused).

    Never raises: a settings problem must not stop the plugin from loading.
    """
    try:
        prefer_napari_reg_reader()
    except Exception as exc:  # e.g. a read-only settings file
        import warnings

        warnings.warn(f"napari-reg could not register itself as the reader of medical "
                      f"volume files in napari's settings: {exc}", stacklevel=2)
