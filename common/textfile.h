/*
 * common/textfile.h — opening and reading whole files (configs, templates,
 * tokenizers, JSON indexes) safely.
 *
 * Owns: loom_file_open, the one way loom opens a file whose path came from
 * outside (a model or adapter folder): regular files only. A FIFO, device
 * or socket in a folder would block open() or read() forever (a FIFO with
 * no writer) or never end; they are refused with a message naming what the
 * file is. The check is a stat before open, an open with O_NONBLOCK (which
 * never blocks on a FIFO), and an fstat of what was opened (the name may
 * have been swapped in between). loom_text_read and loom_json_load_file
 * read through it.
 * Must not: interpret the text.
 */
#ifndef LOOM_TEXTFILE_H
#define LOOM_TEXTFILE_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

#include "err.h"

/*
 * Opens path read-only (close-on-exec, blocking reads) when it is a regular
 * file: *fd gets the descriptor (the caller closes it), *size (may be NULL)
 * its length. A missing file is LOOM_ENOTFOUND, anything but a regular file
 * LOOM_EIO ("PATH: not a regular file (a FIFO)", as every other failure);
 * messages name the path. On failure *fd is -1.
 */
loom_err loom_file_open(const char *path, int *fd, off_t *size);

/* Reads path into a NUL-terminated loom_malloc'ed *text of *len bytes.
 * A file larger than max bytes is LOOM_EFORMAT; otherwise as loom_file_open. */
loom_err loom_text_read(const char *path, size_t max, char **text, size_t *len);

/*
 * json_load_file through loom_file_open: NULL with *jerr filled (its text
 * says "not a regular file (a FIFO)", "No such file or directory", ...)
 * when the file cannot be opened or parsed. flags as for json_load_file.
 */
json_t *loom_json_load_file(const char *path, size_t flags, json_error_t *jerr);

#endif
