"""Settings: one typed object, loaded once and passed in explicitly."""

from localserve.config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
