"""The benchmark scripts are not a package: their folder goes on the import path, as when they are run, so that
tests import them by name (`import offline_suite`) and the scripts' own imports of each other resolve."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
