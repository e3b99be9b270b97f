"""The task format: how a question is put to the policy and how its answer is read.

One place for what training, evaluation, serving, the verifiers and the benchmarks must
agree on -- the prompt styles (system prompt, assistant prefix, token budget: ``prompts``),
a dataset row's chat messages, what a trained policy was prompted with, and the answer's
layout: parsing ``<answer>`` tags, the candidate answers of the enumerated estimator, the
tokens that force an unanswered turn to answer (``answer``). Rendering rows into token ids
needs an engine's tokenizer: :func:`softverify.engines.base.render_rows`.
"""
