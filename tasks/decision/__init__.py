"""One session's decision, the same for the daily run, the replay and the backtest
(:mod:`tasks.decision.session`), and the policy in force at a past session
(:mod:`tasks.decision.pit`)."""
