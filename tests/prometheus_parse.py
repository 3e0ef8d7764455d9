"""Parses a Prometheus text exposition (version 0.0.4) from stdin with the
official Python client's parser, an implementation independent of the Rust
crate that wrote it, and prints the families as JSON:

    [{"name", "type", "help", "samples": [{"name", "labels", "value"}]}]

A line the parser refuses fails the script (exit 1, the error on stderr).
Run by tests/it/metrics.rs; scripts/setup installs prometheus_client.
"""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def number(value):
    # JSON has no infinities; none of labpool's sample values should be one.
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return value


def main():
    text = sys.stdin.read()
    families = []
    for family in text_string_to_metric_families(text):
        families.append(
            {
                "name": family.name,
                "type": family.type,
                "help": family.documentation,
                "samples": [
                    {"name": s.name, "labels": s.labels, "value": number(s.value)}
                    for s in family.samples
                ],
            }
        )
    json.dump(families, sys.stdout)


if __name__ == "__main__":
    main()
