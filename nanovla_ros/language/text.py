"""Instruction validation and normalisation.

The normalised text is what gets encoded and what keys the cache, so "Put the  red cube " and
"put the red cube" are one instruction. Normalisation: Unicode NFC, whitespace runs collapsed to one
space, stripped, lower-cased (the small encoder is uncased; lower-casing the large one's input too
keeps both backbones seeing the same instruction).
"""
from __future__ import annotations

import unicodedata


class InstructionError(ValueError):
    """An instruction that cannot be accepted; the message says why and what to do."""


def normalise_instruction(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split()).lower()


def validate_instruction(text: str | bytes, max_chars: int) -> str:
    """Return the normalised instruction or raise InstructionError.

    Rejects: invalid UTF-8 (bytes that do not decode, or strings holding lone surrogates, which is
    how undecodable bytes surface in Python), control characters, empty or whitespace-only text, and
    text longer than ``max_chars`` after normalisation.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as error:
            raise InstructionError(f"instruction is not valid UTF-8 ({error.reason} at byte {error.start})") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InstructionError(f"instruction is not valid UTF-8 (undecodable data at character {error.start})") from None
    controls = [c for c in text if unicodedata.category(c) == "Cc" and c not in "\t\n\r"]
    if controls:
        raise InstructionError(f"instruction contains control character {controls[0]!r}; send plain text")
    normalised = normalise_instruction(text)
    if not normalised:
        raise InstructionError("instruction is empty; say what the arm should do, e.g. 'put the red cube in the yellow square'")
    if len(normalised) > max_chars:
        raise InstructionError(
            f"instruction is {len(normalised)} characters long, more than max_instruction_chars={max_chars}; shorten it"
        )
    return normalised
