"""UCR anomaly archive series that ship inside the aeon wheel, read offline as files.

aeon 1.6.0 declares numba<0.64, and no numba below 0.64 supports the numpy this project
pins (numba 0.63 needs numpy<2.4; tslearn pulled numba 0.68). So `make setup` installs
aeon with `--no-deps` (pinned in constraints.txt) and this module never imports it:
importlib's find_spec locates the package folder without running aeon's __init__, and only
the two CSVs of a series are read, in the single-series form (timestamp, value, is_anomaly).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from seqmodels.errors import DataError

AEON_PIN = "aeon==1.6.0"
# data.source name -> (folder under aeon/datasets/data, file stem of its _TRAIN/_TEST CSVs)
SERIES = {"kdd135": ("KDD-TSAD_135", "135_UCR_Anomaly_InternalBleeding16")}


def archive_files(name: str) -> tuple[Path, Path]:
    """The TRAIN (normal history) and TEST (labelled stream) CSVs of archive series `name`."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"data.source={name} reads its files from the aeon package, which is not installed",
                        where="params.yaml: data.source",
                        fix=f"run `make setup`, or `pip install --no-deps {AEON_PIN}`")
    folder, stem = SERIES[name]
    base = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / folder
    files = (base / f"{stem}_TRAIN.csv", base / f"{stem}_TEST.csv")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"the installed aeon package lacks {missing}", where="params.yaml: data.source",
                        fix=f"reinstall it: `pip install --no-deps --force-reinstall {AEON_PIN}`")
    return files
