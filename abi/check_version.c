/*
 * The version test's run-time half: the library's aev_version() and the header's AEV_VERSION_HEX
 * must both equal the project version that CMake passes as the only argument ("MAJOR.MINOR.PATCH"),
 * the one that named the library file, its SONAME and the packages.
 */
#include <asyncev.h>

#include <stdio.h>

/* Parses "MAJOR.MINOR.PATCH" into AEV_VERSION_HEX form; returns -1 if malformed or too large. */
static long parse_version(const char *text)
{
    unsigned major, minor, patch;
    char tail;

    if (sscanf(text, "%u.%u.%u%c", &major, &minor, &patch, &tail) != 3)
        return -1;
    /* The hex form has one byte per part (two for the major version). */
    if (major > 0xff || minor > 0xff || patch > 0xff)
        return -1;
    return (long)((major << 16) | (minor << 8) | patch);
}

int main(int argc, char **argv)
{
    long expected;
    unsigned runtime = aev_version();
    int status = 0;

    if (argc != 2 || (expected = parse_version(argv[1])) < 0) {
        fprintf(stderr, "usage: %s MAJOR.MINOR.PATCH (each part at most 255)\n", argv[0]);
        return 2;
    }
    if ((long)AEV_VERSION_HEX != expected) {
        fprintf(stderr, "check_version: header AEV_VERSION_HEX is 0x%06x, project is %s\n",
                (unsigned)AEV_VERSION_HEX, argv[1]);
        status = 1;
    }
    if ((long)runtime != expected) {
        fprintf(stderr, "check_version: aev_version() is 0x%06x, project is %s\n", runtime,
                argv[1]);
        status = 1;
    }
    if (status == 0)
        printf("check_version: OK: header, library and project are all %s\n", argv[1]);
    return status;
}
