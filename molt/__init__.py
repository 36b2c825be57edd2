"""The composition root: settings, wiring, CLI."""
