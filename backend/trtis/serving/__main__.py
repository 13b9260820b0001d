"""``python -m trtis.serving``: start.sh's command line (``trtis.serving.launcher.main``)."""
import sys

from trtis.serving.launcher import main

sys.exit(main())
