"""Coverage-guided fuzzing of every reader with atheris (libFuzzer), beside the hypothesis tests of test_fuzz.py.

The first input byte picks the reader, the rest is the file; the same check as test_fuzz.py runs on it (a parse,
or a one-line SearchkitError naming the file), so any other exception, or a failed check, is a crash that
libFuzzer reports with the input that caused it.

    python tests/faults/atheris_readers.py -atheris_runs=130000      # 10,000 inputs per reader, 12 readers
(run by the slow tier: tests/faults/test_fuzz.py::test_atheris_readers)
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import atheris

_spec = importlib.util.spec_from_file_location("fuzz_checks", Path(__file__).with_name("test_fuzz.py"))
assert _spec is not None and _spec.loader is not None
fuzz_checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_checks)
NAMES = sorted(fuzz_checks.READERS)
WORKDIR = Path(tempfile.mkdtemp(prefix="atheris-readers-"))


def one_input(data: bytes) -> None:
    if not data:
        return
    fuzz_checks._check(NAMES[data[0] % len(NAMES)], data[1:], WORKDIR)


if __name__ == "__main__":
    atheris.instrument_all()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
