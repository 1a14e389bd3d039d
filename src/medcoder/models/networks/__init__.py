"""Torch networks (``nn.Module``s) of the coders: word-level CNNs and RNN, heads, transfer, the transformer network.

Each takes its input tensors and returns a :class:`~medcoder.models.networks.heads.CoderOutput`;
they know nothing of vocabularies, files or training. The coders in ``medcoder.models`` build them.
"""
