"""The settings of this package live in :mod:`tasks.config.execution` (the bottom layer, so that
`tasks.settings` never imports a domain package); imported here under their old home."""

from tasks.config.execution import *  # noqa: F403
