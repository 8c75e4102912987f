"""Entry point of the converter child process (``python -m ctxdoctor.receiver.convert_main``).

Separate from ``convert.py`` because the package imports that module: running it with ``-m``
would execute a second copy of it.
"""

import sys

from ctxdoctor.receiver.convert import main

sys.exit(main())
