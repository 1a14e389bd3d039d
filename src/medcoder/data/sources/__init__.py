"""Data sources: one module per ``data.source.kind``, each a registered config class that reads its notes.

A source declares its options and their defaults once, in its config class,
and ``read()`` turns the files it names into checked ``Note`` records. Adding
a source is one new module here (or anywhere, imported before the config that
names it) with ``@SOURCES.register("kind")`` on its config class.
"""
