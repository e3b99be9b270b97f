"""Training: the Trainer loop (trainer), checkpoints, per-step metrics and diagnostics, and
``softverify train|eval`` (cli)."""
