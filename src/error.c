/*
 * Error text and version. Codes are negative errno values; the text comes from a fixed table so
 * that aev_strerror() is thread-safe (strerror() is not required to be).
 */
#include "internal.h"

#include <errno.h>
#include <stddef.h>

static const struct {
    int code;
    const char *text;
} aev__errors[] = {
    {0, "success"},
    {EINVAL, "invalid argument"},
    {ENOMEM, "out of memory"},
    {EBUSY, "resource busy (watcher active or pending, or loop running)"},
    {ENOSYS, "backend not compiled into this build"},
    {EBADF, "bad file descriptor"},
    {EPERM, "operation not permitted"},
    {EMFILE, "too many open files in this process"},
    {ENFILE, "too many open files in the system"},
    {ENOSPC, "kernel watch limit reached"},
    {EEXIST, "already registered"},
    {ENOENT, "not registered"},
    {EAGAIN, "resource temporarily unavailable"},
    {EINTR, "interrupted system call"},
    {ELOOP, "too many levels of nesting"},
    {ENODEV, "device does not support polling"},
};

const char *aev_strerror(int err)
{
    /* In long long: -INT_MIN does not fit in an int. */
    long long code = err < 0 ? -(long long)err : err;
    for (size_t i = 0; i < sizeof aev__errors / sizeof aev__errors[0]; i++) {
        if (aev__errors[i].code == code)
            return aev__errors[i].text;
    }
    return "unknown error";
}

unsigned aev_version(void)
{
    return AEV_VERSION_HEX;
}
