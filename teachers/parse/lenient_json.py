"""JSON as teachers write it: objects found anywhere in a text and read strictly, else leniently (quotes,
full-width punctuation, comments, trailing commas, unquoted keys, an object cut off at the end)."""

import json
import re

from teachers.parse.synonyms import _CJK


class _Fail(Exception):
    """Not JSON-like at this position."""


class _EOF(Exception):
    """The text ended inside a value."""


class _PartialStr(str):
    """A string value cut off by the end of the text."""


_QUOTE_CLOSE = {'"': '"', "'": "'", "“": "”“", "”": "”", "‘": "’‘", "’": "’", "＂": "＂", "＇": "＇"}
_AFTER_CLOSE = ",:}]，：｝］\n\r#"
_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:\s*%|\s*/\s*\d+(?:\.\d+)?)?")
_WORD_RE = re.compile(rf"[A-Za-z_{_CJK}][\w{_CJK}\-]*(?:[ \t]+[A-Za-z_{_CJK}][\w{_CJK}\-]*)*")
_KEY_RE = re.compile(rf"[A-Za-z_{_CJK}][\w{_CJK} \-]{{0,40}}?(?=\s*[:：])")
_LITERALS = {"true": True, "false": False, "null": None, "none": None,
             "nan": float("nan"), "infinity": float("inf")}


class _Lenient:
    """A forgiving reader of one JSON-like object; ``repairs`` names what was not strict JSON."""

    MAX_DEPTH = 40

    def __init__(self, s):
        self.s = s
        self.n = len(s)
        self.repairs = set()
        self.truncated = False

    def ws(self, i):
        s, n = self.s, self.n
        while i < n:
            c = s[i]
            if c in " \t\r\n\u3000\ufeff\xa0":
                i += 1
            elif s.startswith("//", i) or c == "#":
                j = s.find("\n", i)
                i = n if j < 0 else j
                self.repairs.add("comments")
            elif s.startswith("/*", i):
                j = s.find("*/", i + 2)
                i = n if j < 0 else j + 2
                self.repairs.add("comments")
            else:
                break
        return i

    def value(self, i, depth):
        if depth > self.MAX_DEPTH:
            raise _Fail()
        i = self.ws(i)
        if i >= self.n:
            raise _EOF()
        c = self.s[i]
        if c in "{｛":
            return self.obj(i, depth + 1)
        if c in "[［":
            return self.array(i, depth + 1)
        if c in _QUOTE_CLOSE:
            return self.string(i)
        m = _NUMBER_RE.match(self.s, i)
        if m:
            if m.end() >= self.n:
                raise _EOF()  # possibly cut inside the number
            text = m.group()
            if "%" in text or "/" in text:
                self.repairs.add("numbers with % or /")
                return text, m.end()
            try:
                x = float(text)
            except ValueError:
                raise _Fail() from None
            return (int(x) if re.fullmatch(r"[-+]?\d+", text) else x), m.end()
        m = _WORD_RE.match(self.s, i)
        if m:
            if m.end() >= self.n:
                raise _EOF()
            word = m.group()
            if word.lower() in _LITERALS:
                if word not in ("true", "false", "null"):
                    self.repairs.add("Python literals")
                return _LITERALS[word.lower()], m.end()
            self.repairs.add("unquoted values")
            return word.strip(), m.end()
        raise _Fail()

    def string(self, i):
        s, n = self.s, self.n
        closers = _QUOTE_CLOSE[s[i]]
        if s[i] != '"':
            self.repairs.add("single or curly quotes")
        out = []
        j = i + 1
        while j < n:
            c = s[j]
            if c == "\\" and j + 1 < n:
                e = s[j + 1]
                if e == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", s[j + 2:j + 6] or ""):
                    out.append(chr(int(s[j + 2:j + 6], 16)))
                    j += 6
                    continue
                out.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}.get(e, e))
                j += 2
                continue
            if c in closers:
                k = j + 1
                while k < n and s[k] in " \t":
                    k += 1
                if k >= n or s[k] in _AFTER_CLOSE or s.startswith("//", k):
                    return "".join(out), j + 1
            out.append(c)
            j += 1
        self.truncated = True
        return _PartialStr("".join(out)), n

    def key(self, i):
        if self.s[i] in _QUOTE_CLOSE:
            k, i = self.string(i)
            if isinstance(k, _PartialStr):
                raise _EOF()
            return k, i
        m = _KEY_RE.match(self.s, i)
        if not m:
            raise _Fail()
        self.repairs.add("unquoted keys")
        return m.group().strip(), m.end()

    def _skip_junk(self, i, stops):
        """Skip plain text after a value up to a separator; None if it holds quotes or brackets."""
        j = i
        while j < self.n and self.s[j] not in stops:
            if self.s[j] in "{}[]｛｝［］\"“”":
                return None
            j += 1
        self.repairs.add("text after a value")
        return j

    def _is_key(self, i):
        """Whether a quoted key followed by a colon starts at ``i`` (a comma was left out before it)."""
        repairs = set(self.repairs)
        try:
            _, j = self.key(i)
        except (_Fail, _EOF):
            return False
        finally:
            self.repairs = repairs
        j = self.ws(j)
        return j < self.n and self.s[j] in ":："

    def _separator(self, i, closers):
        """Index after the comma at ``i``; notes full-width and trailing commas."""
        c = self.s[i]
        if c == "，":
            self.repairs.add("full-width punctuation")
        j = self.ws(i + 1)
        if j < self.n and self.s[j] in closers:
            self.repairs.add("trailing commas")
        return i + 1

    def obj(self, i, depth):
        s = self.s
        out = {}
        i += 1
        while True:
            i = self.ws(i)
            if i >= self.n:
                self.truncated = True
                return out, self.n
            c = s[i]
            if c in "}｝":
                return out, i + 1
            if c in ",，":
                self.repairs.add("extra commas")
                i += 1
                continue
            try:
                k, i = self.key(i)
                i = self.ws(i)
                if i >= self.n:
                    raise _EOF()
                if s[i] not in ":：":
                    raise _Fail()
                if s[i] == "：":
                    self.repairs.add("full-width punctuation")
                v, i = self.value(i + 1, depth)
            except _EOF:
                self.truncated = True
                return out, self.n
            out[k] = v
            end_of_value = i
            i = self.ws(i)
            if i >= self.n:
                self.truncated = True
                return out, self.n
            c = s[i]
            if c in ",，":
                i = self._separator(i, "}｝")
                continue
            if c in "}｝":
                return out, i + 1
            if _KEY_RE.match(s, i) or c in _QUOTE_CLOSE and ("\n" in s[end_of_value:i] or self._is_key(i)):
                self.repairs.add("missing commas")
                continue
            j = self._skip_junk(i, ",，}｝\n")
            if j is None or j == i:
                raise _Fail()
            if j < self.n and s[j] in ",，":
                j = self._separator(j, "}｝")
            elif j < self.n and s[j] in "}｝":
                return out, j + 1
            i = j

    def array(self, i, depth):
        s = self.s
        out = []
        i += 1
        while True:
            i = self.ws(i)
            if i >= self.n:
                self.truncated = True
                return out, self.n
            c = s[i]
            if c in "]］":
                return out, i + 1
            if c in ",，":
                self.repairs.add("extra commas")
                i += 1
                continue
            try:
                v, i = self.value(i, depth)
            except _EOF:
                self.truncated = True
                return out, self.n
            out.append(v)
            end_of_value = i
            i = self.ws(i)
            if i >= self.n:
                self.truncated = True
                return out, self.n
            c = s[i]
            if c in ",，":
                i = self._separator(i, "]］")
                continue
            if c in "]］":
                return out, i + 1
            if "\n" in s[end_of_value:i] or c in _QUOTE_CLOSE or c in "{[｛［" or _NUMBER_RE.match(s, i):
                self.repairs.add("missing commas")
                continue
            j = self._skip_junk(i, ",，]］\n")
            if j is None or j == i:
                raise _Fail()
            if j < self.n and s[j] in ",，":
                j = self._separator(j, "]］")
            elif j < self.n and s[j] in "]］":
                return out, j + 1
            i = j


_OPEN_BRACE_RE = re.compile("[{｛]")


def _find_objects(text, max_tries=300):
    """Top-level JSON-like objects in ``text``: dicts with start, end, truncated and repairs."""
    found = []
    decoder = json.JSONDecoder()
    i = tries = 0
    while tries < max_tries:
        m = _OPEN_BRACE_RE.search(text, i)
        if not m:
            break
        start = m.start()
        tries += 1
        try:
            obj, end = decoder.raw_decode(text, start)
            repairs, truncated = set(), False
        except (ValueError, RecursionError):
            parser = _Lenient(text)
            try:
                obj, end = parser.obj(start, 1)
            except (_Fail, _EOF, RecursionError):
                i = start + 1
                continue
            repairs, truncated = parser.repairs, parser.truncated
        if isinstance(obj, dict) and obj:
            found.append({"obj": obj, "start": start, "end": end, "truncated": truncated, "repairs": repairs})
            i = end
        else:
            i = start + 1
    return found
