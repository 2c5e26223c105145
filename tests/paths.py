"""Paths of the source checkout that tests use (the package's own files: ``opmas.paths``)."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = PROJECT_ROOT / "samples"
SIGMA_DIR = PROJECT_ROOT.parent / "shared" / "sigma"  # the SigmaHQ snapshot beside the checkout
EVTX_SAMPLE = PROJECT_ROOT / "tests" / "data" / "evtx" / "Security_short_selected.evtx"
