#!/usr/bin/env python3
"""Writes the golden BERT test vector `training/tests/data/bert-tiny/`: a tiny random encoder in
the Hugging Face layout (config.json, model.safetensors with HF tensor names, a WordPiece
tokenizer.json) and `expected.json`, the per-sample cross-entropy losses PyTorch computes for a
few padded token sequences. `training/tests/bert.rs` loads the folder with sotto and must
reproduce the losses (same architecture as HF `BertForSequenceClassification` in eval mode).

    .venv/bin/pip install torch safetensors
    .venv/bin/python scripts/bert_golden.py
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from opacus_bert_step import Bert  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "training", "tests", "data", "bert-tiny")
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "great", "bad", "awful", "film", "the", "was"]


def hf_name(name):
    for a, b in [("word.", "bert.embeddings.word_embeddings."),
                 ("position.", "bert.embeddings.position_embeddings."),
                 ("token_type.", "bert.embeddings.token_type_embeddings."),
                 ("ln.", "bert.embeddings.LayerNorm."),
                 ("pooler.", "bert.pooler.dense.")]:
        if name.startswith(a):
            return b + name[len(a):]
    if name.startswith("classifier."):
        return name
    _, i, part, param = name.split(".")
    part = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
            "o": "attention.output.dense", "ln1": "attention.output.LayerNorm",
            "inter": "intermediate.dense", "out": "output.dense", "ln2": "output.LayerNorm"}[part]
    return f"bert.encoder.layer.{i}.{part}.{param}"


def main():
    torch.manual_seed(2026)
    cfg = dict(vocab=len(WORDS), h=16, layers=2, heads=4, inter=32, positions=24, types=2,
               classes=3, eps=1e-12)
    model = Bert(**cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if "ln" in name else 0.2)
                    + (1.0 if name.endswith("ln.weight") or ".ln1.weight" in name
                       or ".ln2.weight" in name else 0.0))
    os.makedirs(OUT, exist_ok=True)
    save_file({hf_name(n): p.detach().contiguous() for n, p in model.named_parameters()},
              os.path.join(OUT, "model.safetensors"))
    config = {"architectures": ["BertForSequenceClassification"], "model_type": "bert",
              "vocab_size": cfg["vocab"], "hidden_size": cfg["h"],
              "num_hidden_layers": cfg["layers"], "num_attention_heads": cfg["heads"],
              "intermediate_size": cfg["inter"], "max_position_embeddings": cfg["positions"],
              "type_vocab_size": cfg["types"], "layer_norm_eps": cfg["eps"],
              "hidden_act": "gelu", "pad_token_id": 0}
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": True,
                       "handle_chinese_chars": True, "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": None,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100,
                  "vocab": {w: i for i, w in enumerate(WORDS)}},
    }
    with open(os.path.join(OUT, "tokenizer.json"), "w") as f:
        json.dump(tokenizer, f, indent=1)
    seq = 10
    texts = ["the film was good", "bad awful film", "great great great good the film was bad",
             "the"]
    ids = []
    for t in texts:
        row = [2] + [WORDS.index(w) for w in t.split()] + [3]
        row = row[:seq - 1] + [3] if len(row) > seq else row
        ids.append(row + [0] * (seq - len(row)))
    labels = [0, 1, 2, 1]
    with torch.no_grad():
        logits = model(torch.tensor(ids))
        losses = F.cross_entropy(logits, torch.tensor(labels), reduction="none")
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"seq_len": seq, "texts": texts, "ids": ids, "labels": labels,
                   "logits": logits.tolist(), "losses": losses.tolist(),
                   "torch": torch.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
