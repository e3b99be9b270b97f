"""Shared fixtures: a tiny random policy made in the test, paths to the real data."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """A 2-layer random Llama with the real SmolLM2 tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from softverify.model.names import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("smollm2"))
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def prompt_file(tmp_path_factory) -> Path:
    """24 knockdown questions (16 train, 8 test) with labels, for fast real training runs."""
    rng = np.random.default_rng(0)
    genes = ["TP53", "MYC", "GATA1", "KLF1", "CDKN1A", "HBG1", "TAL1", "LMO2"]
    p = tmp_path_factory.mktemp("prompts") / "q.jsonl"
    with open(p, "w") as f:
        for i in range(24):
            a, b = rng.choice(genes, 2, replace=False)
            f.write(json.dumps({
                "question": f"Is a knockdown of {a} in K562 cells likely to result in differential expression of {b}?",
                "pert": str(a), "gene": str(b), "cell_line": "k562", "label": int(rng.integers(0, 2)),
                "split": "train" if i < 16 else "test",
            }) + "\n")
    return p


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray for one test module (4 logical CPUs: the trainer's actors fit with room
    for the small tasks); modules that need another size define their own."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()



@pytest.fixture(scope="session")
def realloc_fault_bounds() -> tuple[int, int]:
    """For three allocate-touch-free rounds of a 64 MB block: (the most faults a process that
    retains freed memory may take, the fewest one that maps the block afresh must take). A
    fresh block faults once per page: 4 KB, or 2 MB where transparent huge pages are 'always'."""
    try:
        thp_always = "[always]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        thp_always = False
    pages = 3 * (64 << 20) // ((2 << 20) if thp_always else 4096)
    return min(pages // 4, 200), pages // 2
