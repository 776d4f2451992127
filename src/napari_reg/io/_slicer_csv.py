"""Slicer's ``.fcsv`` row splitting (its ``CsvCodec``), which Python's csv module does not
match: csv refuses a carriage return inside an unquoted field, Slicer keeps it."""

from __future__ import annotations

__all__ = ["slicer_fields"]


def slicer_fields(row: str) -> list[str]:
    """One ``.fcsv`` row split into fields the way Slicer's reader (``CsvCodec``) does.

    A field is quoted only when its first character is ``"``; ``""`` inside quotes is
    one quote; every other character, a carriage return included, belongs to its field.
    """
    fields, current, state = [], [], "plain"
    for c in row:
        if state == "plain":
            if c == ",":
                fields.append("".join(current))
                current = []
            elif c == '"' and not current:
                state = "quoted"
            else:
                current.append(c)
        elif state == "quoted":
            if c == '"':
                state = "quote"
            else:
                current.append(c)
        else:  # a quote inside a quoted field: end of field, "" or a stray quote
            if c == ",":
                fields.append("".join(current))
                current, state = [], "plain"
            else:
                current.append(c)
                state = "quoted" if c == '"' else "plain"
    fields.append("".join(current))
    return fields
