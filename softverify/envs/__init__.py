"""Multi-agent environments of the platform (games whose outcome can be a reward)."""
