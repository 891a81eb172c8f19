"""The engine: IR, claims, hookspecs, plugin manager, stitching, errors (public names live in
``torchstitch``)."""
