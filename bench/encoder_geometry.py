"""How an encoder's token states are laid out, for encoders before and after masked-LM adaptation.

    python bench/encoder_geometry.py minilm runs/mlm-asbuilt runs/mlm-fixed [--notes 60]

For the first ``--notes`` dev notes of CodiEsp-D English (first 512 tokens), per encoder: the mean
cosine between the last-layer states of random token pairs from different notes (anisotropy: near 1,
every token looks alike and a label-attention head has little to tell apart), the same after removing
the mean state, the mean state norm, and the cosine between each token's state under the encoder and
under the general encoder (how far adaptation moved the representation a head reads).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from medcoder.data.subwords import SubwordEncoder, collate_truncated
from medcoder.models.hf_encoders import load_encoder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "codiesp" / "diagnosis_en.jsonl"


def token_states(name: str, texts: list[str]) -> list[np.ndarray]:
    encoder, tokenizer = load_encoder(name, attention_dropout=0.0)
    encoder.eval()
    subwords = SubwordEncoder(tokenizer)
    corpus = subwords.encode(texts, max_tokens=510)
    out = []
    with torch.no_grad():
        for i in range(len(texts)):
            batch = collate_truncated(subwords, corpus.ids, [i])
            states = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            out.append(states[0, 1:-1].numpy())
    return out


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encoders", nargs="+")
    parser.add_argument("--notes", type=int, default=60)
    args = parser.parse_args()
    rows = [json.loads(line) for line in DATA.open(encoding="utf-8")]
    texts = [r["text"] for r in rows if r.get("split") == "dev"][: args.notes]
    rng = np.random.default_rng(0)
    reference = None
    print("| encoder | token-pair cosine | after centring | state norm | cosine to the general encoder's state |")
    print("|---|---|---|---|---|")
    for name in args.encoders:
        states = token_states(name, texts)
        flat = np.concatenate(states)
        doc = np.concatenate([np.full(len(s), i) for i, s in enumerate(states)])
        a, b = rng.integers(len(flat), size=(2, 20000))
        keep = doc[a] != doc[b]
        cosine = float((unit(flat[a[keep]]) * unit(flat[b[keep]])).sum(-1).mean())
        centred = flat - flat.mean(axis=0)
        centred_cosine = float((unit(centred[a[keep]]) * unit(centred[b[keep]])).sum(-1).mean())
        norm = float(np.linalg.norm(flat, axis=-1).mean())
        if reference is None:
            reference, moved = flat, 1.0
        else:
            moved = float((unit(flat) * unit(reference)).sum(-1).mean())
        print(f"| {name} | {cosine:.3f} | {centred_cosine:.3f} | {norm:.2f} | {moved:.3f} |", flush=True)


if __name__ == "__main__":
    main()
