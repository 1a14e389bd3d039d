"""Code retrieval: codes the classifier never saw, found by matching note mentions to code descriptions.

- :mod:`~medcoder.retrieval.mentions`: clinical mentions of a note, negated / hypothetical / family-history ones marked;
- :mod:`~medcoder.retrieval.biencoder`: the sentence-transformers bi-encoder, its training pairs and batches;
- :mod:`~medcoder.retrieval.index`: the index of every catalog code's description vector (cached on disk);
- :mod:`~medcoder.retrieval.fusion`: note scores, fusion with a classifier, metrics over an open code set.

``medcoder retrieval`` (:mod:`medcoder.training.retrieval`) trains and evaluates a
retrieval system; the saved system codes notes as :class:`medcoder.inference.retrieval.RetrievalCoder`.
"""
