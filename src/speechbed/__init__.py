"""speechbed: a Makefile/YAML pipeline testbed for speech experiments.

Scripts in ``scripts/`` are thin command lines over the subpackages here.
"""

from pathlib import Path

__version__ = "0.1.0"

#: The package's own data files (TIMIT speaker lists, phone map).
PACKAGE_DATA = Path(__file__).parent / "data"
