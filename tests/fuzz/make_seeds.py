#!/usr/bin/env python3
"""Writes the hand-made inputs of the API fuzzer (tests/fuzz/fuzz_api.c).

    python3 tests/fuzz/make_seeds.py        # rewrites corpus/seed-* and known/*.bin

corpus/seed-*: one scenario per file, on each backend where it matters; the fuzzer starts from
them and fuzz.replay replays them. known/*.bin: the shortest inputs showing each known library
bug (see KB_* in fuzz_api.c and README.md); they fail with AEV_FUZZ_STRICT=1 until fixed.

The encoding mirrors fuzz_api.c: byte 0 configures the loop, then an opcode byte and its
argument bytes per operation. Keep the tables below in step with the enums there.
"""
import os
import sys

OPS = ("INIT START STOP FEED CLEAR SETPRI INVOKE SEND SEND_THREAD RUN RUN_BG BREAK ACTION FDIO "
       "TIMER IOSET REF SUSPEND FORK HOOK INVOKE_PENDING DESTROY RUN2 START2").split()
OP = {name: i for i, name in enumerate(OPS)}
# INIT's type byte: (byte % 8) + 1 in fuzz_api.c's T_* order.
TYPE = {name: i for i, name in enumerate("io timer idle prepare check async fork cleanup".split())}
FD = {"sock": 0, "pipe": 1, "file": 2, "bad": 3}
IOEV = {"read": 0, "write": 1, "both": 2, "invalid": 3}
AFTER = {0: 0, "1us": 2, "20us": 3, "300us": 4, "1ms": 5, "1h": 6, "neg": 7}
REPEAT = {0: 0, "1us": 3, "50us": 4, "700us": 5, "1h": 6, "neg": 7}
FEED = {"none": 0, "custom": 1, "read": 2, "timer": 3, "idle": 4, "error": 5, "write": 6,
        "high": 7}
MODE = {"nowait": 0, "once": 2, "bad": 6}
BREAK = {"cancel": 1, "one": 2, "all": 3, "minus1": 0, "three": 12}
ACT = {name: i for i, name in enumerate(
    ("none stop start feed clear setpri invoke send send_thread break destroy run "
     "invoke_pending fdio timer init ioset hook ref").split())}
SELF = 12
FDIO = {"sock_write": 0, "sock_drain": 1, "pipe_write": 2, "pipe_drain": 3}
HOOK = {"none": 0, "defer": 1, "invoke": 2}
BACKEND = {"epoll": 0, "poll": 1, "kqueue": 2}


def header(backend="epoll", pipe=False):
    return [BACKEND[backend] | (16 if pipe else 0)]


def init(slot, type_, a=0, b=0):
    return [OP["INIT"], slot, TYPE[type_], a, b]


def io(slot, fd, ev):
    return init(slot, "io", FD[fd], IOEV[ev])


def timer(slot, after, repeat=0):
    return init(slot, "timer", AFTER[after], REPEAT[repeat])


def start(slot, via=1):
    return [OP["START"], slot, via]


def stop(slot, via=0):
    return [OP["STOP"], slot, via]


def feed(slot, ev="custom"):
    return [OP["FEED"], slot, FEED[ev]]


def clear(slot):
    return [OP["CLEAR"], slot]


def pri(slot, p):
    return [OP["SETPRI"], slot, p + 3]


def invoke(slot, ev="custom"):
    return [OP["INVOKE"], slot, FEED[ev]]


def send(slot, thread=False):
    return [OP["SEND_THREAD" if thread else "SEND"], slot]


def run(mode="nowait"):
    return [OP["RUN"], MODE[mode]]


def run_bg(slot, delay=0, mode="once"):
    return [OP["RUN_BG"], slot, delay, MODE[mode]]


def brk(how):
    return [OP["BREAK"], BREAK[how]]


def action(slot, kind, target=SELF, arg=0, budget=1, which=0):
    return [OP["ACTION"], slot, which, ACT[kind], target, arg, budget - 1]


def fdio(what):
    return [OP["FDIO"], FDIO[what]]


def timer_op(slot, sub, arg=0):
    return [OP["TIMER"], slot, {"again": 0, "set": 1, "set_repeat": 2}[sub], arg]


def ioset(slot, fd, ev):
    return [OP["IOSET"], slot, FD[fd], IOEV[ev]]


def ref(unref=False):
    return [OP["REF"], 1 if unref else 0]


def suspend(resume=False):
    return [OP["SUSPEND"], 1 if resume else 0]


def fork():
    return [OP["FORK"]]


def hook(kind):
    return [OP["HOOK"], HOOK[kind]]


def invoke_pending():
    return [OP["INVOKE_PENDING"]]


def destroy(backend="epoll", pipe=False):
    return [OP["DESTROY"]] + header(backend, pipe)


def seq(*parts):
    out = []
    for p in parts:
        out.extend(p)
    return out


def priorities():
    return seq(
        *[init(k, "check") for k in range(6)],
        pri(0, -2), pri(1, 2), pri(2, 0), pri(3, 1), pri(4, -1), pri(5, 2),
        feed(0), feed(1), feed(2), feed(3), feed(4), feed(5), feed(2, "read"), feed(0, "timer"),
        run(),
        # Feeds from a callback: a higher priority overtakes, an equal one queues behind.
        action(2, "feed", 1, FEED["custom"]), action(4, "feed", 5, FEED["write"], which=1),
        feed(2), feed(4), feed(0), run(),
        # Stop and clear of queued events; invoke leaves a pending event in place.
        feed(0), feed(4), clear(4), invoke(0, "read"), stop(0), feed(3), run())


def idle_rule():
    return seq(
        init(0, "idle"), pri(0, -1), start(0),
        init(1, "idle"), start(1),
        io(2, "sock", "read"), start(2),
        run(), run(),  # idle 1 (priority 0) only
        fdio("sock_write"), run(),  # the socket is pending at 0: no idle
        fdio("sock_drain"), stop(1), run(),  # now idle 0 at -1
        init(3, "check"), pri(3, 1), start(3), run(),  # a check is queued after idle
        stop(0), stop(2), stop(3), run())


def timers():
    return seq(
        timer(0, 0), timer(1, 0), timer(2, 0), timer(3, "1h"), pri(2, 1),
        start(0), start(1), start(2), start(3), run(),  # 2 first, then 0, 1 in start order
        timer(4, 0, "1us"), start(4), run(), run(), run("once"),
        timer_op(4, "set_repeat", REPEAT[0]), run("once"),
        timer(5, "20us"), start(5), run("once"), run("once"),
        timer(6, "300us", "50us"), start(6), run("once"), run("once"), timer_op(6, "again"),
        run("once"), stop(6),
        timer(7, "1ms"), start(7), run("once"), run("once"),
        timer_op(3, "set", AFTER[0]), timer_op(3, "again"), stop(3), timer_op(3, "set"),
        timer(8, 0, "700us"), timer_op(8, "again"), run("once"), run("once"),
        feed(8, "custom"), run("once"), stop(8), run())


def io_basic(backend):
    return seq(
        header(backend),
        io(0, "sock", "read"), io(1, "sock", "write"), io(2, "sock", "both"),
        io(3, "pipe", "read"), io(4, "pipe", "both"),
        start(0), start(1), start(2), start(3), start(4), run(),
        fdio("sock_write"), fdio("pipe_write"), run(), run("once"),
        fdio("sock_drain"), run(), stop(1), run("once"),
        fdio("pipe_drain"), stop(2), ioset(2, "pipe", "read"), ioset(0, "pipe", "read"),
        start(2), fdio("pipe_write"), run(),
        stop(0), ioset(0, "pipe", "read"), start(0), run(), stop(0), stop(2), stop(3), stop(4),
        run())


def io_file_bad(backend):
    return seq(
        header(backend),
        io(0, "file", "read"), io(1, "file", "both"), io(2, "bad", "read"), io(3, "bad", "write"),
        start(0), start(1), start(2), start(3), run(), run(),
        start(2), run("once"), stop(0), run(),
        ioset(3, "sock", "write"), start(3), run(), stop(1), stop(3), run())


def async_basic(backend, pipe=False):
    return seq(
        header(backend, pipe),
        init(0, "async"), init(1, "async"), init(2, "async"), pri(2, 1),
        send(0), run(), start(0), run(),  # parked until started
        start(1), start(2), send(1), send(2, thread=True), send(0), run(),  # send order
        send(1), send(1, thread=True), run("once"),  # coalesced
        stop(1), send(1), send(0), stop(1), run(), start(1), run(),  # stop takes the list
        send(2), clear(2), run(), send(2), feed(2, "custom"), run(),
        init(3, "async"), send(3), stop(3), start(3), run(), stop(0), stop(2), stop(3), run())


def async_wakeup(backend, pipe=False):
    return seq(
        header(backend, pipe),
        init(0, "async"), start(0), timer(1, "1h"), start(1),
        run_bg(0, 0), run_bg(0, 40), run_bg(0, 120),  # nothing else can end these polls
        io(2, "sock", "read"), start(2), run_bg(0, 60), run_bg(0, 10, "nowait"),
        feed(0, "custom"), hook("defer"), run_bg(0, 30), hook("none"), run(),
        init(3, "idle"), start(3), run_bg(0, 5, "nowait"), run(), stop(3),
        run_bg(0, 20), stop(1), stop(0), stop(2), run())


def fork_cleanup(backend):
    return seq(
        header(backend),
        init(0, "fork"), init(1, "fork"), init(2, "prepare"), pri(1, 1),
        start(0), start(1), start(2), run(), fork(), run(), run(),
        action(0, "feed", 2, FEED["custom"]), fork(), stop(2), run(),
        init(3, "cleanup"), init(4, "cleanup"), init(5, "cleanup"),
        start(3), start(4), start(5), stop(5), start(5),
        action(4, "stop", 3), feed(3, "custom"), run(),
        destroy(backend),
        init(0, "cleanup"), action(0, "destroy"), start(0), init(1, "timer"), start(1))


def hooks():
    return seq(
        init(0, "check"), init(1, "prepare"), start(1), pri(0, 1),
        hook("defer"), feed(0), run(), run(), invoke_pending(),
        start(0), run(), hook("invoke"), run(), hook("none"), run(),
        hook("defer"), feed(0, "timer"), init(2, "idle"), start(2), run(), run(),
        action(2, "invoke_pending"), invoke_pending(), hook("none"), stop(0), stop(1), stop(2),
        run())


def suspend_resume():
    return seq(
        timer(0, "1ms"), timer(1, "300us", "50us"), start(0), start(1),
        suspend(), run(), suspend(), timer(2, 0), start(2), suspend(resume=True), run(),
        suspend(resume=True), run("once"), run("once"), run("once"), run("once"),
        stop(1), stop(2), run())


def nested():
    return seq(
        init(0, "check"), init(1, "prepare"), init(2, "idle"), init(3, "check"),
        action(0, "run", arg=MODE["nowait"], budget=2), action(3, "break", arg=BREAK["one"]),
        start(0), start(1), start(2), start(3), feed(3), run(), run(),
        action(1, "break", arg=BREAK["all"]), run(), run(),
        action(1, "run", arg=MODE["nowait"]), action(0, "break", arg=BREAK["all"], which=1),
        run(), run(), stop(0), stop(1), stop(2), stop(3), run())


def actions():
    return seq(
        init(0, "check"), init(1, "check"), init(2, "timer"), init(3, "idle"),
        pri(1, 2), pri(3, -2),
        action(0, "feed", 1, FEED["custom"], budget=3), action(1, "stop", 2),
        action(0, "invoke", 3, FEED["idle"], which=1),
        action(3, "destroy"), action(3, "send_thread", 4, which=1),
        start(2), start(3), feed(0), feed(2, "custom"), run(),
        action(1, "start", 2, 1), action(1, "init", SELF, TYPE["idle"], which=1),
        feed(1), run(), run(),
        action(0, "setpri", 1, 2 + 3), action(0, "clear", 3, which=1), feed(3), feed(0), run(),
        action(2, "timer", SELF, 0), init(4, "async"), start(4),
        action(4, "fdio", arg=0), action(4, "ref", arg=1, which=1), send(4), run(), run(),
        ref(), stop(4), stop(3), stop(2), stop(1), stop(0), run())


def errors():
    return seq(
        start(0), stop(0), feed(0), invoke(0), pri(0, 0), clear(0), send(0),
        init(0, "io", FD["sock"], IOEV["invalid"]), init(0, "io", FD["sock"], IOEV["invalid"] + 4),
        init(1, "timer", AFTER["neg"], 0), init(1, "timer", 0, REPEAT["neg"]),
        timer(1, "1h"), start(1, via=2 + (TYPE["idle"] << 2)), start(1, via=2),
        stop(1, via=2 + (TYPE["check"] << 2)), pri(1, 3), pri(1, -3), start(1), pri(1, 1),
        timer_op(1, "set"), feed(1, "none"), feed(1, "high"), clear(1), ioset(1, "sock", "read"),
        send(1), stop(1), feed(1, "custom"), pri(1, 1), clear(1), pri(1, 1),
        brk("minus1"), brk("three"), brk("one"), run("bad"), run(),
        io(2, "sock", "read"), start(2), ioset(2, "pipe", "read"), stop(2),
        ioset(2, "sock", "invalid"), run())


def refs():
    return seq(
        init(0, "check"), start(0), ref(unref=True), run("once"), ref(unref=True), run("once"),
        ref(), ref(), timer(1, "20us"), start(1), run("once"), run("once"),
        init(2, "fork"), start(2), init(3, "cleanup"), start(3), run(), stop(0), run(),
        ref(unref=True), run())


def mixed(backend, pipe=False):
    return seq(
        header(backend, pipe),
        io(0, "sock", "both"), timer(1, 0, "50us"), init(2, "idle"), init(3, "async"),
        init(4, "check"), init(5, "prepare"), io(6, "pipe", "read"), init(7, "cleanup"),
        pri(0, 1), pri(2, -1), pri(4, 2), pri(6, -2),
        action(5, "fdio", arg=FDIO["pipe_write"], budget=2), action(4, "send", 3, budget=2),
        action(6, "fdio", arg=FDIO["pipe_drain"], budget=4), action(3, "stop", 0, which=1),
        start(0), start(1), start(2), start(3), start(4), start(5), start(6), start(7),
        run(), run(), run("once"), fdio("sock_write"), run(), run_bg(3, 7, "nowait"), run(),
        stop(5), run("once"), fork(), run(), suspend(), suspend(resume=True), run("once"),
        destroy(backend, pipe), io(0, "sock", "write"), start(0), run("once"))


def known_cleanup_order():
    # Cleanups started 0, 1, 2; stopping 0 moves 2 into its array slot. Destroy must call 2, then
    # 1 (most recently started first); the library calls 1, then 2.
    return seq(init(0, "cleanup"), init(1, "cleanup"), init(2, "cleanup"),
               start(0), start(1), start(2), stop(0))


def known_destroy_in_invoke_pending():
    # aev_invoke_pending() outside aev_run(); the callback calls aev_loop_destroy(). The harness
    # expects -EBUSY; the library frees the loop, and the invoke loop then reads freed memory.
    return seq(init(0, "check"), init(1, "check"), action(0, "destroy"),
               feed(0), feed(1), invoke_pending())


def known_poll_fork_stale():
    # poll: a socket watcher (always writable) is registered, then stopped after aev_loop_fork()
    # and before the next poll: the fd stays in the poll set, so AEV_RUN_ONCE with a 1 ms timer
    # returns at once, before the timer is due (and forever after).
    return seq(header("poll"), io(0, "sock", "write"), start(0), run(), fork(), stop(0),
               timer(1, "1ms"), start(1), run("once"))


def known_kqueue_fd_order():
    # kqueue: a WRITE watcher (0) and then a READ watcher (1) of the same socket are started and
    # both are ready. The kqueue returns the READ knote first, so watcher 1 is called before
    # watcher 0; docs: watchers of one fd and one priority are called in the order they were
    # started.
    return seq(header("kqueue"), io(0, "sock", "write"), io(1, "sock", "read"),
               start(0), start(1), fdio("sock_write"), run())


def known_kqueue_error_restart():
    # kqueue: AEV_ERROR for a closed fd, then the watcher started again: no AEV_ERROR follows.
    return seq(header("kqueue"), io(0, "bad", "read"), start(0), run(), start(0), run())


SEEDS = {
    "seed-priorities-epoll": header("epoll") + priorities(),
    "seed-priorities-poll": header("poll") + priorities(),
    "seed-idle-rule": header("epoll") + idle_rule(),
    "seed-timers-epoll": header("epoll") + timers(),
    "seed-timers-poll": header("poll") + timers(),
    "seed-io-epoll": io_basic("epoll"),
    "seed-io-poll": io_basic("poll"),
    "seed-io-kqueue": io_basic("kqueue"),
    "seed-io-file-bad-epoll": io_file_bad("epoll"),
    "seed-io-file-bad-poll": io_file_bad("poll"),
    "seed-io-file-bad-kqueue": io_file_bad("kqueue"),
    "seed-async-epoll": async_basic("epoll"),
    "seed-async-poll-pipe": async_basic("poll", pipe=True),
    "seed-async-wakeup-epoll": async_wakeup("epoll"),
    "seed-async-wakeup-epoll-pipe": async_wakeup("epoll", pipe=True),
    "seed-async-wakeup-poll": async_wakeup("poll"),
    "seed-async-wakeup-kqueue": async_wakeup("kqueue"),
    "seed-fork-cleanup-epoll": fork_cleanup("epoll"),
    "seed-fork-cleanup-kqueue": fork_cleanup("kqueue"),
    "seed-hooks": header("epoll") + hooks(),
    "seed-suspend": header("epoll") + suspend_resume(),
    "seed-nested-runs": header("poll") + nested(),
    "seed-actions": header("epoll") + actions(),
    "seed-errors": header("epoll") + errors(),
    "seed-refs": header("poll") + refs(),
    "seed-mixed-epoll": mixed("epoll"),
    "seed-mixed-poll-pipe": mixed("poll", pipe=True),
    "seed-mixed-kqueue": mixed("kqueue"),
}

KNOWN = {
    "cleanup-order.bin": header("epoll") + known_cleanup_order(),
    "destroy-in-invoke-pending.bin": header("epoll") + known_destroy_in_invoke_pending(),
    "poll-fork-stale.bin": known_poll_fork_stale(),
    "kqueue-fd-order.bin": known_kqueue_fd_order(),
    "kqueue-error-restart.bin": known_kqueue_error_restart(),
}


def write(directory, files):
    os.makedirs(directory, exist_ok=True)
    for name, data in files.items():
        assert all(0 <= b < 256 for b in data), name
        with open(os.path.join(directory, name), "wb") as f:
            f.write(bytes(data))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    write(os.path.join(here, "corpus"), SEEDS)
    write(os.path.join(here, "known"), KNOWN)
    print(f"wrote {len(SEEDS)} seeds to corpus/ and {len(KNOWN)} inputs to known/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
