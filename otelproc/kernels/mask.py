"""Byte classes and variable-segment rules used by the pattern tokenizer.

A log body is split at ASCII whitespace into *tokens*; each token is split at
the delimiter bytes ``,;:=()[]{}"'|<>`` into *segments*. A segment is a
variable (masked to ``<*>``) when it is one of the classes below. Everything
here is pure Numba over uint8 arrays; :mod:`otelproc.kernels.tokenize` walks
the bodies and calls these helpers.

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
from numba import njit

# byte classes (bit flags)
C_SPACE = np.uint8(1)
C_DELIM = np.uint8(2)
C_DIGIT = np.uint8(4)
C_HEXALPHA = np.uint8(8)
C_ALPHA = np.uint8(16)
C_MARK = np.uint8(32)    # '/', '@', '.': bytes the one-pass tokenizer must look at (paths, e-mails)


def _byte_classes() -> np.ndarray:
    tab = np.zeros(256, dtype=np.uint8)
    for c in b" \t\n\r\x0b\x0c":
        tab[c] |= 1
    for c in b",;:=()[]{}\"'|<>":
        tab[c] |= 2
    for c in b"0123456789":
        tab[c] |= 4
    for c in b"abcdefABCDEF":
        tab[c] |= 8
    for c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        tab[c] |= 16
    for c in b"/@.":
        tab[c] |= 32
    return tab


BYTE_CLASS = _byte_classes()

# Byte classes of the one-pass key walk (kernels.tokenize.hash_and_lookup / hash_lookup_params):
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


@njit(cache=True, nogil=True)
def _lower(b: int) -> int:
    if 65 <= b <= 90:
        return b + 32
    return b


@njit(cache=True, nogil=True)
def _is_path_token(buf, s, e) -> bool:
    """Whole-token path / URL test over buf[s:e]."""
    n = e - s
    if n < 2:
        return False
    slashes = 0
    for i in range(s, e):
        if buf[i] == 47:  # '/'
            slashes += 1
            if i + 2 < e and i > s and buf[i - 1] == 58 and buf[i + 1] == 47:  # "://"
                return True
    if slashes >= 2:
        return True
    if slashes == 1 and n > 2 and buf[s] == 47:
        # "/x" alone (a single slash) is a path as well when it has letters after
        return True
    if n > 2 and buf[s] == 126 and buf[s + 1] == 47:  # "~/"
        return True
    return False


@njit(cache=True, nogil=True)
def _is_var_segment(buf, s, e, cls, time_words, prev_delim, quoted) -> bool:
    """Variable test for one segment buf[s:e] (no delimiters inside).

    prev_delim : the delimiter byte just before the segment (0 if none)
    quoted     : True when the segment sits between matching quotes in its token
    """
    n = e - s
    if n <= 0:
        return False
    if quoted:
        return True
    if prev_delim == 61:  # '='  -> key=value value
        return True
    hexletters = 0
    at = -1
    dot_after_at = False
    for i in range(s, e):
        c = cls[buf[i]]
        if c & 4:
            return True
        if c & 8:
            hexletters += 1
        b = buf[i]
        if b == 64 and at < 0:
            at = i
        elif b == 46 and at >= 0:
            dot_after_at = True
    if hexletters == n and n >= 16:
        return True
    if at > s and dot_after_at:
        return True
    if n == 3:
        packed = (_lower(buf[s]) << 16) | (_lower(buf[s + 1]) << 8) | _lower(buf[s + 2])
        lo = 0
        hi = len(time_words)
        while lo < hi:
            mid = (lo + hi) // 2
            if time_words[mid] < packed:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(time_words) and time_words[lo] == packed:
            return True
    if n == 4:
        w = (_lower(buf[s]) << 24) | (_lower(buf[s + 1]) << 16) | (_lower(buf[s + 2]) << 8) | _lower(buf[s + 3])
        if w == 0x74727565 or w == 0x6E756C6C:  # true, null
            return True
    if n == 5:
        if (_lower(buf[s]) == 102 and _lower(buf[s + 1]) == 97 and _lower(buf[s + 2]) == 108
                and _lower(buf[s + 3]) == 115 and _lower(buf[s + 4]) == 101):  # false
            return True
    return False
