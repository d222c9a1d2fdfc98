"""A lesson on the page: text for a reader, JSON for a program.

The text says what ran, then each claim the runs earned, numbered, then, for
each claim they did not earn, what was observed instead; then the exhibits.
The JSON carries all of it, with the runs' own records, so that every value
in a sentence can be found again in the run it came from.
"""
import json
import textwrap

WIDTH = 92


def text(lesson):
    out = [lesson.title, "=" * len(lesson.title), ""]
    out += textwrap.wrap(lesson.question, WIDTH) + [""]
    out += _what_ran(lesson) + [""]
    held = [c for c in lesson.claims if c.held()]
    if held:
        out.append("What the runs showed:")
        for i, c in enumerate(held, 1):
            out += _item(f"{i}.", c.text())
    missed = [c for c in lesson.claims if not c.held()]
    if missed:
        out += ["", "Not shown by these runs (what they showed instead):"]
        for c in missed:
            out += _item("-", f"[{c.id}] {c.text()}")
    for ex in lesson.exhibits:
        out += ["", ex.title + ":"] + ["  " + ln for ln in ex.lines]
    failed = [r for r in lesson.runs.values() if not r.result.ok]
    for r in failed:
        out += ["", f"run failed: {r.label}: {r.result.reason}"]
    return "\n".join(out) + "\n"


def _what_ran(lesson):
    rows = []
    for r in lesson.runs.values():
        res = r.result
        status = "ok" if res.ok else "FAILED"
        why = f" ({res.reason})" if res.reason else ""
        rows.append(f"  {r.label:<16} {res.workload} at scale {res.scale} by {r.tool}: "
                    f"{status}{why}, {res.iterations} iterations")
    return ["Runs:"] + rows


def _item(mark, sentence):
    lines = textwrap.wrap(sentence, WIDTH - 2 - len(mark) - 1)
    return [f"  {mark} {lines[0]}"] + [" " * (len(mark) + 3) + ln for ln in lines[1:]]


def as_json(lesson):
    doc = {"demo": lesson.name, "title": lesson.title, "question": lesson.question,
           "ok": lesson.ok,
           "runs": {label: r.as_dict() for label, r in lesson.runs.items()},
           "claims": [c.as_dict() for c in lesson.claims],
           "exhibits": [{"title": e.title, "lines": e.lines, "data": e.data}
                        for e in lesson.exhibits]}
    return json.dumps(doc, indent=1) + "\n"
