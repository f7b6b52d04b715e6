"""The settings of this package live in :mod:`tasks.config.escalation` (the bottom layer, so that
`tasks.settings` never imports a domain package); imported here under their old home."""

from tasks.config.escalation import *  # noqa: F403
