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


def ref_extract_durations(body: str) -> list[tuple[int, float]]:
    """(ordinal, milliseconds) of each number after took/latency/duration/elapsed/time in one body."""
    import re

    unit_ms = {"ms": 1.0, "msec": 1.0, "millis": 1.0, "milliseconds": 1.0, "s": 1000.0, "sec": 1000.0,
               "secs": 1000.0, "seconds": 1000.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6, "": 1.0}
    out = []
    pat = re.compile(r"(?<![A-Za-z])(took|latency|duration|elapsed|time)(?![A-Za-z])[ =:\"'\t]{0,3}(\d+(?:\.\d*)?)"
                     r"(?: *(µs|[A-Za-z]+))?", re.I)
    pos = 0
    while True:
        m = pat.search(body, pos)
        if not m:
            break
        unit = (m.group(3) or "").lower()
        factor = unit_ms.get(unit, None)
        if factor is None:
            factor = 1.0
        out.append((len(out), float(m.group(2)) * factor))
        pos = m.end() if unit in unit_ms else m.end(2)
    return out


# --------------------------------------------------------------------------- multi-pass pattern kernels
# The unfused versions (pieces first, then hash / parameter spans): the fused one-pass kernels of
# otelproc/kernels/tokenize.py must agree with them on every input.
import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from otelproc.kernels.tokenize import _hash_pieces, _max_len, _pieces  # noqa: E402


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
