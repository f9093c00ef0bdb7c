"""Streaming pattern miner: masked-key cache in front of a Drain-like similarity merge.

Per batch (:meth:`PatternMiner.learn`):

0. JSON, OTLP kvlist and logfmt bodies are replaced by their message field, stack traces by their
   exception and top frames (:mod:`otelproc.patterns.bodies`; plain text is found by one Numba pass
   and left as it is).
1. ``hash_and_lookup`` (one fused Numba kernel) tokenises, masks and hashes every body in a
   single pass over its bytes (hash seeded per service) and looks the key up in the exact-key
   cache (an open-addressing table in numpy arrays). Nearly every line stops here.
3. Slow path, once per *distinct new key* (never per line): the key's tokens are compared
   with the patterns of the same service and token count. A pattern whose literal tokens
   all equal the key's takes it. Otherwise the most similar one (share of equal tokens among
   the positions where at least one side is literal, Drain's measure) is a merge candidate if
   the share is >= ``similarity`` and the first tokens agree (unless one is ``<*>``). The
   merge turns the differing positions into variables only on evidence that they vary
   (:func:`_varies`): at least ``min_distinct`` distinct values over the key and all patterns
   the generalised template would cover (Brain's idea: a choice between two words such as
   "stored as bytes/values" is two templates), and not a categorical position (values that
   all recur, ``max_repeat`` lines per value on average: methods, states, levels); the line
   counts include the batch being learnt. A varying position keeps the text its values share
   around one ``<*>`` (:func:`_generalise`: ``(<*>)``, ``<*>,``). Then all those patterns
   *merge* into one (their ids become aliases of it, the key cache is remapped). Else the key
   starts a new pattern.

Templates shown (:meth:`PatternMiner.template`): the mined template with the masked words that
look like names and never changed on the pattern's lines shown as text (``port <*> ssh2``),
from the parameters of the lines (:mod:`otelproc.kernels.param_evidence`).

Ids: ``pattern_id = blake2b-64(service NUL mined template)``, so the same template gets the same
id on every instance and after restarts (what is shown does not change the id). When a pattern
generalises, its new template gets a new id and the old id is kept in ``aliases`` (history stays
joinable).

User rules: masking rules (regex -> ``<name>``) rewrite the bodies before mining; pinned templates
take every body they match (checked once per new key, on its first line) and the mined patterns
they cover (their ids become aliases); both leave every other pattern and its id as it was.

Memory: at most ``max_patterns_per_service`` patterns per service. When a service is full,
the least recently seen patterns (ties: lowest count) are evicted, 1/16 of the cap at once so
the cache rebuild is amortised. An evicted pattern that returns gets its old id back (ids
derive from templates). The key cache holds at most ``max_keys`` keys; past that it is
cleared and refills (it is only a cache: a key's pattern is found again by step 3).
"""
from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass

try:   # the regex parser, to find the literal text a masking rule needs (see _required_literal)
    import re._constants as _sre
    import re._parser as _sre_parse
except ImportError:   # Python < 3.11
    import sre_constants as _sre
    import sre_parse as _sre_parse
from pathlib import Path

import numpy as np

from otelproc.batch import StringArray
from otelproc.patterns.bodies import DEFAULT_MESSAGE_FIELDS, DEFAULT_TRACE_FRAMES, mining_view
from otelproc.kernels.cluster import KeyTable, candidate_scores
from otelproc.kernels.mask import TIME_WORDS
from otelproc.kernels.param_evidence import SHAPE_VARIED, param_evidence
from otelproc.kernels.slot_stats import slot_stats
from otelproc.kernels.tokenize import (FNV_OFFSET, hash_and_lookup, hash_lookup_params, masked_text, params_terminated,
                                      replace_strings)

log = logging.getLogger("otelproc.patterns")

VAR = "<*>"
STATE_FORMAT = "otelproc-patterns"
STATE_VERSION = 2   # 2: p_genpos, p_pinned, p_refined, max_repeat, min_constant_lines (version 1 files load)
STATE_FILE = "patterns_state.npz"

DEFAULT_SIMILARITY = 0.7
DEFAULT_MAX_PATTERNS_PER_SERVICE = 5000
DEFAULT_MAX_KEYS = 1_000_000
# a key position becomes <*> only when the patterns it would merge show at least this many distinct values there
DEFAULT_MIN_DISTINCT = 3
# a position whose values all recur, each on more than this many lines on average, is categorical (see _varies)
DEFAULT_MAX_REPEAT = 100.0
# a masked word is shown in the template once this many lines showed it unchanged (see template())
DEFAULT_MIN_CONSTANT_LINES = 2
# parameter evidence is kept for the first EVIDENCE_PARAMS parameters of a template and their first EVIDENCE_WORDS words
EVIDENCE_PARAMS = 8
EVIDENCE_WORDS = 4
EVIDENCE_HEAD = 32   # bytes of a parameter's shared head and tail that are tracked (node-<*>, chdir(<*>))
# a span of at most this many tokens may differ in length between a key and a template (see _span_merge)
MAX_SPAN = 3
_SPAN_CANDIDATES = 20   # patterns of other token counts compared with a new key, those sharing most tokens


class ChangeType:
    """What learning a new key did (closed set, as in Drain3)."""

    NONE = "none"
    CREATED = "pattern_created"
    GENERALISED = "pattern_generalised"
    MERGED = "pattern_merged"          # the slot was absorbed into ``into`` (its id is now an alias)


def pattern_id(service: str, template: str) -> int:
    """Stable 64-bit id of (service, template): blake2b-64, never 0."""
    d = hashlib.blake2b(service.encode("utf-8", "surrogateescape") + b"\x00"
                        + template.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    v = int.from_bytes(d, "little")
    return v or 1


def service_seed(service: str) -> int:
    """FNV seed of a service's key hashes (stable across runs)."""
    d = hashlib.blake2b(b"svc\x00" + service.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(d, "little") ^ int(FNV_OFFSET)


@dataclass
class PatternChange:
    slot: int
    kind: str              # ChangeType.CREATED, GENERALISED or MERGED
    old_id: int            # 0 for CREATED
    into: int = -1         # MERGED: the slot that absorbed this one


@dataclass
class LearnResult:
    slot: np.ndarray       # int32[n]   pattern slot of each line
    genmask: np.ndarray    # uint64[n]  key tokens generalised by the pattern (see params_terminated)
    changes: list[PatternChange]
    # learn(with_params=True): the pattern_params of every line (kernels.tokenize.params_terminated layout)
    params: StringArray | None = None


class PatternMiner:
    """Online template miner with per-service patterns, stable ids, bounded memory and persistence."""

    def __init__(self, similarity: float = DEFAULT_SIMILARITY,
                 max_patterns_per_service: int = DEFAULT_MAX_PATTERNS_PER_SERVICE,
                 max_keys: int = DEFAULT_MAX_KEYS, min_distinct: int = DEFAULT_MIN_DISTINCT,
                 max_repeat: float = DEFAULT_MAX_REPEAT, min_constant_lines: int = DEFAULT_MIN_CONSTANT_LINES,
                 message_fields: tuple[str, ...] | list[str] = DEFAULT_MESSAGE_FIELDS,
                 trace_frames: int = DEFAULT_TRACE_FRAMES,
                 masking: list[tuple[str, str]] | tuple = (), pinned: list[str] | tuple = ()):
        if not 0.0 < similarity <= 1.0:
            raise ValueError(f"similarity must be in (0, 1], got {similarity}")
        if max_patterns_per_service < 1:
            raise ValueError(f"max_patterns_per_service must be >= 1, got {max_patterns_per_service}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        if min_distinct < 2:
            raise ValueError(f"min_distinct must be >= 2, got {min_distinct}")
        self.similarity = float(similarity)
        if not max_repeat >= 1:
            raise ValueError(f"max_repeat must be >= 1, got {max_repeat}")
        self.min_distinct = int(min_distinct)
        self.max_repeat = float(max_repeat)
        if min_constant_lines < 2:
            raise ValueError(f"min_constant_lines must be >= 2, got {min_constant_lines}")
        self.min_constant_lines = int(min_constant_lines)
        if trace_frames < 1:
            raise ValueError(f"trace_frames must be >= 1, got {trace_frames}")
        # structured and multi-line bodies are mined on their message / exception (patterns.bodies)
        self.message_fields = tuple(message_fields)
        self.trace_frames = int(trace_frames)
        # user rules: (regex, name) masking rules applied in order before mining (a match becomes <name>), and
        # pinned templates (a body matching one belongs to it, whatever mining would say)
        self.masking = [(rx, f"<{name}>", _required_literal(rx)) for rx, name in
                        ((re.compile(r), name) for r, name in masking)]
        self.pinned = [(t, _template_regex(t)) for t in pinned]
        self._pin_slot: dict[tuple[int, int], int] = {}   # (service, pinned index) -> slot
        self.max_patterns_per_service = int(max_patterns_per_service)
        self.max_keys = int(max_keys)
        self.services: list[str] = []
        self._service_code: dict[str, int] = {}
        self.seeds = np.zeros(0, dtype=np.uint64)
        self.table = KeyTable()
        # per pattern slot
        self.p_service: list[int] = []
        self.p_tokens: list[tuple[str, ...]] = []
        self.p_id = np.zeros(0, dtype=np.uint64)
        self.p_count = np.zeros(0, dtype=np.int64)
        self.p_first_ns = np.zeros(0, dtype=np.int64)
        self.p_last_ns = np.zeros(0, dtype=np.int64)
        self.p_last_seq = np.zeros(0, dtype=np.int64)   # batch sequence number of the last hit
        self.p_alive = np.zeros(0, dtype=bool)
        self.p_tvmask = np.zeros(0, dtype=np.uint64)   # bit j: template token j is <*>
        # bit j: template token j is a variable with text around it, made by a merge (_generalise)
        self.p_genpos = np.zeros(0, dtype=np.uint64)
        self.p_pinned = np.zeros(0, dtype=np.bool_)    # a user's pinned template: never merged, never evicted
        # a pattern refined from the template without text ("<*>") by its line's words (see _refine): found
        # through (service, text) in _refined, not by similarity
        self.p_refined = np.zeros(0, dtype=np.bool_)
        self._refined: dict[tuple[int, str], int] = {}
        self._textless: set[int] = set()   # slots whose template is "<*>" alone
        self.p_aliases: list[list[int]] = []
        # the template as shown: p_tokens with the masked words its lines never changed (see template())
        self.p_display: list[str] = []
        self.p_nvar = np.zeros(0, dtype=np.int32)   # <*> count of the template
        self.p_code = np.zeros(0, dtype=np.int32)   # index of p_display among the distinct texts (template_dictionary)
        # parameter evidence per slot (kernels.param_evidence), reset when the template changes; the first
        # line's parameter values are kept to show a constant word
        self._new_evidence(0)
        # (service, token count) -> the patterns of that shape as a token-id matrix, so a new key is
        # compared with all of them in a few numpy operations (a Python loop over thousands of
        # patterns per new key made the miss path O(patterns) interpreter steps)
        self._by_shape: dict[tuple[int, int], _ShapeIndex] = {}
        self._vocab: dict[str, int] = {}
        self._alive_per_service: dict[int, int] = {}
        self._free: list[int] = []
        # slots freed during the current learn(): reusable only after it, so a line of the batch that
        # hit a pattern evicted or merged away later in the same batch keeps that pattern's id and text
        self._released: list[int] = []
        self.seq = 0
        # lines of this batch's new keys given to each slot so far (p_count is updated after the batch):
        # the evidence of how often a value occurs includes the batch being learnt
        self._pending: dict[int, int] = {}
        self._spanned = False   # the last _assign joined the key to a template of another token count
        # the distinct shown texts (p_code: each slot's), kept as they change: see template_dictionary
        self._texts = _TextDictionary()

    # ------------------------------------------------------------------ public

    @property
    def pattern_count(self) -> int:
        return int(self.p_alive.sum())

    def template(self, slot: int) -> str:
        """The template as shown: the mined one (``p_tokens``, whose text gives the id), with every
        masked word that was the same on all of at least ``min_constant_lines`` lines shown as
        text (``port <*> ssh2``, ``tty=NODEVssh``, ``jk2_init()``). Only words with a letter that
        are not month or weekday names are shown (numbers and timestamps stay variables), with the
        digits that stand after punctuation masked (``processor....<*>``); from a single line only a
        name with a short index (``L3``, ``tty2``). A variable of a fixed number of words shows one
        ``<*>`` per word (a timestamp stays one); a one-word variable keeps the punctuation around it
        (``'<*>'``, ``<*>.``; see ``_around``). The evidence comes from the lines' parameters
        (``learn(with_params=True)``)."""
        return self.p_display[slot]

    def template_mined(self, slot: int) -> str:
        """The mined template (every masked word ``<*>``): the text the pattern id is made from."""
        return " ".join(self.p_tokens[slot])

    def service_of(self, slot: int) -> str:
        return self.services[self.p_service[slot]]

    def templates_array(self) -> StringArray:
        """Template text of every slot (a dead slot: its last template, until the slot is reused)."""
        dictionary, codes = self.template_dictionary()
        return dictionary.take(codes)

    def template_dictionary(self) -> tuple[StringArray, np.ndarray]:
        """(distinct template texts, int32[slots] index of every slot's text among them).

        Slots of different services can share a template text, so this is what a LowCardinality
        column wants. Kept up to date as templates change, at a cost per changed template, not per
        pattern (rebuilding it per batch made the cost per line grow with the number of patterns);
        the same objects are returned while nothing changed. Texts no slot shows any more stay in
        the dictionary until they outnumber the slots, then it is rebuilt (amortised).
        """
        if self._texts.garbage(len(self.p_display)):
            self._texts = _TextDictionary()
            self.p_code[:] = [self._texts.code(t) for t in self.p_display]
        return self._texts.strings(), self.p_code

    def learn(self, buf: np.ndarray, off: np.ndarray, service_index: np.ndarray, services: list[str],
              time_ns: np.ndarray | None = None, with_params: bool = False) -> LearnResult:
        """Assign every body to a pattern, learning new keys; update counts and last-seen.

        buf/off are the bodies (StringArray buffers), service_index int32[n] indexes ``services``.
        ``with_params``: also the parameters of every line (``LearnResult.params``), taken in the
        same walk over the bytes as the key hash for lines whose key is cached; lines that missed,
        or whose pattern changed during this batch, are redone once their pattern is known.
        """
        n = len(off) - 1
        self.seq += 1
        codes = np.asarray([self._code(s) for s in services], dtype=np.int32)
        if n == 0:
            return LearnResult(np.zeros(0, np.int32), np.zeros(0, np.uint64), [],
                               StringArray.empty() if with_params else None)
        service_index = np.asarray(service_index)
        if len(service_index) != n:
            raise ValueError(f"service_index has {len(service_index)} rows, expected {n}")
        line_svc = codes[service_index]
        # JSON / kvlist / logfmt bodies: their message; stack traces: exception and top frames
        buf, off, _ = mining_view(buf, off, self.message_fields, self.trace_frames)
        if self.masking:
            buf, off = self._mask(buf, off)
        # the fused kernel: one pass over the bytes per line (tokenise, mask, hash) + cache lookup
        if with_params:
            hashes, ntok, slot, vmask, misses, g_used, pbuf, poff = hash_lookup_params(
                buf, off, line_svc, self.seeds, self.table.key, self.table.val, self.table.vmask, self.p_tvmask)
            missed = slot < 0 if misses else None
        else:
            hashes, ntok, slot, vmask, misses = hash_and_lookup(buf, off, line_svc, self.seeds, self.table.key,
                                                                self.table.val, self.table.vmask)
        changes: list[PatternChange] = []
        if misses:
            # a key that hit may lose its pattern to an eviction below: it keeps the slot it hit
            slot0, vmask0 = slot.copy(), vmask.copy()
            # patterns seen in this batch are the most recent: evictions below take older ones first
            self.p_last_seq[slot[slot >= 0]] = self.seq
            miss_rows = np.flatnonzero(slot < 0)
            uniq, first, key_lines = np.unique(hashes[miss_rows], return_index=True, return_counts=True)
            rows = miss_rows[first]
            kbuf, koff = masked_text(buf, off, rows)
            keys_text = StringArray(kbuf, koff).to_pylist()
            if self.table.size + len(uniq) > self.max_keys:
                log.info("pattern key cache full (%d keys), clearing it", self.table.size)
                self.table.clear()
            new_slots = np.empty(len(uniq), dtype=np.int32)
            new_vmask = np.empty(len(uniq), dtype=np.uint64)
            for i, text in enumerate(keys_text):  # once per distinct new key, not per line
                tokens = tuple(text.split(" ")) if text else ()
                raw = (buf[off[rows[i]]:off[rows[i] + 1]].tobytes().decode("utf-8", "surrogateescape")
                       if self.pinned else "")
                s, ch = self._assign(int(line_svc[rows[i]]), tokens, int(key_lines[i]), raw)
                changes.extend(ch)
                new_slots[i] = s
                # a key joined to a template of another length: no key token is a generalised one
                new_vmask[i] = np.uint64(0xFFFFFFFFFFFFFFFF) if self._spanned else _var_mask(tokens)
                # insert at once, so a later merge or eviction in this batch also moves this key
                self.table.insert(uniq[i:i + 1], new_slots[i:i + 1], new_vmask[i:i + 1])
                for c in ch:
                    if c.kind == ChangeType.MERGED:
                        new_slots[:i][new_slots[:i] == c.slot] = c.into
            # an eviction inside _assign may have dropped keys of this batch: look up again
            slot, vmask, misses = self.table.lookup(hashes)
            if misses:  # keys whose pattern was evicted later in this same batch keep that (dead) slot
                for c in changes:  # and a hit key whose entry is gone (cache cleared) follows merges
                    if c.kind == ChangeType.MERGED:
                        slot0[slot0 == c.slot] = c.into
                still = np.flatnonzero(slot < 0)
                pos = np.minimum(np.searchsorted(uniq, hashes[still]), len(uniq) - 1)
                learned_now = uniq[pos] == hashes[still]
                slot[still] = np.where(learned_now, new_slots[pos], slot0[still])
                vmask[still] = np.where(learned_now, new_vmask[pos], vmask0[still])
        if self._textless and len(self._textless & set(np.unique(slot).tolist())):
            self._refine(buf, off, slot, line_svc, changes)
        genmask = self.p_tvmask[slot] & ~vmask
        params = None
        if with_params:
            if missed is not None:
                # the slow path ran: misses have no parameters yet, and a merge may have generalised
                # the pattern of lines that hit
                redo = np.flatnonzero(missed | (genmask != g_used))
                sub = StringArray(buf, off).take(redo)
                sbuf, soff = params_terminated(sub.buf, sub.off, genmask[redo])
                pbuf, poff = replace_strings(pbuf, poff, redo, sbuf, soff)
            params = StringArray(pbuf, poff)
            self._add_evidence(params, slot)
        # counts and recency
        has_time = time_ns is not None and len(time_ns)
        t = np.asarray(time_ns, dtype=np.int64) if has_time else np.zeros(n, dtype=np.int64)
        # one pass for counts and time range per slot (np.bincount + two ufunc.at scatters cost ~3x)
        hits, _, tmin, tmax, _ = slot_stats(slot, t, len(self.p_count))
        self.p_count += hits
        touched = hits > 0
        self.p_last_seq[touched] = self.seq
        if has_time:
            first_unset = touched & (self.p_first_ns == 0)
            self.p_first_ns[first_unset] = tmin[first_unset]
            self.p_first_ns[touched] = np.minimum(self.p_first_ns[touched], tmin[touched])
            self.p_last_ns[touched] = np.maximum(self.p_last_ns[touched], tmax[touched])
        self._free.extend(self._released)
        self._released.clear()
        self._pending.clear()
        return LearnResult(slot, genmask, changes, params)

    def _new_evidence(self, n: int) -> None:
        """Empty parameter evidence for n slots."""
        self.ev_seen = np.zeros(n, dtype=np.int64)
        self.ev_lines = np.zeros(n, dtype=np.int64)
        self.ev_irregular = np.zeros(n, dtype=np.bool_)
        self.ev_words = np.zeros((n, EVIDENCE_PARAMS), dtype=np.int32)
        self.ev_hash = np.zeros((n, EVIDENCE_PARAMS, EVIDENCE_WORDS), dtype=np.uint64)
        self.ev_varied = np.zeros((n, EVIDENCE_PARAMS), dtype=np.uint16)
        self.ev_head = np.zeros((n, EVIDENCE_PARAMS, EVIDENCE_HEAD), dtype=np.uint8)
        self.ev_prefix = np.zeros((n, EVIDENCE_PARAMS), dtype=np.int32)
        self.ev_tail = np.zeros((n, EVIDENCE_PARAMS, EVIDENCE_HEAD), dtype=np.uint8)
        self.ev_suffix = np.zeros((n, EVIDENCE_PARAMS), dtype=np.int32)
        self.ev_sample: list[list[str] | None] = [None] * n

    def _add_evidence(self, params: StringArray, slot: np.ndarray) -> None:
        """Compare this batch's parameters with what each slot's lines showed so far, and show the
        words that stayed constant (see :meth:`template`)."""
        before = self.ev_lines.copy()
        first_row, changed = param_evidence(params.buf, params.off, slot, self.p_nvar, self.ev_seen, self.ev_lines,
                                            self.ev_irregular, self.ev_words, self.ev_hash, self.ev_varied,
                                            self.ev_head, self.ev_prefix, self.ev_tail, self.ev_suffix)
        for s, r in zip(np.flatnonzero(first_row >= 0).tolist(), first_row[first_row >= 0].tolist()):
            a, b = int(params.off[r]), int(params.off[r + 1])
            self.ev_sample[s] = params.buf[a:b].tobytes().decode("utf-8", "surrogateescape").split("\x1f")[:-1]
        # the display changes when a slot reaches min_constant_lines or a word it showed varies
        m = self.min_constant_lines
        redo = np.flatnonzero(changed | ((before < m) & (self.ev_lines >= m)) | ((before == 0) & (self.ev_lines > 0)))
        for s in redo.tolist():
            text = self._shown(s)
            if text != self.p_display[s]:
                self._show(s, text)

    def _shown(self, slot: int) -> str:
        tokens = self.p_tokens[slot]
        values = self.ev_sample[slot]
        single = self.ev_lines[slot] < self.min_constant_lines   # (fewer lines than it takes to call a word constant)
        if self.ev_irregular[slot] or values is None:
            return " ".join(tokens)
        out = []
        k = 0
        for tok in tokens:
            parts = tok.split(VAR)
            text = parts[0]
            for part in parts[1:]:
                text += self._shown_value(slot, k, values[k], single) + part
                k += 1
            out.append(text)
        return " ".join(out)

    def _shown_value(self, slot: int, k: int, value: str, single: bool) -> str:
        if k >= EVIDENCE_PARAMS or self.ev_varied[slot, k] & SHAPE_VARIED:
            return VAR
        varied = int(self.ev_varied[slot, k])
        words = _SPACES.split(value.strip(_SPACE_CHARS))
        if single:
            # one line is no evidence of constancy: only a name with a short index (L3, tty2, PSR0) is shown
            shown = [_numbers_masked(word) if _is_indexed_name(word) else VAR for word in words]
        else:
            shown = [_numbers_masked(word) if w < EVIDENCE_WORDS and not (varied >> w) & 1 and _is_name(word) else VAR
                     for w, word in enumerate(words)]
        if len(words) == 1 and shown[0] == VAR:
            return self._around(slot, k, value, varied)
        if any(word.lower() in _TIME_WORDS for word in words):
            # a timestamp is one variable, as the key kernel joins neighbouring masked words
            return " ".join(x for i, x in enumerate(shown) if not (x == VAR and i and shown[i - 1] == VAR))
        # a variable of a fixed number of words shows one <*> per word ("Fan speeds ( <*> <*> <*> )")
        return " ".join(shown)

    def _around(self, slot: int, k: int, value: str, varied: int) -> str:
        """A masked one-word value with the text around the variable that is not part of it: a value
        that never changed shows its opening and closing punctuation (``'<*>'``, ``[<*>]``, ``<*>.``);
        a varying one the text all its values share: a head of letters up to the last punctuation
        (``node-<*>``, ``core.<*>``; no digit: ``10.250.<*>`` stays ``<*>``) and a tail of
        punctuation (``<*>):``), each only when it ended within the bytes tracked."""
        if not varied:
            head = value[:len(value) - len(value.lstrip(_OPENING))]
            tail = value[len(value.rstrip(_CLOSING_PUNCT)):]
        else:
            raw = value.encode("utf-8", "surrogateescape")
            p, q = int(self.ev_prefix[slot, k]), int(self.ev_suffix[slot, k])
            head = raw[:p].decode("utf-8", "ignore") if p < EVIDENCE_HEAD else ""
            head = _WORD_TAIL.sub("", _HEAD_STOP.split(head, 1)[0])   # up to a digit or / : @, then to punctuation
            if not any(c.isalpha() for c in head) or ":" in value or "@" in value:   # (host:port, user@host)
                head = head if head and all(c in _OPENING for c in head) else ""
            tail = raw[len(raw) - q:].decode("utf-8", "ignore") if 0 < q < EVIDENCE_HEAD and q < len(raw) else ""
            tail = tail[len(_NOT_CLOSING.match(tail).group(0)):]   # from its first closing punctuation
            if any(c.isalnum() for c in tail):
                tail = ""
        if len(head) + len(tail) >= len(value):
            return VAR
        return head + VAR + tail

    def _show(self, slot: int, text: str) -> None:
        """Set the template shown for ``slot`` (p_display and its dictionary code)."""
        self.p_display[slot] = text
        self.p_code[slot] = self._texts.code(text)

    # ------------------------------------------------------------------ slow path

    def _code(self, service: str) -> int:
        c = self._service_code.get(service)
        if c is None:
            c = len(self.services)
            self.services.append(service)
            self._service_code[service] = c
            self.seeds = np.append(self.seeds, np.uint64(service_seed(service)))
        return c

    def _mask(self, buf: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The bodies with the user's masking rules applied, in order (Python regexes, ~1-2 us per line
        and rule). A rule runs only on the lines that hold the literal text every match of it must
        contain (``blk_`` for ``blk_-?\\d+``, found for the whole batch at once by numpy) and on lines
        an earlier rule changed; a rule without such text runs on every line."""
        n = len(off) - 1
        changed: dict[int, str] = {}
        for rx, repl, literal in self.masking:
            rows = np.arange(n) if literal is None else _rows_containing(buf, off, literal)
            for r in set(rows.tolist()) | changed.keys():
                text = changed.get(r)
                if text is None:
                    text = buf[off[r]:off[r + 1]].tobytes().decode("utf-8", "surrogateescape")
                new = rx.sub(repl, text)
                if new != text:
                    changed[r] = new
        if not changed:
            return buf, off
        rows = np.asarray(sorted(changed), dtype=np.int64)
        sub = StringArray.from_pylist([changed[r].encode("utf-8", "surrogateescape") for r in rows.tolist()])
        return replace_strings(buf, off, rows, sub.buf, sub.off)

    def _pinned_for(self, svc: int, raw: str) -> tuple[int, list[PatternChange]]:
        """The pinned pattern whose template ``raw`` matches (the first in the list), or -1."""
        for i, (_, rx) in enumerate(self.pinned):
            if rx.fullmatch(raw.strip()):
                return self._pin(svc, i)
        return -1, []

    def _pin(self, svc: int, i: int) -> tuple[int, list[PatternChange]]:
        """The slot of pinned template i for service svc, created on first use; a mined pattern of
        the service that the pinned template covers is absorbed into it (its id becomes an alias)."""
        slot = self._pin_slot.get((svc, i))
        if slot is not None and self.p_alive[slot]:
            return slot, []
        text, rx = self.pinned[i]
        slot = self._new_pattern(svc, tuple(text.split()), pinned=True)
        self._pin_slot[(svc, i)] = slot
        changes = [PatternChange(slot, ChangeType.CREATED, 0)]
        covered = [c for c in np.flatnonzero(self.p_alive & ~self.p_pinned).tolist()
                   if self.p_service[c] == svc and (rx.fullmatch(self.template(c)) or rx.fullmatch(self.template_mined(c)))]
        return slot, changes + self._absorb(slot, covered)

    def apply_pins(self) -> list[PatternChange]:
        """Pinned templates that cover patterns already mined (a state saved before they were
        configured) take them over now: each such pattern's id becomes an alias of the pinned one."""
        changes: list[PatternChange] = []
        for c in np.flatnonzero(self.p_alive & ~self.p_pinned).tolist():
            if not self.p_alive[c]:
                continue
            for i, (_, rx) in enumerate(self.pinned):
                if rx.fullmatch(self.template(c)) or rx.fullmatch(self.template_mined(c)):
                    changes.extend(self._pin(self.p_service[c], i)[1])
                    break
        self._free.extend(self._released)
        self._released.clear()
        return changes

    def _assign(self, svc: int, tokens: tuple[str, ...], lines: int = 1, raw: str = "") -> tuple[int, list[PatternChange]]:
        """Pattern slot of a new key seen on ``lines`` lines of the batch (creating or merging
        patterns) and what changed. ``raw``: the key's first line (for the pinned templates)."""
        index = self._by_shape.get((svc, len(tokens)))
        slot, changes = -1, []
        if self.pinned:
            slot, changes = self._pinned_for(svc, raw)
        if slot >= 0:
            index = None
        if index is not None and index.n:
            key = self._token_ids(tokens)
            cands = index.slots[:index.n]
            literals, sims = index.scores(key)
            # the pattern with the most literal tokens that all equal the key's; a template without text
            # ("<*>") takes only keys without text: "name(<*>)" is not an instance of "<*>"
            if any(t != VAR for t in tokens):
                literals[literals == 0] = -1
            if literals.max() >= 0:
                slot = int(cands[int(np.argmax(literals))])
            else:
                b = int(np.argmax(sims))
                if sims[b] >= self.similarity:
                    best = int(cands[b])
                    t = self.p_tokens[best]
                    diff = [j for j, (a, b) in enumerate(zip(t, tokens)) if a != b and a != VAR]
                    wild = tuple(a if a == b else VAR for a, b in zip(t, tokens))
                    group = cands[index.covered_by(self._token_ids(wild))].tolist()
                    # a position turns into a variable only on evidence that it varies (see _varies)
                    rows = [self.p_tokens[c] for c in group]
                    counts = [int(self.p_count[c]) + self._pending.get(c, 0) for c in group]
                    genpos = [int(self.p_genpos[c]) for c in group]
                    if all(_varies([tokens[j]] + [r[j] for r in rows], [lines] + counts,
                                   [False] + [bool((g >> j) & 1) for g in genpos], self.min_distinct,
                                   self.max_repeat) for j in diff):
                        merged = tuple(_generalise([tokens[j]] + [r[j] for r in rows]) if j in diff else a
                                       for j, a in enumerate(t))
                        made = sum(1 << j for j in diff if j < 64 and merged[j] != VAR)
                        slot, changes = best, self._merge(best, merged, group)
                        self.p_genpos[best] |= np.uint64(made)
        self._spanned = False
        if slot < 0:
            slot, changes = self._span_merge(svc, tokens)
            self._spanned = slot >= 0
        if slot < 0:
            slot = self._new_pattern(svc, tokens)
            changes = [PatternChange(slot, ChangeType.CREATED, 0)]
        self._pending[slot] = self._pending.get(slot, 0) + lines
        return slot, changes

    def _span_merge(self, svc: int, tokens: tuple[str, ...]) -> tuple[int, list[PatternChange]]:
        """A pattern (mostly of another token count) that the key matches but for spans of at most
        ``MAX_SPAN`` tokens that hold a variable on each side (a size with or without its converted
        unit ``<*> bytes (<*> KB)`` / ``<*> bytes``, a duration ``<*>`` / ``<<*> sec``): each span
        becomes one ``<*>`` and the key joins the pattern. The tokens outside the spans are equal (a
        ``<*>`` matches only a ``<*>``), start with the first token and cover at least
        ``similarity`` of the shorter side."""
        cands = self._span_candidates(svc, tokens)
        best = None
        for c in cands:
            merged = _span_template(self.p_tokens[c], tokens, self.similarity)
            if merged is not None and (best is None or merged[0] > best[0]):
                best = (merged[0], c, merged[1])
        if best is None:
            return -1, []
        _, target, merged = best
        # the patterns the new template covers join it as well (one of the other form seen before)
        group = [target] + [c for c in self._span_candidates(svc, merged)
                            if c != target and _covers(merged, self.p_tokens[c], self.similarity)]
        return target, self._merge(target, merged, group)

    def _span_candidates(self, svc: int, tokens: tuple[str, ...]) -> list[int]:
        """Patterns of the service within 2 * MAX_SPAN tokens of ``tokens``' count with the same first
        token that share the most token values with it (at most _SPAN_CANDIDATES)."""
        n = len(tokens)
        key = self._token_ids(tokens)
        if n == 0 or key[0] == -2:   # (a first token no pattern has)
            return []
        cands: list[tuple[int, int]] = []
        for m in range(max(1, n - MAX_SPAN * 2), n + MAX_SPAN * 2 + 1):
            index = self._by_shape.get((svc, m))
            if index is None or not index.n:
                continue
            same_first = np.flatnonzero(index.tokens[:index.n, 0] == key[0])   # cheap first: most rows differ
            if not len(same_first):
                continue
            rows = index.tokens[same_first]
            shared = (rows[:, :, None] == key[None, None, :]).any(axis=2).sum(axis=1)
            ok = np.flatnonzero(shared >= self.similarity * (min(m, n) - MAX_SPAN))
            cands.extend((int(shared[r]), int(index.slots[same_first[r]])) for r in ok.tolist())
        return [c for _, c in sorted(cands, reverse=True)[:_SPAN_CANDIDATES]]

    def _token_ids(self, tokens: tuple[str, ...], add: bool = False) -> np.ndarray:
        """Token ids of a key or template (``<*>`` = -1; with ``add=False`` an unknown token is -2,
        which equals no template token)."""
        vocab = self._vocab
        if add:
            return np.asarray([-1 if t == VAR else vocab.setdefault(t, len(vocab)) for t in tokens], dtype=np.int32)
        return np.asarray([-1 if t == VAR else vocab.get(t, -2) for t in tokens], dtype=np.int32)

    def _merge(self, target: int, template: tuple[str, ...], group: list[int]) -> list[PatternChange]:
        """Generalise ``target`` to ``template`` and absorb the other slots of ``group`` into it."""
        changes = []
        if template != self.p_tokens[target]:
            old = int(self.p_id[target])
            self._set_template(target, template)
            self.p_aliases[target].append(old)
            changes.append(PatternChange(target, ChangeType.GENERALISED, old))
        return changes + self._absorb(target, [c for c in group if c != target])

    def _absorb(self, target: int, absorbed: list[int]) -> list[PatternChange]:
        """Merge the slots ``absorbed`` into ``target``: their ids become its aliases, their counts and
        cached keys move to it."""
        if not absorbed:
            return []
        changes = []
        svc = self.p_service[target]
        for c in absorbed:
            self.p_aliases[target].append(int(self.p_id[c]))
            self.p_aliases[target].extend(self.p_aliases[c])
            self.p_count[target] += self.p_count[c]
            self._pending[target] = self._pending.get(target, 0) + self._pending.pop(c, 0)
            self.p_last_seq[target] = max(self.p_last_seq[target], self.p_last_seq[c])
            if self.p_first_ns[c] and (not self.p_first_ns[target] or self.p_first_ns[c] < self.p_first_ns[target]):
                self.p_first_ns[target] = self.p_first_ns[c]
            self.p_last_ns[target] = max(self.p_last_ns[target], self.p_last_ns[c])
            self._kill(c)
            changes.append(PatternChange(c, ChangeType.MERGED, int(self.p_id[c]), into=target))
        self._alive_per_service[svc] -= len(absorbed)
        self.table.remap(np.asarray(absorbed, dtype=np.int32), target)
        return changes

    def _set_template(self, slot: int, tokens: tuple[str, ...]) -> None:
        old = self.p_tokens[slot]
        if tokens == (VAR,) and not self.p_refined[slot]:
            self._textless.add(slot)
        else:
            self._textless.discard(slot)
        if len(old) != len(tokens) and not self.p_pinned[slot]:   # (a span merge changes the token count)
            index = self._by_shape.get((self.p_service[slot], len(old)))
            if index is not None and slot in index._row:
                index.remove(slot)
        self.p_tokens[slot] = tokens
        if not (self.p_pinned[slot] or self.p_refined[slot]):   # pinned / refined: never found by similarity
            self._shape_index(self.p_service[slot], len(tokens)).put(slot, self._token_ids(tokens, add=True))
        self.p_id[slot] = pattern_id(self.services[self.p_service[slot]], " ".join(tokens))
        # (a pinned template's tokens are not the key's: its lines give their own variables as parameters)
        self.p_tvmask[slot] = 0 if self.p_pinned[slot] or self.p_refined[slot] else _var_mask(tokens)
        self.p_nvar[slot] = sum(t.count(VAR) for t in tokens)
        self._show(slot, " ".join(tokens))
        self.ev_seen[slot] = 0
        self.ev_lines[slot] = 0
        self.ev_irregular[slot] = bool(self.p_pinned[slot])   # (a pinned template is shown as the user wrote it)
        self.ev_varied[slot] = 0
        self.ev_sample[slot] = None

    def _new_pattern(self, svc: int, tokens: tuple[str, ...], pinned: bool = False, refined: bool = False) -> int:
        if self._alive_per_service.get(svc, 0) >= self.max_patterns_per_service:
            self._evict(svc)
        if self._free:
            slot = self._free.pop()
            self.p_service[slot] = svc
            self.p_tokens[slot] = tokens
            self.p_aliases[slot] = []
        else:
            slot = len(self.p_tokens)
            self.p_service.append(svc)
            self.p_tokens.append(tokens)
            self.p_aliases.append([])
            self.p_display.append("")
            self.ev_sample.append(None)
            self._grow_slot_arrays(slot + 1)
        self.p_count[slot] = 0
        self.p_genpos[slot] = 0
        self.p_pinned[slot] = pinned
        self.p_refined[slot] = refined
        self.p_first_ns[slot] = 0
        self.p_last_ns[slot] = 0
        self.p_last_seq[slot] = self.seq
        self.p_alive[slot] = True
        self._set_template(slot, tokens)
        self._alive_per_service[svc] = self._alive_per_service.get(svc, 0) + 1
        return slot

    def _shape_index(self, svc: int, ntok: int) -> "_ShapeIndex":
        index = self._by_shape.get((svc, ntok))
        if index is None:
            index = self._by_shape[(svc, ntok)] = _ShapeIndex(ntok)
        return index

    _SLOT_ARRAYS = ("p_id", "p_count", "p_first_ns", "p_last_ns", "p_last_seq", "p_alive", "p_tvmask", "p_genpos",
                    "p_pinned", "p_refined", "p_code",
                    "p_nvar", "ev_seen", "ev_lines", "ev_irregular", "ev_words", "ev_hash", "ev_varied", "ev_head", "ev_prefix",
                    "ev_tail", "ev_suffix")

    def _grow_slot_arrays(self, n: int) -> None:
        """Make the per-slot arrays n long. They are views of buffers that grow by doubling, so
        creating patterns one at a time costs amortised O(1), not a copy each."""
        store = self.__dict__.setdefault("_slot_store", {})
        for name in self._SLOT_ARRAYS:
            cur = getattr(self, name)
            buf = store.get(name)
            if buf is None or len(buf) < n or cur.base is not buf:
                buf = np.zeros((max(64, 2 * n),) + cur.shape[1:], dtype=cur.dtype)
                buf[:len(cur)] = cur
                store[name] = buf
            view = buf[:n]
            view[len(cur):] = 0
            setattr(self, name, view)

    def _kill(self, slot: int) -> None:
        """Mark a slot dead (merged away or evicted) and drop it from the indexes that find it."""
        self.p_alive[slot] = False
        if self.p_refined[slot]:
            self._refined.pop((self.p_service[slot], " ".join(self.p_tokens[slot])), None)
        elif not self.p_pinned[slot]:
            self._by_shape[(self.p_service[slot], len(self.p_tokens[slot]))].remove(slot)
        self._textless.discard(slot)
        self._released.append(slot)

    def _refine(self, buf: np.ndarray, off: np.ndarray, slot: np.ndarray, line_svc: np.ndarray,
                changes: list[PatternChange]) -> None:
        """Lines of a template without text (``<*>``: every token masked, e.g. ``name2``,
        ``onResume3``) go to a pattern of their words' text (``name<*>``), per line: the key alone
        cannot tell ``name2`` from ``other7``. A word keeps its letters when it has a run of three
        (not a month or weekday name), with its digit runs masked; other words are ``<*>``. Lines
        whose text is all ``<*>`` (numbers, ids) stay in the template without text."""
        rows = np.flatnonzero(np.isin(slot, np.fromiter(self._textless, dtype=np.int64)))
        for r in rows.tolist():
            text = _refined_text(buf[off[r]:off[r + 1]].tobytes().decode("utf-8", "surrogateescape"))
            if text == VAR:
                continue
            svc = int(line_svc[r])
            s = self._refined.get((svc, text))
            if s is None:
                s = self._new_pattern(svc, tuple(text.split(" ")), refined=True)
                self._refined[(svc, text)] = s
                changes.append(PatternChange(s, ChangeType.CREATED, 0))
            slot[r] = s

    def _evict(self, svc: int) -> None:
        """Evict the least recently seen patterns of ``svc`` (ties: lowest count), cap/16 at once."""
        slots = np.flatnonzero(self.p_alive & ~self.p_pinned & (np.asarray(self.p_service) == svc))
        k = max(1, self.max_patterns_per_service // 16)
        order = np.lexsort((self.p_count[slots], self.p_last_seq[slots]))
        victims = slots[order[:k]]
        for v in victims.tolist():
            self._kill(v)
        self._alive_per_service[svc] -= len(victims)
        self.table.rebuild_without(victims.astype(np.int32))
        log.info("evicted %d patterns of service %r (cap %d)", len(victims), self.services[svc],
                 self.max_patterns_per_service)

    # ------------------------------------------------------------------ persistence

    def save(self, state_dir: str | os.PathLike) -> Path:
        """Write the state to ``state_dir/patterns_state.npz`` (atomic replace). Not a pickle."""
        d = Path(state_dir)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"format": STATE_FORMAT, "version": STATE_VERSION, "similarity": self.similarity,
                "min_distinct": self.min_distinct, "max_repeat": self.max_repeat,
                "min_constant_lines": self.min_constant_lines,
                "max_patterns_per_service": self.max_patterns_per_service, "seq": self.seq}
        k, v, m = self.table.entries()
        templates = StringArray.from_pylist(["\x1f".join(t) if t else "" for t in self.p_tokens])
        ntok = np.asarray([len(t) for t in self.p_tokens], dtype=np.int64)
        services = StringArray.from_pylist(self.services)
        alias_off = np.zeros(len(self.p_aliases) + 1, dtype=np.int64)
        np.cumsum([len(a) for a in self.p_aliases], out=alias_off[1:])
        alias_val = np.asarray([x for a in self.p_aliases for x in a], dtype=np.uint64)
        tmp = d / (STATE_FILE + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                     services_buf=services.buf, services_off=services.off,
                     key=k, key_slot=v, key_vmask=m,
                     p_service=np.asarray(self.p_service, dtype=np.int32), p_id=self.p_id, p_count=self.p_count,
                     p_first_ns=self.p_first_ns, p_last_ns=self.p_last_ns, p_last_seq=self.p_last_seq,
                     p_alive=self.p_alive, p_genpos=self.p_genpos, p_pinned=self.p_pinned, p_refined=self.p_refined,
                     p_ntok=ntok, templates_buf=templates.buf, templates_off=templates.off,
                     alias_off=alias_off, alias_val=alias_val)
        os.replace(tmp, d / STATE_FILE)
        log.info("saved pattern state: %d patterns, %d keys, %d bytes", self.pattern_count, len(k),
                 (d / STATE_FILE).stat().st_size)
        return d / STATE_FILE

    @classmethod
    def load(cls, state_dir: str | os.PathLike, **kwargs) -> "PatternMiner":
        """A miner restored from ``state_dir`` (a fresh one when there is no state file).

        kwargs override the stored settings (similarity, caps). Raises ValueError for a file of
        another format or a newer version.
        """
        path = Path(state_dir) / STATE_FILE
        if not path.exists():
            return cls(**kwargs)
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            if meta.get("format") != STATE_FORMAT:
                raise ValueError(f"{path}: not an otelproc pattern state file")
            if int(meta.get("version", 0)) > STATE_VERSION:
                raise ValueError(f"{path}: state version {meta['version']} is newer than supported {STATE_VERSION}")
            opts = {"similarity": meta["similarity"], "max_patterns_per_service": meta["max_patterns_per_service"],
                    "min_distinct": meta.get("min_distinct", DEFAULT_MIN_DISTINCT),
                    "max_repeat": meta.get("max_repeat", DEFAULT_MAX_REPEAT),
                    "min_constant_lines": meta.get("min_constant_lines", DEFAULT_MIN_CONSTANT_LINES)}
            opts.update(kwargs)
            self = cls(**opts)
            for s in StringArray(z["services_buf"], z["services_off"]).to_pylist():
                self._code(s)
            self.seq = int(meta.get("seq", 0))
            ntok = z["p_ntok"]
            texts = StringArray(z["templates_buf"], z["templates_off"]).to_pylist()
            self.p_tokens = [tuple(t.split("\x1f")) if nt else () for t, nt in zip(texts, ntok.tolist())]
            self.p_service = z["p_service"].tolist()
            self.p_id = z["p_id"].copy()
            self.p_count = z["p_count"].copy()
            self.p_first_ns = z["p_first_ns"].copy()
            self.p_last_ns = z["p_last_ns"].copy()
            self.p_last_seq = z["p_last_seq"].copy()
            self.p_alive = z["p_alive"].copy()
            # (version 1 files have no p_genpos: their templates have no generalised tokens)
            self.p_genpos = z["p_genpos"].copy() if "p_genpos" in z.files else np.zeros(len(self.p_alive), np.uint64)
            stored_pins = z["p_pinned"].copy() if "p_pinned" in z.files else np.zeros(len(self.p_alive), np.bool_)
            self.p_refined = z["p_refined"].copy() if "p_refined" in z.files else np.zeros(len(self.p_alive), np.bool_)
            self.p_tvmask = np.asarray([_var_mask(t) for t in self.p_tokens], dtype=np.uint64)
            # parameter evidence is not stored: it builds up again from the next lines
            self.p_display = [" ".join(t) for t in self.p_tokens]
            self.p_code = np.asarray([self._texts.code(t) for t in self.p_display], dtype=np.int32)
            self.p_nvar = np.asarray([sum(x.count(VAR) for x in t) for t in self.p_tokens], dtype=np.int32)
            self._new_evidence(len(self.p_tokens))
            ao, av = z["alias_off"], z["alias_val"]
            self.p_aliases = [av[ao[i]:ao[i + 1]].tolist() for i in range(len(ao) - 1)]
            self.table.insert(z["key"], z["key_slot"], z["key_vmask"])
        # a pattern pinned before stays pinned while its template is still configured, else it is a mined one
        pin_index = {" ".join(t.split()): i for i, (t, _) in enumerate(self.pinned)}
        self.p_pinned = np.zeros(len(self.p_tokens), dtype=np.bool_)
        for slot in range(len(self.p_tokens)):
            if self.p_alive[slot]:
                svc = self.p_service[slot]
                i = pin_index.get(" ".join(self.p_tokens[slot])) if stored_pins[slot] else None
                if i is not None:
                    self.p_pinned[slot] = True
                    self.p_tvmask[slot] = 0
                    self.ev_irregular[slot] = True
                    self._pin_slot[(svc, i)] = slot
                elif self.p_refined[slot]:
                    self.p_tvmask[slot] = 0
                    self._refined[(svc, " ".join(self.p_tokens[slot]))] = slot
                else:
                    if self.p_tokens[slot] == (VAR,):
                        self._textless.add(slot)
                    self._shape_index(svc, len(self.p_tokens[slot])).put(slot, self._token_ids(self.p_tokens[slot],
                                                                                               add=True))
                self._alive_per_service[svc] = self._alive_per_service.get(svc, 0) + 1
            else:
                self._free.append(slot)
        # a smaller cap than the stored state: evict down to it
        for svc, alive in list(self._alive_per_service.items()):
            while self._alive_per_service[svc] > self.max_patterns_per_service:
                self._evict(svc)
        self.apply_pins()
        return self


class _TextDictionary:
    """Distinct texts, append-only: one growing byte buffer with offsets (doubling), and a dict from
    text to its index. Views handed out stay valid: bytes are only ever appended."""

    def __init__(self):
        self.index: dict[str, int] = {}
        self.buf = np.zeros(1 << 12, dtype=np.uint8)
        self.off = np.zeros(1 << 8, dtype=np.int64)
        self._view: StringArray | None = None

    def code(self, text: str) -> int:
        c = self.index.get(text)
        if c is None:
            c = len(self.index)
            data = text.encode("utf-8", "surrogateescape")
            end = int(self.off[c])
            if end + len(data) > len(self.buf):
                self.buf = np.concatenate([self.buf, np.zeros(max(len(self.buf), len(data)), dtype=np.uint8)])
            if c + 2 > len(self.off):
                self.off = np.concatenate([self.off, np.zeros(len(self.off), dtype=np.int64)])
            self.buf[end:end + len(data)] = np.frombuffer(data, dtype=np.uint8)
            self.off[c + 1] = end + len(data)
            self.index[text] = c
            self._view = None
        return c

    def strings(self) -> StringArray:
        if self._view is None:
            n = len(self.index)
            self._view = StringArray(self.buf[:self.off[n]], self.off[:n + 1])
        return self._view

    def garbage(self, slots: int) -> bool:
        """More texts than twice the slots (plus slack): time to rebuild from the texts in use."""
        return len(self.index) > 2 * slots + 1024


class _ShapeIndex:
    """The patterns of one (service, token count) as rows of a token-id matrix.

    slots  int32[n]        pattern slot of each row (rows in insertion order, except that removing a
                           row moves the last row into its place)
    tokens int32[n, ntok]  token ids, -1 = ``<*>``
    Arrays grow by doubling; ``n`` rows are in use.
    """

    def __init__(self, ntok: int):
        self.n = 0
        self.slots = np.zeros(8, dtype=np.int32)
        self.tokens = np.zeros((8, ntok), dtype=np.int32)
        self._row: dict[int, int] = {}

    def put(self, slot: int, ids: np.ndarray) -> None:
        """Add ``slot`` with token ids ``ids``, or replace its ids when it is present."""
        row = self._row.get(slot)
        if row is None:
            row = self.n
            if row == len(self.slots):
                self.slots = np.concatenate([self.slots, np.zeros_like(self.slots)])
                self.tokens = np.concatenate([self.tokens, np.zeros_like(self.tokens)])
            self.slots[row] = slot
            self._row[slot] = row
            self.n += 1
        self.tokens[row] = ids

    def remove(self, slot: int) -> None:
        row = self._row.pop(slot)
        last = self.n - 1
        if row != last:
            moved = int(self.slots[last])
            self.slots[row] = moved
            self.tokens[row] = self.tokens[last]
            self._row[moved] = row
        self.n = last

    def scores(self, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(literals int64[n], similarity float64[n]) of every row against ``key``: see
        :func:`otelproc.kernels.cluster.candidate_scores`."""
        return candidate_scores(self.tokens, self.n, key)

    def covered_by(self, template: np.ndarray) -> np.ndarray:
        """bool[n]: rows whose tokens equal every literal token of ``template`` (rows it would cover)."""
        return np.all((self.tokens[:self.n] == template) | (template == -1), axis=1)


def _var_mask(tokens: tuple[str, ...]) -> int:
    m = 0
    for j, t in enumerate(tokens[:64]):
        if t == VAR:
            m |= 1 << j
    return m


_PUNCT = ",;:=()[]{}\"'|<>.!?"


def _varies(values: list[str], counts: list[int], generalised: list[bool], min_distinct: int,
            max_repeat: float) -> bool:
    """Is a token position a variable, given the values it showed (the new key's and those of the
    patterns a merge would cover), how many lines showed each and which are a merge's generalised
    token (see :func:`_generalise`)?

    Evidence, not vocabulary:

    * a ``<*>`` among them, a value that a generalised token covers (``FF:<*>:DC:<*>`` under
      ``FF:<*>:<*>``), or values that differ only in a masked variable (``(<*>)`` and ``()``,
      ``rhost=<*>`` and ``rhost=``) or are a variable with only punctuation around (``<*>,`` and
      ``LOCAL(<*>),``): it varies. ``(uid=<*>)`` and ``LOGIN(uid=<*>)`` differ in literal text;
    * fewer than ``min_distinct`` distinct values: a choice between words ("stored as bytes/values",
      "Failed password/none") is two events;
    * cardinality against frequency: when every value recurs (none seen on one line only) and the
      values repeat more than ``max_repeat`` times on average, the position is categorical (a
      method, a state, a level: few values, each frequent) and its values split events. A variable
      (user names, hosts) keeps showing values it had not shown before.
    """
    distinct: dict[str, int] = {}
    for v, c, g in zip(values, counts, generalised):
        if v == VAR:
            return True
        if g:
            rx = re.compile(".*".join(re.escape(part) for part in v.split(VAR)), re.S)
            if any(rx.fullmatch(w) for w in values if w != v):
                return True
        distinct[v] = distinct.get(v, 0) + max(c, 1)
    masked = [v for v in distinct if VAR in v]
    if masked:
        skeletons = {v.replace(VAR, "") for v in distinct}
        # the same text around the variable, or a variable with only punctuation around it ("<*>,")
        if len(skeletons) == 1 or any(not v.replace(VAR, "").strip(_PUNCT) for v in masked):
            return True
    k = len(distinct)
    if k < min_distinct:
        return False
    lines = sum(distinct.values())
    return min(distinct.values()) < 2 or lines / k <= max_repeat


def _atoms(token: str) -> list[str]:
    """A token as characters, with each ``<*>`` one atom."""
    out: list[str] = []
    for k, part in enumerate(token.split(VAR)):
        if k:
            out.append(VAR)
        out.extend(part)
    return out


def _is_word(atom: str) -> bool:
    return atom != VAR and (atom.isalnum() or atom == "_")


def _generalise(values: list[str]) -> str:
    """The one token that covers ``values`` at a position that varies: their common prefix and
    suffix around one ``<*>``, cut at punctuation (``(<*>)`` for ``(<*>)`` and ``()``, ``<*>,`` for
    ``<*>,`` and ``LOCAL(<*>),``, ``rhost=<*>`` for ``rhost=<*>`` and ``rhost=``); ``<*>`` when they
    share nothing."""
    atoms = [_atoms(v) for v in dict.fromkeys(values)]
    shortest = min(len(a) for a in atoms)
    p = 0
    while p < shortest and all(a[p] == atoms[0][p] for a in atoms):
        p += 1
    q = 0
    while q < shortest - p and all(a[-1 - q] == atoms[0][-1 - q] for a in atoms):
        q += 1
    # the shared text ends at punctuation, never inside a word ("alpha", "gamma" share no "a")
    while p and _is_word(atoms[0][p - 1]):
        p -= 1
    while q and _is_word(atoms[0][len(atoms[0]) - q]):
        q -= 1
    prefix, suffix = atoms[0][:p], atoms[0][len(atoms[0]) - q:]
    # "<*>" next to "<*>" is one variable
    while prefix and prefix[-1] == VAR:
        prefix.pop()
    while suffix and suffix[0] == VAR:
        suffix.pop(0)
    return "".join(prefix) + VAR + "".join(suffix)


_SPACE_CHARS = " \t\n\r\x0b\x0c"   # the key kernel's whitespace (mask.KC_SPACE)
_SPACES = re.compile("[" + re.escape(_SPACE_CHARS) + "]+")
_TIME_WORDS = {bytes([(w >> 16) & 255, (w >> 8) & 255, w & 255]).decode() for w in TIME_WORDS.tolist()}


_WORD_TAIL = re.compile(r"\w*$")
_HEAD_STOP = re.compile(r"[0-9/:@]")
_NOT_CLOSING = re.compile(r"[^)\]}>:;,'\"]*")   # a head is cut at its last punctuation ('_' is part of a word)
_NOT_A_NAME = re.compile(r"[/:@]|\d{3}|0[xX][0-9a-fA-F]")


_OPENING = "'\"([{<"   # punctuation that opens a value ('<*>', [<*>])
_CLOSING_PUNCT = "'\")]}>:;,."   # and that closes it or the sentence (<*>., <*>):)
_INDEXED_NAME = re.compile(r"[A-Za-z][A-Za-z_]*[0-9]{1,2}[:=,]?")
_HEX = "abcdefABCDEF"
_LOOSE_NUMBER = re.compile(r"(?<=[^\w\s])[0-9]+(?![A-Za-z_])")


def _is_indexed_name(word: str) -> bool:
    """A masked word shown from one line: a name with an index, either one or two digits right
    after its letters (``L3``, ``tty2``, ``PSR0=``, ``eth0:``; not a run of hex letters such as
    ``ffffda44``) or a number after punctuation (``CPU#<*>``, ``CentOS-<*>``: see _numbers_masked)
    with no other digit and no sign of an address or an id (``/``, ``:``, ``@``, 3+ digits)."""
    if not word[:1].isalpha() or word.lower() in _TIME_WORDS:
        return False
    masked = _numbers_masked(word).replace(VAR, "")
    if masked != word:
        return not any(c.isdigit() for c in masked) and _NOT_A_NAME.search(word) is None
    letters = word.rstrip(":=,0123456789")
    return (_INDEXED_NAME.fullmatch(word) is not None and letters != word.rstrip(":=,")
            and letters.lower() not in _TIME_WORDS and not (len(letters) >= 4 and all(c in _HEX for c in letters)))


def _numbers_masked(word: str) -> str:
    """``word`` with its numbers masked: digits after punctuation (``CPU#<*>``, ``processor....<*>``);
    digits within a name (``ssh2``, ``L3``) are part of it."""
    return _LOOSE_NUMBER.sub(VAR, word)


def _is_name(word: str) -> bool:
    """A masked word that may be shown when constant: it looks like a name (``ssh2``, ``eth1``,
    ``jk2_init``, ``NODEVssh``): it has a letter, is not a month or weekday name (parts of
    timestamps) and has no sign of an address or a number: no ``/`` (path, URL), ``:`` (host:port),
    ``@`` (e-mail), run of 3+ digits (ids, counters) or ``0x`` prefix."""
    return (any(c.isalpha() for c in word) and word.lower() not in _TIME_WORDS
            and _NOT_A_NAME.search(word) is None)


def _required_literal(rx: re.Pattern) -> bytes | None:
    """The longest text every match of ``rx`` contains (UTF-8), or None: runs of literal characters
    in its top-level sequence, in groups and in repeats of at least one. None for a case-blind
    pattern or one whose every part is optional or a choice."""
    if rx.flags & re.IGNORECASE:
        return None
    runs: list[str] = []

    def walk(items) -> None:
        run = ""
        for op, arg in items:
            if op is _sre.LITERAL:
                run += chr(arg)
                continue
            runs.append(run)
            run = ""
            if op is _sre.SUBPATTERN:
                walk(arg[-1])
            elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) and arg[0] >= 1:
                walk(arg[2])
        runs.append(run)

    try:
        walk(_sre_parse.parse(rx.pattern, rx.flags & ~re.UNICODE))
    except Exception:   # (a parser detail of another Python version: no prefilter, the rule runs on every line)
        return None
    best = max(runs, key=len, default="")
    return best.encode("utf-8", "surrogateescape") if best else None


def _rows_containing(buf: np.ndarray, off: np.ndarray, literal: bytes) -> np.ndarray:
    """Rows whose bytes may contain ``literal`` (every row that does; a match across two rows gives
    a row that does not, which is harmless)."""
    lit = np.frombuffer(literal, dtype=np.uint8)
    body = buf[off[0]:off[-1]]
    m = len(body) - len(lit) + 1
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    hit = body[:m] == lit[0]
    for j in range(1, len(lit)):
        hit &= body[j:m + j] == lit[j]
    return np.unique(np.searchsorted(off, np.flatnonzero(hit) + off[0], side="right") - 1)


def _template_regex(template: str) -> re.Pattern:
    """A pinned template as a regex over a body: ``<*>`` matches any text, a run of spaces any whitespace."""
    parts = [r"\s+".join(re.escape(x) for x in re.split(r"\s+", part)) for part in template.strip().split(VAR)]
    return re.compile(".*?".join(parts), re.S)


def _span_template(t: tuple[str, ...], k: tuple[str, ...], similarity: float) -> tuple[int, tuple[str, ...]] | None:
    """(equal tokens, template) when ``t`` and ``k`` differ only in spans of at most MAX_SPAN tokens
    with a variable on each side that has tokens (see PatternMiner._span_merge), else None."""
    if not t or not k or t[0] != k[0]:
        return None
    ops = difflib.SequenceMatcher(None, t, k, autojunk=False).get_opcodes()
    out: list[str] = []
    equal = 0
    shifted = False   # a span of different lengths on the two sides (else positions line up: _varies decides)
    for op, a0, a1, b0, b1 in ops:
        if op == "equal":
            out.extend(t[a0:a1])
            equal += a1 - a0
            continue
        ts, ks = t[a0:a1], k[b0:b1]
        shifted = shifted or len(ts) != len(ks)
        if len(ts) > MAX_SPAN or len(ks) > MAX_SPAN:
            return None
        if not all(any(VAR in x for x in side) for side in (ts, ks) if side):
            return None
        if ts and ks:
            # a variable written in more tokens on one side: the other side is a plain variable
            # ("<*>" / "<<*> sec"); literal text on both sides ("Node card(<*>)" / "NodeCard(<*>)") is two events
            if any(x != VAR for x in ts) and any(x != VAR for x in ks):
                return None
        else:
            # a span on one side only, between equal tokens: an aside in brackets (a converted unit
            # "(<*> KB)") or a variable that may be empty (a template's span); not an optional field at the
            # end ("user=<*>", "(bus <*>)") nor other text ("**** <*>")
            span = ts or ks
            if a0 == 0 or b0 == 0 or a1 == len(t) or b1 == len(k):
                return None
            if not _bracketed(span) and any(x != VAR for x in span):
                return None
        if not (out and out[-1] == VAR):
            out.append(VAR)
    if not shifted or equal < max(1, similarity * (min(len(t), len(k)) - MAX_SPAN)):
        return None
    return equal, tuple(out)


def _covers(template: tuple[str, ...], t: tuple[str, ...], similarity: float) -> bool:
    """Does ``template`` (with span variables) already describe the tokens ``t``?"""
    if len(template) == len(t) and all(a == b or a == VAR for a, b in zip(template, t)):
        return True
    merged = _span_template(template, t, similarity)
    return merged is not None and merged[1] == template


_CLOSING = {"(": ")", "[": "]", "{": "}", "<": ">"}


def _bracketed(span: tuple[str, ...]) -> bool:
    text = " ".join(span).rstrip(",;:.")
    return len(text) >= 2 and text[0] in _CLOSING and text[-1] == _CLOSING[text[0]]


_LETTERS3 = re.compile(r"[A-Za-z]{3}")
_DIGITS = re.compile(r"[0-9]+")


def _refined_text(text: str) -> str:
    """The words of a line without text as a template (see PatternMiner._refine)."""
    out: list[str] = []
    for word in _SPACES.split(text.strip(_SPACE_CHARS)):
        if _LETTERS3.search(word) and word.lower() not in _TIME_WORDS:
            w = _DIGITS.sub(VAR, word)
        else:
            w = VAR
        if not (w == VAR and out and out[-1] == VAR):
            out.append(w)
    return " ".join(out) if out else VAR
