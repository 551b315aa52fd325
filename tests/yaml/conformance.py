#!/usr/bin/env python3
"""YAML conformance of `keywire mutate` against kubectl's reader. See tests/yaml/README.md.

For each corpus file F (tests/data/yaml/*.yaml):

  A = kubectl-reader F                       the objects kubectl would send, or kubectl's error
  B = keywire mutate -f F -o json | .items   what keywire read and mutated

1. kubectl refuses F  -> keywire must exit 2 with a one-line error on stderr and nothing on stdout.
2. kubectl reads F    -> keywire must read the same objects, in the same order:
     object not opted in (no keywire.dev/inject / azure.workload.identity/use label "true"):
       B[i] == A[i]
     object opted in (keywire adds its volume, mounts, env, annotations):
       B[i] == C[i], where C = keywire mutate -f (A as a JSON List) -o json | .items, i.e. keywire's
       mutation of exactly what kubectl would send; and A[i] is contained in B[i] (every value kubectl
       sends is kept as is; keywire only adds keys and appends to arrays).
3. Round trip: kubectl-reader(keywire mutate -f F -o yaml) == kubectl-reader(the .items of
   keywire mutate -f F -o json, as a stream of JSON documents):
   keywire's YAML means, to kubectl, the same objects as its JSON.

Numbers are compared by exact decimal value (1000 == 1e3 == 1000.0, 0.1 != 0.1000000000000000055...),
and a number that kubectl sends as an integer literal must also be an integer literal in keywire's
output (the API server rejects 420.0 for an int32 field). NaN and Infinity are never equal.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from decimal import Decimal, InvalidOperation
from pathlib import Path

TIMEOUT = 60


class Num:
    """A JSON number as written: its exact decimal value and whether it was an integer literal."""

    __slots__ = ("text", "value", "integral")

    def __init__(self, text, integral):
        self.text = text
        self.integral = integral
        try:
            self.value = Decimal(text)
        except InvalidOperation:
            self.value = None
        if self.value is not None and not self.value.is_finite():
            self.value = None  # NaN, Infinity: not JSON, never equal

    def __repr__(self):
        return self.text


class DuplicateKey(ValueError):
    pass


def _pairs(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(f"duplicate key {k!r} in a JSON object")
        out[k] = v
    return out


def parse_json(text):
    return json.loads(
        text,
        parse_int=lambda s: Num(s, True),
        parse_float=lambda s: Num(s, False),
        parse_constant=lambda s: Num(s, False),
        object_pairs_hook=_pairs,
    )


def dump(v):
    """Compact JSON text of a parsed value, numbers as they were written."""
    if isinstance(v, Num):
        return v.text
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + dump(x) for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(dump(x) for x in v) + "]"
    return json.dumps(v, ensure_ascii=False)


def show(v, limit=120):
    s = dump(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def pointer(path):
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path) if path else "(root)"


def kind_of(v):
    if isinstance(v, Num):
        return "number"
    if isinstance(v, bool):
        return "boolean"
    if v is None:
        return "null"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def diff(want, got, path=(), contained=False):
    """First difference between kubectl's value `want` and keywire's `got`, or None.

    With contained=True, `got` may have extra object keys and extra trailing array elements."""
    if isinstance(want, Num) and isinstance(got, Num):
        if want.value is None or got.value is None or want.value != got.value:
            return f"{pointer(path)}: kubectl {want.text}, keywire {got.text}"
        if want.integral and not got.integral:
            return f"{pointer(path)}: kubectl sends the integer {want.text}, keywire wrote {got.text}"
        return None
    if kind_of(want) != kind_of(got):
        return f"{pointer(path)}: kubectl {kind_of(want)} {show(want, 60)}, keywire {kind_of(got)} {show(got, 60)}"
    if isinstance(want, dict):
        for k in want:
            if k not in got:
                return f"{pointer(path + (k,))}: missing in keywire's output (kubectl {show(want[k], 60)})"
        if not contained:
            for k in got:
                if k not in want:
                    return f"{pointer(path + (k,))}: keywire has {show(got[k], 60)}, kubectl has no such key"
        for k in want:
            d = diff(want[k], got[k], path + (k,), contained)
            if d:
                return d
        return None
    if isinstance(want, list):
        if len(got) < len(want) or (not contained and len(got) != len(want)):
            return f"{pointer(path)}: kubectl has {len(want)} elements, keywire {len(got)}"
        for i, w in enumerate(want):
            d = diff(w, got[i], path + (i,), contained)
            if d:
                return d
        return None
    if want != got:
        return f"{pointer(path)}: kubectl {show(want, 60)}, keywire {show(got, 60)}"
    return None


def opted_in(obj):
    """Whether keywire is expected to mutate this object (its pod template is labelled to opt in)."""
    stack = [obj]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            labels = v.get("labels")
            if isinstance(labels, dict) and (
                labels.get("keywire.dev/inject") == "true"
                or labels.get("azure.workload.identity/use") == "true"
            ):
                return True
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def run(cmd, cwd):
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return 124, b"", f"timed out after {TIMEOUT}s".encode()
    return p.returncode, p.stdout, p.stderr


def first_line(b):
    s = b.decode("utf-8", "replace").strip()
    return s.splitlines()[0] if s else "(no message)"


class Case:
    def __init__(self, path, args, tmp):
        self.path = path
        self.name = path.name
        self.args = args
        self.tmp = tmp

    def reader(self, file, cwd):
        return run([self.args.reader, str(file)], cwd)

    def keywire(self, file, fmt, cwd):
        return run([self.args.keywire, "mutate", "-f", str(file), "-o", fmt], cwd)

    def items(self, out):
        doc = parse_json(out.decode("utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
            raise ValueError("keywire's -o json output has no items array")
        return doc["items"]

    def check(self):
        cwd = self.path.parent
        rc, out, err = self.reader(self.name, cwd)
        if rc not in (0, 1):
            return False, f"kubectl-reader failed (exit {rc}): {first_line(err)}"
        krc, kout, kerr = self.keywire(self.name, "json", cwd)

        if rc == 1:
            why = first_line(err)
            if krc != 2:
                return False, f"kubectl refuses ({why}) but keywire exited {krc}"
            lines = kerr.decode("utf-8", "replace").strip().splitlines()
            if len(lines) != 1:
                return False, f"kubectl refuses; keywire exited 2 but its error has {len(lines)} lines"
            if kout.strip():
                return False, "kubectl refuses; keywire exited 2 but printed objects on stdout"
            return True, f"refused like kubectl ({why})"

        want = parse_json(out.decode("utf-8"))
        if krc not in (0, 1):
            return False, f"kubectl reads {len(want)} object(s) but keywire exited {krc}: {first_line(kerr)}"
        try:
            got = self.items(kout)
        except (ValueError, DuplicateKey) as e:
            return False, f"keywire's JSON output is unusable: {e}"
        if len(got) != len(want):
            return False, f"kubectl reads {len(want)} object(s), keywire {len(got)}"

        mutated = None
        for i, (a, b) in enumerate(zip(want, got)):
            if not opted_in(a):
                d = diff(a, b)
                if d:
                    return False, f"object {i + 1}: {d}"
                continue
            if mutated is None:
                # keywire's mutation of exactly what kubectl sends: the reader's bytes, as a List.
                ref = self.tmp / (self.path.stem + ".kubectl.json")
                ref.write_bytes(b'{"apiVersion":"v1","kind":"List","items":' + out + b"}")
                mrc, mout, merr = self.keywire(ref, "json", cwd)
                if mrc not in (0, 1):
                    return False, f"keywire cannot read kubectl's own JSON (exit {mrc}): {first_line(merr)}"
                try:
                    mutated = self.items(mout)
                except (ValueError, DuplicateKey) as e:
                    return False, f"keywire's JSON output for kubectl's JSON is unusable: {e}"
                if len(mutated) != len(want):
                    return False, f"keywire reads {len(mutated)} object(s) from kubectl's JSON, not {len(want)}"
            d = diff(a, b, contained=True)
            if d:
                return False, f"object {i + 1} (opted in): kubectl's value not kept: {d}"
            d = diff(mutated[i], b)
            if d:
                return False, f"object {i + 1} (opted in): mutation differs from mutating kubectl's object: {d}"

        # Round trip: keywire's YAML, read by kubectl, means the same objects as keywire's JSON.
        yrc, yout, yerr = self.keywire(self.name, "yaml", cwd)
        if yrc not in (0, 1):
            return False, f"keywire -o yaml exited {yrc}: {first_line(yerr)}"
        y = self.tmp / (self.path.stem + ".keywire.yaml")
        j = self.tmp / (self.path.stem + ".keywire.json")
        y.write_bytes(yout)
        # keywire's JSON items as a stream of JSON documents, numbers as keywire wrote them (a List
        # would make kubectl require apiVersion on every item, which a single document does not).
        j.write_text("\n".join(dump(o) for o in got) + "\n", encoding="utf-8")
        r1, o1, e1 = self.reader(y, cwd)
        r2, o2, e2 = self.reader(j, cwd)
        n = len(want)
        if r1 != 0 and r2 != 0:
            # Objects kubectl accepts only inside a List (metadata is not type-checked for List
            # items): as documents of their own, kubectl refuses keywire's JSON and YAML alike.
            return True, f"{n} object{'s' if n != 1 else ''}; round trip: kubectl refuses keywire's JSON and YAML alike ({first_line(e2).replace(str(self.tmp) + os.sep, '')})"
        if r1 != 0:
            return False, f"round trip: kubectl cannot read keywire's YAML: {first_line(e1)}"
        if r2 != 0:
            return False, f"round trip: kubectl cannot read keywire's JSON items: {first_line(e2)}"
        from_yaml, from_json = parse_json(o1.decode()), parse_json(o2.decode())
        if len(from_yaml) != len(from_json):
            return False, f"round trip: kubectl reads {len(from_yaml)} object(s) from keywire's YAML, {len(from_json)} from its JSON"
        for i, (fj, fy) in enumerate(zip(from_json, from_yaml)):
            d = diff(fj, fy)
            if d:
                return False, f"round trip, object {i + 1}: keywire's YAML means something else than its JSON: {d.replace('kubectl ', 'JSON ').replace('keywire ', 'YAML ')}"
        return True, f"{n} object{'s' if n != 1 else ''}, round trip ok"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reader", required=True)
    ap.add_argument("--keywire", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="run only this case (file name, with or without .yaml); repeatable, or comma-separated")
    args = ap.parse_args()

    if not os.access(args.keywire, os.X_OK):
        print(f"yaml conformance: no keywire binary at {args.keywire} (set KEYWIRE=...)", file=sys.stderr)
        return 2
    args.keywire = str(Path(args.keywire).resolve())
    args.reader = str(Path(args.reader).resolve())

    files = sorted(Path(args.corpus).glob("*.yaml"))
    only = {n.strip() for o in args.only for n in o.split(",") if n.strip()}
    if only:
        wanted = {n if n.endswith(".yaml") else n + ".yaml" for n in only}
        unknown = wanted - {f.name for f in files}
        if unknown:
            print(f"yaml conformance: no such case: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        files = [f for f in files if f.name in wanted]

    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="keywire-yaml-") as tmp:
        for f in files:
            try:
                ok, why = Case(f, args, Path(tmp)).check()
            except Exception as e:  # a crash in one case must not hide the others
                ok, why = False, f"{type(e).__name__}: {e}"
            print(f"{'PASS' if ok else 'FAIL'} {f.stem}: {why}", flush=True)
            passed += ok
            failed += not ok
    print(f"yaml conformance: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
