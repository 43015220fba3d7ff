"""`python -m keras_actloss ...` is the `keras-actloss` command."""

import sys

from keras_actloss.cli import main

if __name__ == "__main__":
    sys.exit(main())
