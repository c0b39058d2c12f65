/*
 * Times several commands in interleaved rounds and prints the median, 90th
 * percentile, mean and minimum wall-clock time of each, and the median CPU
 * time (user plus system, the command and its descendants).
 *
 *   paired [-n ROUNDS] [-w WARMUP] [-t TIMEOUT_SECONDS] @LABEL[:FD=FILE] CMD ARGS... @LABEL ...
 *
 * Each round runs every command once, in a new random order (from a fixed
 * seed, so runs repeat), so that drift in machine load and ordering effects
 * fall on all commands alike. A command can leave work behind in the kernel
 * after it exits (a network namespace is torn down asynchronously), and that
 * work slows whatever runs next. In a fixed cyclic order every command would
 * always follow the same one and carry its neighbour's cost. A command runs with stdin, stdout and stderr on /dev/null;
 * `:FD=FILE` also opens FILE read-only at descriptor FD (bwrap's --seccomp FD).
 * Commands are started with posix_spawn and awaited without a shell, so the
 * timing includes only the measured program and the spawn itself.
 *
 * Exit status: 0 when every run exited 0, 1 when a run failed or timed out,
 * 2 on usage errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct command {
    const char *label;
    char **argv;
    int extra_fd;            /* -1 when the command needs no extra descriptor */
    const char *extra_path;
    double *samples_ms;
    double *cpu_ms;          /* user plus system CPU time of each run */
    int failures;
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Returns the q-quantile (0..1) of sorted values, interpolating between ranks. */
static double quantile(const double *sorted, int count, double q) {
    double position = q * (count - 1);
    int lower = (int)position;
    int upper = lower + 1 < count ? lower + 1 : lower;
    double fraction = position - lower;
    return sorted[lower] + (sorted[upper] - sorted[lower]) * fraction;
}

static void usage(void) {
    fprintf(stderr, "usage: paired [-n ROUNDS] [-w WARMUP] [-t TIMEOUT_SECONDS] "
                    "@LABEL[:FD=FILE] CMD ARGS... [@LABEL CMD ARGS...]...\n");
    exit(2);
}

/* Parses `@label` or `@label:FD=FILE` into `command`. */
static void parse_label(char *token, struct command *command) {
    command->label = token + 1;
    command->extra_fd = -1;
    char *colon = strchr(token, ':');
    if (colon == NULL)
        return;
    *colon = '\0';
    char *equals = strchr(colon + 1, '=');
    if (equals == NULL)
        usage();
    *equals = '\0';
    command->extra_fd = atoi(colon + 1);
    command->extra_path = equals + 1;
    if (command->extra_fd < 3)
        usage();
}

/*
 * Runs `command` once and returns its wall-clock time in milliseconds, or a
 * negative value when it could not be started, failed or timed out. The CPU
 * time of the command and its descendants goes to `*cpu_ms`.
 */
static double run_once(struct command *command, int timeout_seconds, const sigset_t *child_signal, double *cpu_ms) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    if (command->extra_fd >= 0)
        posix_spawn_file_actions_addopen(&actions, command->extra_fd, command->extra_path, O_RDONLY, 0);

    /* The child must not inherit the blocked SIGCHLD mask. */
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    sigset_t empty;
    sigemptyset(&empty);
    posix_spawnattr_setsigmask(&attributes, &empty);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);

    pid_t pid;
    double started = now_ms();
    int error = posix_spawnp(&pid, command->argv[0], &actions, &attributes, command->argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    if (error != 0) {
        fprintf(stderr, "paired: %s: failed to start %s: %s\n", command->label, command->argv[0], strerror(error));
        return -1;
    }

    struct timespec timeout = {.tv_sec = timeout_seconds, .tv_nsec = 0};
    int status;
    struct rusage usage;
    for (;;) {
        pid_t done = wait4(pid, &status, WNOHANG, &usage);
        if (done == pid)
            break;
        if (sigtimedwait(child_signal, NULL, &timeout) < 0 && errno == EAGAIN) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fprintf(stderr, "paired: %s: timed out after %d s\n", command->label, timeout_seconds);
            return -1;
        }
    }
    double elapsed = now_ms() - started;
    *cpu_ms = (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e3
            + (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e3;

    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (WIFEXITED(status))
            fprintf(stderr, "paired: %s: exited with status %d\n", command->label, WEXITSTATUS(status));
        else
            fprintf(stderr, "paired: %s: killed by signal %d\n", command->label, WTERMSIG(status));
        return -1;
    }
    return elapsed;
}

int main(int argc, char **argv) {
    int rounds = 100, warmup = 5, timeout_seconds = 30;
    int index = 1;
    for (; index < argc && argv[index][0] == '-'; index += 2) {
        if (index + 1 >= argc)
            usage();
        int value = atoi(argv[index + 1]);
        if (strcmp(argv[index], "-n") == 0 && value > 0)
            rounds = value;
        else if (strcmp(argv[index], "-w") == 0 && value >= 0)
            warmup = value;
        else if (strcmp(argv[index], "-t") == 0 && value > 0)
            timeout_seconds = value;
        else
            usage();
    }

    /* Split the remaining arguments at each @LABEL. */
    struct command *commands = calloc((size_t)argc, sizeof *commands);
    int count = 0;
    for (; index < argc; index++) {
        if (argv[index][0] == '@') {
            parse_label(argv[index], &commands[count]);
            commands[count].argv = calloc((size_t)argc, sizeof(char *));
            commands[count].samples_ms = calloc((size_t)rounds, sizeof(double));
            commands[count].cpu_ms = calloc((size_t)rounds, sizeof(double));
            count++;
            continue;
        }
        if (count == 0)
            usage();
        char **command_argv = commands[count - 1].argv;
        int used = 0;
        while (command_argv[used] != NULL)
            used++;
        command_argv[used] = argv[index];
    }
    if (count == 0)
        usage();
    for (int i = 0; i < count; i++)
        if (commands[i].argv[0] == NULL)
            usage();

    /* SIGCHLD stays blocked so that sigtimedwait can wait for it with a timeout. */
    sigset_t child_signal;
    sigemptyset(&child_signal);
    sigaddset(&child_signal, SIGCHLD);
    sigprocmask(SIG_BLOCK, &child_signal, NULL);

    int failed = 0;
    int *order = calloc((size_t)count, sizeof *order);
    for (int index = 0; index < count; index++)
        order[index] = index;
    unsigned long long state = 0x9e3779b97f4a7c15ULL;
    for (int round = 0; round < warmup + rounds; round++) {
        /* Fisher-Yates shuffle driven by xorshift64. */
        for (int index = count - 1; index > 0; index--) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            int other = (int)(state % (unsigned long long)(index + 1));
            int swap = order[index];
            order[index] = order[other];
            order[other] = swap;
        }
        for (int step = 0; step < count; step++) {
            struct command *command = &commands[order[step]];
            double cpu_ms = 0;
            double elapsed = run_once(command, timeout_seconds, &child_signal, &cpu_ms);
            if (elapsed < 0) {
                command->failures++;
                failed = 1;
                continue;
            }
            if (round >= warmup) {
                command->samples_ms[round - warmup] = elapsed;
                command->cpu_ms[round - warmup] = cpu_ms;
            }
        }
        if (failed)
            break;
    }
    if (failed) {
        fprintf(stderr, "paired: stopped after a failed run\n");
        return 1;
    }

    printf("%-16s %6s %10s %10s %10s %10s %10s\n", "command", "runs", "median_ms", "p90_ms", "mean_ms", "min_ms",
           "cpu_ms");
    for (int i = 0; i < count; i++) {
        struct command *command = &commands[i];
        qsort(command->samples_ms, (size_t)rounds, sizeof(double), compare_doubles);
        qsort(command->cpu_ms, (size_t)rounds, sizeof(double), compare_doubles);
        double sum = 0;
        for (int r = 0; r < rounds; r++)
            sum += command->samples_ms[r];
        printf("%-16s %6d %10.3f %10.3f %10.3f %10.3f %10.3f\n", command->label, rounds,
               quantile(command->samples_ms, rounds, 0.5), quantile(command->samples_ms, rounds, 0.9),
               sum / rounds, command->samples_ms[0], quantile(command->cpu_ms, rounds, 0.5));
    }
    return 0;
}
