"""The walk-forward backtest: every session through the live decision, the paper broker and the
nightly flow under its own root; its analytics, tearsheet and promotion gates."""
