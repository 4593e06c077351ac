# lsys: the LuatOS `sys` library (tasks, messages, timers) on asyncio, so that demo scripts read
# like the Lua demos with `await`:
#
#     import lsys as sys
#     async def task():
#         ok, *data = await sys.waitUntil("IP_READY", 1000)
#     sys.taskInit(task)
#     sys.run()
#
# The semantics follow LuatOS script/corelib/sys.lua; docs/lsys.md lists every difference.
# - publish() queues the message; a dispatcher task delivers the queue in order from the loop:
#   subscriber callbacks are called with the message's arguments, tasks blocked in waitUntil()
#   for it wake up with (True, *args). A message nobody waits for is dropped.
# - Timer ids count up from 0x200000 as LuatOS's message timers do; starting a timer with the
#   same function and arguments as a running one replaces it.
# - An exception in a task is logged ("E/user.coroutine.resume ..."); with
#   COROUTINE_ERROR_ROLL_BACK (the default) run() raises it 500 ms later, as LuatOS ends its
#   main loop; else with COROUTINE_ERROR_RESTART the board resets. An exception in a timer or
#   subscriber callback (LuatOS: an error in the main loop) makes run() raise it at once.
import asyncio
import time
from micropython import const

from mpfota import log

# The LuatOS _G globals that demos set and the libraries read.
PROJECT = None
VERSION = None
PRODUCT_KEY = None

COROUTINE_ERROR_ROLL_BACK = True
COROUTINE_ERROR_RESTART = True
MAX_TIMERS = 64  # timerStart/timerLoopStart timers alive at once (LuatOS: its C timer pool)
NET_WATCH = True  # taskInit() and run() start lnet's IP_READY / IP_LOSE watcher

_TASK_TIMER_ID_MAX = const(0x1FFFFF)
_MSG_TIMER_ID_MAX = const(0x7FFFFF)
_ERROR_DELAY_MS = const(500)
# Longer sleeps go in steps of this: an ESP32's ticks_add() takes at most 2**29 - 1 ms.
_long_ms = 3600000

_subs = {}  # message -> [callback or _Waiter, ...] in subscription order
_queue = []  # (message, args) waiting for the dispatcher
_timers = {}  # timer id -> _Timer
_msg_id = _TASK_TIMER_ID_MAX
_tasks = 0  # taskInit tasks still running (and tasks a callback started)
_dispatching = False
_stopped = False
_fatal = None  # the exception that ends run()
_wake = asyncio.Event()  # set whenever run() should look at the state again
_loop_q = None  # the asyncio run queue our tasks live in (a new event loop replaces it)


def _is_coro(r):
    return type(r).__name__ in ("generator", "coroutine")


def _current():
    try:
        return asyncio.current_task()
    except RuntimeError:  # no loop running
        return None


def _trace(exc):
    import io
    import sys

    buf = io.StringIO()
    sys.print_exception(exc, buf)
    return buf.getvalue().rstrip()


def _changed():
    _wake.set()


def _check_loop():
    # After asyncio.new_event_loop() (a simulated reboot in a test) the tasks of timers, waiters,
    # the dispatcher and run() are gone: forget them, keep subscriptions and queued messages.
    global _loop_q, _tasks, _dispatching, _wake
    q = getattr(getattr(asyncio, "core", None), "_task_queue", None)
    if q is _loop_q:
        return
    if _loop_q is not None:
        _timers.clear()
        _tasks = 0
        _dispatching = False
        _wake = asyncio.Event()
        for msg in list(_subs):
            for s in [s for s in _subs[msg] if isinstance(s, _Waiter)]:
                unsubscribe(msg, s)
        import sys

        m = sys.modules.get("lnet")
        if m is not None:
            m.forget()
    _loop_q = q


def _fail(exc, logged=False):
    # An error in the main loop (a timer or subscriber callback): run() raises it.
    global _fatal
    if not logged:
        log.error("sys", _trace(exc))
    if _fatal is None:
        _fatal = exc
    _changed()


def _net():
    if NET_WATCH:
        try:
            import lnet
        except ImportError:
            return
        lnet.start()


# ---- tasks ----------------------------------------------------------------------------------


async def _guard(fn, args):
    global _tasks
    try:
        r = fn(*args)
        if _is_coro(r):
            await r
    except Exception as exc:  # CancelledError and SystemExit are not Exceptions here
        _task_error(exc)
    finally:
        _tasks -= 1
        _changed()


def _task_error(exc):
    log.error("coroutine.resume", _trace(exc))
    if COROUTINE_ERROR_ROLL_BACK:
        if _start(_roll_back, _ERROR_DELAY_MS, (exc,), False) is None:
            _fail(exc, True)
    elif COROUTINE_ERROR_RESTART:
        import board

        board.reset()


def _roll_back(exc):
    _fail(exc, True)


def _spawn(coro):
    # A coroutine a timer or subscriber callback returned runs as a task (errors: as a task's).
    global _tasks

    async def run():
        await coro

    _tasks += 1
    return asyncio.create_task(_guard(run, ()))


def taskInit(fn, *args):
    # Start fn(*args) (an async or plain function) as a task; returns the asyncio task.
    global _tasks
    _check_loop()
    _net()
    _tasks += 1
    return asyncio.create_task(_guard(fn, args))


async def _sleep(ms):
    while ms > _long_ms:
        await asyncio.sleep_ms(_long_ms)
        ms -= _long_ms
    await asyncio.sleep_ms(ms if ms > 0 else 0)


async def wait(ms):
    # sys.wait: suspend this task for ms milliseconds (ms < 1: just yield once).
    await _sleep(ms)


class _Waiter:
    # A task blocked in waitUntil(); the dispatcher fills args and wakes the task.
    def __init__(self, task):
        self.task = task
        self.args = None
        self.done = False  # the task has resumed


async def waitUntil(msg, timeout_ms=None):
    # Wait for `msg`: (True, *args of the publish), or (False,) after timeout_ms (None: forever).
    if timeout_ms is not None and timeout_ms < 1:
        await asyncio.sleep_ms(0)
        return (False,)
    _check_loop()
    w = _Waiter(asyncio.current_task())
    subscribe(msg, w)
    try:
        if timeout_ms is None:
            await asyncio.Event().wait()  # only the dispatcher (or a cancel) ends this
        else:
            await _sleep(timeout_ms)
    except asyncio.CancelledError:
        if w.args is None:  # a real cancel of the task, not a delivery
            raise
    finally:
        w.done = True
        unsubscribe(msg, w)
    if w.args is None:
        return (False,)
    return (True,) + w.args


# ---- messages -------------------------------------------------------------------------------


def subscribe(msg, cb):
    # Call cb(*args) for every publish of msg (msg may be a list or tuple of messages).
    if isinstance(msg, (list, tuple)):
        for m in msg:
            subscribe(m, cb)
        return
    subs = _subs.get(msg)
    if subs is None:
        _subs[msg] = [cb]
    elif cb not in subs:
        subs.append(cb)


def unsubscribe(msg, cb):
    if isinstance(msg, (list, tuple)):
        for m in msg:
            unsubscribe(m, cb)
        return
    subs = _subs.get(msg)
    if subs is None:
        return
    for i in range(len(subs)):
        if subs[i] is cb or subs[i] == cb:
            subs.pop(i)
            break
    if not subs:
        del _subs[msg]


def publish(msg, *args):
    # Queue msg; the dispatcher delivers it from the loop (as LuatOS's sys.publish).
    _check_loop()
    _queue.append((msg, args))
    _kick()


def _kick():
    global _dispatching
    if _queue and not _dispatching:
        _dispatching = True
        asyncio.create_task(_dispatch())


def _call(fn, args):
    # A callback from the main loop: its error is fatal; a coroutine it returns becomes a task.
    try:
        r = fn(*args)
    except Exception as exc:
        _fail(exc)
        return
    if _is_coro(r):
        _spawn(r)


async def _dispatch():
    global _dispatching
    try:
        while _queue and _fatal is None:
            msg, args = _queue.pop(0)
            woke = []
            for s in list(_subs.get(msg, ())):  # a snapshot, as LuatOS takes
                if isinstance(s, _Waiter):
                    if s.args is None:
                        s.args = args
                        s.task.cancel()  # wakes it now; waitUntil tells this from a cancel
                        woke.append(s)
                else:
                    _call(s, args)
            # Let the woken tasks run up to their next wait before the next message, as LuatOS
            # resumes a waiting task inside its dispatch (bounded: they are all scheduled now).
            for _ in range(16):
                while woke and woke[-1].done:
                    woke.pop()
                if not woke:
                    break
                await asyncio.sleep_ms(0)
    finally:
        _dispatching = False
        _changed()


# ---- timers ---------------------------------------------------------------------------------


class _Timer:
    def __init__(self, tid, fn, ms, args, loop):
        self.id = tid
        self.fn = fn
        self.ms = ms
        self.args = args
        self.loop = loop
        self.task = None


def _same(a, b):
    # Lua's == on the arguments: numbers and strings by value, anything else by identity.
    if a is b:
        return True
    if isinstance(a, (int, float, str, bytes)) and type(a) is type(b):
        return a == b
    return False


def _same_args(x, y):
    if len(x) != len(y):
        return False
    for i in range(len(x)):
        if not _same(x[i], y[i]):
            return False
    return True


def _find(fn, args):
    # The oldest timer with this function and these arguments, or None.
    best = None
    for t in _timers.values():
        if t.fn == fn and _same_args(t.args, args) and (best is None or t.id < best.id):
            best = t
    return best


def _new_id():
    global _msg_id
    while True:
        if _msg_id >= _MSG_TIMER_ID_MAX:
            _msg_id = _TASK_TIMER_ID_MAX
        _msg_id += 1
        if _msg_id not in _timers:
            return _msg_id


async def _run_timer(t):
    # Periods up to _long_ms keep to a fixed rate; longer ones count from each call.
    due = time.ticks_add(time.ticks_ms(), t.ms) if t.ms <= _long_ms else None
    while True:
        if due is None:
            await _sleep(t.ms)
        else:
            await asyncio.sleep_ms(max(0, time.ticks_diff(due, time.ticks_ms())))
        if _timers.get(t.id) is not t:
            return
        if not t.loop:
            del _timers[t.id]
            _changed()
        _call(t.fn, t.args)
        if not t.loop:
            return
        if due is not None:
            due = time.ticks_add(due, t.ms)
            now = time.ticks_ms()
            if time.ticks_diff(due, now) < 0:  # late by more than a period: skip missed ones
                due = time.ticks_add(now, t.ms)


def _start(fn, ms, args, loop):
    _check_loop()
    if fn is None:
        raise TypeError("timer function is None")
    old = _find(fn, args)
    if old is not None:
        _drop(old)
    ms = int(ms)
    if ms < 1:
        log.warn("sys", "timer not started: %d ms" % ms)
        return None
    if len(_timers) >= MAX_TIMERS:
        log.error("sys", "too many timers (%d)" % MAX_TIMERS)
        return None
    t = _Timer(_new_id(), fn, ms, args, loop)
    _timers[t.id] = t
    t.task = asyncio.create_task(_run_timer(t))
    return t.id


def _drop(t):
    del _timers[t.id]
    if t.task is not None and t.task is not _current():
        t.task.cancel()
    _changed()


def timerStart(fn, ms, *args):
    # Call fn(*args) once in ms milliseconds; returns the timer id (None when not started).
    return _start(fn, ms, args, False)


def timerLoopStart(fn, ms, *args):
    # Call fn(*args) every ms milliseconds; returns the timer id (None when not started).
    return _start(fn, ms, args, True)


def timerStop(val, *args):
    # Stop the timer with id val, or the oldest timer of function val with these arguments.
    _check_loop()
    if isinstance(val, int):
        t = _timers.get(val)
    else:
        t = _find(val, args)
    if t is not None:
        _drop(t)


def timerStopAll(fn):
    # Stop every timer of function fn, whatever its arguments.
    _check_loop()
    for t in [t for t in _timers.values() if t.fn == fn]:
        _drop(t)


def timerIsActive(val, *args):
    _check_loop()
    if isinstance(val, int):
        return val in _timers
    return _find(val, args) is not None


# ---- the loop -------------------------------------------------------------------------------


def stop():
    # Make run() return (timers and tasks stay as they are; run() again continues them).
    global _stopped
    _stopped = True
    _changed()


def idle():
    # True when nothing is left to run: no taskInit task alive, no timer, no queued message.
    return not _tasks and not _timers and not _queue and not _dispatching


async def arun():
    # run() inside an asyncio program: returns on stop() or when idle(); raises a fatal error.
    global _stopped, _fatal
    _stopped = False
    _check_loop()
    _net()
    _kick()  # messages left over when an error ended the last run()
    while True:
        if _fatal is not None:
            exc = _fatal
            _fatal = None
            raise exc
        if _stopped or idle():
            return
        _wake.clear()
        await _wake.wait()


def run():
    # sys.run(): run the loop until stop() or idle(); an error in a callback (or, after 500 ms,
    # in a task) is raised from here.
    asyncio.run(arun())
