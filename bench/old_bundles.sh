#!/usr/bin/env bash
# Do bundles written by an older medcoder still load and code the same? Writes a model (the demo's TF-IDF), a
# retrieval system (the packaged MiniLM over 8 ICD-10-CM categories, fused with that model) and a reranker
# (TF-IDF base + retrieval + mention features) with the OLDER checkout's code, codes 40 notes and evaluates each
# with the old code and with this checkout's, and compares every listed code, probability and evidence span.
#   git worktree add /tmp/old <commit>; bench/old_bundles.sh /tmp/old/src /tmp/old-bundles      (~3 min on 2 cores)
set -euo pipefail
OLD_SRC=$(realpath "$1"); WORK=$(realpath -m "$2"); ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY="$ROOT/.venv/bin/python"; M="$PY -m medcoder.cli -q"
mkdir -p "$WORK"; cd "$WORK"
SOURCE='{kind: synthetic, n_notes: 1500, n_codes: 60, seed: 0}'
PREFIXES='[E11, I10, I50, J18, J44, N18, R07, Z79]'
cat > retrieval.yaml <<YAML
kind: retrieval
data: {source: $SOURCE, split_ratios: [0.7, 0.1, 0.2]}
encoder: minilm
classifier: $WORK/demo/model
train: {epochs: 0}
index: {system: icd10cm, cache_dir: $WORK/cache, prefixes: $PREFIXES}
YAML
cat > rerank.yaml <<YAML
kind: rerank
name: tiny-rerank
data: {source: $SOURCE, split_ratios: [0.7, 0.1, 0.2]}
labels: {system: icd10cm}
folds: 2
bases: [{name: unigrams, model: {type: tfidf_lr.v1, C: 10, n_jobs: 1}}]
retrieval: {encoder: minilm, index: {prefixes: $PREFIXES}}
features: [frequency, lexical, mentions]
candidates: [5]
leave_one_out: false
YAML
PYTHONPATH="$OLD_SRC" $M demo --output "$WORK/demo" > /dev/null
PYTHONPATH="$OLD_SRC" $M retrieval retrieval.yaml -o "$WORK/retrieval" > /dev/null
PYTHONPATH="$OLD_SRC" $M train rerank.yaml -o "$WORK/rerank" > /dev/null
"$PY" - <<'PYTHON'
import json
from medcoder.data.sources.synthetic import SyntheticSource
from medcoder.data.synthetic import generate_notes
with open("notes.jsonl", "w") as out:
    for note in generate_notes(SyntheticSource(n_notes=1500, n_codes=60, seed=0))[-40:]:
        out.write(json.dumps({"id": note.id, "text": note.text}) + "\n")
PYTHON
for side in old new; do
  for bundle in demo/model retrieval rerank; do
    name=$(echo $bundle | tr / _)
    if [ $side = old ]; then export PYTHONPATH="$OLD_SRC"; else unset PYTHONPATH; fi
    $M predict $bundle notes.jsonl --top-k 10 --explain > $name.$side.jsonl
    $M evaluate $bundle --output $name.$side.metrics.json > /dev/null
  done
done
unset PYTHONPATH
"$PY" - <<'PYTHON'
import json
import math


def listed(path):
    lines = [json.loads(line) for line in open(path)]
    return {(n["id"], key, c["code"]): (c["probability"], c["predicted"], c.get("evidence"))
            for n in lines for key in ("codes", "new_codes") for c in n.get(key) or []}


def numbers(value, prefix=""):
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in numbers(item, f"{prefix}.{key}").items()}
    return {prefix: value}


for name in ("demo_model", "retrieval", "rerank"):
    old, new = listed(f"{name}.old.jsonl"), listed(f"{name}.new.jsonl")
    a, b = numbers(json.load(open(f"{name}.old.metrics.json"))), numbers(json.load(open(f"{name}.new.metrics.json")))
    gap = max((abs(a[k] - b[k]) for k in a if isinstance(a[k], float) and not math.isnan(a[k])), default=0.0)
    print(f"{name}: {len(old)} codes listed; same codes, probabilities and evidence: {old == new}; "
          f"same figures: {a.keys() == b.keys()} (largest gap {gap:.1e})")
PYTHON
