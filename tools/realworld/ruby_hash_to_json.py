"""Converts the Ruby hash literals of cerner/fhir.cerner.com examples to JSON, values unchanged."""

# Handles only what those files use: '...' and "..." strings (adjacent literals joined by a
# trailing backslash are concatenated, as Ruby does), `"key":`/`'key':` symbol keys, numbers,
# true/false/nil, [ ] { } and commas. Anything else raises, so nothing is silently altered.
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Tok = tuple[Any, int]


def tokens(src: str, i: int) -> Iterator[Tok]:
    n = len(src)
    while i < n:
        c = src[i]
        if c.isspace() or c == "\\":
            i += 1
        elif c in "{}[],:":
            yield c, i
            i += 1
        elif c == "'":
            j, out = i + 1, []
            while src[j] != "'":
                if src[j] == "\\" and src[j + 1] in "\\'":
                    out.append(src[j + 1])
                    j += 2
                else:
                    out.append(src[j])
                    j += 1
            yield ("s", "".join(out)), i
            i = j + 1
        elif c == '"':
            j = i + 1
            while src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            raw = src[i + 1 : j]
            if "#{" in raw:
                raise ValueError(f"interpolation at {i}")
            yield ("s", json.loads('"' + raw + '"')), i
            i = j + 1
        elif c == "#":
            i = src.index("\n", i)
        else:
            m = re.compile(
                r"-?\d+(\.\d+)?([eE][-+]?\d+)?|true|false|nil|[A-Za-z_][A-Za-z0-9_]*"
            ).match(src, i)
            if not m:
                raise ValueError(f"unexpected {src[i : i + 20]!r} at {i}")
            yield ("w", m.group(0)), i
            i = m.end()


def parse(it: Iterator[Tok], first: Tok | None = None) -> Any:
    tok, pos = first if first else next(it)
    if tok == "{":
        obj: dict[str, Any] = {}
        tok2 = next(it)
        while tok2[0] != "}":
            key = tok2[0]
            if not (isinstance(key, tuple) and key[0] == "s"):
                raise ValueError(f"bad key at {tok2[1]}")
            # concatenated key strings do not occur; expect ':'
            colon = next(it)
            if colon[0] != ":":
                raise ValueError(f"expected : at {colon[1]}")
            val, nxt = parse_value(it)
            obj[key[1]] = val
            tok2 = nxt if nxt[0] != "," else next(it)
        return obj
    raise ValueError(f"expected {{ at {pos}")


def parse_value(it: Iterator[Tok]) -> tuple[Any, Tok]:
    tok, pos = next(it)
    if tok == "{":
        val = parse(it, (tok, pos))
        return val, next(it)
    if tok == "[":
        arr: list[Any] = []
        nxt = next(it)
        while nxt[0] != "]":
            v, nxt2 = parse_value_from(it, nxt)
            arr.append(v)
            nxt = nxt2 if nxt2[0] != "," else next(it)
        return arr, next(it)
    return parse_value_from(it, (tok, pos), consumed=True)


def parse_value_from(it: Iterator[Tok], first: Tok, consumed: bool = False) -> tuple[Any, Tok]:
    tok, pos = first
    if tok == "{":
        v = parse(it, first)
        return v, next(it)
    if tok == "[":
        arr: list[Any] = []
        nxt = next(it)
        while nxt[0] != "]":
            v, nxt2 = parse_value_from(it, nxt)
            arr.append(v)
            nxt = nxt2 if nxt2[0] != "," else next(it)
        return arr, next(it)
    if isinstance(tok, tuple) and tok[0] == "s":
        s = tok[1]
        nxt = next(it)
        while isinstance(nxt[0], tuple) and nxt[0][0] == "s":  # 'a'\ 'b' concatenation
            s += nxt[0][1]
            nxt = next(it)
        return s, nxt
    if isinstance(tok, tuple) and tok[0] == "w":
        w = tok[1]
        if w in ("true", "false"):
            return w == "true", next(it)
        if w == "nil":
            return None, next(it)
        if re.fullmatch(r"-?\d+", w):
            return int(w), next(it)
        if re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", w):
            # keep the decimal text exactly as written
            return json.loads(w), next(it)
        raise ValueError(f"bare word {w!r} at {pos}")
    raise ValueError(f"unexpected {tok!r} at {pos}")


def main(path: str, name: str) -> None:
    src = Path(path).read_text(encoding="utf-8")
    m = re.search(r"\b" + re.escape(name) + r"\s*\|\|=\s*", src)
    if not m:
        raise SystemExit(f"{name} not in {path}")
    it = tokens(src, m.end())
    first = next(it)
    obj = parse(it, first)
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
