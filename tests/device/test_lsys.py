# lsys: LuatOS sys semantics on asyncio (device/lsys.py, docs/lsys.md). Each test runs in its
# own MicroPython process, so the module state starts fresh. Times are short; assertions count
# events and use wide margins so that a loaded machine does not make them flaky.
import time

import lsys as sys
import vb
from mpfota import log

sys.NET_WATCH = False  # the network watcher has its own tests (test_lnet.py)

TIMEOUT = 60


def _elapsed(t0):
    return time.ticks_diff(time.ticks_ms(), t0)


def test_globals_and_log_are_the_luatos_ones():
    assert sys.PROJECT is None and sys.VERSION is None and sys.PRODUCT_KEY is None
    sys.PROJECT = "FOTA2_DEMO"
    sys.VERSION = "001.000.000"
    import lsys

    assert lsys.PROJECT == "FOTA2_DEMO" and lsys.VERSION == "001.000.000"
    assert sys.log is log
    lines = vb.capture_log(raw=True)
    sys.log.info("tag", "a", 1)
    sys.log.warn("w")
    assert lines == [("I", "tag", ("a", 1)), ("W", "w", ())]


def test_publish_is_queued_and_delivered_in_order_by_the_loop():
    got = []
    sys.subscribe("M", lambda *a: got.append(a))
    sys.publish("M", 1, "x")
    sys.publish("M")
    sys.publish("OTHER", 9)
    assert got == []  # queued, not called from publish()
    sys.run()  # returns once the queue is empty and nothing else is left
    assert got == [(1, "x"), ()]
    assert sys.idle()


def test_subscribe_is_a_set_and_takes_lists():
    got = []

    def cb(*a):
        got.append(a)

    sys.subscribe("A", cb)
    sys.subscribe("A", cb)  # LuatOS keeps callbacks in a set: still called once
    sys.subscribe(["B", "C"], cb)
    for m in ("A", "B", "C"):
        sys.publish(m, m)
    sys.run()
    assert got == [("A",), ("B",), ("C",)]
    sys.unsubscribe(["A", "B"], cb)
    sys.unsubscribe("A", cb)  # not subscribed any more: nothing happens
    for m in ("A", "B", "C"):
        sys.publish(m, m)
    sys.run()
    assert got == [("A",), ("B",), ("C",), ("C",)]


def test_dispatch_calls_the_subscribers_it_had_when_the_message_came():
    # LuatOS copies the subscriber list before calling them: a callback unsubscribed by an
    # earlier one is still called for this message, and not for the next.
    got = []

    def second(*a):
        got.append(("second",) + a)

    def first(*a):
        got.append(("first",) + a)
        sys.unsubscribe("M", second)
        sys.publish("LATER", *a)  # published during dispatch: delivered in the same pass

    sys.subscribe("M", first)
    sys.subscribe("M", second)
    sys.subscribe("LATER", lambda *a: got.append(("later",) + a))
    sys.publish("M", 1)
    sys.publish("M", 2)
    sys.run()
    assert got == [("first", 1), ("second", 1), ("first", 2), ("later", 1), ("later", 2)]


def test_wait_until_gets_the_args_and_times_out_with_false_only():
    out = []

    async def task():
        out.append(await sys.waitUntil("READY", 5000))
        t0 = time.ticks_ms()
        out.append(await sys.waitUntil("READY", 100))
        out.append(_elapsed(t0))
        out.append(await sys.waitUntil("READY", 0))  # LuatOS: no timer, false at once

    async def pub():
        await sys.wait(20)
        sys.publish("NOT_THIS", 0)
        sys.publish("READY", "10.0.0.2", "ETH")

    sys.taskInit(task)
    sys.taskInit(pub)
    sys.run()
    assert out[0] == (True, "10.0.0.2", "ETH")
    assert out[1] == (False,)
    assert 100 <= out[2] < 5000, out[2]
    assert out[3] == (False,)
    assert not sys._subs  # waiters unsubscribe when they return


def test_a_message_published_before_the_wait_is_still_delivered():
    # publish() only queues; the task subscribes before the loop dispatches, as in LuatOS.
    out = []

    async def task():
        sys.publish("SELF", 7)
        out.append(await sys.waitUntil("SELF", 2000))

    sys.taskInit(task)
    sys.run()
    assert out == [(True, 7)]


def test_a_message_nobody_waits_for_is_dropped():
    out = []

    async def task():
        sys.publish("EARLY", 1)
        await sys.wait(50)  # EARLY is dispatched while nobody waits
        out.append(await sys.waitUntil("EARLY", 100))

    sys.taskInit(task)
    sys.run()
    assert out == [(False,)]


def test_wait_until_forever_and_every_waiter_wakes():
    out = []

    async def waiter(name):
        ok, *data = await sys.waitUntil("GO")
        out.append((name, ok, data))

    for name in ("a", "b", "c"):
        sys.taskInit(waiter, name)
    sys.timerStart(sys.publish, 30, "GO", 42)
    sys.run()
    assert sorted(out) == [("a", True, [42]), ("b", True, [42]), ("c", True, [42])]


def test_back_to_back_messages_each_reach_a_task_that_waits_again():
    # LuatOS resumes the waiting task inside dispatch, so it is waiting again for the next one;
    # other ready tasks (spinners) must not change that.
    got = {"a": [], "b": []}

    async def consumer(name):
        while True:
            ok, *data = await sys.waitUntil("N", 1000)
            if not ok:
                return
            got[name].append(data[0])

    async def spinner():
        for _ in range(200):
            await sys.wait(0)

    async def producer():
        await sys.wait(10)
        for i in range(5):
            sys.publish("N", i)
        await sys.wait(0)
        for i in range(5, 10):
            sys.publish("N", i)

    for name in got:
        sys.taskInit(consumer, name)
    for _ in range(3):
        sys.taskInit(spinner)
    sys.taskInit(producer)
    sys.run()
    assert got == {"a": list(range(10)), "b": list(range(10))}, got


def test_cancelling_a_waiting_task_is_not_a_delivery():
    out = []

    async def task():
        try:
            await sys.waitUntil("NEVER", 5000)
        except BaseException as exc:  # CancelledError
            out.append(type(exc).__name__)
            raise

    t = sys.taskInit(task)
    sys.timerStart(t.cancel, 30)
    t0 = time.ticks_ms()
    sys.run()
    assert out == ["CancelledError"]
    assert _elapsed(t0) < 4000
    assert not sys._subs


def test_wait_and_task_arguments():
    out = []

    async def task(a, b=None):
        await sys.wait(30)
        await sys.wait(0)  # yields once
        out.append((a, b))

    def plain(x):  # a plain function is a task too
        out.append(x)

    t0 = time.ticks_ms()
    t = sys.taskInit(task, 1, 2)
    sys.taskInit(plain, "p")
    assert hasattr(t, "cancel")
    sys.run()
    assert sorted(out, key=str) == [(1, 2), "p"]
    assert _elapsed(t0) >= 30


def test_timer_ids_args_and_one_shot():
    calls = []

    def cb(*a):
        calls.append(a)

    t1 = sys.timerStart(cb, 40, "a", 1)
    t2 = sys.timerStart(cb, 20, "b")
    assert t1 == 0x200000 and t2 == 0x200001  # LuatOS message-timer ids
    assert sys.timerIsActive(t1) and sys.timerIsActive(cb, "a", 1)
    assert not sys.timerIsActive(cb, "a", 2) and not sys.timerIsActive(cb)
    sys.run()
    assert calls == [("b",), ("a", 1)]
    assert not sys.timerIsActive(t1) and not sys._timers


def test_same_function_and_args_replace_the_running_timer():
    calls = []

    def cb(*a):
        calls.append(a)

    opts = {"url": "x"}
    t1 = sys.timerStart(cb, 50, "k", opts)
    t2 = sys.timerStart(cb, 60, "k", opts)  # same function, same (identical) args: replaces
    t3 = sys.timerStart(cb, 70, "k", {"url": "x"})  # an equal but other table: a new timer
    t4 = sys.timerStart(cb, 80)  # no args: another timer
    assert len({t1, t2, t3, t4}) == 4
    assert not sys.timerIsActive(t1) and sys.timerIsActive(t2)
    assert len(sys._timers) == 3
    sys.run()
    assert len(calls) == 3
    assert calls[0][1] is opts and calls[1][1] is not opts and calls[2] == ()


def test_timer_stop_by_id_by_function_and_args_and_all():
    calls = []

    def cb(*a):
        calls.append(a)

    def other():
        calls.append("other")

    a = sys.timerStart(cb, 50, 1)
    sys.timerStart(cb, 50, 2)
    sys.timerStart(cb, 50)
    sys.timerStart(other, 50)
    sys.timerStop(a)
    sys.timerStop(cb, 2)
    sys.timerStop(cb, 3)  # no such timer: nothing happens
    sys.timerStop(0x7FFFFF)  # unknown id: nothing happens
    assert sorted(str(t.args) for t in sys._timers.values()) == ["()", "()"]
    sys.run()
    assert sorted(calls, key=str) == [(), "other"]
    calls.clear()
    sys.timerStart(cb, 50, 1)
    sys.timerStart(cb, 50, 2)
    sys.timerLoopStart(cb, 20, 3)
    sys.timerStart(other, 50)
    sys.timerStopAll(cb)
    sys.run()
    assert calls == ["other"]


def test_loop_timer_repeats_until_stopped_from_its_callback():
    n = []
    t0 = time.ticks_ms()

    def tick(tag):
        n.append(tag)
        if len(n) == 5:
            sys.timerStop(tid)  # a timer may stop itself

    tid = sys.timerLoopStart(tick, 20, "t")
    sys.run()
    assert n == ["t"] * 5
    assert _elapsed(t0) >= 100
    assert not sys._timers


def test_timers_that_cannot_start_return_none():
    lines = vb.capture_log(raw=True)
    assert sys.timerStart(print, 0) is None  # LuatOS: rtos.timer_start refuses < 1 ms
    assert sys.timerLoopStart(print, -5) is None
    sys.MAX_TIMERS = 4
    ids = [sys.timerStart(print, 10000, i) for i in range(4)]
    assert None not in ids
    assert sys.timerStart(print, 10000, 4) is None
    assert any(m == "E" and "too many timers" in a[0] for m, tag, a in lines), lines
    sys.timerStop(ids[0])
    assert sys.timerStart(print, 10000, 4) is not None
    sys.timerStopAll(print)
    assert not sys._timers


def test_async_callbacks_run_as_tasks():
    out = []

    async def later(tag):
        await sys.wait(20)
        out.append(tag)

    sys.timerStart(later, 10, "timer")
    sys.subscribe("EV", later)
    sys.publish("EV", "sub")
    sys.run()  # waits for the tasks the callbacks started
    assert sorted(out) == ["sub", "timer"]


def test_run_returns_at_once_when_idle_and_on_stop():
    t0 = time.ticks_ms()
    sys.run()
    assert _elapsed(t0) < 1000
    n = []
    sys.timerLoopStart(lambda: n.append(1), 10)
    sys.timerStart(sys.stop, 100)
    sys.run()
    first = len(n)
    assert first >= 2, n
    assert sys.timerIsActive(0x200000)  # stop() leaves timers as they are
    sys.timerStart(sys.stop, 60)
    sys.run()  # continues them
    assert len(n) > first
    sys.timerStop(0x200000)
    sys.run()


def test_task_error_is_logged_and_ends_run_500_ms_later():
    lines = vb.capture_log(raw=True)
    ticks = []

    async def bad():
        await sys.wait(10)
        raise ValueError("boom")

    sys.taskInit(bad)
    sys.timerLoopStart(lambda: ticks.append(1), 20)
    t0 = time.ticks_ms()
    try:
        sys.run()
    except ValueError as exc:
        assert exc.args == ("boom",)
    else:
        raise AssertionError("run() must raise the task's error")
    assert _elapsed(t0) >= 500
    assert len(ticks) >= 5, ticks  # the loop kept running for the 500 ms
    errs = [a for m, tag, a in lines if m == "E" and tag == "coroutine.resume"]
    assert len(errs) == 1 and "boom" in errs[0][0] and "ValueError" in errs[0][0], lines


def test_task_error_without_roll_back_or_restart_is_only_logged():
    lines = vb.capture_log(raw=True)
    sys.COROUTINE_ERROR_ROLL_BACK = False
    sys.COROUTINE_ERROR_RESTART = False
    done = []

    async def bad():
        raise KeyError("k")

    async def good():
        await sys.wait(50)
        done.append(1)

    sys.taskInit(bad)
    sys.taskInit(good)
    sys.run()
    assert done == [1]
    assert [tag for m, tag, a in lines if m == "E"] == ["coroutine.resume"]


def test_task_error_with_restart_resets_the_board(vboard):
    sys.COROUTINE_ERROR_ROLL_BACK = False

    async def bad():
        raise RuntimeError("x")

    sys.taskInit(bad)
    try:
        sys.run()
    except SystemExit as exc:
        assert exc.args[0] == 64  # the virtual board's reset()
    else:
        raise AssertionError("COROUTINE_ERROR_RESTART must reset the board")


def test_an_error_in_a_callback_ends_run_at_once():
    lines = vb.capture_log(raw=True)

    def bad(*a):
        raise OSError(5)

    got = []
    sys.subscribe("E", bad)
    sys.subscribe("AFTER", got.append)
    sys.publish("E")
    sys.publish("AFTER", 1)  # not dispatched: the loop ended first
    sys.timerStart(print, 3000, "never printed")
    t0 = time.ticks_ms()
    try:
        sys.run()
    except OSError as exc:
        assert exc.args[0] == 5
    else:
        raise AssertionError("run() must raise the callback's error")
    assert _elapsed(t0) < 2500
    assert any(m == "E" and tag == "sys" for m, tag, a in lines)
    assert got == []
    sys.timerStopAll(print)
    sys.run()  # the next run() goes on with the queue
    assert got == [1]
    sys.timerStart(lambda: 1 // 0, 10)  # and in a timer callback
    try:
        sys.run()
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("run() must raise the timer callback's error")


async def test_arun_inside_an_asyncio_program():
    import asyncio

    out = []

    async def task():
        out.append(await sys.waitUntil("X", 1000))

    sys.taskInit(task)
    asyncio.create_task(_publish_later("X", 3))
    await sys.arun()
    assert out == [(True, 3)]


async def _publish_later(msg, *args):
    await sys.wait(20)
    sys.publish(msg, *args)


def test_long_times_are_slept_in_steps():
    # An ESP32's ticks_add() refuses more than 2**29 - 1 ms (6.2 days); lsys sleeps longer
    # times in steps of _long_ms (1 hour), shortened here to see them work.
    import lsys

    lsys._long_ms = 30
    out = []
    t0 = time.ticks_ms()

    async def task():
        await sys.wait(100)
        out.append(("wait", _elapsed(t0) >= 100))
        out.append(await sys.waitUntil("X", 10 ** 9))  # woken by the publish below

    sys.timerStart(lambda: out.append(("timer", _elapsed(t0) >= 130)), 130)
    n = []
    sys.timerLoopStart(lambda: n.append(1), 70)
    sys.timerStart(sys.publish, 250, "X", 1)
    sys.taskInit(task)
    sys.timerStart(sys.stop, 400)
    sys.run()
    assert out == [("wait", True), ("timer", True), (True, 1)], out
    assert 2 <= len(n) <= 6, n


def test_a_new_event_loop_forgets_the_old_tasks_and_timers():
    # Tests simulate a reboot with asyncio.new_event_loop(): the old loop's tasks are gone.
    import asyncio

    got = []
    sys.subscribe("M", got.append)
    sys.timerLoopStart(print, 10000, "old loop")

    async def stuck():
        await sys.waitUntil("NEVER")

    sys.taskInit(stuck)
    sys.timerStart(sys.stop, 30)
    sys.run()
    assert not sys.idle()
    asyncio.new_event_loop()
    sys.publish("M", 1)  # subscriptions stay; timers, tasks and waiters are forgotten
    assert not sys._timers
    sys.run()
    assert got == [1] and sys.idle()
    assert [s for s in sys._subs.get("NEVER", ())] == []
