#!/usr/bin/env python3
"""Prints the first SQL literal of a function of the source, as plain SQL, so that the benchmarks
time exactly what the service runs (and follow the source when it changes).

usage: sql_from_src.py [FILE FUNCTION]     default: src/store/steps.rs claim  (the claim query)
e.g.   sql_from_src.py src/store/requests.rs insert                         (the intake statement)

A function that claims through the shared lease (`lease::claim(db, &QUEUE, ...)`) prints its
queue's claim: the `lease::queue!` description of the same file, composed as the macro of
src/store/lease.rs composes it.
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
LIT = r'"((?:[^"\\]|\\[\s\S])*)"'


def unline(sql):
    return re.sub(r"\\\n\s*", "", sql)  # Rust line continuations


# A claim of the shared lease: its queue's description, composed by the macro of store/lease.rs.
shared = re.match(r"[^{]*\{\s*(?:let [^=]*=\s*)?lease::claim\([^,]*,\s*&(\w+)", src[start:], re.S)
if shared:
    desc = re.search(rf"const {shared.group(1)}: Queue = lease::queue!\s*\{{(.*?)\n\}};", src, re.S)
    if not desc:
        sys.exit(f"queue {shared.group(1)} not found in {path}")
    fields = {k: unline(v) for k, v in re.findall(r"(\w+):\s*" + LIT, desc.group(1))}
    macro = (root / "src/store/lease.rs").read_text()
    claim = re.search(r"Queue::new\(\s*concat!\(", macro)
    if not claim:
        sys.exit("the claim of src/store/lease.rs's queue! not found")
    rest, out = macro[claim.end():], []
    while m := re.match(r"\s*(?:" + LIT + r"|\$(\w+))\s*(,|\))", rest):
        out.append(m.group(1) if m.group(2) is None else fields[m.group(2)])
        rest = rest[m.end():]
        if m.group(3) == ")":
            break
    print("".join(out))
    sys.exit(0)

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
