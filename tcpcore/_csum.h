/* Internet checksum core (RFC 1071), shared by every compiled tcpcore module.
 *
 * The one's-complement sum is byte-order independent (RFC 1071 section 2(B)):
 * we add native-order 32-bit words into a 64-bit accumulator, which cannot
 * overflow for any buffer below 2^32 words, fold with end-around carry, and
 * swap to network order once at the end.  GCC vectorises the inner loop, so a
 * 64 KB buffer is summed at memory-bandwidth speed.
 */
#ifndef TCPCORE_CSUM_H
#define TCPCORE_CSUM_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

static inline int tc_little_endian(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static inline uint16_t tc_bswap16(uint16_t v) {
    return (uint16_t)((v >> 8) | (v << 8));
}

/* Fold a wide accumulator to 16 bits with end-around carry: 0x10000 -> 0x0001. */
static inline uint16_t tc_fold(uint64_t s) {
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    return (uint16_t)s;
}

/* One's-complement sum of p[0:n] plus `initial`, both as network-order values.
 * Returns the folded 16-bit sum (not complemented). */
static inline uint16_t tc_ones_sum(const uint8_t *p, size_t n, uint32_t initial) {
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t w;
        memcpy(&w, p + i, 4);
        acc += w;
    }
    if (n - i >= 2) {
        uint16_t h;
        memcpy(&h, p + i, 2);
        acc += h;
        i += 2;
    }
    if (i < n) {
        /* A trailing odd byte is the high byte of a zero-padded word. */
        uint8_t pad[2] = {p[i], 0};
        uint16_t h;
        memcpy(&h, pad, 2);
        acc += h;
    }
    uint16_t native = tc_fold(acc);
    uint16_t net = tc_little_endian() ? tc_bswap16(native) : native;
    return tc_fold((uint64_t)net + initial);
}

/* Pseudo-header sum for IPv4 (RFC 793 section 3.1, RFC 9293 section 3.1). */
static inline uint16_t tc_pseudo_v4(uint32_t src, uint32_t dst, uint32_t proto, uint32_t length) {
    uint64_t s = (uint64_t)(src >> 16) + (src & 0xffffu) + (dst >> 16) + (dst & 0xffffu)
                 + proto + (length >> 16) + (length & 0xffffu);
    return tc_fold(s);
}

#endif
