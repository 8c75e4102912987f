"""Entry point of the converter child process (``python -m ctxdoctor.receiver.convert_main``).

Separate from ``convert.py`` because the package imports that module: running it with ``-m``
would execute a second copy of it. Guarded because the converter's worker processes, started by
``multiprocessing``'s spawn, import this module again as ``__mp_main__``.
"""

import sys

from ctxdoctor.receiver.convert import main

if __name__ == "__main__":
    sys.exit(main())
