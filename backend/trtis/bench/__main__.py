import sys

from trtis.bench.cli import main

sys.exit(main())
