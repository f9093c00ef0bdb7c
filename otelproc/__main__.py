import sys

from otelproc.cli import main

sys.exit(main())
