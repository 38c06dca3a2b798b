#!/usr/bin/python3
"""Checks constrained outputs written by the grammar tests (JSONL files, one record a line):
json_schema records must parse and validate against their schema (Draft 2020-12, with format
checking), json_object records must parse as objects, regex records must re.fullmatch their
pattern, choice records must equal one of the choices. Needs Debian's python3-jsonschema;
run with /usr/bin/python3."""
import datetime
import json
import re
import sys

try:
    import jsonschema
except ImportError:
    print("error: python3-jsonschema is missing (apt-get install python3-jsonschema)")
    sys.exit(1)


# Debian has no rfc3339-validator, without which jsonschema skips date-time and time: check
# those with RFC 3339's syntax plus Python's own date/time parsing (field ranges).
FORMATS = jsonschema.FormatChecker()
_RFC3339_TIME = r"\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"


@FORMATS.checks("date-time", raises=ValueError)
def _is_datetime(value):
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt]" + _RFC3339_TIME, value):
        return False
    return bool(datetime.datetime.fromisoformat(value.upper().replace("Z", "+00:00")))


@FORMATS.checks("time", raises=ValueError)
def _is_time(value):
    if not isinstance(value, str):
        return True
    return _is_datetime("1970-01-01T" + value)


def check(rec):
    kind, out = rec["kind"], rec["output"]
    if kind in ("json_schema", "json_object"):
        value = json.loads(out)
        if kind == "json_object":
            if not isinstance(value, dict):
                return "not an object"
            return None
        validator = jsonschema.Draft202012Validator(rec["schema"], format_checker=FORMATS)
        errors = [e.message for e in validator.iter_errors(value)]
        return "; ".join(errors) if errors else None
    if kind == "regex":
        return None if re.fullmatch(rec["pattern"], out) else "no full match"
    if kind == "choice":
        return None if out in rec["choices"] else "not one of the choices"
    return "unknown kind " + kind


def main():
    if len(sys.argv) < 2:
        print("usage: validate_outputs.py FILE.jsonl...")
        return 2
    total, bad, kinds = 0, 0, {}
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                rec = json.loads(line)
                total += 1
                kinds[rec["kind"]] = kinds.get(rec["kind"], 0) + 1
                try:
                    why = check(rec)
                except ValueError as e:
                    why = "does not parse: %s" % e
                if why:
                    bad += 1
                    where = rec.get("schema_file") or rec.get("pattern") or rec["kind"]
                    print("%s:%d (%s): %s\n  output: %r" % (path, n, where, why, rec["output"][:500]))
    print("validated %d outputs %s, %d invalid" % (total, kinds, bad))
    if total == 0:
        print("error: no outputs to validate")
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
