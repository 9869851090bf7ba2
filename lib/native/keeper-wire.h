// The keeper's wire, client side (keeper-wire.c): plain C, for the addon and the tests.

#ifndef DAPIFS_KEEPER_WIRE_H
#define DAPIFS_KEEPER_WIRE_H

#include <stddef.h>

// A connection to the keeper's socket at `sock`; -1 (errno).
int keeper_connect (const char *sock);

// Sends `line` in one sendmsg, with `fd` attached if >= 0. 0 or -1 (errno).
int keeper_send (int s, const char *line, int fd);

// Reads one line (without its "\n"), with the fd sent with it (*fd, or -1). 0, or -1 (errno; 0
// for EOF or a line too long).
int keeper_recv_line (int s, char *line, size_t cap, int *fd);

#endif
