"""Byte classes and variable-segment rules used by the pattern tokenizer: their ONE definition.

A log body is split at ASCII whitespace into *tokens*; each token is split at
the delimiter bytes ``,;:=()[]{}"'|<>`` into *segments*. A segment is a
variable (masked to ``<*>``) when it is one of the classes below. This module
holds the byte tables the rules need; the rules themselves are written once,
inside the one walk over the bytes (``otelproc.kernels.tokenize._walk_lines``,
where they must be inline for speed). Slow references: ``tests/reference.py``.

Variable classes (checked in this order):

* path / URL token: the whole token contains ``://``, or starts with ``/`` or
  ``~/`` and has another ``/`` later, or has 2+ ``/`` (``/etc/x``,
  ``hdfs://h:9000/a``, ``a/b/c``)      -> the whole token is one variable
* a segment that contains a decimal digit: integers, floats, hex (``0x1f``),
  UUIDs, IPv4, IPv6 (``fe80::1`` splits at ``:`` into digit segments), dates
  and times (``2005-07-24``, ``02:38:22``), ``host:port``, ids
  (``blk_-123``, ``node-17``)
* a long hex string without digits (>= 16 hex letters)
* an e-mail address (a segment with ``@`` and a later ``.``)
* a month or weekday name (``Jan``..``Dec``, ``Mon``..``Sun``): part of timestamps
* ``true`` / ``false`` / ``null`` literals
* the value of ``key=value`` (the segment right after ``=``)
* the content of a quoted string (``'x'`` / ``"x"`` within one token)
"""
from __future__ import annotations

import numpy as np

# Byte classes of the one walk (kernels.tokenize._walk_lines):
# one bit per question the walk asks about a byte, so what a segment needs for its variable test
# is the OR of its bytes' classes, with no per-byte counter or branch besides the stop test.
KC_SPACE = 1
KC_DELIM = 2
KC_DIGIT = 4
KC_NOT_HEX = 8      # not a hex letter a-f/A-F: a segment without it is all hex letters
KC_NOT_ALPHA = 16   # not an ASCII letter: only an all-letter segment can be a month/weekday/true/null/false
KC_SLASH = 32       # '/': paths and URLs
KC_AT = 64          # '@' and
KC_DOT = 128        # '.': e-mail addresses


def _key_classes() -> np.ndarray:
    tab = np.zeros(256, dtype=np.uint8)
    for c in range(256):
        v = 0
        if c in b" \t\n\r\x0b\x0c":
            v |= KC_SPACE
        if c in b",;:=()[]{}\"'|<>":
            v |= KC_DELIM
        if 48 <= c <= 57:
            v |= KC_DIGIT
        if not (97 <= c <= 102 or 65 <= c <= 70):
            v |= KC_NOT_HEX
        if not (97 <= c <= 122 or 65 <= c <= 90):
            v |= KC_NOT_ALPHA
        v |= {47: KC_SLASH, 64: KC_AT, 46: KC_DOT}.get(c, 0)
        tab[c] = v
    return tab


KEY_CLASS = _key_classes()

# 3-letter month and weekday names, lower case, packed as 24-bit ints
_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
          "mon", "tue", "wed", "thu", "fri", "sat", "sun")
TIME_WORDS = np.array(sorted((ord(a) << 16) | (ord(b) << 8) | ord(c) for a, b, c in _NAMES), dtype=np.int64)


def _time_word_bits() -> np.ndarray:
    bits = np.zeros((26 * 26 * 26 + 7) // 8, dtype=np.uint8)
    for a, b, c in _NAMES:
        k = (ord(a) - 97) * 676 + (ord(b) - 97) * 26 + (ord(c) - 97)
        bits[k >> 3] |= 1 << (k & 7)
    return bits


# the same names as a bitmap over the 26**3 lower-case 3-letter words (bit (a*26 + b)*26 + c, a..c
# in 0..25): one load instead of a binary search with a mispredicted branch per step
TIME_WORD_BITS = _time_word_bits()
