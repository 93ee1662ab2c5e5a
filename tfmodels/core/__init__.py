"""Shared mechanisms every model family uses. No model-specific code lives here."""
