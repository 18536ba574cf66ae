#!/usr/bin/env python3
"""Prints the first SQL literal of a function of the source, as plain SQL, so that the benchmarks
time exactly what the service runs (and follow the source when it changes).

usage: sql_from_src.py [FILE FUNCTION]     default: src/store/steps.rs claim  (the claim query)
e.g.   sql_from_src.py src/store/requests.rs insert                         (the intake statement)
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
path, fn = (sys.argv[1], sys.argv[2]) if len(sys.argv) > 2 else ("src/store/steps.rs", "claim")
src = (root / path).read_text()
found = re.search(rf"(?:pub )?async fn {fn}\(", src)
start = found.start() if found else -1
if start < 0:
    sys.exit(f"{fn}() not found in {path}")
# The first query's SQL: a string literal, or the literals and `name!()` macros of a `concat!`.
call = re.search(r'query(?:_as|_scalar)?(?:::<[^>]*>)?\(\s*(concat!\()?', src[start:], re.S)
if not call:
    sys.exit(f"no query in {fn}() of {path}")
rest = src[start + call.end():]
token = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|(\w+)!\(\))\s*(,|\))', re.S)
parts = []
while True:
    m = token.match(rest)
    if not m and parts and re.match(r"\s*\)", rest):  # a trailing comma
        break
    if not m:
        sys.exit(f"cannot read the SQL of {fn}() in {path}")
    if m.group(1) is not None:
        parts.append(m.group(1))
    else:  # a macro that expands to one string literal, defined in the same file
        body = re.search(r"macro_rules!\s*" + m.group(2) + r'\s*\{\s*\(\)\s*=>\s*\{\s*"((?:[^"\\]|\\.)*)"', src)
        if not body:
            sys.exit(f"macro {m.group(2)}!() not found in {path}")
        parts.append(body.group(1))
    rest = rest[m.end():]
    if not call.group(1) or m.group(3) == ")":
        break
print(re.sub(r"\\\n\s*", "", "".join(parts)))  # Rust line continuations
