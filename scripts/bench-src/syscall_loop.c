/*
 * Measures the cost of two common system calls in a tight loop, so the same
 * binary can be run bare and inside a sandbox to see what the seccomp filter
 * and Landlock add per call.
 *
 *   syscall_loop ITERATIONS PATH
 *
 * Prints `getppid NS` and `stat NS`: the mean nanoseconds per call over
 * ITERATIONS calls of getppid(2) and of stat(2) on PATH.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: syscall_loop ITERATIONS PATH\n");
        return 2;
    }
    long iterations = atol(argv[1]);
    const char *path = argv[2];
    struct stat st;
    if (iterations <= 0 || stat(path, &st) != 0) {
        fprintf(stderr, "syscall_loop: invalid arguments: ITERATIONS must be positive and stat must succeed on PATH\n");
        return 2;
    }

    /* syscall(2) directly, so no libc wrapper can return a cached value. */
    double started = now_ns();
    for (long i = 0; i < iterations; i++)
        syscall(SYS_getppid);
    double getppid_ns = (now_ns() - started) / (double)iterations;

    started = now_ns();
    for (long i = 0; i < iterations; i++)
        stat(path, &st);
    double stat_ns = (now_ns() - started) / (double)iterations;

    printf("getppid %.1f\nstat %.1f\n", getppid_ns, stat_ns);
    return 0;
}
