"""The TorchScript plugins: the ``script`` and ``trace`` strategies, the ``torchscript``
artifact format, and what their whole family shares (``family``: torch's deprecation
report, unoptimized verification, ``freeze``), with the ``script()``/``trace()`` API.

Each module is a plugin registered by name (``script``, ``trace``, ``format.torchscript``,
``torchscript``), blockable like any plugin: ``plugins=["no:trace"]``.
"""
