"""The learner: one training rank (`rank`), its losses and advantages, how its sequences are
batched (`seqbatch`, `microbatch`) and LoRA. The Ray shell around the ranks is `actors.learner_group`."""
