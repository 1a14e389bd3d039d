"""Using saved systems: ``load`` any bundle (``load.py``), the prediction contract (``base.py``), one module per
kind of saved system (``model.py``, ``retrieval.py``), prediction inputs and evaluation on labelled notes."""
