# Periodic update checks, as the seeds' sys.timerLoopStart(libfota2.request, 4 * 3600000, ...)
# but kinder to servers and links:
#   - the period gets random jitter (+-jitter, a fraction), so a fleet does not ask at once;
#   - after a failed check (no connection, cut download, 5xx, 429, the platform's "please
#     wait" 43) the next one comes sooner: retry_ms, then doubling, capped at the period;
#   - a Retry-After from the server is honoured: the next check is never sooner than it says.
# A check that found no update, or a package the board refused (it would come back the same),
# waits a full period.
#
#     p = fotatimer.Periodic(check, period_ms, jitter=0.1, retry_ms=60000, first_ms=None)
#     p.start(); ... p.stop()
# check is an async function returning (kind, retry_after_ms or None), kind one of the
# constants below. every() builds one for libfota2 checks (libfota2.every(); kept here, not
# in libfota2, so that a one-off update does not load the periodic code).
#
# next_delay() is pure (CPython too).
DONE = "done"  # an update was installed (the app usually resets)
NO_UPDATE = "none"  # the server has nothing (an answer >= 300)
FAILED = "failed"  # transient: try again sooner
BAD = "bad"  # a failure that retrying will not fix (bad package, bad configuration)

_SLICE_MS = 3600 * 1000  # sleep in slices (ticks arithmetic is bounded to a few days)


def next_delay(kind, failures, period_ms, jitter, retry_ms, retry_after_ms=None, rnd=0.5):
    """Milliseconds until the next check.

    failures: consecutive FAILED checks including this one; rnd: a random number in [0, 1)."""
    if kind == FAILED and failures > 0:
        base = min(retry_ms * (1 << min(failures - 1, 30)), period_ms)
    else:
        base = period_ms
    delay = int(base * (1 + jitter * (2 * rnd - 1)))
    if retry_after_ms is not None and delay < retry_after_ms:
        delay = int(retry_after_ms * (1 + jitter * rnd))  # never sooner; spread a little later
    return max(0, delay)


def _rnd():
    import random

    return random.getrandbits(16) / 65536


class Periodic:
    def __init__(self, check, period_ms, jitter=0.1, retry_ms=60000, first_ms=None):
        if not period_ms >= 1 or not retry_ms >= 1 or not 0 <= jitter < 1:
            raise ValueError("need period_ms >= 1, retry_ms >= 1 and 0 <= jitter < 1")
        self.check = check
        self.period_ms = period_ms
        self.jitter = jitter
        self.retry_ms = retry_ms
        self.first_ms = first_ms
        self.failures = 0
        self.checks = 0
        self.next_ms = None  # the delay before the coming check
        self._task = None
        self._stopped = False

    def start(self):
        # An lsys task when the app uses lsys (sys.run() then waits for it), else an asyncio
        # task: libfota2's rule, so libfota2.every() loads no lsys for an asyncio app either.
        from libfota2 import _spawn

        if self._task is None:
            self._stopped = False
            self._task = _spawn(self._loop)
        return self

    def stop(self):
        # Also from inside a check (its callback): the loop then ends when the check returns.
        import asyncio

        self._stopped = True
        t, self._task = self._task, None
        try:
            me = asyncio.current_task()
        except RuntimeError:  # no loop running
            me = None
        if t is not None and t is not me:
            t.cancel()

    async def _loop(self):
        from mpfota import log

        if self.first_ms is not None:
            delay = self.first_ms
        else:
            delay = next_delay(NO_UPDATE, 0, self.period_ms, self.jitter, self.retry_ms,
                               None, _rnd())
        while not self._stopped:
            self.next_ms = delay
            await _sleep(delay)
            if self._stopped:
                break
            kind, retry_after = await self.check()
            self.checks += 1
            self.failures = self.failures + 1 if kind == FAILED else 0
            delay = next_delay(kind, self.failures, self.period_ms, self.jitter, self.retry_ms,
                               retry_after, _rnd())
            log.info("fota", "check", kind, "- next in", delay, "ms",
                     "(failures %d)" % self.failures if self.failures else "")


async def _sleep(ms):
    import asyncio

    while ms > _SLICE_MS:
        await asyncio.sleep_ms(_SLICE_MS)
        ms -= _SLICE_MS
    await asyncio.sleep_ms(ms if ms > 0 else 0)


# --------------------------------------------------------------------- libfota2.every()


def every(cb, opts, period_ms, jitter, retry_ms, first_ms):
    # libfota2.request()'s work every period: prepare, check, cb(result), then the schedule.
    import libfota2 as lf

    async def one():
        try:
            lf.prepare(opts, lf._globals(), lf._device())
        except lf.ConfigError as e:
            from mpfota import log

            log.error("libfota2", e.args[0])
            r = cb(lf.CONFIG_ERROR)
            if lf._is_coro(r):
                await r
            return BAD, None
        out = await lf.check(opts)
        r = cb(out.code)
        if lf._is_coro(r):
            await r
        return classify(out)

    p = Periodic(one, period_ms, jitter, retry_ms, first_ms)
    p.start()
    return p


def classify(out):
    """(kind, retry_after_ms) of a libfota2.Outcome for the periodic schedule."""
    from libfota2 import OK
    from mpfota.errors import FOTA_ERROR

    ra = out.retry_after
    ra_ms = ra * 1000 if isinstance(ra, int) else None
    if out.code == OK:
        return DONE, None
    if out.error is not None:
        # A package the board refused comes back the same: wait a full period.
        return (BAD if out.error == FOTA_ERROR else FAILED), None
    if out.status is not None and (out.status >= 500 or out.status == 429) or out.iot == 43:
        return FAILED, ra_ms
    return NO_UPDATE, ra_ms  # a Retry-After still sets the earliest next check
