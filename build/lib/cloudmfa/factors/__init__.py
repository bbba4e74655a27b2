"""Second factors: one package per type behind the small interface in ``base.py``."""
