/*
 * Seals: the store's signed tree head (docs/formats/seal.md).
 *
 * A seal is a C2SP signed note (c2sp.org/signed-note) whose text is a C2SP
 * tlog-checkpoint body -- origin, tree size, base64 root hash -- signed with
 * Ed25519. This header also holds what a seal needs around it: the signing
 * key pair on disk, C2SP verifier keys ("vkeys"), and the note parser and
 * verifier that auditors' tools share.
 *
 * Keys are OpenSSL EVP_PKEYs of type ED25519; free them with cr_key_free().
 * The word "checkpoint" is kept for weights files, so the tlog-checkpoint
 * body is called the seal body here.
 */
#ifndef CLEANROOM_SEAL_H
#define CLEANROOM_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/hash.h"
#include "cleanroom/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* OpenSSL's key type, without pulling <openssl/evp.h> into every user. */
typedef struct evp_pkey_st EVP_PKEY;

/* The files `cleanroom keygen` writes into its folder. */
#define CR_KEY_PRIVATE_FILE "cleanroom.key"  /* PKCS#8 PEM, mode 0600 */
#define CR_KEY_PUBLIC_FILE  "cleanroom.pub"  /* SubjectPublicKeyInfo PEM */
#define CR_KEY_VKEY_FILE    "cleanroom.vkey" /* C2SP verifier key, one line */
#define CR_KEY_DEFAULT_NAME "cleanroom"

/* What a store holds for its seals. */
#define CR_SEAL_ORIGIN_FILE   "origin" /* one line: the log's origin */
#define CR_SEAL_DIR           "seals"  /* seals/<size, 16 digits>.note */
#define CR_SEAL_ORIGIN_PREFIX "cleanroom.local/"

#define CR_ED25519_KEY_SIZE 32
#define CR_ED25519_SIG_SIZE 64
#define CR_NOTE_ALG_ED25519 0x01 /* C2SP signature type byte */

/* Limits on untrusted notes; generous next to a seal (about 250 bytes). */
#define CR_NOTE_MAX_SIZE       (1u << 20) /* bytes in a whole note */
#define CR_NOTE_MAX_SIGNATURES 100        /* signature lines (C2SP asks for >= 16) */
#define CR_NOTE_MAX_SIG_BASE64 8192       /* base64 chars of one signature */
#define CR_NOTE_MAX_NAME       255        /* bytes in a key name */
#define CR_SEAL_MAX_ORIGIN     1024       /* bytes in a store's origin */
/* "<name>+<8 hex>+<44 base64>" and a NUL. */
#define CR_VKEY_MAX (CR_NOTE_MAX_NAME + 1 + 8 + 1 + 44 + 1)

/* A C2SP Ed25519 verifier key: name, key id and 32-byte public key. */
typedef struct cr_vkey {
	char name[CR_NOTE_MAX_NAME + 1];
	uint32_t id;
	uint8_t key[CR_ED25519_KEY_SIZE];
} cr_vkey;

/* ---- names and verifier keys --------------------------------------------- */

/* 1 when name[0..len) may name a key: non-empty UTF-8, at most
 * CR_NOTE_MAX_NAME bytes, no '+', no Unicode space, no control character. */
int cr_note_name_valid(const char *name, size_t len);

/* The C2SP key id: SHA-256(name || 0x0A || 0x01 || key)[:4], big-endian.
 * CR_EINVAL for an invalid name. */
int cr_note_key_id(uint32_t *out, const char *name, const uint8_t key[CR_ED25519_KEY_SIZE]);

/*
 * Parse "<name>+<8 hex digits>+<base64(0x01 || key)>" (len bytes, no newline).
 * The name ends at the first '+', the id at the second; the base64 may hold
 * '+' itself. CR_EINVAL when malformed, not Ed25519, or when the id does
 * not match the name and key.
 */
int cr_vkey_parse(cr_vkey *out, const char *s, size_t len);

/* Write vkey as its C2SP string into out (NUL-terminated); returns its length. */
size_t cr_vkey_format(const cr_vkey *vkey, char out[CR_VKEY_MAX]);

/* The verifier key of an Ed25519 key (private or public) under name. CR_EINVAL
 * for another key type or a bad name. */
int cr_vkey_from_key(cr_vkey *out, const EVP_PKEY *key, const char *name);

/* Read a .vkey file: one vkey, an optional final newline. */
int cr_vkey_load(cr_vkey *out, const char *path);

/* ---- key files ------------------------------------------------------------- */

/*
 * Generate an Ed25519 key pair into dir (created 0700 when missing):
 * CR_KEY_PRIVATE_FILE (0600 from its creation), CR_KEY_PUBLIC_FILE and
 * CR_KEY_VKEY_FILE (0644 less the umask). The key name lives only in the
 * .vkey. CR_EEXISTS, naming the file, when one of the three exists and
 * force is 0; with force they are replaced atomically (rename). *out (may be
 * NULL) gets the new verifier key.
 */
int cr_key_generate(const char *dir, const char *name, int force, cr_vkey *out);

/*
 * Load an Ed25519 private key (unencrypted PEM, PKCS#8 or traditional).
 * Refuses (CR_EIO, naming the file and the fix) a file whose mode grants
 * anything to group or others; CR_ENOTFOUND when missing, CR_EINVAL when it
 * is not an Ed25519 private key. *out is the caller's: cr_key_free() it.
 */
int cr_key_load_private(EVP_PKEY **out, const char *path);

/* Load an Ed25519 public key (SubjectPublicKeyInfo PEM). As above. */
int cr_key_load_public(EVP_PKEY **out, const char *path);

/*
 * The name of the private key loaded from key_path, read from the verifier
 * key beside it: key_path with ".key" replaced by ".vkey" (".vkey" appended
 * when it does not end in ".key"). CR_ENOTFOUND when there is none,
 * CR_EINVAL when it is malformed or holds another key.
 */
int cr_key_name_load(char out[CR_NOTE_MAX_NAME + 1], const char *key_path, const EVP_PKEY *key);

void cr_key_free(EVP_PKEY *key); /* NULL-safe */

/* ---- signed notes ----------------------------------------------------------- */

/*
 * Sign text[0..len) as a C2SP signed note with key (Ed25519) under name:
 * *out = text || "\n" || "— " name " " base64(key id || signature) "\n",
 * malloc'ed and NUL-terminated; *out_len its length. CR_EINVAL when the text
 * is empty, does not end in "\n", is not UTF-8, holds a control character
 * other than newline, or is too large; or when name is invalid.
 */
int cr_note_sign(char **out, size_t *out_len, const char *text, size_t len, const char *name,
                 EVP_PKEY *key);

/*
 * Verify note[0..len) against vkey. 0 when the note is well-formed and the
 * signature line with vkey's name and id verifies; *text_len (may be NULL)
 * then gets the length of the signed text, which starts the note.
 * Lines signed by other keys are ignored. CR_EINVAL for a malformed note
 * (limits above; not UTF-8; a control character; no final newline; no
 * blank line before the signatures; a signature line that is not
 * "— <name> <base64 of at least 5 bytes>"; vkey's key signing twice);
 * CR_EVERIFY when no line is vkey's or its signature does not verify.
 */
int cr_note_verify(const char *note, size_t len, const cr_vkey *vkey, size_t *text_len);

/* ---- the seal body (C2SP tlog-checkpoint) ------------------------------- */

typedef struct cr_seal_body {
	char *origin; /* NUL-terminated */
	uint64_t size;
	uint8_t root[CR_HASH_SIZE];
	char *extensions; /* the lines after the root, each ending "\n"; "" when none */
} cr_seal_body;

/*
 * Parse text[0..len) (a note's signed text) strictly: origin (non-empty),
 * tree size (decimal, no leading zero but "0", fits 64 bits), root hash
 * (padded base64 of exactly 32 bytes), then optional non-empty extension
 * lines; every line ends in "\n"; UTF-8 without control characters.
 * CR_EINVAL naming the line otherwise. Free *out with cr_seal_body_free().
 */
int cr_seal_body_parse(cr_seal_body *out, const char *text, size_t len);
void cr_seal_body_free(cr_seal_body *body); /* NULL-safe; leaves it zeroed */

/* "<origin>\n<size>\n<base64 root>\n", malloc'ed into *out. CR_EINVAL for a bad origin. */
int cr_seal_body_format(char **out, size_t *out_len, const char *origin, uint64_t size,
                        const uint8_t root[CR_HASH_SIZE]);

/* ---- seals of a store ------------------------------------------------------- */

/*
 * The store's origin, read from <store>/origin; when that file is missing
 * it is created (0644) as "cleanroom.local/<random UUID>", once even
 * under concurrent callers. *out is malloc'ed (free it).
 */
int cr_seal_origin(char **out, cr_store *store);

/*
 * Seal the store's committed state: the body for (origin, size, root)
 * signed with key under name. origin NULL means the store's own
 * (cr_seal_origin). CR_EINVAL when the store is empty. *out is the whole
 * note, malloc'ed.
 */
int cr_seal_make(char **out, size_t *out_len, cr_store *store, EVP_PKEY *key, const char *name,
                 const char *origin);

/*
 * Save a seal as <store>/seals/<tree size, 16 digits>.note (0644, put in
 * place whole); the size is read from the note itself. A seal is never
 * replaced: saving the same bytes again is a no-op, other bytes at the
 * same size (another key or name) are CR_EEXISTS. *out_path (may be NULL)
 * gets the path, malloc'ed.
 */
int cr_seal_save(char **out_path, cr_store *store, const char *note, size_t len);

#ifdef __cplusplus
}
#endif
#endif
