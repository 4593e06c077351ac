# Device-test runner, executed by the unix port: call MODULE.FUNCTION(**json_args).
# A coroutine function is run with asyncio. Any exception prints its traceback and exits 1.
import json
import sys


def main():
    module, function, argfile = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(argfile) as f:
        kwargs = json.load(f)
    mod = __import__(module)
    result = getattr(mod, function)(**kwargs)
    if type(result).__name__ in ("generator", "coroutine"):
        import asyncio

        asyncio.run(result)


try:
    main()
except Exception as exc:  # report every failure the same way: traceback, exit 1
    sys.print_exception(exc)
    sys.exit(1)
