"""The torch training engine: one loop (early stopping, checkpoints that resume to the bit), precision, DDP.

It knows no datasets, models or files beyond its checkpoints: coders hand it a
network, a batch plan, a batch builder, a loss and a dev evaluation.
"""
