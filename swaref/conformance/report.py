"""What every checker reports the same way: a verdict's JSON form, the report file and the exit-2 stops.

Both checkers, the attention runner (``swaref vectors check``) and the model
checker (``swaref models check``), print one line per case, a summary and a
claim, and exit 0, 1 or 2 (docs/conformance.md).  What they judge and what
their summaries and claims say differ and stay in their own modules; this
module holds only what is the same in both: how a verdict with infinite
errors becomes JSON (report.schema.json has no Infinity), how the report is
written, and how a run that judges nothing stops.
"""
import dataclasses
import json
import math

SUITE_CORRUPT = "summary: suite corrupt, tampered with or unsafe; nothing judged"
SUITE_CHANGED = "summary: suite changed during the run; verdicts discarded"


@dataclasses.dataclass
class Verdict:
    """The fields every checker's verdict has; a subclass adds its error measures and names in
    ``ERROR_FIELDS`` the ones that may be infinite."""
    case_id: str
    status: str
    message: str = ""

    ERROR_FIELDS = ()

    def to_json(self):
        """A JSON-ready dict: errors are numbers or null; ``infinite_error`` says an error was infinite."""
        d = dataclasses.asdict(self)
        infinite = False
        for k in self.ERROR_FIELDS:
            if d[k] is not None and not math.isfinite(d[k]):
                d[k] = None
                infinite = True
        d["infinite_error"] = infinite
        return d


def write_report(path, doc):
    """Write the JSON report (when a path was given); NaN and Infinity are refused, not written."""
    if path:
        with open(path, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True, allow_nan=False)
            f.write("\n")


def stop(out, json_report, status, line, summary):
    """End a run that judged nothing (``status`` 'corrupt' or 'usage'): two lines, a report -> exit code 2."""
    out(line)
    out(summary)
    write_report(json_report, {"status": status, "error": line})
    return 2


def stop_corrupt(out, json_report, suite_dir, err, summary=SUITE_CORRUPT):
    return stop(out, json_report, "corrupt", f"CORRUPT suite {suite_dir}: {err}", summary)


def stop_usage(out, json_report, err):
    return stop(out, json_report, "usage", f"usage error: {err}", "summary: nothing judged")
