/* What the whole-path benchmark's C readers share: their arguments (PORT REGISTERS SECONDS)
 * and two clocks, wall time and this process's CPU time (user and system), in seconds. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

/* Reads PORT REGISTERS SECONDS; 0 if they are there, else prints the usage. */
static int reader_args(int argc, char **argv, int *port, int *count, double *seconds) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PORT REGISTERS SECONDS\n", argv[0]);
        return -1;
    }
    *port = atoi(argv[1]);
    *count = atoi(argv[2]);
    *seconds = atof(argv[3]);
    return 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}
