/* A stand-in for the Cells binary, built by the tests with the system C compiler.
 * Tests copy it and patch two slots to make releases: the version it reports and how it
 * behaves. `version -f '{{.Version}}'` prints the bare version; `version` prints Cells'
 * label lines; `start` serves the version over HTTP (port FAKE_CELLS_PORT, default 443;
 * address FAKE_CELLS_ADDR, default any;
 * after FAKE_CELLS_START_MS milliseconds, default 0).
 * `version -f '{{.PackageLabel}}'` prints the edition label (a third slot: Home or Enterprise).
 * Modes: "ok"; "hang" (version never returns); "exit" (start fails at once);
 * "introspect" (version reports "<uid>.<environment size>.<network interfaces>-fds.<open
 * descriptors>"); "session" (version reports "<session id>.0.0"). */
extern char **environ;
#include <arpa/inet.h>
#include <dirent.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define VMARK "@@FAKE_CELLS_VERSION@@"
#define MMARK "@@FAKE_CELLS_MODE@@"
#define EMARK "@@FAKE_CELLS_EDITION@@"
/* Defaults can be set at compile time (-DFAKE_VERSION='"4.4.5"'), for scripts like the demo. */
#ifndef FAKE_VERSION
#define FAKE_VERSION "0.0.0"
#endif
#ifndef FAKE_MODE
#define FAKE_MODE "ok"
#endif
volatile char version_slot[96] = VMARK FAKE_VERSION;
volatile char mode_slot[64] = MMARK FAKE_MODE;
volatile char edition_slot[64] = EMARK "Home";

static int open_fds(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));) if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static void slot(volatile char *s, size_t skip, size_t cap, char *out) {
    size_t i = 0;
    for (; i + 1 < cap && s[skip + i]; i++) out[i] = s[skip + i];
    out[i] = 0;
}

int main(int argc, char **argv) {
    char version[96], mode[64], edition[64];
    slot(version_slot, sizeof(VMARK) - 1, sizeof(version), version);
    slot(mode_slot, sizeof(MMARK) - 1, sizeof(mode), mode);
    slot(edition_slot, sizeof(EMARK) - 1, sizeof(edition), edition);
    const char *label = strcmp(edition, "Enterprise") == 0 ? "Pydio Cells Enterprise Distribution"
                                                           : "Pydio Cells Home Edition";
    if (argc >= 2 && strcmp(argv[1], "version") == 0) {
        if (strcmp(mode, "hang") == 0) for (;;) pause();
        if (strcmp(mode, "introspect") == 0) {
            int nenv = 0, nif = 0;
            for (char **e = environ; *e; e++) nenv++;
            struct if_nameindex *ifs = if_nameindex();
            for (struct if_nameindex *i = ifs; i && i->if_index; i++) nif++;
            snprintf(version, sizeof(version), "%u.%d.%d-fds.%d", (unsigned)getuid(), nenv, nif,
                     open_fds());
        }
        if (strcmp(mode, "session") == 0)
            snprintf(version, sizeof(version), "%d.0.0", (int)getsid(0));
        if (argc >= 4 && strcmp(argv[2], "-f") == 0) {
            /* bare, no newline, like Go's template output */
            fputs(strstr(argv[3], "PackageLabel") ? label : version, stdout);
            return 0;
        }
        printf("%s\n Version: \t%s\n Built: \t24 Feb 25 18:10 +0000\n"
               " Git commit: \t0000000000000000000000000000000000000000\n"
               " OS/Arch: \tlinux/amd64\n Go version: \tgo1.22.0\n", label, version);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "start") == 0) {
        if (strcmp(mode, "exit") == 0) { fprintf(stderr, "fake cells: broken release\n"); return 1; }
        /* FAKE_CELLS_START_MS: how long it takes to start listening (a real Cells takes seconds) */
        const char *d = getenv("FAKE_CELLS_START_MS");
        if (d) usleep((useconds_t)atoi(d) * 1000);
        const char *p = getenv("FAKE_CELLS_PORT");
        int port = p ? atoi(p) : 443, one = 1;
        int s = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        a.sin_addr.s_addr = htonl(INADDR_ANY);
        /* FAKE_CELLS_ADDR: one address (nodes sharing a network namespace, one each) */
        const char *h = getenv("FAKE_CELLS_ADDR");
        if (h && inet_pton(AF_INET, h, &a.sin_addr) != 1) { fprintf(stderr, "bad FAKE_CELLS_ADDR\n"); return 2; }
        if (bind(s, (struct sockaddr *)&a, sizeof(a)) != 0) { perror("bind"); return 2; }
        listen(s, 16);
        for (;;) {
            int c = accept(s, NULL, NULL);
            if (c < 0) continue;
            char buf[2048], resp[256];
            if (read(c, buf, sizeof(buf)) < 0) { close(c); continue; }
            int n = snprintf(resp, sizeof(resp),
                             "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s",
                             strlen(version), version);
            if (write(c, resp, n) < 0) { /* client went away */ }
            close(c);
        }
    }
    fprintf(stderr, "usage: cells version [-f FORMAT] | cells start\n");
    return 2;
}
