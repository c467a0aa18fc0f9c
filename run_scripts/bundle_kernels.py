"""Generate ``modeling_lact_audio/lact_kernels.py`` from kernels/ (``modeling_lact_audio.export.bundle``).

    python run_scripts/bundle_kernels.py           # rewrite the bundle
    python run_scripts/bundle_kernels.py --check   # exit status 1 if the bundle is stale
"""

import sys

from modeling_lact_audio.export.bundle import main

if __name__ == "__main__":
    sys.exit(main())
