#!/usr/bin/env python3
"""Checks YAML files against a JSON Schema with Python's jsonschema package,
a validator independent of labpool's own.

usage: schema_conformance.py SCHEMA FILE...
Prints one JSON object: {"FILE": ["error", ...], ...}; an empty list means valid.
"""
import json
import sys

import jsonschema
import yaml


def main() -> None:
    schema_path, *files = sys.argv[1:]
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    results = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f)
        results[path] = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(document)
        ]
    json.dump(results, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
