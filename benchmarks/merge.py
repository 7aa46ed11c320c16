"""Merging the results of several partial runs into one report.

A full run takes ~15-20 minutes; where one command may not run that long (a job with a time
limit, a shared GPU queue), the sections can be run as separate commands, each writing
its own JSON, and rendered as one RESULTS.md::

    python -m benchmarks.run --only W1,W2 --json part1.json
    python -m benchmarks.run --only W3,W5 --json part2.json
    python -m benchmarks.run --only targets,W4 --json part3.json
    python -m benchmarks.run --only loader,compile,probes,cli --json part4.json
    python -m benchmarks.run --render part1.json,part2.json,part3.json,part4.json

Every ratio stays a ratio measured side by side: each section times its own reference entry
in the same rounds as the rest, so sections can come from different commands. The parts must
come from the same machine, versions, devices and timing settings (:data:`SAME`); merging
refuses parts that differ, naming the field and both files.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

__all__ = ["SAME", "SECTIONS_BY_WORKLOAD", "merge"]

SAME = ("machine", "versions", "backend", "devices", "windows", "window_s",
        "matmul_precision", "xla_flags")
"""``meta`` fields that must be equal in every part."""

SECTIONS_BY_WORKLOAD = ("workloads", "targets", "sweeps", "compile", "probes")
"""Sections keyed by workload (or probe title): a part adds its keys to the merged section,
and a key measured in two parts is an error."""


def merge(parts: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One results dict from ``(file name, results)`` pairs, in order.

    ``meta`` is the first part's, with ``parts`` listing each part's file, command, date and
    seconds. Sections keyed by workload are united; ``peak`` keeps the best figures of the
    parts that measured it; ``loader`` and ``cli`` may come from one part only.

    Raises:
      ValueError: no parts; a :data:`SAME` field differs between two parts (naming the
        field, both files and both values); or the same section (and workload) in two parts.
    """
    if not parts:
        raise ValueError("merge: no results to merge")
    first_name, first = parts[0]
    out: dict[str, Any] = {"meta": copy.deepcopy(first["meta"])}
    out["meta"]["parts"] = []
    owner: dict[tuple[str, ...], str] = {}
    for name, res in parts:
        meta = res.get("meta", {})
        for field in SAME:
            a, b = first["meta"].get(field), meta.get(field)
            if a != b:
                raise ValueError(f"merge: {field!r} differs: {a!r} in {first_name}, {b!r} in "
                                 f"{name}; parts must come from one machine and setting")
        out["meta"]["parts"].append({k: meta.get(k) for k in ("command", "date", "seconds")}
                                    | {"file": name})
        for section, value in res.items():
            if section == "meta":
                continue
            if section in SECTIONS_BY_WORKLOAD:
                merged = out.setdefault(section, {})
                for key, v in value.items():
                    _claim(owner, (section, key), name)
                    merged[key] = copy.deepcopy(v)
            elif section == "peak":
                if "peak" in out:
                    out["peak"] = {k: max(v, value.get(k, v)) for k, v in out["peak"].items()}
                else:
                    out["peak"] = copy.deepcopy(value)
            else:
                _claim(owner, (section,), name)
                out[section] = copy.deepcopy(value)
    out["meta"]["seconds"] = sum(p.get("seconds") or 0.0 for p in out["meta"]["parts"])
    return out


def _claim(owner: dict[tuple[str, ...], str], key: tuple[str, ...], name: str) -> None:
    if key in owner:
        raise ValueError(f"merge: {' / '.join(key)} is in both {owner[key]} and {name}; "
                         f"run each section in one part only")
    owner[key] = name
