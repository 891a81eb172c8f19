"""Built-in strategies, claims and tracing-input providers, each a pluggy plugin.

They are registered by name (see ``torchstitch.core.plugin_manager.BUILTIN_PLUGINS``)
exactly as a third-party plugin would be, and can be blocked with ``plugins=["no:NAME"]``.
"""
