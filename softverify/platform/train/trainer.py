"""The GRPO driver: a single controller that moves references and small metrics.

One step: prompts -> RolloutWorkers (G completions each) -> VerifierPool (score matrix)
-> reward composition and group advantages (here: a few hundred floats) -> LearnerGroup
(DeepSpeed step) -> weight sync to the workers through the object store -> metrics,
eval, checkpoint. Samples and weights travel between actors as ObjectRefs; the driver
only ever fetches per-sample lengths, a few texts for the sample log, and the scores
(and, at a checkpoint with ``algorithm.max_staleness > 0``, the in-flight batches).

With ``algorithm.max_staleness = N > 0`` the rollouts of the next N steps are launched
before the learner's update and rolled out and scored while it runs (see
``platform/train/pipeline.py``); N = 0 is the plain sequential loop above.

The loop and the step live here; around them: ``bootstrap.py`` the Ray cluster and the
actors' start, ``rounds.py`` the rollout rounds (rollout, scores, rewards and advantages),
``evaluate.py`` the held-out evals.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import ray
import yaml

from softverify.actors.group import ActorGroup
from softverify.algo import mode_for
from softverify.config import ConfigError, TrainConfig
from softverify.data import PromptOrder, load_eval_prompts, load_prompts
from softverify.model.names import resolve_model_path
from softverify.infra.fsutil import RunLock, atomic_dir
from softverify.platform.train import checkpoint as ckpt
from softverify.platform.train.bootstrap import check_extras, init_ray, record_placement, start_rollout_workers
from softverify.platform.train.evaluate import Evaluator
from softverify.platform.train.metrics import MetricsLogger, drop_steps_after, plot_metrics, progress_postfix
from softverify.platform.train.pipeline import PendingBatch, Round, check_pipeline, check_resume, pending_index
from softverify.platform.train.pipeline import write_pending
from softverify.platform.train.rounds import RoundRunner, select_samples
from softverify.platform.train.step_metrics import StepTimes, step_metrics, verifier_metrics
from softverify.types import PolicyWeights, Sample


@ray.remote(num_cpus=0)
def _flipped(samples: list[Sample]) -> list[Sample]:
    """The same samples with the answer swapped (unanswered ones unchanged): diagnostics."""
    import dataclasses

    from softverify.task.answer import flip_answer

    return [dataclasses.replace(s, completion=flip_answer(s.completion) or s.completion) for s in samples]


@ray.remote(num_cpus=0)
def _head(samples: list[Sample], n: int) -> list[Sample]:
    """The first ``n`` samples (the logged question's candidates, for their policy probabilities)."""
    return samples[:n]


#: training questions the pre-start base-rate check scores (a few hundred: a second or two)
BASE_RATE_QUESTIONS = 256


class IdleRunError(RuntimeError):
    """A run that trained no question for ``trainer.stop_after_idle_steps`` steps in a row."""


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool | str = False,
                 on_step: "Callable[[int, dict[str, Any]], None] | None" = None):
        """``resume``: False (refuse a dir with checkpoints), True (must resume) or "auto".
        ``on_step(step, metrics)`` is called after every logged step (Ray Tune reports
        through it); an exception it raises stops the run after the step's checkpoint."""
        self.cfg = cfg
        self.on_step = on_step
        self.out = Path(cfg.trainer.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.resume = resume
        self.step = 0
        self.phase = ""  # what fit() is doing after the step's update: see where()
        from softverify.platform.train.diagnostics import GoodhartMonitor

        self.goodhart = GoodhartMonitor()
        self._idle_steps = 0  # consecutive steps that trained no question (trainer.stop_after_idle_steps)
        self.base_rate: dict[str, Any] | None = None  # the pre-start base-rate check (_warn_base_rate)
        self.summary: dict[str, Any] | None = None  # the finished run in a few numbers (platform/train/summary.py)
        self.mode = mode_for(cfg)  # the training mode: what differs between estimators (softverify.algo)
        # The teacher's pay to the policy: where every answer is scored (an enumerating mode) the
        # verifier's mean is fixed by construction and the policy's own expected reward is what moves.
        wm = next((v for v in cfg.verifiers if v.kind == "world_model"), None)
        self.teacher_reward_key = (None if wm is None else "policy_expected_reward"
                                   if self.mode.enumerates else f"reward/{wm.display_name}")
        self.sync = None  # the weight sync (softverify.actors.weight_sync), made in setup()
        self.sync_bytes, self.sync_bytes_total = 0, 0  # the last weight sync's size; all syncs' (this process)
        self.workers = ActorGroup()  # the rollout workers, made in setup()
        self.rounds: RoundRunner | None = None  # rolls out, scores and composes the batches' rounds (setup())
        self.evaluator: Evaluator | None = None  # the held-out evals (setup())
        self.weights: PolicyWeights | None = None  # the current policy, as the rollout workers must load it
        self.pool = None
        self.learners = None
        self.questions_trained = 0  # prompts whose group reached the learner (this process)
        self.thresholds_chosen: dict[str, float] = {}
        #: the world-model verifiers the pre-flight built (display name -> verifier), whose models
        #: the stratified order and eval read instead of loading them again
        self.world_models: dict[str, Any] = {}
        self._stale = False  # the learner has weights the rollout workers have not received
        self.pending: list[PendingBatch] = []  # batches of the next steps, oldest first (max_staleness > 0)
        self.lock = RunLock(self.out)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        from softverify.actors.learner_group import LearnerGroup
        from softverify.actors.verifier_pool import VerifierPool
        from softverify.actors.weight_sync import make_weight_sync

        cfg = self.cfg
        check_pipeline(cfg)
        took = self.lock.acquire(resuming=bool(self.resume))  # before reading or writing anything in output_dir
        if took:
            print(f"softverify train: took over a stale lock in {str(self.out)!r} ({took})")
        if self.resume == "auto":  # restartable jobs (K8s retries): resume when there is something to resume
            self.resume = ckpt.latest(self.ckpt_root) is not None
        last = ckpt.latest(self.ckpt_root) if self.resume else None
        if self.resume and last is None:
            raise ConfigError(f"--resume: no checkpoint under {str(self.ckpt_root)!r}")
        if last is not None:  # before any actor starts: its in-flight batches must fit the bound
            check_resume(last, ckpt.read_state(last), cfg.algorithm.max_staleness)
        if not self.resume and ckpt.latest(self.ckpt_root) is not None:
            raise ConfigError(
                f"output_dir {str(self.out)!r} already holds checkpoints; pass --resume to continue "
                f"or choose another trainer.output_dir"
            )
        self.model_path = resolve_model_path(cfg.model.path, cfg.model.cache_dir)
        self.train_rows = load_prompts(cfg.data, cfg.data.split)
        self._preflight_verifiers()
        cfg = self.cfg  # threshold policies resolved
        self.eval_rows = load_eval_prompts(cfg.data) if cfg.trainer.eval_every else None
        check_extras(cfg)
        init_ray(cfg)
        self.out.mkdir(parents=True, exist_ok=True)
        ckpt.write_text_atomic(self.out / "config.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        self.workers = start_rollout_workers(cfg, self.model_path)
        self.pool = VerifierPool(cfg.verifiers)
        self.learners = LearnerGroup(cfg, self.model_path)
        self.sync = make_weight_sync(cfg, self.learners, self.workers)
        self.sync.start()
        record_placement(self.out, self.workers, self.learners, self.pool)
        self.order = self._prompt_order()
        self.rounds = RoundRunner(cfg, self.mode, self.workers, self.pool, self.train_rows, self.order)
        self.evaluator = Evaluator(cfg, self.workers, self.eval_rows, self.world_models)
        if last is not None:
            state = ckpt.read_state(last)
            self.learners.load_checkpoint(str(last / "ds"), "ds")
            self.step = int(state["step"])
            self.order.position = int(state["data_position"])
            self.pending.extend(self.rounds.restore(last / "pipeline", state.get("pipeline")))
            self._sync_weights()  # workers start from the restored policy
            print(f"softverify train: resuming from step {self.step} of {cfg.trainer.steps} ({last}, "
                  f"data position {self.order.position})")
        self.workers.run("ping")
        self.logger = MetricsLogger(self.out, cfg.trainer.wandb, cfg.trainer.wandb_project, cfg.model_dump(),
                                    truncate_after_step=self.step if self.resume else 0,
                                    use_tensorboard=cfg.trainer.tensorboard)
        drop_steps_after(self.out / "samples.jsonl", self.step if self.resume else 0)

    def _preflight_verifiers(self) -> None:
        """Every verifier built once, here, before Ray starts (:func:`check_specs`: one line
        per mistake); then, with those verifiers and no second load of any world model, the
        threshold policies resolved over the training prompts (``self.cfg`` takes the
        numbers) and the base-rate check. The world-model verifiers stay
        (``self.world_models``) for the stratified prompt order and eval's p; the others are
        dropped, the actors hosting their own copies."""
        from softverify.verifiers.balance import resolve_threshold_policies
        from softverify.verifiers.suite import check_specs

        cfg = self.cfg
        built = check_specs(cfg.verifiers, defer_threshold_policies=True)
        specs, self.thresholds_chosen = resolve_threshold_policies(cfg.verifiers, self.train_rows, built)
        if self.thresholds_chosen:
            self.cfg = cfg.model_copy(update={"verifiers": specs})
        for name, t in self.thresholds_chosen.items():
            print(f"verifier {name!r}: threshold {t:.4f} chosen over {len(self.train_rows)} training prompts")
        self._warn_base_rate(built)
        self.world_models = {s.display_name: built[s.display_name] for s in self.cfg.verifiers
                             if s.kind == "world_model" and s.display_name in built}

    def _warn_base_rate(self, built: dict) -> None:
        """Before Ray starts: the config's verifiers on a sample of the training questions
        (:func:`softverify.verifiers.report.base_rate_check`, with the verifiers the
        pre-flight check just built); a fixed answer paid within the margin of following the
        label or a verifier is the base-rate trap, said in one warning line. Skipped where the
        questions carry no labels or a verifier could not be built here (it reserves a GPU)."""
        import sys

        from softverify.verifiers.base import verifier_class
        from softverify.verifiers.report import base_rate_check

        cfg, rows = self.cfg, self.train_rows
        scored = [s for s in cfg.verifiers if not verifier_class(s.kind).needs_policy]
        if not scored or "label" not in rows.column_names or any(s.display_name not in built for s in scored):
            return
        idx = np.random.default_rng(cfg.data.seed).permutation(len(rows))[:BASE_RATE_QUESTIONS]
        sample = [rows[int(i)] for i in sorted(idx)]
        try:
            check = base_rate_check(cfg.verifiers, sample, cfg.prompt.style, built)
        except ValueError:  # an unusable label: the run's own checks say so where it matters
            return
        self.base_rate = check
        if check["verdict"]["trap"]:
            line = check["verdict"]["line"].removeprefix("verdict: ")
            print(f"softverify train: warning: on {len(sample)} training questions, {line} (details: "
                  f"softverify verifiers report with this config)", file=sys.stderr)

    def _prompt_order(self):
        """Shuffled order over the training rows, or stratified by a verifier's decisions."""
        from softverify.data import StratifiedOrder

        cfg = self.cfg
        if cfg.data.stratify_by is None:
            return PromptOrder(len(self.train_rows), cfg.data.seed)
        from softverify.verifiers.balance import verifier_decisions

        if cfg.data.stratify_by == "label":
            if "label" not in self.train_rows.column_names:
                raise ConfigError("data.stratify_by='label' needs a 'label' column in the training prompts")
            d, what = np.asarray(self.train_rows["label"], dtype=int), "label"
        else:
            spec = next(v for v in cfg.verifiers if v.display_name == cfg.data.stratify_by)
            d, what = verifier_decisions(spec, self.train_rows, self.world_models), repr(spec.display_name)
        pools = [np.nonzero(d == 1)[0].tolist(), np.nonzero(d == 0)[0].tolist()]
        print(f"prompts stratified by {what}: {len(pools[0])} yes / {len(pools[1])} no "
              f"({int((d < 0).sum())} rows it cannot score left out)")
        return StratifiedOrder(pools, cfg.data.seed)

    # ------------------------------------------------------------------ one step
    def _sync_weights(self) -> float:
        """The learner's weights to every rollout worker (``self.sync``, one class per
        ``learner.sync_method``); the handle is also handed to every generate call, so a
        restarted worker catches up (restart safety). Returns the seconds it took."""
        t = time.perf_counter()
        self.weights, self.sync_bytes = self.sync.push(self.step)
        self._stale = False
        self.sync_bytes_total += self.sync_bytes
        return time.perf_counter() - t

    def _lazy_sync(self) -> bool:
        """When the training mode samples nothing with the policy (the direct style's enumerated
        estimator) the workers' weights only need to be current for evals and policy-scored
        verifiers (the pool knows which those are); otherwise they are synced every step."""
        return not self.mode.samples_during_training and not self.pool.policy_specs

    def train_step(self) -> dict[str, Any]:
        """One step: (launch the batches up to ``max_staleness`` steps ahead,) finish this
        step's batch, start the update, finish the batches ahead while it runs, sync."""
        cfg = self.cfg
        bound = cfg.algorithm.max_staleness
        t0 = time.perf_counter()
        # keep `bound` batches ahead of this one in flight, also past trainer.steps: the last
        # checkpoint then holds them, and a run extended with --resume continues exactly
        while (nxt := self.pending[-1].step + 1 if self.pending else self.step + 1) <= self.step + 1 + bound:
            self.pending.append(self.rounds.launch_batch(nxt, self.weights, self.step))
        batch = self.pending.pop(0)
        if batch.step != self.step + 1:
            raise RuntimeError(f"the next in-flight batch is for step {batch.step}, not step {self.step + 1}")
        self.rounds.complete(batch, self.weights, self.step)
        rounds, lag = batch.rounds, batch.lag(self.step)
        if lag > bound:
            raise RuntimeError(f"step {self.step + 1} would train on rollouts {lag} steps old, beyond "
                               f"algorithm.max_staleness = {bound}")
        picks, kept, seen, zero_var = self.rounds.select_groups(rounds)
        t2 = time.perf_counter()
        adv = np.concatenate([r.learn_values[p] for r, p in zip(rounds, picks)]).astype(np.float32)
        lengths_sel = np.concatenate([r.lengths[p] for r, p in zip(rounds, picks)])
        sampled_sel = np.concatenate([r.sampled[p] for r, p in zip(rounds, picks)])  # the loss's token count
        n = len(adv)
        learn: dict[str, Any] = {}
        learn_refs = None
        if n:
            if len(rounds) == 1 and n == len(rounds[0].adv):
                batch_ref = rounds[0].ref
            else:
                batch_ref = select_samples.remote(picks, *[r.ref for r in rounds])
            learn_refs = self.learners.launch_train_step(batch_ref, adv, n, int(sampled_sel.sum()), lengths_sel)
        for ahead in self.pending:  # pipelined: the next batches roll out and are scored during the update
            self.rounds.complete(ahead, self.weights, self.step)
        t_overlap = time.perf_counter()
        if learn_refs is not None:
            learn = self.learners.collect(learn_refs)
        t3 = time.perf_counter()
        self.step += 1
        self.phase = "syncing weights"
        self.lock.refresh()
        self._stale = self._stale or bool(n)
        sync_s, sync_bytes = 0.0, 0  # nothing learned, or synced lazily (enumerate): the workers need nothing now
        if self._stale and not self._lazy_sync():
            sync_s, sync_bytes = self._sync_weights(), self.sync_bytes
        t4 = time.perf_counter()
        self.questions_trained += kept
        times = StepTimes(t0, t2, t_overlap, t3, t4, sync_s)
        m = step_metrics(rounds, times, kept=kept, seen=seen, zero_var=zero_var, trained_lengths=lengths_sel, lag=lag,
                         sync_bytes=sync_bytes, sync_bytes_total=self.sync_bytes_total,
                         questions_trained_total=self.questions_trained, data_position=self.order.position,
                         force_answer=cfg.rollout.force_answer)
        for name, t in self.thresholds_chosen.items():
            m[f"threshold/{name}"] = t
        m.update(verifier_metrics(self.pool.names, np.concatenate([r.scores for r in rounds])))
        m.update(self.pool.metrics())  # verifiers' own counters, e.g. verifier/<name>/remote_failed
        m.update(self._diagnostics(rounds[0]))
        m.update(learn)
        texts = rounds[0].summ["texts"]
        self._log_samples(texts, rounds[0].rewards[: len(texts)], self._candidate_probs(rounds[0].ref, len(texts)))
        return m

    def _candidate_probs(self, ref, n: int) -> list[float | None]:
        """The policy's probability of each logged candidate among its question's candidates
        (after this step's update): a softmax over the candidates' summed logprobs, which is
        the answer distribution the enumerated estimator trains (a shared reasoning's tokens
        cancel out). None for each sampled completion: its alternatives are unknown."""
        K = len(self.cfg.algorithm.answer_candidates)
        if not self.mode.enumerates or n != K:
            return [None] * n
        lp = self.learners.logprobs(ray.get(_head.remote(ref, K)))
        seq = np.array([sum(x) for x in lp], dtype=np.float64)
        p = np.exp(seq - seq.max())
        return (p / p.sum()).tolist()

    def _diagnostics(self, rnd: Round) -> dict[str, float]:
        """Verifier diagnostics on the step's first round (see ``platform/train/diagnostics.py``);
        the flipped answers are scored by the same pool (a few ms for non-policy verifiers)."""
        from softverify.platform.train.diagnostics import verifier_diagnostics
        from softverify.verifiers.base import verifier_class

        if not self.cfg.trainer.diagnostics:
            return {}
        specs = self.cfg.verifiers
        opposite = None
        if not any(verifier_class(s.kind).needs_policy for s in specs):
            opposite = self.pool.score(_flipped.remote(rnd.ref))
        soft = [s.kind in ("world_model", "coexpression") for s in specs]
        return verifier_diagnostics(self.pool.names, rnd.scores, np.array(rnd.summ["answers"]),
                                    np.array(rnd.summ["labels"]), opposite, soft)

    def _log_samples(self, texts, rewards, probs) -> None:
        """samples.jsonl: per logged completion its question, the question's label where the row
        has one (null where not), the parsed answer, the reward, and ``policy_p``, the policy's
        probability of this candidate (enumerated estimator; null for sampled completions)."""
        from softverify.task.answer import parse_answer

        with open(self.out / "samples.jsonl", "a") as f:
            for (pid, q, c, label), r, p in zip(texts, rewards, probs):
                f.write(json.dumps({"step": self.step, "prompt_id": pid, "question": q, "completion": c,
                                    "answer": parse_answer(c), "label": None if label < 0 else label,
                                    "reward": None if np.isnan(r) else float(r),
                                    "policy_p": None if p is None else round(float(p), 6)}) + "\n")

    # ------------------------------------------------------------------ eval / checkpoint
    def evaluate(self) -> dict[str, float]:
        """The held-out eval of the current policy (:mod:`softverify.platform.train.evaluate`),
        synced to the workers first if they lag the learner."""
        if self._stale:
            self._sync_weights()
        return self.evaluator.run(self.weights)

    def _write_prompt(self, model_dir: Path) -> None:
        """How this policy was prompted, beside its weights: ``softverify serve`` and
        ``softverify eval`` ask it the same way (see ``prompts.load_trained_prompt``)."""
        from softverify.task.prompts import PROMPT_FILE, trained_prompt

        if model_dir.is_dir():
            prompt = trained_prompt(self.cfg.prompt.style, self.cfg.rollout)
            ckpt.write_text_atomic(model_dir / PROMPT_FILE, prompt.to_json())

    def _plot_title(self) -> str:
        """metrics.png's title: the run (its directory), model, style and verifiers."""
        c = self.cfg
        model = Path(str(c.model.path)).name or str(c.model.path)
        verifiers = ", ".join(v.display_name for v in c.verifiers)
        return f"{self.out.resolve().name}: {model}, {c.prompt.style} style, verifiers {verifiers}"

    def save_checkpoint(self) -> Path:
        """DeepSpeed state, the HF policy, the trainer state and (pipelined) the in-flight
        batches, all in one atomically renamed directory."""
        state = {
            "step": self.step, "data_position": self.order.position, "seed": self.cfg.trainer.seed,
            "data_seed": self.cfg.data.seed, "model_path": self.model_path, "time": time.time(),
        }
        if self.pending:  # data_position above counts their prompts: they are stored, not re-drawn
            state["pipeline"] = pending_index(self.pending)

        def write_model(ds_dir: Path, hf_dir: Path) -> None:
            self.learners.save_checkpoint(str(ds_dir), "ds", str(hf_dir))
            self._write_prompt(hf_dir)
            if self.pending:
                samples = [ray.get([r.ref for r in b.rounds]) for b in self.pending]
                write_pending(ds_dir.parent / "pipeline", self.pending, samples)

        return ckpt.save(self.ckpt_root, self.step, state, write_model, self.cfg.trainer.keep_checkpoints)

    # ------------------------------------------------------------------ loop
    def _check_idle(self, m: dict[str, Any]) -> None:
        """Raise :class:`IdleRunError` after ``trainer.stop_after_idle_steps`` steps in a row
        that trained no question: such a run only spends time."""
        self._idle_steps = 0 if m.get("questions_trained", 1) else self._idle_steps + 1
        k = self.cfg.trainer.stop_after_idle_steps
        if k and self._idle_steps >= k:
            zero = m.get("dynamic/zero_var_group_frac")
            raise IdleRunError(
                f"no question trained in the last {k} steps (steps {self.step - k + 1}-{self.step}; zero-variance "
                f"groups {zero if zero is None else f'{zero:.0%}'}, reward_mean {m.get('reward_mean'):.3f}, "
                f"response_len_mean {m.get('response_len_mean', float('nan')):.1f}): every group's answers earned the "
                "same reward. Check that completions end (rollout.stop, max_new_tokens), that a verifier can tell "
                "the answers apart (`softverify verifiers report`), or use the direct style's enumerated estimator "
                "(prompt.style=direct); trainer.stop_after_idle_steps=0 disables this stop")

    def where(self) -> str:
        """The step fit() was working on, for a one-line failure message: "step 3" while step 3
        rolls out and learns, "step 2 (saving its checkpoint)" once step 2's update is done."""
        return f"step {self.step} ({self.phase})" if self.phase else f"step {self.step + 1}"

    def fit(self) -> Path:
        from tqdm import tqdm

        cfg = self.cfg.trainer
        self.setup()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="GRPO", disable=not cfg.progress, dynamic_ncols=True)
        enumerated = self.mode.enumerates
        last_eval: dict[str, Any] = {}
        t0 = time.monotonic()
        try:
            while self.step < cfg.steps:
                self.phase = ""
                m = self.train_step()
                self._check_idle(m)
                self.goodhart.add_reward(m.get(self.teacher_reward_key) if self.teacher_reward_key else None)
                out_of_time = (cfg.time_budget_minutes is not None
                               and time.monotonic() - t0 >= 60 * cfg.time_budget_minutes)
                # the run's last step is evaluated too (trainer.steps not a multiple of eval_every,
                # shorter than it, or the time budget spent): every run ends with an eval to quote
                if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step >= cfg.steps or out_of_time):
                    self.phase = "evaluating"
                    last_eval = self.evaluate()
                    m.update(last_eval)
                    warning = self.goodhart.update(self.step, m.get("eval_forced/auc_per_gene"))
                    if warning:
                        bar.write(warning)
                        m["goodhart/warning"] = 1.0
                self.logger.log(self.step, m)
                bar.update(1)
                bar.set_postfix(progress_postfix(m, last_eval, enumerated))
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.phase = "saving its checkpoint"
                    self.save_checkpoint()
                if self.on_step is not None:
                    self.on_step(self.step, m)
                if out_of_time and self.step < cfg.steps:
                    bar.write(f"time budget of {cfg.time_budget_minutes:g} min reached at step {self.step}")
                    break
            last = ckpt.latest(self.ckpt_root)
            self.phase = "saving its checkpoint"
            if last is None or ckpt.read_state(last)["step"] != self.step:
                self.save_checkpoint()
            self.phase = "saving the final model"
            final = self.out / "final"
            from softverify.platform.train.metrics import read_metrics
            from softverify.platform.train.summary import model_card, run_summary

            self.summary = run_summary(read_metrics(self.out / "metrics.jsonl"))
            with atomic_dir(final) as tmp:  # a reader sees the old final/ or the whole new one, card included
                self.learners.save_hf(str(tmp))
                self._write_prompt(tmp)
                (tmp / "README.md").write_text(model_card(self.cfg, self.summary, self.out.resolve().name))
            try:
                plot_metrics(self.out / "metrics.jsonl", self.out / "metrics.png", title=self._plot_title())
            except ValueError:
                pass
            return final
        finally:
            bar.close()
            self.logger.close()

    def shutdown(self) -> None:
        self.lock.release()
        self.workers.kill()
        if self.pool:
            self.pool.shutdown()
        if self.learners:
            self.learners.shutdown()
