"""Mirror a viewer's layers into an extra napari ``ViewerModel`` (the ortho / side views).

A napari layer belongs to one viewer, so each extra view gets a copy of each layer that
shares the array (``Layer.create(*layer.as_layer_data_tuple())`` does not copy data) and
follows the original: data, visibility, colours, contrast and placement are pushed to the
copy when they change. Points edited in an extra view (landmarks placed in the side view)
are pushed back to the original, so the landmark panel sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["LayerMirror"]

# Layer properties the copies follow (those a layer lacks are skipped).
_FOLLOWED = ("visible", "opacity", "blending", "colormap", "contrast_limits", "gamma",
             "affine", "scale", "translate", "rotate", "shear", "name", "face_color",
             "border_color", "size", "show_selected_label", "selected_label", "features",
             "mode")


class LayerMirror:
    """Keep copies of ``source``'s layers (those ``include(layer)`` accepts) in ``target``.

    ``editable_back`` lists layer types ("points") whose edits in ``target`` go back to the
    original. Call :meth:`close` to disconnect.
    """

    def __init__(self, source: Any, target: Any, include: Callable[[Any], bool] = lambda _: True,
                 editable_back: tuple[str, ...] = ("points",)):
        self.source, self.target = source, target
        self.include = include
        self.editable_back = editable_back
        self.copies: dict[int, Any] = {}  # id(original) -> copy
        self._links: list[tuple[Any, Callable]] = []
        self._pushing = False
        for layer in list(source.layers):
            self._add(layer)
        self._connect(source.layers.events.inserted, self._on_inserted)
        self._connect(source.layers.events.removed, self._on_removed)
        self._connect(source.layers.events.moved, lambda _e: self._reorder())

    def _connect(self, emitter: Any, callback: Callable) -> None:
        emitter.connect(callback)
        self._links.append((emitter, callback))

    def copy_of(self, layer: Any) -> Any:
        """The copy of ``layer`` in the target viewer (KeyError if not mirrored)."""
        return self.copies[id(layer)]

    def _on_inserted(self, event: Any) -> None:
        self._add(event.value)
        self._reorder()

    def _on_removed(self, event: Any) -> None:
        copy = self.copies.pop(id(event.value), None)
        if copy is not None and copy in self.target.layers:
            self.target.layers.remove(copy)

    def _reorder(self) -> None:
        wanted = [self.copies[id(lyr)] for lyr in self.source.layers if id(lyr) in self.copies]
        for index, copy in enumerate(wanted):
            current = self.target.layers.index(copy)
            if current != index:
                self.target.layers.move(current, index)

    def _add(self, layer: Any) -> None:
        if id(layer) in self.copies or not self.include(layer):
            return
        from napari.layers import Layer

        copy = Layer.create(*layer.as_layer_data_tuple())
        self.copies[id(layer)] = copy
        self.target.layers.append(copy)
        for name in _FOLLOWED:
            emitter = getattr(layer.events, name, None)
            if emitter is not None and hasattr(copy, name):
                self._connect(emitter, self._follower(layer, copy, name))
        self._connect(layer.events.data, self._follower(layer, copy, "data"))
        refresh = getattr(layer.events, "labels_update", None)
        if refresh is not None:
            self._connect(refresh, lambda _e, c=copy: c.refresh())
        if layer._type_string == "image":
            # an array written in place and re-sliced (the live layer's planes): no data
            # event, only the original's re-slice; the copy shares the array, re-slice it
            self._connect(layer.events.set_data, lambda _e, o=layer, c=copy: _reslice(o, c))
        if copy._type_string in self.editable_back:
            self._connect(copy.events.data, self._replayer(copy, layer))

    def _follower(self, origin: Any, other: Any, name: str) -> Callable:
        def push(_event: Any = None) -> None:
            if self._pushing:
                return
            self._pushing = True
            try:
                setattr(other, name, getattr(origin, name))
            except Exception:  # noqa: S110 - a property the copy rejects stays as it was
                pass
            finally:
                self._pushing = False
        return push

    def _replayer(self, copy: Any, original: Any) -> Callable:
        """Points edited in the extra view: replay the edit on the original (``add`` for
        new points, so whoever watches the original, e.g. the landmark panel giving ids,
        sees an addition, not a whole new array)."""

        def replay(event: Any) -> None:
            if self._pushing:
                return
            action = str(getattr(event, "action", ""))
            if action not in ("added", "removed", "changed"):
                return
            self._pushing = True
            try:
                indices = sorted(int(i) for i in (getattr(event, "data_indices", None) or ()))
                if action == "added" and len(copy.data) == len(original.data) + len(indices):
                    original.add(copy.data[indices])
                else:
                    original.data = copy.data
            finally:
                self._pushing = False
            # the original's response (e.g. ids as features) comes back to the copy
            for name in ("data", "features"):
                self._follower(original, copy, name)()

        return replay

    def close(self) -> None:
        """Disconnect from the source layers (the copies stay in the target)."""
        for emitter, callback in self._links:
            try:
                emitter.disconnect(callback)
            except Exception:  # noqa: S110 - already gone with its layer
                pass
        self._links.clear()


def _reslice(original: Any, copy: Any) -> None:
    """Re-slice ``copy`` when it shares ``original``'s array (its pixels may have changed)."""
    if copy.data is original.data and copy.visible:
        try:
            copy.refresh(thumbnail=False, extent=False, highlight=False)
        except TypeError:  # napari without refresh flags
            copy.refresh()
