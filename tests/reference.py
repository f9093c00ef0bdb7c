"""Slow pure-Python reference versions of the Numba kernels, for comparison tests."""
from __future__ import annotations

# ---------------------------------------------------------------- pattern masking (otelproc.kernels.tokenize)

_SPACE = b" \t\n\r\x0b\x0c"
_DELIM = b",;:=()[]{}\"'|<>"
_TIME_WORDS = {b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
               b"mon", b"tue", b"wed", b"thu", b"fri", b"sat", b"sun"}


def _is_path(tok: bytes) -> bool:
    if len(tok) < 2:
        return False
    i = tok.find(b"://")
    if i > 0:
        return True
    if tok.count(b"/") >= 2:
        return True
    if tok.count(b"/") == 1 and len(tok) > 2 and tok[:1] == b"/":
        return True
    return len(tok) > 2 and tok[:2] == b"~/"


def _is_var(seg: bytes, prev_delim: int, quoted: bool) -> bool:
    if not seg:
        return False
    if quoted or prev_delim == ord("="):
        return True
    if any(48 <= c <= 57 for c in seg):
        return True
    if len(seg) >= 16 and all(c in b"abcdefABCDEF" for c in seg):
        return True
    at = seg.find(b"@")
    if at > 0 and b"." in seg[at:]:
        return True
    low = seg.lower()
    return low in _TIME_WORDS or low in (b"true", b"null", b"false")


def masked_key(body: bytes) -> bytes:
    """The masked key text of one body (reference for kernels.tokenize.masked_text)."""
    out_tokens: list[bytes] = []
    prev_full = False
    for tok in [t for t in _split_ws(body) if t]:
        if _is_path(tok):
            pieces = [("v", tok)]
        else:
            pieces = []
            j = 0
            prev_delim = 0
            while j < len(tok):
                c = tok[j]
                if c in _DELIM:
                    if pieces and pieces[-1][0] == "l":
                        pieces[-1] = ("l", pieces[-1][1] + bytes([c]))
                    else:
                        pieces.append(("l", bytes([c])))
                    prev_delim = c
                    j += 1
                    continue
                k = j
                while k < len(tok) and tok[k] not in _DELIM:
                    k += 1
                seg = tok[j:k]
                quoted = prev_delim in (34, 39) and k < len(tok) and tok[k] == prev_delim
                if _is_var(seg, prev_delim, quoted):
                    if (len(pieces) >= 2 and pieces[-1][0] == "l" and pieces[-2][0] == "v"
                            and set(pieces[-1][1]) <= {58, 44}):
                        pieces.pop()
                    else:
                        pieces.append(("v", seg))
                else:
                    if pieces and pieces[-1][0] == "l":
                        pieces[-1] = ("l", pieces[-1][1] + seg)
                    else:
                        pieces.append(("l", seg))
                prev_delim = 0
                j = k
        full = len(pieces) == 1 and pieces[0][0] == "v"
        if full and prev_full:
            continue
        prev_full = full
        out_tokens.append(b"".join(b"<*>" if k == "v" else t for k, t in pieces))
    return b" ".join(out_tokens)


def _split_ws(body: bytes) -> list[bytes]:
    out, cur = [], bytearray()
    for c in body:
        if c in _SPACE:
            out.append(bytes(cur))
            cur = bytearray()
        else:
            cur.append(c)
    out.append(bytes(cur))
    return out


def fnv1a64(data: bytes, seed: int) -> int:
    h = seed
    for c in data:
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


# ---------------------------------------------------------------- pattern miner (otelproc.patterns.miner._ShapeIndex)


def ref_match_literals(template: tuple[str, ...], tokens: tuple[str, ...]) -> int:
    """Number of literal template tokens if every one equals the key's token, else -1."""
    lits = 0
    for a, b in zip(template, tokens):
        if a == "<*>":
            continue
        if a != b:
            return -1
        lits += 1
    return lits


def ref_similarity(template: tuple[str, ...], tokens: tuple[str, ...]) -> float:
    """Share of equal tokens among the positions where at least one side is literal (Drain's
    measure; positions variable on both sides say nothing); -1 when the two cannot be the same
    template (different literal first tokens)."""
    if not tokens:
        return 1.0
    if template[0] != tokens[0] and template[0] != "<*>" and tokens[0] != "<*>":
        return -1.0
    eq = lits = 0
    for a, b in zip(template, tokens):
        if a == "<*>" and b == "<*>":
            continue
        lits += 1
        if a == b:
            eq += 1
    return eq / lits if lits else 1.0


# ---------------------------------------------------------------- anomaly detection (otelproc.kernels.{detectors,trend,series})

def ref_hinge_trend(loc: list[float], weight: list[float], lags: list[int], reference: int,
                    min_coverage: float, min_reference: int) -> tuple[float, float, int]:
    """Ramp test at the last step of a series: weighted least squares of y = a + b * max(0, t - (T - L))
    over the last ``B = max(lags < B) + reference`` steps (weights = counts, NaN/0 = no data), for each lag L;
    returns (b, t statistic, L) of the lag with the largest t, or (nan, nan, 0). numpy lstsq, no shortcuts."""
    import numpy as np

    y = np.asarray(loc, dtype=float)
    w = np.asarray(weight, dtype=float)
    B = max(L for L in lags if L < max(lags)) + reference
    y, w = y[-B:], w[-B:]
    age = np.arange(len(y))[::-1]
    ok = (w > 0) & ~np.isnan(y)
    best = (float("nan"), float("nan"), 0)
    if ok.sum() < 4:
        return best
    for L in lags:
        ramp = ok & (age < L)
        # L >= B: the plain slope over the whole span, no reference part needed
        if ramp.sum() < min_coverage * min(L, B) or (L < B and (ok & (age >= L)).sum() < min_reference):
            continue
        h = np.where(age < L, L - age, 0).astype(float)[ok]
        X = np.stack([np.ones(ok.sum()), h], axis=1)
        sw = np.sqrt(w[ok])
        coef, *_ = np.linalg.lstsq(X * sw[:, None], y[ok] * sw, rcond=None)
        resid = (y[ok] - X @ coef) * sw
        sigma = max(np.sqrt((resid ** 2).sum() / (ok.sum() - 2)), 1e-6)
        hw = (w[ok] * h).sum() / w[ok].sum()
        se = sigma / np.sqrt((w[ok] * (h - hw) ** 2).sum())
        t = coef[1] / se
        if np.isnan(best[1]) or t > best[1]:
            best = (float(coef[1]), float(t), L)
    return best


def ref_cusum(z: list[float], k: float, h: float) -> list[int]:
    """Two-sided CUSUM alarms (+1/-1/0) with reset after an alarm; points clipped to +-4h; NaN skipped."""
    import math

    up = down = 0.0
    out = []
    for x in z:
        if math.isnan(x):
            out.append(0)
            continue
        x = max(-4 * h, min(4 * h, x))
        up = max(0.0, up + x - k)
        down = max(0.0, down - x - k)
        if up > h:
            out.append(1)
            up = down = 0.0
        elif down > h:
            out.append(-1)
            up = down = 0.0
        else:
            out.append(0)
    return out


_REF_UNITS = {
    "ns": 1e-6, "nsec": 1e-6, "nanos": 1e-6, "nanosecond": 1e-6, "nanoseconds": 1e-6,
    "us": 1e-3, "usec": 1e-3, "usecs": 1e-3, "micros": 1e-3, "microsecond": 1e-3, "microseconds": 1e-3,
    "µs": 1e-3, "μs": 1e-3,
    "ms": 1.0, "msec": 1.0, "msecs": 1.0, "millis": 1.0, "millisecond": 1.0, "milliseconds": 1.0,
    "s": 1e3, "sec": 1e3, "secs": 1e3, "second": 1e3, "seconds": 1e3,
    "m": 6e4, "min": 6e4, "mins": 6e4, "minute": 6e4, "minutes": 6e4,
    "h": 3.6e6, "hr": 3.6e6, "hrs": 3.6e6, "hour": 3.6e6, "hours": 3.6e6,
}


def _ref_unit(word: str, camel: bool = False) -> float:
    """ms per unit of a whole unit word; 0 when it is none (one-letter units lower case only, not in camelCase)."""
    if len(word) == 1 and (camel or word.isupper()):
        return 0.0
    if camel and not word[:1].isupper():
        return 0.0
    return _REF_UNITS.get(word.lower() if not word.startswith(("µ", "μ")) else word[0] + word[1:].lower(), 0.0)


def ref_extract_durations(body: str) -> list[tuple[int, float, bool]]:
    """(ordinal, value, has_unit) of each duration in one body, written with regular expressions: a number
    after took/latency/duration/elapsed/time/in (whole words or camelCase parts, with an optional key unit
    suffix such as _ms or Ms), an optional unit (Go compounds too); "in" needs a unit."""
    import re

    letters = "A-Za-z"
    word = re.compile(r"(took|latency|duration|elapsed|time|in)", re.I)
    out = []
    pos = 0
    while True:
        m = word.search(body, pos)
        if not m:
            break
        i, j = m.start(), m.end()
        prev = body[i - 1] if i > 0 else ""
        start_ok = not re.match(f"[{letters}]", prev) or (body[i].isupper() and not prev.isupper())
        # key unit suffix: _ms / -seconds / .us, or camelCase Ms (ending the key)
        key_f, key_len = 0.0, 0
        ks = re.match(r"[_.\-]((?:µ|μ)?[A-Za-z]+)", body[j:])
        if ks:
            key_f = _ref_unit(ks.group(1))
            key_len = ks.end() if key_f else 0
        else:
            kc = re.match(r"([A-Z][a-z]*)(?![A-Za-z])", body[j:])
            if kc:
                key_f = _ref_unit(kc.group(1), camel=True)
                key_len = kc.end() if key_f else 0
        end_ok = j == len(body) or not re.match(f"[{letters}]", body[j]) or key_len > 0
        if not (start_ok and end_ok):
            pos = i + 1
            continue
        needs_unit = m.group(1).lower() == "in"
        k = j + key_len
        num = re.match(r"[ =:\"'\t]{0,3}(\d+(?:\.\d*)?)", body[k:])
        if not num or not re.match(r"\d", num.group(1)):
            pos = j
            continue
        value = float(num.group(1)) if not num.group(1).endswith(".") else float(num.group(1)[:-1])
        e = k + num.end()
        unit_m = re.match(r" *((?:µ|μ)?[A-Za-z]+)", body[e:])
        f = _ref_unit(unit_m.group(1)) if unit_m else 0.0
        if f:
            value *= f
            abut = not unit_m.group(0).startswith(" ")
            e += unit_m.end()
            while abut:  # Go compound, parts without spaces: 1m30s
                part = re.match(r"(\d+(?:\.\d*)?)((?:µ|μ)?[A-Za-z]+)", body[e:])
                if not part or not _ref_unit(part.group(2)):
                    break
                value += float(part.group(1).rstrip(".")) * _ref_unit(part.group(2))
                e += part.end()
        elif key_f:
            value *= key_f
            f = key_f
        if not f and needs_unit:
            pos = j
            continue
        out.append((len(out), value, bool(f)))
        pos = e
    return out


# --------------------------------------------------------------------------- multi-pass pattern kernels
# The unfused versions (pieces first, then hash / parameter spans): the fused one-pass kernels of
# otelproc/kernels/tokenize.py must agree with them on every input.
import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from otelproc.kernels.mask import TIME_WORDS  # noqa: E402
from otelproc.kernels.tokenize import FNV_PRIME  # noqa: E402

# The masking rules as separate Numba functions over a per-byte class table, and the key as "pieces"
# (start, end, kind: 0 literal, 1 variable, 2 token separator): what kernels/mask.py and tokenize.py
# were before their one walk (session 5); kept here as the multi-pass reference.
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


@njit(cache=True, nogil=True)
def _only_colon_comma(buf, s, e) -> bool:
    for i in range(s, e):
        if buf[i] != 58 and buf[i] != 44:
            return False
    return e > s


@njit(cache=True, nogil=True)
def _pieces(buf, s, e, cls, tw, ps, pe, pk) -> int:
    """Split buf[s:e] into pieces written to ps/pe/pk (capacity >= 2*(e-s)+2). Returns the count."""
    n = 0
    prev_token_full_var = False
    have_token = False
    i = s
    while i < e:
        while i < e and (cls[buf[i]] & 1):
            i += 1
        if i >= e:
            break
        ts = i
        slashes = 0
        while i < e and not (cls[buf[i]] & 1):
            if buf[i] == 47:
                slashes += 1
            i += 1
        te = i
        if have_token:
            ps[n] = ts
            pe[n] = ts
            pk[n] = 2
            n += 1
        token_first = n
        # only tokens with a '/' can be paths or URLs: skip that scan for the rest
        if slashes > 0 and _is_path_token(buf, ts, te):
            ps[n] = ts
            pe[n] = te
            pk[n] = 1
            n += 1
        else:
            j = ts
            prev_delim = 0
            while j < te:
                b = buf[j]
                if cls[b] & 2:
                    # a delimiter byte: literal; merge with a preceding literal piece
                    if n > token_first and pk[n - 1] == 0 and pe[n - 1] == j:
                        pe[n - 1] = j + 1
                    else:
                        ps[n] = j
                        pe[n] = j + 1
                        pk[n] = 0
                        n += 1
                    prev_delim = b
                    j += 1
                    continue
                ss = j
                acc = 0
                while j < te and not (cls[buf[j]] & 2):
                    acc |= cls[buf[j]]
                    j += 1
                se = j
                quoted = (prev_delim == 34 or prev_delim == 39) and se < te and buf[se] == prev_delim
                # a digit decides at once; the other rules need the segment scan
                var = (acc & 4) != 0 or _is_var_segment(buf, ss, se, cls, tw, prev_delim, quoted)
                if var:
                    # var ':' var, var '::' var and var ',' var (host:port, IPv6, a,b,c) collapse into one variable
                    if (n - token_first >= 2 and pk[n - 1] == 0 and pk[n - 2] == 1 and pe[n - 1] == ss
                            and _only_colon_comma(buf, ps[n - 1], pe[n - 1])):
                        n -= 1
                        pe[n - 1] = se
                    else:
                        ps[n] = ss
                        pe[n] = se
                        pk[n] = 1
                        n += 1
                else:
                    if n > token_first and pk[n - 1] == 0 and pe[n - 1] == ss:
                        pe[n - 1] = se
                    else:
                        ps[n] = ss
                        pe[n] = se
                        pk[n] = 0
                        n += 1
                prev_delim = 0
        full_var = (n - token_first == 1) and pk[token_first] == 1
        if full_var and prev_token_full_var:
            # a run of wholly variable tokens is one variable (with its inner spaces):
            # drop this token and its separator, extend the previous variable
            n = token_first - 1
            pe[n - 1] = te
        have_token = True
        prev_token_full_var = full_var
    return n


@njit(cache=True, nogil=True)
def _hash_pieces(buf, ps, pe, pk, n, seed):
    h = seed
    for p in range(n):
        k = pk[p]
        if k == 0:
            for i in range(ps[p], pe[p]):
                h = (h ^ np.uint64(buf[i])) * FNV_PRIME
        elif k == 1:
            h = (h ^ np.uint64(60)) * FNV_PRIME
            h = (h ^ np.uint64(42)) * FNV_PRIME
            h = (h ^ np.uint64(62)) * FNV_PRIME
        else:
            h = (h ^ np.uint64(32)) * FNV_PRIME
    return h


@njit(cache=True, nogil=True)
def _max_len(off):
    m = 0
    for i in range(len(off) - 1):
        d = off[i + 1] - off[i]
        if d > m:
            m = d
    return m




@njit(cache=True, nogil=True)
def _key_hashes_pieces(buf, off, service_index, service_seed, cls, tw, out_hash, out_ntok):
    """Key hash and token count per line, in two passes (pieces, then hash)."""
    n = len(off) - 1
    cap = 2 * _max_len(off) + 4
    ps = np.empty(cap, dtype=np.int64)
    pe = np.empty(cap, dtype=np.int64)
    pk = np.empty(cap, dtype=np.uint8)
    for r in range(n):
        m = _pieces(buf, off[r], off[r + 1], cls, tw, ps, pe, pk)
        out_hash[r] = _hash_pieces(buf, ps, pe, pk, m, service_seed[service_index[r]])
        t = 1 if m > 0 else 0
        for p in range(m):
            if pk[p] == 2:
                t += 1
        out_ntok[r] = t


@njit(cache=True, nogil=True)
def _params(buf, off, genmask, cls, tw, count_off, pstart, pend, count_only):
    """Parameter spans per line: each variable piece, or a whole key token when its bit is set in genmask."""
    n = len(off) - 1
    cap = 2 * _max_len(off) + 4
    ps = np.empty(cap, dtype=np.int64)
    pe = np.empty(cap, dtype=np.int64)
    pk = np.empty(cap, dtype=np.uint8)
    q = 0
    for r in range(n):
        if not count_only:
            q = count_off[r]
        else:
            count_off[r] = q
        m = _pieces(buf, off[r], off[r + 1], cls, tw, ps, pe, pk)
        g = genmask[r]
        tok = 0
        p = 0
        while p < m:
            # one key token: pieces p..t-1
            t = p
            while t < m and pk[t] != 2:
                t += 1
            whole = tok < 64 and ((g >> np.uint64(tok)) & np.uint64(1)) != 0
            if whole and t > p:
                if not count_only:
                    pstart[q] = ps[p]
                    pend[q] = pe[t - 1]
                q += 1
            else:
                for k in range(p, t):
                    if pk[k] == 1:
                        if not count_only:
                            pstart[q] = ps[k]
                            pend[q] = pe[k]
                        q += 1
            tok += 1
            p = t + 1
    if count_only:
        count_off[n] = q
    return q


@njit(cache=True, nogil=True)
def _masked_text(buf, off, rows, cls, tw, var_text, out_off, out_buf, write):
    cap = 2 * _max_len(off) + 4
    ps = np.empty(cap, dtype=np.int64)
    pe = np.empty(cap, dtype=np.int64)
    pk = np.empty(cap, dtype=np.uint8)
    pos = 0
    for q in range(len(rows)):
        r = rows[q]
        out_off[q] = pos
        m = _pieces(buf, off[r], off[r + 1], cls, tw, ps, pe, pk)
        for p in range(m):
            k = pk[p]
            if k == 0:
                L = pe[p] - ps[p]
                if write:
                    out_buf[pos:pos + L] = buf[ps[p]:pe[p]]
                pos += L
            elif k == 1:
                if write:
                    out_buf[pos:pos + 3] = var_text
                pos += 3
            else:
                if write:
                    out_buf[pos] = 32
                pos += 1
    out_off[len(rows)] = pos
    return pos


def masked_text_pieces(buf, off) -> tuple[np.ndarray, np.ndarray]:
    """kernels.tokenize.masked_text of every body, printed from the pieces."""
    rows = np.arange(len(off) - 1, dtype=np.int64)
    var_text = np.frombuffer(b"<*>", np.uint8).copy()
    out_off = np.empty(len(rows) + 1, dtype=np.int64)
    total = _masked_text(buf, off, rows, BYTE_CLASS, TIME_WORDS, var_text, out_off, np.empty(0, np.uint8), False)
    out_buf = np.empty(total, dtype=np.uint8)
    _masked_text(buf, off, rows, BYTE_CLASS, TIME_WORDS, var_text, out_off, out_buf, True)
    return out_buf, out_off


def params_terminated_pieces(buf, off, genmask, terminator: int = 0x1F) -> tuple[np.ndarray, np.ndarray]:
    """kernels.tokenize.params_terminated from the pieces: the spans of :func:`_params`, each value
    followed by ``terminator`` (one inside a value becomes a space)."""
    n = len(off) - 1
    count_off = np.empty(n + 1, np.int64)
    empty = np.empty(0, np.int64)
    total = _params(buf, off, genmask, BYTE_CLASS, TIME_WORDS, count_off, empty, empty, True)
    start, end = np.empty(total, np.int64), np.empty(total, np.int64)
    _params(buf, off, genmask, BYTE_CLASS, TIME_WORDS, count_off, start, end, False)
    out, out_off = bytearray(), [0]
    for r in range(n):
        for q in range(count_off[r], count_off[r + 1]):
            out += bytes(buf[start[q]:end[q]]).replace(bytes([terminator]), b" ") + bytes([terminator])
        out_off.append(len(out))
    return np.frombuffer(bytes(out), np.uint8), np.asarray(out_off, np.int64)


# --------------------------------------------------------------------------- latency shift
def ref_latency_shift(points, first_bucket, n_buckets, S, ring, *, decay, window, min_values, min_weight,
                      warm_buckets, z_min, min_ratio, memory_values=0.0, clip=3.0, beta_tau=0.02, relevel_buckets=180,
                      state=None):
    """Plain-Python :func:`otelproc.kernels.latency.latency_shift`, one value at a time.

    points: list of (row, series, value) in row order (ties in input order). Returns (outputs as dict of
    lists of (row, series, flag, z, ratio, n, run)), state dict)."""
    import math

    st = state or {s: dict(ring=[], mu=0.0, mad=0.0, w=0.0, last=-1, first=-1, tau2=0.0, run=-1, dir=0)
                   for s in range(S)}
    out = []
    for t in range(n_buckets):
        bucket = first_bucket + t
        acc = {}
        for (r, s, v) in points:
            if r != t or not v > 0:
                continue
            y = math.log(v)
            x = st[s]
            if x["first"] < 0:
                x["first"] = bucket
                x["mu"] = y
            x["ring"] = (x["ring"] + [(bucket, y)])[-ring:]
            sd = max(1.2533 * x["mad"], 0.01)
            res = y - x["mu"]
            if x["w"] >= 10.0:
                res = max(-clip * sd, min(clip * sd, res))
            a = acc.setdefault(s, [0, 0.0, 0.0])
            a[0] += 1
            a[1] += res
            a[2] += abs(res)
        for s, (n_b, sum_r, sum_a) in acc.items():
            x = st[s]
            tau = -1.0 / math.log(decay) if decay < 1 else math.inf
            oldest, held = x["ring"][0][0], len(x["ring"])
            if held >= 2 and bucket > oldest and (bucket - x["last"]) * (held - 1) <= 10.0 * (bucket - oldest):
                tau = max(tau, memory_values * (bucket - oldest) / (held - 1))
            w = x["w"] * (math.exp(-(bucket - x["last"]) / tau) if x["last"] >= 0 else 1.0)
            sd = max(1.2533 * x["mad"], 0.01)
            newest_first = x["ring"][::-1]
            win = sorted(y for j, (b, y) in enumerate(newest_first) if b > bucket - window or j < min_values)
            nw = len(win)
            flag, z, ratio = 0, float("nan"), float("nan")
            if nw >= min_values and w >= min_weight:
                cut = int(0.2 * nw)
                loc = sum(win[cut:nw - cut]) / (nw - 2 * cut)
                var = 1.06 * sd * sd / nw
                d = loc - x["mu"]
                zz = d / math.sqrt(var + x["tau2"])
                if bucket - x["first"] >= warm_buckets:
                    z, ratio = zz, math.exp(d)
                    if z >= z_min and d >= math.log(min_ratio):
                        flag = 1
                    elif z <= -z_min and -d >= math.log(min_ratio):
                        flag = -1
                if abs(zz) < 3.0 and abs(d) < math.log(min_ratio):
                    x["tau2"] = max(0.0, x["tau2"] + beta_tau * (d * d - var - x["tau2"]))
            if flag and (x["run"] < 0 or x["dir"] != flag):
                x["run"], x["dir"] = bucket, flag
            elif not flag:
                x["run"], x["dir"] = -1, 0
            run = bucket - x["run"] + 1 if x["run"] >= 0 else 0
            out.append((t, s, flag, z, ratio, nw, run))
            if run >= relevel_buckets:
                cut = int(0.2 * nw)
                x["mu"] = sum(win[cut:nw - cut]) / (nw - 2 * cut)
                w = 0.0
                x["run"], x["dir"] = -1, 0
            elif run == 0:
                x["mu"] += sum_r / (w + n_b)
                x["mad"] += (sum_a - n_b * x["mad"]) / (w + n_b)
                w += n_b
            x["w"] = w
            x["last"] = bucket
    return out, st
