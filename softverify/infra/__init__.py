"""Plumbing every layer may use: joining Ray (`cluster`), where actors go (`placement`),
process memory (`procmem`), quiet logs (`quiet`), atomic writes (`fsutil`)."""
