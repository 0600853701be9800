/*
 * common/textfile.h — reading a whole text file (configs, templates).
 *
 * Owns: loom_text_read, the one way common/ reads a small file into memory.
 * Must not: interpret the text.
 */
#ifndef LOOM_TEXTFILE_H
#define LOOM_TEXTFILE_H

#include <stddef.h>

#include "err.h"

/* Reads path into a NUL-terminated loom_malloc'ed *text of *len bytes.
 * A file larger than max bytes is LOOM_EFORMAT; a missing one
 * LOOM_ENOTFOUND; messages name the path. */
loom_err loom_text_read(const char *path, size_t max, char **text, size_t *len);

#endif
