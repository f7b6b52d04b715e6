"""The settings of this package live in :mod:`tasks.config.operator` (the bottom layer, so that
`tasks.settings` never imports a domain package); imported here under their old home."""

from tasks.config.operator import *  # noqa: F403
