"""python -m cx.demo"""

import sys

from .run import main

sys.exit(main())
