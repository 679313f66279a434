#!/usr/bin/env python3
"""Step time and peak memory of DP and non-DP fine-tuning of a BERT-base-shaped encoder in
PyTorch + Opacus: the counterpart of `cargo run --release -p sotto-training --example
bert_step` (same shapes, random weights and tokens, single-threaded CPU).

Usage (one configuration per process, so the peak RSS belongs to it):

    python3 -m venv .venv && .venv/bin/pip install torch opacus
    for t in full bitfit; do for m in non_dp hooks ghost; do
      .venv/bin/python scripts/opacus_bert_step.py $t $m 4 128 3
    done; done

An optional sixth argument `cuda` runs on the GPU (then all threads, and the step is timed up
to `torch.cuda.synchronize()`; the peak RSS is host memory).

Modes: `non_dp` (plain backward + SGD), `hooks` (Opacus per-sample gradients by hooks,
clipping and noise in the optimizer step), `ghost` (Opacus ghost clipping). Prints one JSON
line like the Rust example. The architecture is BertForSequenceClassification's (post-norm
blocks, GELU, [CLS] pooler + classifier, no dropout) written with nn.Linear, nn.LayerNorm and
nn.Embedding so that Opacus supports every layer.
"""
import json
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, h, heads, inter, eps):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(h, h) for _ in range(4))
        self.ln1 = nn.LayerNorm(h, eps=eps)
        self.inter = nn.Linear(h, inter)
        self.out = nn.Linear(inter, h)
        self.ln2 = nn.LayerNorm(h, eps=eps)

    def forward(self, x, mask):
        b, t, h = x.shape
        d = h // self.heads

        def split(y):
            return y.view(b, t, self.heads, d).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d) + mask
        ctx = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, h)
        x = self.ln1(x + self.o(ctx))
        return self.ln2(x + self.out(F.gelu(self.inter(x))))


class Bert(nn.Module):
    def __init__(self, vocab=30522, h=768, layers=12, heads=12, inter=3072, positions=512,
                 types=2, classes=2, eps=1e-12):
        super().__init__()
        self.word = nn.Embedding(vocab, h)
        self.position = nn.Embedding(positions, h)
        self.token_type = nn.Embedding(types, h)
        self.ln = nn.LayerNorm(h, eps=eps)
        self.blocks = nn.ModuleList(Block(h, heads, inter, eps) for _ in range(layers))
        self.pooler = nn.Linear(h, h)
        self.classifier = nn.Linear(h, classes)

    def forward(self, ids):
        b, t = ids.shape
        pos = torch.arange(t, device=ids.device).unsqueeze(0).expand(b, t).contiguous()
        x = self.ln(self.word(ids) + self.position(pos) + self.token_type(torch.zeros_like(ids)))
        mask = ((ids != 0).float() - 1.0).mul(1e4).view(b, 1, 1, t)
        for blk in self.blocks:
            x = blk(x, mask)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


def main():
    tuning, mode = sys.argv[1], sys.argv[2]
    batch, seq, steps = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    device = torch.device(sys.argv[6] if len(sys.argv) > 6 else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(1)
    model = Bert().to(device)
    if tuning == "bitfit":
        for name, p in model.named_parameters():
            p.requires_grad = name.endswith(".bias")
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ids = torch.randint(1000, 30000, (batch, seq), device=device)
    labels = torch.arange(batch, device=device) % 2
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    criterion = nn.CrossEntropyLoss()
    if mode != "non_dp":
        from opacus import PrivacyEngine
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(ids, labels), batch_size=batch)
        engine = PrivacyEngine()
        kwargs = dict(module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0,
                      max_grad_norm=1.0, poisson_sampling=False)
        if mode == "ghost":
            model, opt, criterion, loader = engine.make_private(
                **kwargs, criterion=criterion, grad_sample_mode="ghost")
        elif mode == "hooks":
            model, opt, loader = engine.make_private(**kwargs, grad_sample_mode="hooks")
        else:
            raise SystemExit(f"unknown mode {mode}: non_dp, hooks or ghost")
    rss_init = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for step in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = criterion(model(ids), labels)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step > 0:
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "impl": "opacus", "device": device.type, "tuning": tuning, "mode": mode, "batch": batch, "seq_len": seq,
        "params": sum(p.numel() for p in model.parameters()), "trained": trained,
        "median_s": round(sorted(times)[len(times) // 2], 3),
        "steps_s": [round(x, 3) for x in times],
        "peak_after_init_mib": round(rss_init), "peak_rss_mib": round(peak),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
