"""Registration core: numpy + scipy only (no Qt, no napari, no file I/O)."""
