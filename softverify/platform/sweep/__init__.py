"""Ray Tune sweeps: the sweep file's schema and validation (spec), trials on Tune (run), the
results table, best config and plot (report), and ``softverify sweep`` (cli)."""
