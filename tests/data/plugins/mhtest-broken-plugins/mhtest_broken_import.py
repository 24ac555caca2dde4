"""A plugin module that cannot be imported."""

raise RuntimeError("this plugin is broken on purpose")
