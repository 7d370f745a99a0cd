import sys

from facemask_edge.cli import main

sys.exit(main())
