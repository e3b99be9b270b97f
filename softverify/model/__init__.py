"""The policy model: resolving a name to weights (`names`) and loading it with the one logprob
computation shared by engines and learners (`loading`)."""
