"""Training step time of MiniLM + a label-attention head against how many encoder layers are frozen.

    python bench/frozen_layers_speed.py [--labels 1767] [--tokens 512] [--batch 8] [--steps 4]

``freeze_layers: k`` (transformer.v1) computes the embeddings and the lowest k layers once per note
and trains only the layers above; this times one optimizer step (forward, backward, AdamW) on random
ids for k = 0, 2, 4, 5, 6, reporting the median of ``--steps`` steps after one warm-up step, and the
ratio to k = 0. Run it on an otherwise idle machine: it uses every core torch is given.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medcoder.models.hf_encoders import load_encoder
from medcoder.models.networks.transformer import TransformerCoderModule


def step_seconds(frozen: int, *, labels: int, tokens: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    encoder, _ = load_encoder("minilm", attention_dropout=0.0)
    network = TransformerCoderModule(
        encoder,
        labels,
        architecture="trun",
        head="label_attention",
        pooling="cls",
        dropout=0.1,
        projection=256,
        segment_layers=1,
        frozen_layers=frozen,
    ).train()
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=1e-4)
    rows = {
        "input_ids": torch.randint(1000, 20000, (batch, tokens)),
        "attention_mask": torch.ones(batch, tokens, dtype=torch.bool),
        "content_index": torch.arange(tokens).repeat(batch, 1),
    }
    if frozen:
        rows["frozen_states"] = network.frozen_states(rows)  # computed once per note in training
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        network(rows).logits.float().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=1767)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}, {args.batch} notes x {args.tokens} tokens, {args.labels} labels")
    print("| frozen layers | s / step | notes / s | speed-up |\n|---|---|---|---|")
    base = None
    for frozen in (0, 2, 4, 5, 6):
        seconds = step_seconds(frozen, labels=args.labels, tokens=args.tokens, batch=args.batch, steps=args.steps)
        base = base or seconds
        print(f"| {frozen} | {seconds:.2f} | {args.batch / seconds:.2f} | {base / seconds:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
