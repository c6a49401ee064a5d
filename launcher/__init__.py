"""Thin entry points (parse, build, run): pretrain, export. Run as scripts or with ``python -m``."""
