"""The trading settings live in :mod:`tasks.config.trading` (the bottom layer); imported here
under their old home."""

from tasks.config.trading import *  # noqa: F403
