"""The parts of a reranked system: out-of-fold scores, evidence, features, the ranker (see inference/rerank.py)."""
