"""How the bundled ``tiny`` model was made and measured; not part of the installed ``attnlab`` package.

Run from the repository root: ``python -m training.train_tiny`` (or ``bash scripts/train_tiny.sh``) trains it,
``python -m training.card tiny`` measures the figures of its card (``scripts/write_tiny_card.py`` writes it).
"""
