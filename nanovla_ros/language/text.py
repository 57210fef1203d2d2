"""Instruction validation and normalisation.

The normalised text is what gets encoded and what keys the cache, so "Put the  red cube " and
"put the red cube" are one instruction. Normalisation: Unicode NFKC (full-width and other compatibility
forms folded), invisible format characters (category Cf: zero-width spaces and joiners, bidi overrides, soft
hyphens) removed, whitespace runs collapsed to one space, stripped, lower-cased (the small encoder is uncased;
lower-casing the large one's input too keeps both backbones seeing the same instruction).

Validation refuses what cannot be the text the user meant: invalid UTF-8 (and U+FFFD, the replacement
character that invalid bytes become on the way), NUL and other control characters, a text shorter than
the length its sender declared (ROS strings end at a NUL, so "touch the red cube\\0..." would arrive as
"touch the red cube"), empty or over-long text.
"""
from __future__ import annotations

import unicodedata


class InstructionError(ValueError):
    """An instruction that cannot be accepted; the message says why and what to do."""


def normalise_instruction(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text)
    visible = "".join(c for c in folded if unicodedata.category(c) != "Cf")
    return " ".join(visible.split()).lower()


def validate_instruction(text: str | bytes, max_chars: int, sent_bytes: int = 0) -> str:
    """Return the normalised instruction or raise InstructionError.

    Rejects: invalid UTF-8 (bytes that do not decode, strings holding lone surrogates, which is
    how undecodable bytes surface in Python, or U+FFFD, which is what they become in a ROS string),
    control characters (NUL included), a text whose UTF-8 length differs from ``sent_bytes`` when that is
    given (> 0), empty or whitespace-only text, and text longer than ``max_chars`` after normalisation.
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
    if sent_bytes and len(text.encode("utf-8")) != sent_bytes:
        raise InstructionError(
            f"instruction arrived as {len(text.encode('utf-8'))} bytes but was sent as {sent_bytes}: ROS strings end "
            "at a NUL character, so the text was cut short; send plain text without NUL characters")
    if "\ufffd" in text:
        raise InstructionError("instruction contains U+FFFD, the replacement character: it was not valid UTF-8 when "
                               "sent (or was damaged on the way); send the text as UTF-8")
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
