/*
 * Seals (docs/formats/seal.md): Ed25519 key files, C2SP verifier keys,
 * C2SP signed notes, the tlog-checkpoint body ("seal body"), and the seals
 * and origin a store keeps.
 *
 * Invariants:
 * - The private key file is born 0600 (O_CREAT|O_EXCL, never chmod'ed into
 *   shape) and is refused when its mode grants group or others anything.
 *   Buffers that held private key bytes are wiped before they are freed.
 * - Parsers take (pointer, length), never rely on a NUL, and check every
 *   size against the limits in seal.h before using it. A note is checked
 *   whole (size, UTF-8, control characters, layout, every signature line)
 *   before any signature is verified, so a malformed note is CR_EINVAL
 *   whatever order its lines are in.
 * - OpenSSL failures become messages in crypto_error() only.
 * Everything returned through an out parameter is the caller's.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "cleanroom/error.h"
#include "cleanroom/seal.h"
#include "util/buf.h"
#include "util/codec.h"

/* Every signature line starts with U+2014 EM DASH and a space. */
static const char sig_prefix[] = "\xe2\x80\x94 ";
#define SIG_PREFIX_LEN (sizeof(sig_prefix) - 1)

#define KEY_ID_SIZE   4
#define SIG_BLOB_SIZE (KEY_ID_SIZE + CR_ED25519_SIG_SIZE)
#define SIG_BLOB_B64  ((SIG_BLOB_SIZE + 2) / 3 * 4)
#define VKEY_B64      ((1 + CR_ED25519_KEY_SIZE + 2) / 3 * 4)
#define ROOT_B64      ((CR_HASH_SIZE + 2) / 3 * 4)
/* A PEM Ed25519 key is about 120 bytes; anything near this is not one. */
#define KEY_FILE_MAX 65536

/* ---- small helpers ------------------------------------------------------------ */

static int crypto_error(int code, const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 2, 3)))
#endif
	;

/* Add OpenSSL's reason to a message, and leave its error queue empty. */
static int crypto_error(int code, const char *fmt, ...)
{
	char msg[768], why[256];
	unsigned long e = ERR_peek_last_error();
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (e)
		ERR_error_string_n(e, why, sizeof(why));
	else
		snprintf(why, sizeof(why), "no detail");
	ERR_clear_error();
	return cr_error_set(code, "%s (OpenSSL: %s)", msg, why);
}

static char *join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name), n = a;
	char *p = malloc(a + b + 2);

	if (!p)
		return NULL;
	memcpy(p, dir, a);
	if (a && dir[a - 1] != '/')
		p[n++] = '/';
	memcpy(p + n, name, b + 1);
	return p;
}

/* path.tmp.<pid>: our own scratch name beside path (so rename stays in one folder). */
static char *tmp_name(const char *path)
{
	size_t n = strlen(path) + 32;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s.tmp.%ld", path, (long)getpid());
	return p;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* C2SP: a note is UTF-8 and holds no control character but newline. */
static int text_ok(const char *s, size_t len, const char *what)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 && c != '\n')
			return cr_error_set(
			    CR_EINVAL, "%s holds control character 0x%02x at byte %zu", what, c, i);
	}
	if (!cr_utf8_valid((const uint8_t *)s, len))
		return cr_error_set(CR_EINVAL, "%s is not valid UTF-8", what);
	return 0;
}

/* Unicode White_Space (what Go's unicode.IsSpace, used by the reference
 * implementation, rejects in key names). */
static int is_space(uint32_t cp)
{
	return (cp >= 0x09 && cp <= 0x0d) || cp == 0x20 || cp == 0x85 || cp == 0xa0 ||
	       cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
	       cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* The code point at s[*i] of valid UTF-8; advances *i. */
static uint32_t utf8_next(const uint8_t *s, size_t *i)
{
	uint8_t c = s[*i];
	size_t n = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
	uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1fu) : n == 3 ? (c & 0x0fu) : (c & 0x07u);

	for (size_t k = 1; k < n; k++)
		cp = cp << 6 | (s[*i + k] & 0x3fu);
	*i += n;
	return cp;
}

static int write_all(int fd, const char *data, size_t len, const char *path)
{
	while (len) {
		ssize_t n = write(fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return cr_error_set_errno(CR_EIO, n < 0 ? errno : EIO, "cannot write %s",
			                          path);
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Make a rename or link in dir durable. */
static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return cr_error_set_errno(CR_EIO, errno, "cannot open folder %s", dir);
	if (fsync(fd) != 0 && errno != EINVAL) /* some filesystems cannot sync folders */
		rc = cr_error_set_errno(CR_EIO, errno, "cannot sync folder %s", dir);
	close(fd);
	return rc;
}

/*
 * Create path (which must not exist: CR_EEXISTS) with mode, write data,
 * sync and close it. The mode is set by open() itself, so the file is never
 * more open than mode, even for an instant. On failure it is removed.
 */
static int write_new(const char *path, const char *what, const char *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, mode), rc;

	if (fd < 0) {
		if (errno == EEXIST)
			return cr_error_set(CR_EEXISTS,
			                    "%s %s already exists; refusing to overwrite it", what,
			                    path);
		return cr_error_set_errno(CR_EIO, errno, "cannot create %s %s", what, path);
	}
	rc = write_all(fd, data, len, path);
	if (!rc && fsync(fd) != 0)
		rc = cr_error_set_errno(CR_EIO, errno, "cannot sync %s", path);
	if (close(fd) != 0 && !rc)
		rc = cr_error_set_errno(CR_EIO, errno, "cannot close %s", path);
	if (rc)
		unlink(path);
	return rc;
}

/*
 * Read all of path, at most max bytes, into a malloc'ed NUL-terminated
 * buffer. A secret file is refused, before a byte is read, when group or
 * others have any access to it; its buffer must be wiped by the caller.
 * O_NONBLOCK keeps a FIFO given as a file from hanging the open.
 */
static int read_file(const char *path, const char *what, size_t max, int secret, char **out,
                     size_t *out_len)
{
	struct stat st;
	char *buf = NULL;
	size_t n = 0;
	int fd, rc = 0;

	*out = NULL;
	*out_len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return cr_error_set_errno(errno == ENOENT ? CR_ENOTFOUND : CR_EIO, errno,
		                          "cannot open %s %s", what, path);
	if (fstat(fd, &st) != 0) {
		rc = cr_error_set_errno(CR_EIO, errno, "cannot stat %s %s", what, path);
		goto done;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = cr_error_set(CR_EINVAL, "%s %s is not a regular file", what, path);
		goto done;
	}
	if (secret && (st.st_mode & 077)) {
		rc = cr_error_set(
		    CR_EIO,
		    "refusing to use %s %s: group or others may access it (mode %04o); "
		    "fix it with `chmod 600 %s` (and treat the key as exposed if "
		    "others could read it)",
		    what, path, (unsigned)(st.st_mode & 07777), path);
		goto done;
	}
	if ((buf = malloc(max + 1)) == NULL) {
		rc = cr_error_set(CR_ENOMEM, "out of memory reading %s", path);
		goto done;
	}
	/* Read one byte past max to tell "exactly max" from "too large". */
	while (n <= max) {
		ssize_t r = read(fd, buf + n, max + 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = cr_error_set_errno(CR_EIO, errno, "cannot read %s %s", what, path);
			goto done;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > max) {
		rc = cr_error_set(CR_EINVAL, "%s %s is larger than %zu bytes", what, path, max);
		goto done;
	}
	buf[n] = '\0';
	*out = buf;
	*out_len = n;
	buf = NULL; /* now the caller's */
done:
	if (buf) {
		if (secret)
			OPENSSL_cleanse(buf, max + 1);
		free(buf);
	}
	close(fd);
	return rc;
}

/* A random (version 4) UUID as text. */
static int uuid4(char out[37])
{
	uint8_t b[16];
	char hex[33];

	if (RAND_bytes(b, sizeof(b)) != 1)
		return crypto_error(CR_ECRYPTO, "no random bytes for the store's origin");
	b[6] = (uint8_t)(0x40 | (b[6] & 0x0f));
	b[8] = (uint8_t)(0x80 | (b[8] & 0x3f));
	cr_hex_encode(hex, b, sizeof(b));
	snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
	return 0;
}

/* ---- names and verifier keys --------------------------------------------- */

int cr_note_name_valid(const char *name, size_t len)
{
	size_t i = 0;

	if (len == 0 || len > CR_NOTE_MAX_NAME || !cr_utf8_valid((const uint8_t *)name, len))
		return 0;
	while (i < len) {
		uint32_t cp = utf8_next((const uint8_t *)name, &i);

		if (cp < 0x20 || cp == '+' || is_space(cp))
			return 0;
	}
	return 1;
}

int cr_note_key_id(uint32_t *out, const char *name, const uint8_t key[CR_ED25519_KEY_SIZE])
{
	uint8_t buf[CR_NOTE_MAX_NAME + 2 + CR_ED25519_KEY_SIZE], md[EVP_MAX_MD_SIZE];
	size_t n = strlen(name);
	unsigned int md_len = 0;

	*out = 0;
	if (!cr_note_name_valid(name, n))
		return cr_error_set(CR_EINVAL,
		                    "invalid key name '%s': it must be 1 to %d bytes of "
		                    "UTF-8 without spaces, '+' or control characters",
		                    name, CR_NOTE_MAX_NAME);
	memcpy(buf, name, n);
	buf[n] = '\n';
	buf[n + 1] = CR_NOTE_ALG_ED25519;
	memcpy(buf + n + 2, key, CR_ED25519_KEY_SIZE);
	if (!EVP_Digest(buf, n + 2 + CR_ED25519_KEY_SIZE, md, &md_len, EVP_sha256(), NULL) ||
	    md_len != 32)
		return crypto_error(CR_ECRYPTO, "cannot hash the key id of '%s'", name);
	*out = get_be32(md);
	return 0;
}

int cr_vkey_parse(cr_vkey *out, const char *s, size_t len)
{
	/* cr_base64_decode writes len / 4 * 3 bytes: 33 for the 44 chars of a key. */
	uint8_t raw[VKEY_B64 / 4 * 3], idb[KEY_ID_SIZE];
	const char *plus1, *plus2, *b64;
	size_t name_len, b64_len, n = 0;
	uint32_t want;
	int rc;

	memset(out, 0, sizeof(*out));
	if (len >= CR_VKEY_MAX)
		return cr_error_set(CR_EINVAL,
		                    "verifier key is %zu bytes, longer than any valid one", len);
	/* The name ends at the first '+' and the id at the second: base64 may hold '+'. */
	if ((plus1 = memchr(s, '+', len)) == NULL)
		return cr_error_set(CR_EINVAL, "verifier key has no '+' after its name");
	name_len = (size_t)(plus1 - s);
	if (!cr_note_name_valid(s, name_len))
		return cr_error_set(CR_EINVAL, "verifier key has an invalid key name");
	if ((plus2 = memchr(plus1 + 1, '+', len - name_len - 1)) == NULL)
		return cr_error_set(CR_EINVAL, "verifier key has no '+' after its key id");
	if (plus2 - plus1 - 1 != 2 * KEY_ID_SIZE ||
	    cr_hex_decode(idb, KEY_ID_SIZE, plus1 + 1, 2 * KEY_ID_SIZE) != 0)
		return cr_error_set(CR_EINVAL, "verifier key id must be 8 hex digits");
	b64 = plus2 + 1;
	b64_len = len - (size_t)(b64 - s);
	if (b64_len != VKEY_B64 || cr_base64_decode(raw, &n, b64, b64_len) != 0 ||
	    n != 1 + CR_ED25519_KEY_SIZE)
		return cr_error_set(CR_EINVAL,
		                    "verifier key: the key is not base64 of %d bytes "
		                    "(a type byte and an Ed25519 public key)",
		                    1 + CR_ED25519_KEY_SIZE);
	if (raw[0] != CR_NOTE_ALG_ED25519)
		return cr_error_set(CR_EINVAL,
		                    "verifier key has signature type 0x%02x, not Ed25519 (0x01)",
		                    raw[0]);
	memcpy(out->name, s, name_len);
	out->name[name_len] = '\0';
	memcpy(out->key, raw + 1, CR_ED25519_KEY_SIZE);
	out->id = get_be32(idb);
	if ((rc = cr_note_key_id(&want, out->name, out->key)) != 0)
		goto fail;
	if (want != out->id) {
		rc = cr_error_set(CR_EINVAL,
		                  "verifier key id %08x does not match its name and key "
		                  "(they give %08x)",
		                  out->id, want);
		goto fail;
	}
	return 0;
fail:
	memset(out, 0, sizeof(*out));
	return rc;
}

size_t cr_vkey_format(const cr_vkey *vkey, char out[CR_VKEY_MAX])
{
	uint8_t raw[1 + CR_ED25519_KEY_SIZE];
	char b64[VKEY_B64 + 1];
	int n;

	raw[0] = CR_NOTE_ALG_ED25519;
	memcpy(raw + 1, vkey->key, CR_ED25519_KEY_SIZE);
	cr_base64_encode(b64, raw, sizeof(raw));
	n = snprintf(out, CR_VKEY_MAX, "%s+%08x+%s", vkey->name, (unsigned)vkey->id, b64);
	return n < 0 ? 0 : (size_t)n;
}

int cr_vkey_from_key(cr_vkey *out, const EVP_PKEY *key, const char *name)
{
	size_t len = CR_ED25519_KEY_SIZE, n = strlen(name);
	int rc;

	memset(out, 0, sizeof(*out));
	if (!EVP_PKEY_is_a(key, "ED25519"))
		return cr_error_set(CR_EINVAL, "the key is %s, not Ed25519",
		                    EVP_PKEY_get0_type_name(key) ? EVP_PKEY_get0_type_name(key)
		                                                 : "of an unknown type");
	if (EVP_PKEY_get_raw_public_key(key, out->key, &len) != 1 || len != CR_ED25519_KEY_SIZE)
		return crypto_error(CR_ECRYPTO, "cannot get the Ed25519 public key");
	if ((rc = cr_note_key_id(&out->id, name, out->key)) != 0) {
		memset(out, 0, sizeof(*out));
		return rc;
	}
	memcpy(out->name, name, n + 1);
	return 0;
}

int cr_vkey_load(cr_vkey *out, const char *path)
{
	char *buf = NULL;
	size_t len;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = read_file(path, "verifier key", CR_VKEY_MAX + 1, 0, &buf, &len)) != 0)
		return rc;
	if (len && buf[len - 1] == '\n')
		len--;
	if ((rc = cr_vkey_parse(out, buf, len)) != 0)
		rc = cr_error_set(rc, "%s: %s", path, cr_error_last());
	free(buf);
	return rc;
}

/* ---- key files ------------------------------------------------------------- */

/* Never prompt for a passphrase: a sealing key is stored unencrypted, 0600. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* The PEM text a BIO holds; valid until the BIO is freed. */
static int bio_text(BIO *bio, const char **data, size_t *len)
{
	char *p = NULL;
	long n = BIO_get_mem_data(bio, &p);

	if (n <= 0 || !p)
		return crypto_error(CR_ECRYPTO, "cannot encode the key as PEM");
	*data = p;
	*len = (size_t)n;
	return 0;
}

int cr_key_generate(const char *dir, const char *name, int force, cr_vkey *out)
{
	static const char *const files[3] = {CR_KEY_PRIVATE_FILE, CR_KEY_PUBLIC_FILE,
	                                     CR_KEY_VKEY_FILE};
	static const char *const what[3] = {"private key", "public key", "verifier key"};
	static const mode_t modes[3] = {0600, 0644, 0644};
	char *paths[3] = {NULL, NULL, NULL}, *tmps[3] = {NULL, NULL, NULL};
	const char *data[3];
	size_t lens[3];
	char vtext[CR_VKEY_MAX + 1];
	EVP_PKEY *key = NULL;
	BIO *priv = NULL, *pub = NULL;
	cr_vkey vk;
	struct stat st;
	int made = 0, rc = 0, i;

	if (!cr_note_name_valid(name, strlen(name)))
		return cr_error_set(CR_EINVAL,
		                    "invalid key name '%s': it must be 1 to %d bytes of "
		                    "UTF-8 without spaces, '+' or control characters",
		                    name, CR_NOTE_MAX_NAME);
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return cr_error_set_errno(CR_EIO, errno, "cannot create key folder %s", dir);
	if (stat(dir, &st) != 0)
		return cr_error_set_errno(CR_EIO, errno, "cannot stat key folder %s", dir);
	if (!S_ISDIR(st.st_mode))
		return cr_error_set(CR_EIO, "key folder %s is not a folder", dir);
	for (i = 0; i < 3; i++) {
		if ((paths[i] = join(dir, files[i])) == NULL ||
		    (force && (tmps[i] = tmp_name(paths[i])) == NULL)) {
			rc = cr_error_set(CR_ENOMEM, "out of memory");
			goto done;
		}
		/* Check all three first, so a refusal leaves nothing half-written. */
		if (!force && lstat(paths[i], &st) == 0) {
			rc = cr_error_set(CR_EEXISTS,
			                  "%s %s already exists; refusing to overwrite it", what[i],
			                  paths[i]);
			goto done;
		}
	}

	if ((key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")) == NULL) {
		rc = crypto_error(CR_ECRYPTO, "cannot generate an Ed25519 key");
		goto done;
	}
	if ((rc = cr_vkey_from_key(&vk, key, name)) != 0)
		goto done;
	/* Secure-heap BIO: its buffer is wiped when freed. */
	if ((priv = BIO_new(BIO_s_secmem())) == NULL || (pub = BIO_new(BIO_s_mem())) == NULL) {
		rc = crypto_error(CR_ENOMEM, "out of memory");
		goto done;
	}
	if (PEM_write_bio_PrivateKey(priv, key, NULL, NULL, 0, NULL, NULL) != 1 ||
	    PEM_write_bio_PUBKEY(pub, key) != 1) {
		rc = crypto_error(CR_ECRYPTO, "cannot encode the new key as PEM");
		goto done;
	}
	if ((rc = bio_text(priv, &data[0], &lens[0])) != 0 ||
	    (rc = bio_text(pub, &data[1], &lens[1])) != 0)
		goto done;
	lens[2] = cr_vkey_format(&vk, vtext);
	vtext[lens[2]++] = '\n';
	data[2] = vtext;

	/*
	 * Without force, create the files themselves (O_EXCL: an existing one is
	 * never touched). With force, write all three beside them first and
	 * only then rename, so the old pair is never mixed with half a new one.
	 */
	for (made = 0; made < 3; made++) {
		const char *target = force ? tmps[made] : paths[made];

		if (force)
			unlink(target); /* a stale scratch file of ours from a crash */
		if ((rc = write_new(target, what[made], data[made], lens[made], modes[made])) != 0)
			goto done;
	}
	if (force) {
		for (i = 0; i < 3; i++) {
			if (rename(tmps[i], paths[i]) != 0) {
				rc = cr_error_set_errno(CR_EIO, errno, "cannot rename %s to %s",
				                        tmps[i], paths[i]);
				goto done;
			}
			free(tmps[i]);
			tmps[i] = NULL; /* renamed: nothing to clean up */
		}
	}
	if ((rc = fsync_dir(dir)) != 0)
		goto done;
	if (out)
		*out = vk;
done:
	for (i = 0; i < made && rc; i++) {
		if (force && tmps[i])
			unlink(tmps[i]);
		else if (!force)
			unlink(paths[i]);
	}
	for (i = 0; i < 3; i++) {
		free(paths[i]);
		free(tmps[i]);
	}
	BIO_free(priv);
	BIO_free(pub);
	EVP_PKEY_free(key);
	return rc;
}

static int load_key(EVP_PKEY **out, const char *path, int private_key)
{
	const char *what = private_key ? "private key" : "public key";
	EVP_PKEY *key = NULL;
	BIO *bio = NULL;
	char *buf = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	if ((rc = read_file(path, what, KEY_FILE_MAX, private_key, &buf, &len)) != 0)
		return rc;
	if ((bio = BIO_new_mem_buf(buf, (int)len)) == NULL) {
		rc = crypto_error(CR_ENOMEM, "out of memory reading %s", path);
		goto done;
	}
	key = private_key ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL)
	                  : PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
	if (!key) {
		rc = crypto_error(CR_EINVAL, "cannot read %s %s: not an unencrypted PEM %s", what,
		                  path, what);
		goto done;
	}
	if (!EVP_PKEY_is_a(key, "ED25519")) {
		rc =
		    cr_error_set(CR_EINVAL, "%s %s is a %s key, not Ed25519", what, path,
		                 EVP_PKEY_get0_type_name(key) ? EVP_PKEY_get0_type_name(key) : "?");
		goto done;
	}
	*out = key;
	key = NULL; /* now the caller's */
done:
	BIO_free(bio);
	if (private_key)
		OPENSSL_cleanse(buf, len);
	free(buf);
	EVP_PKEY_free(key);
	return rc;
}

int cr_key_load_private(EVP_PKEY **out, const char *path)
{
	return load_key(out, path, 1);
}

int cr_key_load_public(EVP_PKEY **out, const char *path)
{
	return load_key(out, path, 0);
}

int cr_key_name_load(char out[CR_NOTE_MAX_NAME + 1], const char *key_path, const EVP_PKEY *key)
{
	size_t n = strlen(key_path);
	char *vpath = malloc(n + 8);
	cr_vkey vk, mine;
	int rc;

	out[0] = '\0';
	if (!vpath)
		return cr_error_set(CR_ENOMEM, "out of memory");
	if (n > 4 && strcmp(key_path + n - 4, ".key") == 0)
		n -= 4;
	memcpy(vpath, key_path, n);
	memcpy(vpath + n, ".vkey", 6);
	rc = cr_vkey_load(&vk, vpath);
	if (rc == CR_ENOTFOUND)
		rc = cr_error_set(rc,
		                  "no verifier key %s beside private key %s to take the key name "
		                  "from",
		                  vpath, key_path);
	if (rc)
		goto done;
	if ((rc = cr_vkey_from_key(&mine, key, vk.name)) != 0)
		goto done;
	if (mine.id != vk.id || CRYPTO_memcmp(mine.key, vk.key, CR_ED25519_KEY_SIZE) != 0) {
		rc = cr_error_set(CR_EINVAL, "verifier key %s belongs to another key than %s",
		                  vpath, key_path);
		goto done;
	}
	memcpy(out, vk.name, strlen(vk.name) + 1);
done:
	free(vpath);
	return rc;
}

void cr_key_free(EVP_PKEY *key)
{
	EVP_PKEY_free(key);
}

/* ---- signed notes ----------------------------------------------------------- */

int cr_note_sign(char **out, size_t *out_len, const char *text, size_t len, const char *name,
                 EVP_PKEY *key)
{
	/* What a signature line adds, so that our own verifier accepts the note. */
	const size_t overhead = 1 + SIG_PREFIX_LEN + CR_NOTE_MAX_NAME + 1 + SIG_BLOB_B64 + 1;
	uint8_t blob[SIG_BLOB_SIZE];
	char b64[SIG_BLOB_B64 + 1];
	size_t sig_len = CR_ED25519_SIG_SIZE;
	EVP_MD_CTX *ctx = NULL;
	cr_buf b = CR_BUF_INIT;
	cr_vkey vk;
	int rc;

	*out = NULL;
	if (out_len)
		*out_len = 0;
	if (len == 0 || text[len - 1] != '\n')
		return cr_error_set(CR_EINVAL,
		                    "note text must be non-empty and end with a newline");
	if (len > CR_NOTE_MAX_SIZE - overhead)
		return cr_error_set(CR_EINVAL, "note text is %zu bytes, more than the limit of %zu",
		                    len, (size_t)CR_NOTE_MAX_SIZE - overhead);
	if ((rc = text_ok(text, len, "note text")) != 0 ||
	    (rc = cr_vkey_from_key(&vk, key, name)) != 0)
		return rc;
	if ((ctx = EVP_MD_CTX_new()) == NULL) {
		rc = crypto_error(CR_ENOMEM, "out of memory");
		goto done;
	}
	/* Ed25519 signs the message itself: no digest is named. */
	if (EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) != 1 ||
	    EVP_DigestSign(ctx, blob + KEY_ID_SIZE, &sig_len, (const unsigned char *)text, len) !=
	        1 ||
	    sig_len != CR_ED25519_SIG_SIZE) {
		rc = crypto_error(CR_ECRYPTO, "cannot sign the note with key '%s'", name);
		goto done;
	}
	put_be32(blob, vk.id);
	cr_base64_encode(b64, blob, sizeof(blob));
	if ((rc = cr_buf_put(&b, text, len)) != 0 || (rc = cr_buf_putc(&b, '\n')) != 0 ||
	    (rc = cr_buf_printf(&b, "%s%s %s\n", sig_prefix, name, b64)) != 0)
		goto done;
	if (out_len)
		*out_len = b.len;
	*out = cr_buf_detach(&b);
done:
	cr_buf_free(&b);
	EVP_MD_CTX_free(ctx);
	return rc;
}

/*
 * The length of a note's signed text: everything up to and including the
 * newline before the last blank line. The note must end with a newline and
 * have at least one line after that blank line.
 */
static int note_split(const char *note, size_t len, size_t *text_len)
{
	size_t i;

	*text_len = 0;
	if (len == 0 || note[len - 1] != '\n')
		return cr_error_set(CR_EINVAL, "note does not end with a newline");
	for (i = len - 1; i > 0; i--) {
		if (note[i] == '\n' && note[i - 1] == '\n')
			break;
	}
	if (i == 0)
		return cr_error_set(CR_EINVAL, "note has no blank line between its text and "
		                               "its signatures");
	if (i + 1 == len)
		return cr_error_set(CR_EINVAL, "note has no signature line after its blank line");
	*text_len = i;
	return 0;
}

int cr_note_verify(const char *note, size_t len, const cr_vkey *vkey, size_t *text_len)
{
	/* The biggest signature a line may carry, decoded. */
	uint8_t raw[CR_NOTE_MAX_SIG_BASE64 / 4 * 3];
	uint8_t sig[CR_ED25519_SIG_SIZE];
	size_t tlen, pos, line_no = 0, mine_line = 0, mine_len = 0, others = 0, vname_len;
	uint32_t other_id = 0;
	int same_name = 0, rc, ok;
	EVP_PKEY *pkey = NULL;
	EVP_MD_CTX *ctx = NULL;

	if (text_len)
		*text_len = 0;
	if (len > CR_NOTE_MAX_SIZE)
		return cr_error_set(CR_EINVAL, "note is %zu bytes, more than the limit of %u", len,
		                    CR_NOTE_MAX_SIZE);
	if ((rc = text_ok(note, len, "note")) != 0 || (rc = note_split(note, len, &tlen)) != 0)
		return rc;
	vname_len = strlen(vkey->name);

	/* First every signature line must be well-formed; only then any crypto. */
	for (pos = tlen + 1; pos < len;) {
		const char *line = note + pos, *name, *sp, *b64;
		/* Found: the note ends with a newline. */
		const char *nl = memchr(line, '\n', len - pos);
		size_t line_len = (size_t)(nl - line), name_len, b64_len, n = 0;
		uint32_t id;

		pos += line_len + 1;
		if (++line_no > CR_NOTE_MAX_SIGNATURES)
			return cr_error_set(CR_EINVAL, "note has more than %d signature lines",
			                    CR_NOTE_MAX_SIGNATURES);
		if (line_len < SIG_PREFIX_LEN || memcmp(line, sig_prefix, SIG_PREFIX_LEN) != 0)
			return cr_error_set(CR_EINVAL,
			                    "note signature line %zu does not start with "
			                    "an em dash and a space",
			                    line_no);
		name = line + SIG_PREFIX_LEN;
		if ((sp = memchr(name, ' ', line_len - SIG_PREFIX_LEN)) == NULL)
			return cr_error_set(CR_EINVAL,
			                    "note signature line %zu has no space between "
			                    "key name and signature",
			                    line_no);
		name_len = (size_t)(sp - name);
		b64 = sp + 1;
		b64_len = line_len - SIG_PREFIX_LEN - name_len - 1;
		if (!cr_note_name_valid(name, name_len))
			return cr_error_set(
			    CR_EINVAL, "note signature line %zu has an invalid key name", line_no);
		if (b64_len > CR_NOTE_MAX_SIG_BASE64)
			return cr_error_set(CR_EINVAL,
			                    "note signature line %zu: the signature is longer "
			                    "than %d base64 characters",
			                    line_no, CR_NOTE_MAX_SIG_BASE64);
		if (b64_len == 0 || cr_base64_decode(raw, &n, b64, b64_len) != 0 ||
		    n < KEY_ID_SIZE + 1)
			return cr_error_set(CR_EINVAL,
			                    "note signature line %zu: the signature is not "
			                    "base64 of a key id and a signature",
			                    line_no);
		id = get_be32(raw);
		if (name_len != vname_len || memcmp(name, vkey->name, name_len) != 0) {
			others++;
			continue;
		}
		if (id != vkey->id) {
			/* Same name, other key: ignored, as C2SP says, but worth naming. */
			same_name = 1;
			other_id = id;
			others++;
			continue;
		}
		if (mine_line)
			return cr_error_set(CR_EINVAL,
			                    "note is signed twice by key %s+%08x "
			                    "(signature lines %zu and %zu)",
			                    vkey->name, (unsigned)vkey->id, mine_line, line_no);
		mine_line = line_no;
		mine_len = n - KEY_ID_SIZE;
		memcpy(sig, raw + KEY_ID_SIZE, mine_len < sizeof(sig) ? mine_len : sizeof(sig));
	}

	if (!mine_line) {
		if (same_name)
			return cr_error_set(CR_EVERIFY,
			                    "note has no signature by key %s+%08x: its "
			                    "line for %s carries key id %08x, another key",
			                    vkey->name, (unsigned)vkey->id, vkey->name,
			                    (unsigned)other_id);
		return cr_error_set(CR_EVERIFY,
		                    "note has no signature by key %s+%08x (%zu signature "
		                    "line%s by other keys)",
		                    vkey->name, (unsigned)vkey->id, others, others == 1 ? "" : "s");
	}
	if (mine_len != CR_ED25519_SIG_SIZE)
		return cr_error_set(CR_EVERIFY,
		                    "signature by key %s+%08x (line %zu) is %zu bytes, "
		                    "not an Ed25519 signature (%d)",
		                    vkey->name, (unsigned)vkey->id, mine_line, mine_len,
		                    CR_ED25519_SIG_SIZE);
	pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, vkey->key, CR_ED25519_KEY_SIZE);
	if (!pkey || (ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey) != 1) {
		rc = crypto_error(CR_ECRYPTO, "cannot set up verification with key %s+%08x",
		                  vkey->name, (unsigned)vkey->id);
		goto done;
	}
	ok = EVP_DigestVerify(ctx, sig, sizeof(sig), (const unsigned char *)note, tlen);
	/* Anything but 1 is a failed verification: never let a forgery pass as an error. */
	ERR_clear_error();
	if (ok != 1) {
		rc = cr_error_set(CR_EVERIFY,
		                  "signature by key %s+%08x (line %zu) does not verify: "
		                  "the note was changed or signed by another key",
		                  vkey->name, (unsigned)vkey->id, mine_line);
		goto done;
	}
	if (text_len)
		*text_len = tlen;
done:
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(pkey);
	return rc;
}

/* ---- the seal body ----------------------------------------------------------- */

/* Decimal without leading zeros (but "0"), fitting 64 bits. */
static int parse_size(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 20 || (len > 1 && s[0] == '0'))
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9' || __builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(s[i] - '0'), &v))
			return -1;
	}
	*out = v;
	return 0;
}

void cr_seal_body_free(cr_seal_body *body)
{
	if (!body)
		return;
	free(body->origin);
	free(body->extensions);
	memset(body, 0, sizeof(*body));
}

int cr_seal_body_parse(cr_seal_body *out, const char *text, size_t len)
{
	const char *line[3];
	size_t line_len[3], pos = 0, n = 0, ext;
	uint8_t root[ROOT_B64 / 4 * 3];
	int i, rc;

	memset(out, 0, sizeof(*out));
	if (len > CR_NOTE_MAX_SIZE)
		return cr_error_set(CR_EINVAL, "seal body is %zu bytes, more than the limit of %u",
		                    len, CR_NOTE_MAX_SIZE);
	if (len == 0 || text[len - 1] != '\n')
		return cr_error_set(CR_EINVAL, "seal body does not end with a newline");
	if ((rc = text_ok(text, len, "seal body")) != 0)
		return rc;
	for (i = 0; i < 3; i++) {
		const char *nl;

		if (pos >= len)
			return cr_error_set(CR_EINVAL,
			                    "seal body has %d line%s; it needs origin, tree "
			                    "size and root hash",
			                    i, i == 1 ? "" : "s");
		nl = memchr(text + pos, '\n', len - pos);
		line[i] = text + pos;
		line_len[i] = (size_t)(nl - line[i]);
		pos += line_len[i] + 1;
	}
	if (line_len[0] == 0)
		return cr_error_set(CR_EINVAL, "seal body: the origin (line 1) is empty");
	if (parse_size(line[1], line_len[1], &out->size) != 0)
		return cr_error_set(CR_EINVAL, "seal body: the tree size (line 2) is not a decimal "
		                               "number without leading zeros below 2^64");
	if (line_len[2] != ROOT_B64 || cr_base64_decode(root, &n, line[2], line_len[2]) != 0 ||
	    n != CR_HASH_SIZE) {
		out->size = 0;
		return cr_error_set(CR_EINVAL,
		                    "seal body: the root hash (line 3) is not base64 of "
		                    "%d bytes",
		                    CR_HASH_SIZE);
	}
	/* Extension lines are opaque, but C2SP forbids empty ones. */
	for (ext = pos, i = 4; ext < len; i++) {
		const char *nl = memchr(text + ext, '\n', len - ext);

		if (nl == text + ext) {
			out->size = 0;
			return cr_error_set(CR_EINVAL, "seal body: extension line %d is empty", i);
		}
		ext = (size_t)(nl - text) + 1;
	}
	out->origin = malloc(line_len[0] + 1);
	out->extensions = malloc(len - pos + 1);
	if (!out->origin || !out->extensions) {
		cr_seal_body_free(out);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	memcpy(out->origin, line[0], line_len[0]);
	out->origin[line_len[0]] = '\0';
	memcpy(out->extensions, text + pos, len - pos);
	out->extensions[len - pos] = '\0';
	memcpy(out->root, root, CR_HASH_SIZE);
	return 0;
}

/* An origin is one non-empty line of UTF-8 without control characters. */
static int origin_ok(const char *origin, size_t len, const char *what)
{
	if (len == 0 || len > CR_SEAL_MAX_ORIGIN)
		return cr_error_set(CR_EINVAL, "%s must be 1 to %d bytes long, not %zu", what,
		                    CR_SEAL_MAX_ORIGIN, len);
	if (memchr(origin, '\n', len))
		return cr_error_set(CR_EINVAL, "%s must be a single line", what);
	return text_ok(origin, len, what);
}

int cr_seal_body_format(char **out, size_t *out_len, const char *origin, uint64_t size,
                        const uint8_t root[CR_HASH_SIZE])
{
	char b64[ROOT_B64 + 1];
	cr_buf b = CR_BUF_INIT;
	int rc;

	*out = NULL;
	if (out_len)
		*out_len = 0;
	if ((rc = origin_ok(origin, strlen(origin), "the origin")) != 0)
		return rc;
	cr_base64_encode(b64, root, CR_HASH_SIZE);
	if ((rc = cr_buf_printf(&b, "%s\n%llu\n%s\n", origin, (unsigned long long)size, b64)) !=
	    0) {
		cr_buf_free(&b);
		return rc;
	}
	if (out_len)
		*out_len = b.len;
	*out = cr_buf_detach(&b);
	return 0;
}

/* ---- seals of a store ------------------------------------------------------- */

static int origin_read(char **out, const char *path)
{
	char *buf = NULL;
	size_t len;
	int rc;

	*out = NULL;
	if ((rc = read_file(path, "store origin", CR_SEAL_MAX_ORIGIN + 1, 0, &buf, &len)) != 0)
		return rc;
	/* One line; its newline is optional so that a hand edit does not break it. */
	if (len && buf[len - 1] == '\n')
		buf[--len] = '\0';
	if ((rc = origin_ok(buf, len, "the store origin")) != 0) {
		free(buf);
		return cr_error_set(rc, "%s: %s", path, cr_error_last());
	}
	*out = buf;
	return 0;
}

/*
 * Write a new origin to a scratch file and link it into place: link()
 * fails when another process got there first, and then theirs stands.
 * Readers never see a half-written origin.
 */
static int origin_create(const char *dir, const char *path)
{
	char uuid[37], text[64];
	char *tmp = tmp_name(path);
	int n, rc;

	if (!tmp)
		return cr_error_set(CR_ENOMEM, "out of memory");
	if ((rc = uuid4(uuid)) != 0)
		goto done;
	n = snprintf(text, sizeof(text), "%s%s\n", CR_SEAL_ORIGIN_PREFIX, uuid);
	unlink(tmp); /* a stale scratch file of ours from a crash */
	if ((rc = write_new(tmp, "store origin", text, (size_t)n, 0644)) != 0)
		goto done;
	if (link(tmp, path) != 0 && errno != EEXIST)
		rc = cr_error_set_errno(CR_EIO, errno, "cannot create store origin %s", path);
	unlink(tmp);
	if (!rc)
		rc = fsync_dir(dir);
done:
	free(tmp);
	return rc;
}

int cr_seal_origin(char **out, cr_store *store)
{
	const char *dir = cr_store_path(store);
	char *path = join(dir, CR_SEAL_ORIGIN_FILE);
	int rc;

	*out = NULL;
	if (!path)
		return cr_error_set(CR_ENOMEM, "out of memory");
	rc = origin_read(out, path);
	if (rc == CR_ENOTFOUND && (rc = origin_create(dir, path)) == 0)
		rc = origin_read(out, path);
	free(path);
	return rc;
}

int cr_seal_make(char **out, size_t *out_len, cr_store *store, EVP_PKEY *key, const char *name,
                 const char *origin)
{
	cr_store_state st;
	char *own = NULL, *body = NULL;
	size_t body_len = 0;
	int rc;

	*out = NULL;
	if (out_len)
		*out_len = 0;
	cr_store_state_get(store, &st);
	if (st.size == 0)
		return cr_error_set(CR_EINVAL,
		                    "store %s is empty: there is nothing to seal yet "
		                    "(record or add something first)",
		                    cr_store_path(store));
	if (!origin) {
		if ((rc = cr_seal_origin(&own, store)) != 0)
			return rc;
		origin = own;
	}
	if ((rc = cr_seal_body_format(&body, &body_len, origin, st.size, st.root)) == 0)
		rc = cr_note_sign(out, out_len, body, body_len, name, key);
	free(body);
	free(own);
	return rc;
}

/* 0 when path holds exactly data; CR_EEXISTS otherwise. */
static int same_file(const char *path, const char *data, size_t len)
{
	char *old = NULL;
	size_t old_len = 0;
	int rc = read_file(path, "seal", CR_NOTE_MAX_SIZE, 0, &old, &old_len);

	if (rc == 0 && (old_len != len || memcmp(old, data, len) != 0))
		rc = cr_error_set(CR_EEXISTS,
		                  "seal %s already exists with other content (another key "
		                  "or key name); a store keeps one seal per tree size, so this one "
		                  "was not saved",
		                  path);
	else if (rc == CR_EINVAL)
		rc = cr_error_set(CR_EEXISTS, "%s (an existing seal); this one was not saved",
		                  cr_error_last());
	free(old);
	return rc;
}

int cr_seal_save(char **out_path, cr_store *store, const char *note, size_t len)
{
	char file[48];
	char *dir = NULL, *path = NULL, *tmp = NULL;
	cr_seal_body body = {0};
	size_t tlen;
	int rc;

	if (out_path)
		*out_path = NULL;
	/* The file is named by the size the note itself states, never by a guess. */
	if (len > CR_NOTE_MAX_SIZE)
		return cr_error_set(CR_EINVAL, "seal is %zu bytes, more than the limit of %u", len,
		                    CR_NOTE_MAX_SIZE);
	if ((rc = note_split(note, len, &tlen)) != 0 ||
	    (rc = cr_seal_body_parse(&body, note, tlen)) != 0)
		return rc;
	snprintf(file, sizeof(file), "%016llu.note", (unsigned long long)body.size);
	if ((dir = join(cr_store_path(store), CR_SEAL_DIR)) == NULL ||
	    (path = join(dir, file)) == NULL || (tmp = tmp_name(path)) == NULL) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		rc = cr_error_set_errno(CR_EIO, errno, "cannot create seal folder %s", dir);
		goto done;
	}
	unlink(tmp); /* a stale scratch file of ours from a crash */
	if ((rc = write_new(tmp, "seal", note, len, 0644)) != 0)
		goto done;
	/*
	 * link() puts the seal in place whole and never replaces one: a seal
	 * may have been published, so it is evidence. Saving the same bytes
	 * again (same key, same size) is fine; different bytes are refused.
	 */
	if (link(tmp, path) != 0) {
		int e = errno;

		rc = e == EEXIST ? same_file(path, note, len)
		                 : cr_error_set_errno(CR_EIO, e, "cannot create seal %s", path);
	}
	unlink(tmp);
	if (rc || (rc = fsync_dir(dir)) != 0)
		goto done;
	if (out_path) {
		*out_path = path;
		path = NULL; /* now the caller's */
	}
done:
	cr_seal_body_free(&body);
	free(dir);
	free(path);
	free(tmp);
	return rc;
}
