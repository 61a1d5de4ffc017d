/*
 * Shared pieces of the subcommands: option parsing helpers, the store
 * location, error reporting and exit codes. Only cli/ prints or exits.
 */
#ifndef CR_CLI_COMMON_H
#define CR_CLI_COMMON_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "cleanroom/store.h"

/* Exit codes (documented in `cleanroom --help` and docs/cli.md). */
#define EXIT_OK 0
#define EXIT_VERIFY 1  /* verification failed, problems found */
#define EXIT_USAGE 2   /* bad command line */
#define EXIT_ENV 3     /* environment, I/O or store error */

/* A subcommand: argv[0] is its name. Returns an exit code. */
typedef int (*cli_cmd_fn)(int argc, char **argv);

int cmd_init(int argc, char **argv);
int cmd_add(int argc, char **argv);
int cmd_log(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_prove(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_index(int argc, char **argv);
int cmd_record(int argc, char **argv);
int cmd_lineage(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_seal(int argc, char **argv);
int cmd_bundle(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_replay(int argc, char **argv);
int cmd_diff(int argc, char **argv);
int cmd_find(int argc, char **argv);
int cmd_manifest(int argc, char **argv);

/* The store folder: --store, else $CLEANROOM_STORE, else ./.cleanroom. */
const char *cli_store_path(const char *opt);

/* Print "cleanroom <cmd>: <message>" for the last library error; map code to an exit status. */
int cli_fail(const char *cmd, int code);
/* Print a usage error and return EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Open the store, printing the error on failure (returns NULL). */
cr_store *cli_open_store(const char *cmd, const char *path, unsigned flags, int *exit_code);

/* Parse a non-negative integer argument; -1 on error (message printed). */
int cli_parse_u64(const char *cmd, const char *what, const char *s, uint64_t *out);

/* Print a JSON value to stdout followed by a newline; steals the reference. */
void cli_print_json(json_t *v);

/* Set key to a path losslessly: a string, or key_b64 when it is not UTF-8. */
void cli_json_set_path(json_t *obj, const char *key, const char *path);

/*
 * Load the signing key: key_arg, else <store>/cleanroom.key; its name from
 * name_arg, else the .vkey beside the key. *key is the caller's (cr_key_free).
 */
typedef struct evp_pkey_st EVP_PKEY;
int cli_load_signing_key(const char *store_path, const char *key_arg, const char *name_arg,
                         EVP_PKEY **key, char name[256]);

/*
 * The last checkpoint event recorded as key: a path (as recorded, or one
 * resolving to it), a SHA-256 (hex) or an event index; *index and *ev (the
 * parsed event, the caller's) are set. Prints what went wrong as
 * "cleanroom <cmd>: ..." and returns its exit status (EXIT_VERIFY when no
 * checkpoint is recorded as key), EXIT_OK when found.
 */
int cli_checkpoint_event(const char *cmd, cr_store *store, const char *key, uint64_t *index,
                         json_t **ev);

/* Hex of 32 bytes into a 65-byte buffer, returned. */
const char *cli_hex32(char out[65], const uint8_t h[32]);

/* Human-readable byte count ("1.5 GiB"). */
const char *cli_bytes(char out[32], uint64_t n);

/* Nonzero when argv holds -h/--help before "--". */
int cli_wants_help(int argc, char **argv);

#endif
