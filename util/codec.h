/*
 * Small encoders: lowercase hex, standard base64 (RFC 4648, padded) and
 * UTF-8 validation. Decoders reject anything not in canonical form.
 */
#ifndef CR_UTIL_CODEC_H
#define CR_UTIL_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* out must hold 2 * n + 1 bytes; NUL-terminated lowercase hex. */
void cr_hex_encode(char *out, const uint8_t *data, size_t n);
/* Decode exactly n bytes from 2n hex digits (either case). CR_EINVAL otherwise. */
int cr_hex_decode(uint8_t *out, size_t n, const char *hex, size_t hex_len);

/* Encoded length (without NUL) of n bytes. */
size_t cr_base64_len(size_t n);
/* out must hold cr_base64_len(n) + 1 bytes. */
void cr_base64_encode(char *out, const uint8_t *data, size_t n);
/*
 * Decode padded base64 of len chars into out (which must hold len / 4 * 3
 * bytes); *out_len gets the byte count. CR_EINVAL on any non-canonical input.
 */
int cr_base64_decode(uint8_t *out, size_t *out_len, const char *b64, size_t len);

/* Nonzero when data[0..n) is well-formed UTF-8 (no overlongs, surrogates, > U+10FFFF). */
int cr_utf8_valid(const uint8_t *data, size_t n);

#endif
