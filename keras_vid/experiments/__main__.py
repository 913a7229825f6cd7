"""`python -m keras_vid.experiments`: see `keras_vid.experiments.cli`."""

from keras_vid.experiments.cli import main

if __name__ == "__main__":
    main()
