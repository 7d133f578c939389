import sys

from yoloattn.cli import main

sys.exit(main())
