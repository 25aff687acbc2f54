"""The ``gguflite`` command line."""
