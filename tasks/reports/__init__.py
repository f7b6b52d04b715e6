"""Session reports written by the nightly flow (the post-mortem)."""
