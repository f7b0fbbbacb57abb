"""The Advice record, kept importable from here for code written before it moved to
``parakit/records/advice.py`` (a record: the advice's figures read it without the cost model)."""

from parakit.records.advice import ADVICE_DIR, Advice, save_advice

__all__ = ["ADVICE_DIR", "Advice", "save_advice"]
