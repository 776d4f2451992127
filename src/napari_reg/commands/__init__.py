"""Sub-commands of the ``napari-reg`` command line, one module each.

Each module defines ``add_parser(subparsers)`` (registers its arguments, sets
``func=run`` as the default) and ``run(args) -> int`` (the exit code).
"""
