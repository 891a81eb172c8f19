"""Integrations with other libraries, each a plugin loaded through the ``torchstitch`` entry points."""
