"""Pure metric math shared by evaluation, world models and verifier reports: ranking (AUROC,
PerturbQA's per-gene AUROC), calibration, confusion-matrix rates."""
