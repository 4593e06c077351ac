# TEMPORARY STUB (vboard/deploy engineer, to be removed): lets cli.py import while bench.py is unwritten.


def register(subparsers):
    pass
