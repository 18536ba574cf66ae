#!/usr/bin/env python3
"""Prints the first SQL literal of a function of the source, as plain SQL, so that the benchmarks
time exactly what the service runs (and follow the source when it changes).

usage: sql_from_src.py [FILE FUNCTION]     default: src/store/steps.rs claim  (the claim query)
e.g.   sql_from_src.py src/store/requests.rs insert_many                    (the intake statement)
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
path, fn = (sys.argv[1], sys.argv[2]) if len(sys.argv) > 2 else ("src/store/steps.rs", "claim")
src = (root / path).read_text()
start = src.find(f"pub async fn {fn}(")
if start < 0:
    sys.exit(f"{fn}() not found in {path}")
literal = re.search(r'query(?:_as|_scalar)?(?:::<[^>]*>)?\(\s*"((?:[^"\\]|\\.)*)"', src[start:], re.S)
if not literal:
    sys.exit(f"no SQL literal in {fn}() of {path}")
print(re.sub(r"\\\n\s*", "", literal.group(1)))  # Rust line continuations
