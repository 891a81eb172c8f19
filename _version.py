"""The package's version, in a module of its own so that every module can read it without
importing the public facade (``torchstitch.__init__``) that sits above them all."""

from __future__ import annotations

__version__ = "0.1.0"
