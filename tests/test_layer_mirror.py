"""LayerMirror (the ortho panes' copies of the main viewer's layers) follows pixels
written in place: the live layer's planes are written into the array the layer already
holds and re-sliced, with no data event (widgets/overlay.py)."""

from __future__ import annotations

import numpy as np
from napari.components import ViewerModel

from napari_reg.widgets._mirror import LayerMirror


def test_a_copy_follows_pixels_written_in_place_and_re_sliced():
    main, pane = ViewerModel(), ViewerModel()
    data = np.zeros((6, 8, 10), np.float32)
    layer = main.add_image(data, name="warped (live)")
    mirror = LayerMirror(main, pane)
    try:
        copy = pane.layers["warped (live)"]
        assert copy.data is layer.data  # shared, not copied
        pane.dims.set_point(0, 3)  # the pane shows plane 3 of axis 0
        # the copy's slice may be a view of the shared array, but its canvas draws new
        # pixels only when the copy is re-sliced (set_data: the texture is uploaded)
        redraws = []
        copy.events.set_data.connect(lambda _e: redraws.append(1))
        data[3] = 7.0  # a live frame, written in place ...
        layer.refresh(thumbnail=False, extent=False, highlight=False)  # ... and re-sliced
        assert redraws
        np.testing.assert_array_equal(copy._slice.image.raw, 7.0)
    finally:
        mirror.close()
